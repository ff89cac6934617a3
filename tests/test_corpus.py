"""The scenario corpus (scenarios/*.yaml): every file loads, is named after its file, and the
corpus as a whole covers every op and madvise advice of the spec, several mTHP sizes, a swap
file, and every ground-truth scenario of the live-kernel reference."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import get_args

import pytest

from foliosim.scenario import Scenario, load_scenario
from foliosim.scenario.model import OPS, Advice

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"
FILES = sorted(SCENARIO_DIR.glob("*.yaml"))

# The ops of the spec's step table (section 1.1). `dma_write` is simulator-only and has no
# live-kernel counterpart, so the corpus must not use it.
SPEC_OPS = (
    "mmap", "reserve", "munmap", "mprotect", "madvise", "mlock", "munlock", "mlockall",
    "munlockall", "mremap", "write", "read", "fork", "exit", "pin", "unpin", "shrink", "observe",
)
SIM_ONLY_OPS = ("dma_write",)
ADVICES = get_args(Advice)

# The ground-truth scenarios measured on the reference machine
# (shared/reference/live-kernel-ground-truth.md).
GROUND_TRUTH_IDS = (
    "S0a", "S0b", "S0c", "S0d", "S1", "S2", "S3", "S4", "S4b", "S4c", "S5",
    "S6a", "S6b", "S6c", "S6d", "S7a", "S7b", "S7c", "S8a", "S8b", "S8c", "S9a", "S9b", "S9c",
    "S10_fault", "S10_1", "S10_4", "S10_8", "S10_15", "S11a", "S11b", "S11c", "S11d", "S11e",
    "S12a", "S12b", "S12c", "S12d", "S12e", "S12f", "S13a", "S13b", "S13c",
    "S14a", "S14b", "S14c", "S14d", "S14e", "S15a", "S15b", "S15c",
    "S16a", "S16a_ctl", "S16b", "S17", "S18", "S19", "S20", "S21",
)
MTHP_SIZES = ("16K", "32K", "64K", "128K", "256K", "512K", "1M")


def _load_all() -> dict[Path, Scenario]:
    return {p: load_scenario(p) for p in FILES}


@pytest.fixture(scope="module")
def corpus() -> dict[Path, Scenario]:
    return _load_all()


def _ground_truth_id(scenario: Scenario) -> str | None:
    """The id a ground-truth translation names first in its description (``S10_1: ...``)."""
    if not scenario.name.startswith("gt-"):
        return None
    m = re.match(r"(S\d+[A-Za-z0-9_]*)\b", scenario.description)
    return m.group(1) if m else None


def test_enough_scenarios() -> None:
    assert len(FILES) >= 60


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_scenario_loads_and_is_named_after_its_file(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.name == path.stem
    assert path.suffix == ".yaml"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_scenario_has_one_line_description(path: Path) -> None:
    description = load_scenario(path).description
    assert description.strip(), "empty description"
    assert "\n" not in description.strip(), "description spans several lines"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_scenario_is_fit_for_the_live_kernel(path: Path) -> None:
    scenario = load_scenario(path)
    # enabled=always lets every process on the machine allocate THPs and moves global counters.
    assert scenario.settings.enabled != "always"
    assert scenario.settings.size_mode("2M") != "always"
    ops = {step.op for step in scenario.steps}
    assert not ops & set(SIM_ONLY_OPS), "simulator-only op in a corpus scenario"
    assert "observe" in ops, "no observation besides the automatic 'end'"
    labels = [step.label for step in scenario.steps if step.op == "observe"]
    assert "end" not in labels, "'end' is recorded automatically"
    assert not [k for k, n in Counter(labels).items() if n > 1], "duplicate observe labels"


def test_names_are_unique(corpus: dict[Path, Scenario]) -> None:
    names = Counter(s.name for s in corpus.values())
    assert [n for n, k in names.items() if k > 1] == []


def test_spec_ops_are_known_to_the_model() -> None:
    assert set(SPEC_OPS) | set(SIM_ONLY_OPS) == set(OPS)


def test_corpus_covers_every_op(corpus: dict[Path, Scenario]) -> None:
    used = {step.op for s in corpus.values() for step in s.steps}
    assert set(SPEC_OPS) - used == set()


def test_corpus_covers_every_madvise_advice(corpus: dict[Path, Scenario]) -> None:
    used = {step.advice for s in corpus.values() for step in s.steps if step.op == "madvise"}
    assert len(ADVICES) == 11
    assert set(ADVICES) - used == set()


def test_corpus_covers_op_variants(corpus: dict[Path, Scenario]) -> None:
    steps = [step for s in corpus.values() for step in s.steps]
    mlockalls = [st for st in steps if st.op == "mlockall"]
    assert any(st.current for st in mlockalls)
    assert any(st.future for st in mlockalls)
    assert any(st.onfault for st in mlockalls)
    assert any(st.future and not st.current for st in mlockalls)
    assert any(st.op == "mlock" and st.onfault for st in steps)
    assert any(st.op == "write" and st.value == 0 for st in steps)
    mremaps = [st for st in steps if st.op == "mremap"]
    assert any(st.new_length < st.length for st in mremaps), "no shrinking mremap"
    assert any(st.new_length > st.length for st in mremaps), "no growing mremap"
    assert any(st.op == "mmap" and st.prot == "none" for st in steps)
    assert any(st.op == "mmap" and st.prot == "r" for st in steps)
    assert any(st.op in ("mmap", "reserve") and st.misalign for st in steps)
    assert any(st.op == "fork" and st.proc != "main" for st in steps), "no fork of a child"


def test_corpus_covers_three_mthp_sizes(corpus: dict[Path, Scenario]) -> None:
    sizes = {
        name
        for s in corpus.values()
        for name in MTHP_SIZES
        if s.settings.size_mode(name) != "never"
    }
    assert len(sizes) >= 3, sizes


def test_corpus_has_pmd_thp_scenarios(corpus: dict[Path, Scenario]) -> None:
    assert any(s.settings.size_mode("2M") != "never" for s in corpus.values())


def test_corpus_has_swap_file_scenario(corpus: dict[Path, Scenario]) -> None:
    assert any(s.settings.swap == "file" for s in corpus.values())


def test_corpus_has_underused_shrinker_scenario(corpus: dict[Path, Scenario]) -> None:
    assert any(
        s.settings.max_ptes_none < 511 and any(st.op == "shrink" for st in s.steps)
        for s in corpus.values()
    )


def test_ground_truth_translations(corpus: dict[Path, Scenario]) -> None:
    ids = Counter()
    for scenario in corpus.values():
        if scenario.name.startswith("gt-"):
            gid = _ground_truth_id(scenario)
            assert gid in GROUND_TRUTH_IDS, f"{scenario.name}: unknown ground-truth id {gid!r}"
            ids[gid] += 1
    assert set(GROUND_TRUTH_IDS) - set(ids) == set(), "ground-truth scenarios not translated"
    assert [i for i, n in ids.items() if n > 1] == []


def test_readme_lists_every_scenario(corpus: dict[Path, Scenario]) -> None:
    readme = (SCENARIO_DIR / "README.md").read_text()
    rows = re.findall(r"^\|\s*`([a-z0-9][a-z0-9._-]*)`\s*\|", readme, flags=re.MULTILINE)
    assert Counter(rows) == Counter(s.name for s in corpus.values())
