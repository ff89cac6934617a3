"""The seeded workload generators: deterministic per seed, every step succeeds without THP,
each exercises what it stands for, and each can be written out as a scenario file that the
loader and ``foliosim run --target sim`` accept."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from foliosim.cli import app
from foliosim.experiments import run_scenario, thp_off_results
from foliosim.scenario import load_scenario
from foliosim.workloads import WORKLOADS, generate, scenario_yaml, write_scenario

# what each workload stands for, as ops (and advice) it must contain
DEFINING = {
    "mlock-slices": {"mlock", "munlock", "write"},
    "allocator-churn": {"madvise:dontneed", "madvise:free", "munmap", "write"},
    "fork-snapshot": {"fork", "exit", "read", "write"},
    "pinned-buffers": {"pin", "dma_write", "write"},
    "guard-pages": {"mprotect:none", "mprotect:rw", "write"},
}


def ops_of(scenario) -> Counter[str]:
    out: Counter[str] = Counter()
    for st in scenario.steps:
        out[st.op] += 1
        if st.op == "madvise":
            out[f"madvise:{st.advice}"] += 1
        if st.op == "mprotect":
            out[f"mprotect:{st.prot}"] += 1
    return out


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_same_seed_same_scenario_other_seed_other_scenario(name: str) -> None:
    a, b, c = generate(name, 5), generate(name, 5), generate(name, 6)
    assert a == b
    assert a.steps != c.steps
    assert a.name == f"{name}-s5"


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_every_step_succeeds_with_thp_disabled(name: str) -> None:
    for seed in range(6):
        for scale in (1, 2):
            sc = generate(name, seed, scale)
            res = thp_off_results(sc)
            assert [(i, sc.steps[i].op, r) for i, r in enumerate(res) if r] == []


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_workload_does_what_it_stands_for_and_uses_thps(name: str) -> None:
    seen: Counter[str] = Counter()
    for seed in range(3):
        sc = generate(name, seed)
        seen.update(ops_of(sc))
        r = run_scenario(sc, "linux-6.18", seed=seed, workload=name)
        assert r.totals["thp_coverage"] > 0.1  # THP-backed memory, as the workload intends
    assert DEFINING[name] <= set(seen)


def test_pinned_buffers_cut_next_to_a_pin() -> None:
    """The neighbour ops land right next to a pinned buffer, where the THP they cut is the
    pinned one."""
    adjacent = 0
    for seed in range(5):
        pins: dict[str, tuple[str, int, int]] = {}
        for st in generate("pinned-buffers", seed).steps:
            if st.op == "pin":
                pins[st.id] = (st.region, st.offset, st.offset + st.length)
            elif st.op in ("mprotect", "munmap", "mlock"):
                adjacent += any(r == st.region and (st.offset + st.length == lo or st.offset == hi)
                                for r, lo, hi in pins.values())
    assert adjacent >= 5


def test_scale_makes_longer_scenarios() -> None:
    for name in WORKLOADS:
        assert len(generate(name, 1, 3).steps) > len(generate(name, 1, 1).steps)


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_written_scenario_file_loads_back_equal(name: str, tmp_path: Path) -> None:
    sc = generate(name, 2)
    path = write_scenario(sc, tmp_path / f"{sc.name}.yaml")
    assert path.read_text().startswith("format: foliosim.scenario/1\nname: ")
    back = load_scenario(path)
    assert back.steps == sc.steps
    assert back.settings == sc.settings
    assert back.name == sc.name


def test_written_scenario_runs_on_the_simulator(tmp_path: Path) -> None:
    sc = generate("pinned-buffers", 0)
    path = tmp_path / "pb.yaml"
    path.write_text(scenario_yaml(sc))
    res = CliRunner().invoke(app, ["run", str(path), "--target", "sim", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert [s["result"] for s in doc["steps"]] == [0] * len(sc.steps)


def test_unknown_workload_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="known: mlock-slices"):
        generate("no-such-workload", 0)
