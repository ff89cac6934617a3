"""The comparison suite and its report: summary.json exactly as issue 4 specifies it, the
verdict on rules 1-3, report.md/report.html with PNG figures, rule-1 accounting against the
THP-disabled run, and the ``foliosim compare`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from foliosim.cli import app
from foliosim.experiments import run_scenario, thp_off
from foliosim.experiments.suite import PRESETS, Preset, SuiteResult, run_suite
from foliosim.policies import POLICIES
from foliosim.report import summary, verdicts, write_report
from foliosim.workloads import WORKLOADS, generate

TINY = Preset("tiny", seeds=(0,), scale=1)
PNG = b"\x89PNG\r\n\x1a\n"
SUMMARY_FIELDS = {"corruptions": int, "thp_syscall_failures": int, "bloat_peak_bytes": int,
                  "bloat_byte_seconds": float, "split_failures": int, "pages_copied": int,
                  "mlock_gap_pages": int, "rmap_walks": int, "thp_coverage": float}


@pytest.fixture(scope="module")
def suite() -> SuiteResult:
    return run_suite(TINY, jobs=1)


def test_suite_runs_every_policy_workload_and_seed_plus_controls(suite: SuiteResult) -> None:
    assert len(suite.runs) == len(POLICIES) * len(WORKLOADS)
    assert set(suite.controls) == {(w, 0) for w in WORKLOADS}
    assert {(r.policy, r.workload) for r in suite.runs} == \
        {(p, w) for p in POLICIES for w in WORKLOADS}
    assert all(r.error is None for r in [*suite.runs, *suite.controls.values()])
    # the THP-disabled controls: every step succeeds and the oracle finds nothing
    for ctl in suite.controls.values():
        assert not any(ctl.results) and ctl.totals["corruptions"] == 0


def test_summary_json_has_exactly_the_issues_format(suite: SuiteResult) -> None:
    doc = json.loads(json.dumps(summary(suite)))
    assert set(doc) == {"policies", "workloads", "seeds"}
    assert doc["workloads"] == list(WORKLOADS) and doc["seeds"] == [0]
    assert list(doc["policies"]) == list(POLICIES)
    for fields in doc["policies"].values():
        assert set(fields) == set(SUMMARY_FIELDS)
        for k, typ in SUMMARY_FIELDS.items():
            assert type(fields[k]) is typ, k


def test_summary_totals_add_up_the_runs(suite: SuiteResult) -> None:
    doc = summary(suite)
    for p in POLICIES:
        runs = list(suite.by_policy(p))
        got = doc["policies"][p]
        assert got["pages_copied"] == sum(r.totals["pages_copied"] for r in runs)
        assert got["rmap_walks"] == sum(r.totals["rmap_walks"] for r in runs)
        assert got["bloat_peak_bytes"] == max(r.totals["bloat_peak_bytes"] for r in runs)
        assert got["mlock_gap_pages"] == sum(r.totals["mlock_gap_pages"] for r in runs)


def test_verdict_finds_copy_unsafe_breaking_rule_3_and_copies_only_where_defined(
        suite: SuiteResult) -> None:
    by = {v.policy: v for v in verdicts(suite)}
    assert by["copy-unsafe"].rule3.startswith("broken")
    assert not by["copy-unsafe"].keeps_all
    for name in ("split-on-cut", "split-or-copy", "mlock-split", "deferred-rmap-check"):
        assert by[name].rule1 == "kept" and by[name].rule3.startswith("kept")
    for name in ("linux-6.18", "split-on-cut", "deferred-rmap-check", "mlock-split",
                 "linux-6.11"):
        assert by[name].totals["pages_copied"] == 0  # only the copying policies copy


def test_report_files(suite: SuiteResult, tmp_path: Path) -> None:
    paths = write_report(suite, tmp_path / "rep")
    md = paths["report.md"].read_text()
    html = paths["report.html"].read_text()
    assert md.startswith("# foliosim policy comparison: preset tiny")
    assert "| policy | rule 1 | rule 2 | rule 3 |" in md
    for p in POLICIES:
        assert f"| {p} |" in md and f"<td>{p}</td>" in html
    pngs = [n for n in paths if n.endswith(".png")]
    assert "bloat_over_time.png" in pngs and "costs.png" in pngs
    for n in pngs:
        assert paths[n].read_bytes()[:8] == PNG
        assert f"]({n})" in md and f"<img src='{n}'" in html
    assert json.loads(paths["summary.json"].read_text()) == json.loads(
        json.dumps(summary(suite)))


def test_rule_1_counts_steps_whose_result_differs_from_the_thp_disabled_run() -> None:
    sc = generate("guard-pages", 0)
    base = run_scenario(thp_off(sc), "linux-6.18").results
    assert not any(base)
    assert run_scenario(sc, "linux-6.18", baseline=base).thp_failures == []
    forged = list(base)
    forged[3] = -12  # as if the THP-disabled run had failed step 3 with ENOMEM
    r = run_scenario(sc, "linux-6.18", baseline=forged)
    assert [(d.step, d.result, d.without_thp) for d in r.thp_failures] == [(3, "0", "-ENOMEM")]
    assert r.totals["thp_syscall_failures"] == 1


def test_parallel_suite_gives_the_same_results() -> None:
    pre = Preset("two", seeds=(1,), scale=1, workloads=("pinned-buffers", "mlock-slices"))
    a, b = run_suite(pre, jobs=1), run_suite(pre, jobs=2)
    assert [(r.workload, r.policy, r.results, r.totals) for r in a.runs] == \
        [(r.workload, r.policy, r.results, r.totals) for r in b.runs]


def test_presets() -> None:
    assert list(PRESETS) == ["quick", "standard", "full"]
    q, s, f = PRESETS.values()
    assert len(q.seeds) * q.scale < len(s.seeds) * s.scale < len(f.seeds) * f.scale
    assert q.policies == tuple(POLICIES) and q.workloads == tuple(WORKLOADS)


def test_compare_command_writes_the_report(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(PRESETS, "quick", Preset("quick", seeds=(0,), scale=1,
                                                 workloads=("pinned-buffers",)))
    out = tmp_path / "report"
    res = CliRunner().invoke(app, ["compare", "--out", str(out), "--jobs", "1"])
    assert res.exit_code == 0, res.output
    assert "copy-unsafe: " in res.output and "linux-6.18: keeps rules 1-3" in res.output
    assert str(out / "report.md") in res.output
    assert {"report.md", "report.html", "summary.json"} <= {p.name for p in out.iterdir()}


def test_compare_command_refuses_a_file_as_output_directory(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("")
    res = CliRunner().invoke(app, ["compare", "--out", str(f)])
    assert res.exit_code == 2
    assert "not a directory" in res.output
