"""Differential fuzzing (foliosim.fuzz, ``foliosim fuzz``): the generator's scenarios are valid,
bounded and deterministic; the shrinker finds the minimal steps of a synthetic disagreement;
the runner saves shrunk disagreements and recognises timing-dependent ones; a short live fuzz
runs when the live kernel is usable."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from foliosim.cli import app
from foliosim.compare import Difference
from foliosim.fuzz import runner as fuzz_runner
from foliosim.fuzz.generate import ADVICES, MAX_OPS, generate, load, scenario_yaml
from foliosim.fuzz.runner import canonical, fuzz
from foliosim.fuzz.shrink import Shrinker, shrink
from foliosim.scenario import Scenario, Settings, load_scenario
from foliosim.scenario.model import OPS
from foliosim.targets import live

K, M = 1 << 10, 1 << 20
cli = CliRunner()


# -- the generator ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def generated() -> list[tuple[dict[str, Any], Scenario]]:
    docs = [generate(seed, i) for seed in (1, 2) for i in range(100)]
    return [(d, load(d)) for d in docs]


def test_loader_accepts_200_generated_scenarios(generated) -> None:
    assert len(generated) == 200
    for doc, scenario in generated:
        assert scenario.name == doc["name"] and len(scenario.steps) == len(doc["steps"])


def test_generated_scenarios_stay_small_and_comparable(generated) -> None:
    for _, sc in generated:
        st = sc.settings
        assert st.enabled in ("madvise", "never") and st.swap == "none"
        assert "always" not in st.sizes.values()
        assert all(mode in ("madvise", "never") for n, mode in st.sizes.items() if n != "2M")
        assert st.size_mode("2M") in ("inherit", "never")
        ops = [s.op for s in sc.steps]
        assert "dma_write" not in ops
        assert 1 <= ops.count("observe") <= 2
        assert len(ops) - ops.count("observe") <= MAX_OPS + 4  # a mid-run mmap adds a madvise
        assert ops.count("fork") <= 2
        maps = [s for s in sc.steps if s.op in ("mmap", "reserve")]
        assert all(2 * M <= s.size <= 8 * M and s.misalign < 2 * M for s in maps)
        assert 1 <= sum(s.op == "mmap" and s.proc == "main" for s in sc.steps[:7])


def test_generator_draws_every_op_and_advice(generated) -> None:
    ops = Counter(s.op for _, sc in generated for s in sc.steps)
    assert set(ops) == set(OPS) - {"dma_write"}, set(OPS) - set(ops)
    advices = {s.advice for _, sc in generated for s in sc.steps if s.op == "madvise"}
    assert advices == set(ADVICES)
    values = {s.value for _, sc in generated for s in sc.steps if s.op == "write"}
    assert 0 in values
    settings = [sc.settings for _, sc in generated]
    assert any(s.max_ptes_none < 511 for s in settings)
    assert any(not s.use_zero_page for s in settings)
    assert any(s.sizes.get("64K") == "madvise" for s in settings)
    # ranges cut folios at 64K and 1M boundaries, misaligned regions too
    cuts = {(s.offset % M == 0, s.offset % (64 * K) == 0) for _, sc in generated
            for s in sc.steps if s.op in ("munmap", "mprotect", "mlock", "madvise") and s.offset}
    assert {(True, True), (False, True), (False, False)} <= cuts
    assert {s.misalign for _, sc in generated for s in sc.steps if s.op == "mmap"} > {0}


def test_swap_only_when_asked() -> None:
    with_swap = [generate(3, i, swap=True)["settings"].get("swap") for i in range(60)]
    assert "file" in with_swap
    assert all("swap" not in generate(3, i)["settings"] for i in range(60))


def test_generator_is_deterministic_for_a_seed() -> None:
    first = [scenario_yaml(generate(7, i)) for i in range(20)]
    assert first == [scenario_yaml(generate(7, i)) for i in range(20)]
    assert first != [scenario_yaml(generate(8, i)) for i in range(20)]
    assert len(set(first)) == 20


def test_scenario_file_round_trips(tmp_path: Path) -> None:
    doc = generate(1, 3)
    path = tmp_path / "s.yaml"
    path.write_text(scenario_yaml(doc, comments=["a comment"]))
    assert load_scenario(path) == load(doc)


# -- the shrinker -------------------------------------------------------------------------------
NOISY = {
    "name": "synthetic", "description": "", "settings": {"sizes": {"64K": "madvise"},
                                                           "use_zero_page": False},
    "steps": [
        {"op": "mmap", "region": "a", "size": 4 * M},
        {"op": "mmap", "region": "b", "size": 2 * M, "misalign": 64 * K},
        {"op": "madvise", "region": "a", "advice": "hugepage"},
        {"op": "write", "region": "a"},
        {"op": "read", "region": "b"},
        {"op": "shrink"},
        {"op": "fork", "child": "c1"},
        {"op": "observe", "label": "o1"},
        {"op": "mlock", "region": "a", "offset": 1 * M, "length": 64 * K},
        {"op": "pin", "region": "b", "id": "p1"},
        {"op": "write", "proc": "c1", "region": "b", "value": 0},
        {"op": "unpin", "id": "p1"},
        {"op": "write", "proc": "c1", "region": "a", "offset": 2 * M, "length": 4 * K},
        {"op": "madvise", "proc": "c1", "region": "b", "advice": "pageout"},
        {"op": "observe", "label": "o2"},
    ],
}


def synthetic_disagreement(doc: dict[str, Any]) -> bool:
    """A fake comparison: the targets 'differ' once an mlock precedes a write by c1 to a."""
    seen_mlock = False
    for s in load(doc).steps:
        seen_mlock |= s.op == "mlock"
        if seen_mlock and s.op == "write" and s.proc == "c1" and s.region == "a":
            return True
    return False


def test_shrinker_finds_the_minimal_steps() -> None:
    assert synthetic_disagreement(NOISY)
    shrinker = Shrinker(synthetic_disagreement)
    small = shrinker.shrink(NOISY)
    # what the failure needs, and what the loader needs for it to be valid: the region and
    # the fork of c1; each with the fewest arguments, regions of 2 MiB
    assert small["steps"] == [{"op": "mmap", "region": "a", "size": 2 * M},
                              {"op": "fork", "child": "c1"},
                              {"op": "mlock", "region": "a"},
                              {"op": "write", "proc": "c1", "region": "a"}]
    assert small["settings"] == {}
    assert 0 < shrinker.tests < 100
    assert NOISY["steps"][3] == {"op": "write", "region": "a"}  # the input is left alone


def test_shrinker_keeps_the_settings_the_failure_needs() -> None:
    def needs_64k(doc: dict[str, Any]) -> bool:
        return synthetic_disagreement(doc) and load(doc).settings.size_mode("64K") == "madvise"

    small = shrink(NOISY, needs_64k)
    assert len(small["steps"]) == 4 and small["settings"] == {"sizes": {"64K": "madvise"}}


def test_shrinker_never_runs_invalid_variants() -> None:
    ran: list[dict[str, Any]] = []

    def fails(doc: dict[str, Any]) -> bool:
        ran.append(doc)
        load(doc)  # raises if the shrinker passed an invalid scenario
        return synthetic_disagreement(doc)

    shrink(NOISY, fails)
    assert ran and len({scenario_yaml(d) for d in ran}) == len(ran)  # each variant once


# -- the runner with a fake judge ---------------------------------------------------------------
def pageout_judge(scenario: Scenario) -> list[Difference]:
    """Fake targets that disagree on the result of every MADV_PAGEOUT."""
    return [Difference("end", s.proc, "", f"step {i}", "result", 0, -1)
            for i, s in enumerate(scenario.steps)
            if s.op == "madvise" and s.advice == "pageout"]


def test_fuzz_saves_shrunk_disagreements(tmp_path: Path) -> None:
    report = fuzz(40, 11, tmp_path, judge=pageout_judge)
    differ = [r for r in report.results if r.status == "differ"]
    assert differ and report.count("agree") == 40 - len(differ)
    assert report.rate == report.count("agree") / 40
    firsts = [r for r in differ if not r.duplicate_of]
    for r in differ:
        first = r.duplicate_of or r.name
        assert r.path == tmp_path / f"{first}.yaml" and r.path.exists()
        if r.duplicate_of:
            assert canonical(r.shrunk) == canonical(next(f.shrunk for f in firsts
                                                         if f.name == first))
            continue
        saved = load_scenario(r.path)
        ops = [(s.op, getattr(s, "advice", None)) for s in saved.steps]
        assert ops in ([("mmap", None), ("madvise", "pageout")],
                       [("reserve", None), ("madvise", "pageout")]), ops
        assert saved.settings == Settings()
        assert "--seed 11" in saved.description and f"scenario {r.index}" in saved.description
        assert "differ in result" in saved.description
        assert r.path.read_text().startswith("# sim vs live:\n# end main step 1 result")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{r.name}.yaml" for r in firsts)


def test_canonical_names() -> None:
    a = {"name": "x", "steps": [{"op": "mmap", "region": "q", "size": 2 * M},
                                {"op": "fork", "child": "kid"},
                                {"op": "pin", "proc": "kid", "region": "q", "id": "z"}]}
    b = {"name": "y", "steps": [{"op": "mmap", "region": "a", "size": 2 * M},
                                {"op": "fork", "child": "c2"},
                                {"op": "pin", "proc": "c2", "region": "a", "id": "p9"}]}
    assert canonical(a) == canonical(b)
    b["steps"][0]["size"] = 4 * M
    assert canonical(a) != canonical(b)


def test_fuzz_recognises_timing_dependent_outcomes(tmp_path: Path) -> None:
    calls = Counter()

    def unstable(scenario: Scenario) -> list[Difference]:
        calls[scenario.name] += 1
        if calls[scenario.name] % 2:
            return [Difference("o1", "main", "a", "page 0", "mapcount", 1, 2)]
        return []

    report = fuzz(3, 1, tmp_path, judge=unstable)
    assert [r.status for r in report.results] == ["flaky"] * 3
    # two runs, then a second attempt of two runs; never shrunk
    assert all(calls[r.name] == 4 for r in report.results)
    assert all(r.path.parent == tmp_path / "flaky" and load_scenario(r.path)
               for r in report.results)
    assert "3 timing dependent" in report.summary()


def test_a_disturbed_first_run_gets_a_second_attempt(tmp_path: Path) -> None:
    """Another process moved a global counter during the first run only: three agreeing runs
    in a row decide."""
    calls = Counter()

    def disturbed_once(scenario: Scenario) -> list[Difference]:
        calls[scenario.name] += 1
        if calls[scenario.name] == 1:
            return [Difference("end", "", "", "counters", "vmstat/thp_fault_alloc", 0, 1)]
        return []

    report = fuzz(2, 1, tmp_path, judge=disturbed_once)
    assert [(r.status, r.retried) for r in report.results] == [("agree", True)] * 2
    assert list(calls.values()) == [5, 5]
    assert report.summary().endswith("agreement 100.0%; 2 decided on a second attempt")


def test_fuzz_shrinks_and_saves_crashing_runs(tmp_path: Path) -> None:
    def crashes_on_mremap(scenario: Scenario) -> list[Difference]:
        if any(s.op == "mremap" for s in scenario.steps):
            raise KeyError("model crash")
        return []

    report = fuzz(60, 2, tmp_path, judge=crashes_on_mremap)
    errors = [r for r in report.results if r.status == "error"]
    assert errors and all("KeyError" in r.message for r in errors)
    for r in errors:
        saved = load_scenario(r.path)
        assert r.path.parent == tmp_path / "errors"
        ops = [s.op for s in saved.steps]  # the mremap, its two regions, maybe a fork
        assert ops[-1] == "mremap" and set(ops) <= {"mmap", "reserve", "fork", "mremap"}
        assert len(ops) == 3 + ("fork" in ops)


def test_fuzz_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fuzz_runner, "live_judge", lambda: pageout_judge)
    result = cli.invoke(app, ["fuzz", "--count", "40", "--seed", "11", "--out",
                              str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"fuzz: 40 scenarios, seed 11, disagreements to {tmp_path / 'out'}/"
    assert "1 difference; 2 steps still differ" in result.output
    assert lines[-1].startswith("40 scenarios (seed 11): ") and "agreement" in lines[-1]

    monkeypatch.setattr(fuzz_runner, "live_judge", lambda: lambda scenario: [])
    result = cli.invoke(app, ["fuzz", "-n", "5", "-s", "1", "-o", str(tmp_path / "none")])
    assert result.exit_code == 0 and "agreement 100.0%" in result.output


def test_fuzz_command_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = cli.invoke(app, ["fuzz", "--out", str(tmp_path / "no" / "such" / "dir")])
    assert result.exit_code == 2 and "does not exist" in result.stderr
    (tmp_path / "file").write_text("")
    result = cli.invoke(app, ["fuzz", "--out", str(tmp_path / "file")])
    assert result.exit_code == 2 and "not a directory" in result.stderr

    def unavailable() -> None:
        raise fuzz_runner.TargetUnavailable("the live target is unavailable: needs root")

    monkeypatch.setattr(fuzz_runner, "live_judge", unavailable)
    result = cli.invoke(app, ["fuzz", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: the live target is unavailable: needs root"


# -- on the live kernel -------------------------------------------------------------------------
REASON = live.unavailable_reason()


@pytest.mark.skipif(REASON is not None, reason=f"live kernel not usable: {REASON}")
def test_short_live_fuzz(tmp_path: Path) -> None:
    """Ten random scenarios on both targets: every run completes, and each disagreement is
    saved as a valid scenario file."""
    report = fuzz(10, 20251127, tmp_path, shrink=False)
    assert len(report.results) == 10
    assert report.count("error") == 0, [r.message for r in report.results]
    for r in report.results:
        if r.status in ("differ", "flaky"):
            assert load_scenario(r.path).name == r.name
