"""Tests of the foliosim command line with fake sim and live targets."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from foliosim.cli import app
from foliosim.observation import Page, document, encode_runs

runner = CliRunner()

SCENARIO = """\
name: {name}
steps:
  - {{op: mmap, region: a, size: 2M}}
  - {{op: madvise, region: a, advice: hugepage}}
  - {{op: write, region: a}}
  - {{op: observe, label: after-write}}
"""


def fake_doc(scenario, target: str, *, mapcount: int = 1, explain: bool = False) -> dict:
    """What a target could observe for the scenarios above: one THP in region ``a``."""
    base = 0x100000 if target == "sim" else 0x7700
    pages = [Page("present", base + k, base, 9, True, mapcount,
                  ("anon", "anon_exclusive", "swapbacked", "thp"), 3) for k in range(512)]
    steps = [{"index": i, "op": s.op, "proc": s.proc, "result": 0, "errno": None, "ns": 10}
             for i, s in enumerate(scenario.steps)]
    if explain:
        steps[2]["events"] = ["do_huge_pmd_anonymous_page: order-9 folio"]
    vma = {"start": 0, "end": 2 << 20, "perms": "rw-p", "vmflags": ["hg"], "rss_kb": 2048,
           "anonymous_kb": 2048, "anon_huge_pages_kb": 2048, "locked_kb": 0, "swap_kb": 0,
           "lazyfree_kb": 0, "thp_eligible": True}
    obs = [{"label": "after-write", "step": 3,
            "processes": {"main": {"status": {"vm_lck_kb": 0, "vm_pin_kb": 0, "vm_swap_kb": 0},
                                   "regions": {"a": {"vmas": [vma],
                                                     "pages": encode_runs(pages)}}}},
            "counters": {"vmstat": {"thp_fault_alloc": 1}}},
           {"label": "end", "step": len(steps), "processes": {}, "counters": {}}]
    return document(scenario.name, target, {"kernel": "6.18.44"}, steps, obs)


class LiveUnavailable(Exception):
    pass


@pytest.fixture
def targets(monkeypatch):
    """Fake targets: live sees mapcount 2 in scenarios whose name starts with ``differ``."""
    calls: list[tuple[str, str]] = []
    sim = types.ModuleType("foliosim.targets.sim")

    def sim_run(scenario, *, explain: bool = False) -> dict:
        calls.append(("sim", scenario.name))
        return fake_doc(scenario, "sim", explain=explain)

    sim.run = sim_run
    live = types.ModuleType("foliosim.targets.live")
    live.LiveUnavailable = LiveUnavailable
    live.reason = None

    def live_run(scenario, *, progress=None) -> dict:
        calls.append(("live", scenario.name))
        if scenario.name.startswith("boom"):
            raise LiveUnavailable("lost the agent")
        return fake_doc(scenario, "live", mapcount=2 if scenario.name.startswith("differ") else 1)

    live.run = live_run
    live.unavailable_reason = lambda: live.reason
    monkeypatch.setitem(sys.modules, "foliosim.targets.sim", sim)
    monkeypatch.setitem(sys.modules, "foliosim.targets.live", live)
    return types.SimpleNamespace(sim=sim, live=live, calls=calls)


def write_scenario(directory: Path, name: str, text: str | None = None) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(text if text is not None else SCENARIO.format(name=name))
    return path


def test_diff_all_agree_exit_0(tmp_path, targets) -> None:
    write_scenario(tmp_path, "one")
    write_scenario(tmp_path, "two")
    result = runner.invoke(app, ["diff", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "2 scenarios, 2 agree, 0 differ"
    assert targets.calls == [("sim", "one"), ("live", "one"), ("sim", "two"), ("live", "two")]


def test_diff_reports_difference_exit_1(tmp_path, targets) -> None:
    a = write_scenario(tmp_path, "agrees")
    b = write_scenario(tmp_path, "differ-mapcount")
    result = runner.invoke(app, ["diff", str(a), str(b)])
    assert result.exit_code == 1, result.output
    assert "differ-mapcount: 1 difference" in result.output
    row = next(line for line in result.output.splitlines() if "pages 0-511" in line)
    assert row.split() == ["after-write", "main", "a", "pages", "0-511", "mapcount", "1", "2"]
    assert result.output.splitlines()[-1] == "2 scenarios, 1 agree, 1 differ"


def test_diff_bad_scenario_exit_2_before_running(tmp_path, targets) -> None:
    write_scenario(tmp_path, "good")
    bad = write_scenario(tmp_path, "zbad", "name: zbad\nsteps:\n  - {op: mmap, region: a, "
                                           "size: 2M}\n  - {op: write, region: b}\n")
    result = runner.invoke(app, ["diff", str(tmp_path)])
    assert result.exit_code == 2
    assert str(bad) in result.output and "step 1" in result.output
    assert "field 'region'" in result.output
    assert "Traceback" not in result.output
    assert targets.calls == []


def test_diff_broken_yaml_exit_2_with_line(tmp_path, targets) -> None:
    bad = write_scenario(tmp_path, "broken", "name: broken\nsteps:\n  - {op: mmap\n  - x: [\n")
    result = runner.invoke(app, ["diff", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:" in result.output and "YAML" in result.output
    assert "Traceback" not in result.output


def test_diff_live_unavailable_exit_2_with_reason(tmp_path, targets) -> None:
    targets.live.reason = "needs root to read /proc/kpageflags"
    result = runner.invoke(app, ["diff", str(write_scenario(tmp_path, "one"))])
    assert result.exit_code == 2
    assert "needs root to read /proc/kpageflags" in result.output
    assert targets.calls == []


def test_diff_live_lost_during_run_exit_2(tmp_path, targets) -> None:
    result = runner.invoke(app, ["diff", str(write_scenario(tmp_path, "boom"))])
    assert result.exit_code == 2
    assert "lost the agent" in result.output and "Traceback" not in result.output


def test_diff_two_observation_files(tmp_path, targets) -> None:
    from foliosim.scenario import load_scenario

    sc = load_scenario(write_scenario(tmp_path, "one"))
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text(json.dumps(fake_doc(sc, "sim")))
    b.write_text(json.dumps(fake_doc(sc, "live")))
    c.write_text(json.dumps(fake_doc(sc, "live", mapcount=3)))
    result = runner.invoke(app, ["diff", str(a), str(b)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "1 scenarios, 1 agree, 0 differ"
    result = runner.invoke(app, ["diff", str(a), str(c)])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == "1 scenarios, 0 agree, 1 differ"
    assert targets.calls == []  # nothing runs for observation files


def test_diff_bad_observation_file_exit_2(tmp_path, targets) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text("{}")
    b.write_text("{}")
    result = runner.invoke(app, ["diff", str(a), str(b)])
    assert result.exit_code == 2
    assert str(a) in result.output and "format" in result.output
    result = runner.invoke(app, ["diff", str(a)])
    assert result.exit_code == 2 and "pairs" in result.output


def test_diff_refuses_unknown_suffix_and_empty_directory(tmp_path, targets) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("x")
    result = runner.invoke(app, ["diff", str(other)])
    assert result.exit_code == 2 and "notes.txt" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["diff", str(empty)])
    assert result.exit_code == 2 and "no scenario" in result.output


def test_run_json_and_output_file(tmp_path, targets) -> None:
    path = write_scenario(tmp_path, "one")
    out = tmp_path / "out.json"
    result = runner.invoke(app, ["run", str(path), "--target", "sim", "--json", "-o", str(out)])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["format"] == "foliosim.observations/1" and printed["target"] == "sim"
    assert json.loads(out.read_text()) == printed
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_run_failure_leaves_output_untouched(tmp_path, targets) -> None:
    path = write_scenario(tmp_path, "one")
    out = tmp_path / "out.json"
    out.write_text("old")

    def failing(scenario, *, explain=False):
        raise RuntimeError("model bug")

    targets.sim.run = failing
    result = runner.invoke(app, ["run", str(path), "-o", str(out)])
    assert result.exit_code != 0
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.yaml", "out.json"]


def test_run_tables_and_explain(tmp_path, targets) -> None:
    path = write_scenario(tmp_path, "one")
    result = runner.invoke(app, ["run", str(path), "--explain"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "after-write" in result.output
    assert "F0[0-511]" in result.output
    assert "do_huge_pmd_anonymous_page" in result.output
    assert "vmstat/thp_fault_alloc" in result.output
    result = runner.invoke(app, ["run", str(path)], terminal_width=200)
    assert "do_huge_pmd_anonymous_page" not in result.output


def test_run_live_unavailable_and_explain_on_live(tmp_path, targets) -> None:
    path = write_scenario(tmp_path, "one")
    targets.live.reason = "not root"
    result = runner.invoke(app, ["run", str(path), "--target", "live"])
    assert result.exit_code == 2 and "not root" in result.output
    result = runner.invoke(app, ["run", str(path), "--target", "live", "--explain"])
    assert result.exit_code == 2 and "--explain" in result.output


def test_run_bad_scenario_exit_2(tmp_path, targets) -> None:
    path = write_scenario(tmp_path, "bad", "name: bad\nsteps:\n  - {op: mmap, region: a, "
                                           "size: 3K}\n")
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2
    assert f"{path}:3: step 0: field 'size'" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["run", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "missing.yaml" in result.output


def test_show_saved_file(tmp_path, targets) -> None:
    path = write_scenario(tmp_path, "one")
    out = tmp_path / "out.json"
    runner.invoke(app, ["run", str(path), "-o", str(out), "--json"])
    result = runner.invoke(app, ["show", str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "after-write" in result.output and "F0[0-511]" in result.output
    out.write_text("{broken")
    result = runner.invoke(app, ["show", str(out)])
    assert result.exit_code == 2 and "not valid JSON" in result.output
    assert "Traceback" not in result.output
