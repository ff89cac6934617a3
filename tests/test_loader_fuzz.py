"""Bad input: broken scenario files are refused before anything runs, with one message naming
the file, line, step and field, and never a traceback.

Hypothesis mutates the corpus (deleted and duplicated keys and lines, values of random types,
random bytes, truncated text) and feeds the result to the loader and to ``foliosim run``; each
category of the issue (broken YAML, unknown op or field, wrong types, negative or unaligned
sizes and offsets, unknown regions or processes, pins released twice, sizes beyond the live
memory limit) also has an explicit case.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from typer.testing import CliRunner

from foliosim.cli import app
from foliosim.scenario import Scenario, ScenarioError, load_scenario, load_scenario_text
from foliosim.scenario.load import MEMORY_LIMIT_ENV, live_memory_limit

CORPUS = sorted((Path(__file__).resolve().parent.parent / "scenarios").glob("*.yaml"))
TEXTS = [p.read_text() for p in CORPUS]
runner = CliRunner()
FILE = "broken.yaml"


def check_refusal(e: ScenarioError, file: str = FILE) -> None:
    """One line that starts with the file, carries a message, and no pydantic prefix."""
    text = str(e)
    assert "\n" not in text, text
    assert text.startswith(file), text
    assert e.message and "Value error" not in text and "Assertion failed" not in text, text
    assert e.line is None or e.line >= 1
    assert e.step is None or e.step >= 0
    assert "Traceback" not in text


def load_or_refuse(text: str) -> Scenario | ScenarioError:
    """The loader's answer: a valid scenario or a ScenarioError, never anything else."""
    try:
        return load_scenario_text(text, FILE)
    except ScenarioError as e:
        check_refusal(e)
        return e


# -- mutations of corpus files -------------------------------------------------------------------
values = st.one_of(
    st.integers(-(1 << 70), 1 << 70), st.sampled_from([0, -1, -4096, 4095, 5000, 1 << 64]),
    st.floats(allow_nan=True), st.booleans(), st.none(), st.text(max_size=12),
    st.sampled_from(["2M", "-4K", "3K", "1T", "99999999999999999999G", "4K ", "2MiB", "mmap",
                     "always", "sometimes", "", "main", "ghost", "a", "p", "0x1000"]),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(),
                                                         max_size=2),
)
KEYS = ["op", "region", "size", "offset", "length", "prot", "misalign", "advice", "value", "to",
        "to_offset", "new_length", "child", "id", "label", "proc", "onfault", "current",
        "future", "colour", "name", "steps", "settings", "enabled", "sizes", "swap",
        "max_ptes_none", "use_zero_page", "2M", "64K"]


def _containers(doc: Any, path: tuple = ()) -> list[tuple]:
    """Paths of every mapping and list in a parsed document."""
    out = [path] if isinstance(doc, dict | list) else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _containers(v, path + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _containers(v, path + (i,))
    return out


def _at(doc: Any, path: tuple) -> Any:
    for key in path:
        doc = doc[key]
    return doc


@st.composite
def structural_mutation(draw: st.DrawFn) -> str:
    """A corpus file parsed, changed in one to three places, and written back."""
    doc = yaml.safe_load(draw(st.sampled_from(TEXTS)))
    for _ in range(draw(st.integers(1, 3))):
        target = _at(doc, draw(st.sampled_from(_containers(doc))))
        what = draw(st.sampled_from(["delete", "set", "add", "rename"]))
        if isinstance(target, dict):
            if what == "add" or not target:
                target[draw(st.sampled_from(KEYS))] = draw(values)
                continue
            key = draw(st.sampled_from(sorted(target, key=str)))
            if what == "delete":
                del target[key]
            elif what == "rename":
                target[draw(st.sampled_from(KEYS))] = target.pop(key)
            else:
                target[key] = draw(values)
        elif isinstance(target, list):
            if not target or what == "add":
                target.insert(draw(st.integers(0, len(target))), draw(values))
                continue
            i = draw(st.integers(0, len(target) - 1))
            if what == "delete":
                del target[i]
            elif what == "rename":
                target.insert(draw(st.integers(0, len(target))), target[i])  # duplicate
            else:
                target[i] = draw(values)
    return yaml.safe_dump(doc, sort_keys=False)


@st.composite
def text_mutation(draw: st.DrawFn) -> str:
    """A corpus file with lines deleted or duplicated (duplicated keys), text truncated, or
    random characters inserted."""
    text = draw(st.sampled_from(TEXTS))
    for _ in range(draw(st.integers(1, 3))):
        lines = text.splitlines(keepends=True)
        what = draw(st.sampled_from(["delete", "duplicate", "truncate", "insert", "replace"]))
        if what in ("delete", "duplicate") and lines:
            i = draw(st.integers(0, len(lines) - 1))
            lines[i:i + 1] = [] if what == "delete" else [lines[i], lines[i]]
            text = "".join(lines)
        elif what == "truncate":
            text = text[:draw(st.integers(0, len(text)))]
        else:
            at = draw(st.integers(0, len(text)))
            junk = draw(st.text(st.characters(codec="utf-8"), min_size=1, max_size=8)
                        | st.sampled_from([":", "- ", "{", "]", "\t", "&a", "*a", "!!int",
                                           "\x00", "\n  - ", "'", "op: frob"]))
            end = at + (draw(st.integers(0, 5)) if what == "replace" else 0)
            text = text[:at] + junk + text[end:]
    return text


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(text=structural_mutation() | text_mutation())
def test_loader_refuses_or_loads_mutated_corpus(text: str) -> None:
    load_or_refuse(text)


@settings(max_examples=100)
@given(data=st.binary(max_size=200), prefix=st.sampled_from(TEXTS), cut=st.floats(0, 1))
def test_loader_on_random_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes,
                                prefix: str, cut: float) -> None:
    """Random bytes spliced into a corpus file (often not UTF-8) are refused with the path."""
    raw = prefix.encode()
    at = int(cut * len(raw))
    path = tmp_path_factory.mktemp("bytes") / FILE
    path.write_bytes(raw[:at] + data + raw[at:])
    try:
        load_scenario(path)
    except ScenarioError as e:
        check_refusal(e, str(path))


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow,
                                                  HealthCheck.function_scoped_fixture])
@given(text=structural_mutation() | text_mutation())
def test_cli_run_refuses_or_runs_mutated_corpus(tmp_path: Path, text: str) -> None:
    """``foliosim run`` on a broken file: exit 2 with one ``error:`` line naming the file,
    or (for a mutation that is still a valid scenario) a normal run on the simulator."""
    path = tmp_path / FILE
    path.write_text(text)
    result = runner.invoke(app, ["run", str(path), "--target", "sim", "--json"])
    assert result.exit_code in (0, 2), result.output
    assert isinstance(result.exception, SystemExit | None), repr(result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), result.stderr


# -- each kind of bad input of the issue --------------------------------------------------------
HEAD = "name: t\nsteps:\n"
MMAP = "  - {op: mmap, region: a, size: 2M}\n"
CASES = {
    # name: (steps text, step, field, words of the message)
    "unknown-op": ("  - {op: frob}\n", 0, "op", "unknown op 'frob'"),
    "missing-op": ("  - {region: a}\n", 0, "op", "missing"),
    "unknown-field": (MMAP + "  - {op: read, region: a, colour: red}\n", 1, "colour",
                      "unknown field"),
    "unknown-field-named-like-an-op": (MMAP + "  - {op: read, region: a, mmap: 1}\n", 1,
                                       "mmap", "unknown field"),
    "wrong-type-bool": ("  - {op: mlockall, current: 3}\n", 0, "current", "boolean"),
    "wrong-type-list": ("  - {op: mmap, region: a, size: [2M]}\n", 0, "size", "size"),
    "wrong-type-label": ("  - {op: observe, label: {a: 1}}\n", 0, "label", "string"),
    "negative-size": ("  - {op: mmap, region: a, size: -4096}\n", 0, "size", "not negative"),
    "negative-size-string": ("  - {op: mmap, region: a, size: -4K}\n", 0, "size",
                             "expected a size"),
    "unaligned-size": ("  - {op: mmap, region: a, size: 5000}\n", 0, "size",
                       "expected a multiple of 4 KiB"),
    "unaligned-offset": (MMAP + "  - {op: write, region: a, offset: 100}\n", 1, "offset",
                         "multiple of 4 KiB"),
    "negative-offset": (MMAP + "  - {op: write, region: a, offset: -4K}\n", 1, "offset",
                        "expected a size"),
    "offset-beyond-region": (MMAP + "  - {op: write, region: a, offset: 4M}\n", 1, "offset",
                             "beyond region"),
    "zero-size": ("  - {op: mmap, region: a, size: 0}\n", 0, "size", "greater than 0"),
    "misalign-too-big": ("  - {op: mmap, region: a, size: 2M, misalign: 2M}\n", 0, "misalign",
                         "below 2M"),
    "unknown-region": (MMAP + "  - {op: mlock, region: b}\n", 1, "region", "unknown region"),
    "unknown-mremap-target": (MMAP + "  - {op: mremap, region: a, to: z}\n", 1, "to",
                              "unknown region"),
    "unknown-process": (MMAP + "  - {op: read, proc: ghost, region: a}\n", 1, "proc",
                        "does not exist"),
    "exited-process": (MMAP + "  - {op: fork, child: c}\n  - {op: exit, proc: c}\n"
                       "  - {op: read, proc: c, region: a}\n", 3, "proc", "has exited"),
    "pin-released-twice": (MMAP + "  - {op: pin, region: a, id: p}\n  - {op: unpin, id: p}\n"
                           "  - {op: unpin, id: p}\n", 3, "id", "released twice"),
    "pin-never-taken": ("  - {op: unpin, id: p}\n", 0, "id", "never taken"),
    "pin-id-reused": (MMAP + "  - {op: pin, region: a, id: p}\n  - {op: pin, region: a, id: p}\n",
                      2, "id", "already used"),
    "unpin-by-process-not-sharing": (MMAP + "  - {op: fork, child: c}\n"
                                     "  - {op: pin, region: a, id: p}\n"
                                     "  - {op: unpin, proc: c, id: p}\n", 3, "proc",
                                     "sharing pin 'p'"),
    "unpin-after-last-sharer-exited": (MMAP + "  - {op: fork, child: c}\n"
                                       "  - {op: pin, proc: c, region: a, id: p}\n"
                                       "  - {op: exit, proc: c}\n  - {op: unpin, id: p}\n", 4,
                                       "id", "last process sharing it exited"),
    "beyond-live-memory-limit": ("  - {op: mmap, region: a, size: 3G}\n"
                                 "  - {op: reserve, region: b, size: 2G}\n", 1, "size",
                                 "memory limit"),
    "absurd-size": ("  - {op: mmap, region: a, size: 99999999999999999999G}\n", 0, "size",
                    "memory limit"),
    "bad-settings-key": ("  - {op: shrink}\n", None, "sizes", "unknown key '3M'"),
    "bad-settings-value": ("  - {op: shrink}\n", None, "sizes.2M", "got 'sometimes'"),
}
SETTINGS = {"bad-settings-key": "settings: {sizes: {3M: never}}\n",
            "bad-settings-value": "settings:\n  sizes: {2M: sometimes}\n"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_kind_of_bad_input_is_refused(case: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    steps, step, field, words = CASES[case]
    text = "name: t\n" + SETTINGS.get(case, "") + "steps:\n" + steps
    with pytest.raises(ScenarioError) as info:
        load_scenario_text(text, FILE)
    e = info.value
    check_refusal(e)
    assert (e.step, e.field) == (step, field), str(e)
    assert words in e.message, str(e)
    assert e.line is not None and e.line > 1, str(e)
    # the command line refuses it the same way, before any target runs (even the live one)
    path = tmp_path / FILE
    path.write_text(text)
    for target in ("sim", "live"):
        result = runner.invoke(app, ["run", str(path), "--target", target])
        assert result.exit_code == 2, result.output
        assert result.stderr.strip() == f"error: {str(e).replace(FILE, str(path), 1)}"


@pytest.mark.parametrize("text, line, words", [
    ("name: t\nsteps:\n  - {op: mmap, region: a\n  - {op: read}\n", 4, "YAML"),
    ("name: t\nsteps: [\n", 3, "YAML"),
    ("name: t\n  bad indent: 1\nsteps: []\n", 2, "YAML"),
    ("name: t\nsteps: []\n---\nname: u\n", 3, "YAML"),
    ("name: t\n\n\x00\n", 3, "U+0000"),
    ("name: t\nsteps: !!python/object:os.system []\n", 2, "YAML"),
    ("", 1, "mapping"),
    ("- just\n- a list\n", 1, "mapping"),
])
def test_broken_yaml_is_refused_with_its_line(text: str, line: int, words: str) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario_text(text, FILE)
    check_refusal(info.value)
    assert info.value.line == line and words in info.value.message, str(info.value)


def test_nesting_too_deep_is_refused_without_a_traceback() -> None:
    for text in (HEAD + "[" * 5000 + "]" * 5000, "name: t\nsteps: " + "- " * 3000 + "x\n"):
        with pytest.raises(ScenarioError) as info:
            load_scenario_text(text, FILE)
        check_refusal(info.value)


def test_pydantic_value_error_prefix_is_stripped() -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario_text(HEAD + "  - {op: mmap, region: a, size: 5000}\n", FILE)
    assert info.value.message == "expected a multiple of 4 KiB (4096 bytes), got 5000"
    assert str(info.value) == (f"{FILE}:3: step 0: field 'size': "
                               "expected a multiple of 4 KiB (4096 bytes), got 5000")


def test_memory_limit_follows_the_live_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The limit is the live runner's ($FOLIOSIM_LIVE_MEMORY_LIMIT or its 4 GiB default)."""
    from foliosim.targets.live import DEFAULT_MEMORY_LIMIT

    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    assert live_memory_limit() == DEFAULT_MEMORY_LIMIT
    text = HEAD + "  - {op: mmap, region: a, size: 64M}\n  - {op: fork, child: c}\n" \
                  "  - {op: mmap, proc: c, region: b, size: 64M}\n"
    load_scenario_text(text)
    # a forked child's regions count again: copy-on-write may copy every page
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(100 << 20))
    with pytest.raises(ScenarioError) as info:
        load_scenario_text(text, FILE)
    assert (info.value.line, info.value.step, info.value.field) == (4, 1, "child")
    assert "at most 100M" in info.value.message and "to 128M" in info.value.message
    with pytest.raises(ScenarioError) as info:
        load_scenario_text(text, FILE, memory_limit=128 << 20)
    assert (info.value.step, info.value.field) == (2, "size") and "192M" in info.value.message
    assert load_scenario_text(text, memory_limit=192 << 20).steps[2].size == 64 << 20
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "lots")
    with pytest.raises(ScenarioError, match=MEMORY_LIMIT_ENV):
        load_scenario_text(text)


def test_unreadable_file_is_refused(tmp_path: Path) -> None:
    for path in (tmp_path / "absent.yaml", tmp_path):
        result = runner.invoke(app, ["run", str(path)])
        assert result.exit_code == 2 and result.stderr.startswith(f"error: {path}")
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: t\ndescription: caf\xe9\nsteps: []\n")
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2 and "cannot read" in result.stderr
