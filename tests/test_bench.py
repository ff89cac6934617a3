"""Smoke tests of ``foliosim bench`` (issue 6): the churn at 1 GiB, the JSON shape with a
tiny configuration, the corpus ratio arithmetic. No timing assertions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from foliosim.bench.churn import ChurnConfig, GiB, MiB, run_churn, run_in_subprocess
from foliosim.bench.corpus import corpus_files, ratios, run_corpus
from foliosim.bench.faultunmap import fault_unmap
from foliosim.cli import app

runner = CliRunner()


def test_churn_1gib_mixes_thp_mthp_and_small_pages() -> None:
    r = run_churn(ChurnConfig(1 * GiB, seed=3))
    assert r.errors == 0
    assert r.extra["kinds"].keys() == {"thp", "mthp", "small", "zero"}
    for kind in ("munmap", "mprotect", "mlock", "fork", "exit", "shrink", "madvise:dontneed",
                 "madvise:free", "madvise:pageout", "madvise:cold", "write:cow-parent"):
        assert r.ops_by_kind.get(kind, 0) > 0, kind
    res = r.resident_bytes_by_order
    assert res["pmd"] > 0 and res["mthp"] > 0 and res["order0"] > 0
    assert r.small_page_fraction >= 0.1
    assert r.counters["thp_split_page"] > 0 and r.counters["mthp_64k_fault_alloc"] > 0
    assert r.ops == sum(r.ops_by_kind.values())
    # every operation kind is timed, and the timed calls fit in the run's wall time
    assert r.seconds_by_kind.keys() == r.ops_by_kind.keys()
    assert all(v > 0 for v in r.seconds_by_kind.values())
    assert sum(r.seconds_by_kind.values()) <= r.seconds


def test_churn_is_seeded_and_ops_scale_with_size() -> None:
    a = run_churn(ChurnConfig(256 * MiB, seed=5))
    b = run_churn(ChurnConfig(256 * MiB, seed=5))
    assert a.ops_by_kind == b.ops_by_kind
    assert a.resident_bytes_by_order == b.resident_bytes_by_order
    c = run_churn(ChurnConfig(512 * MiB, seed=5))
    assert c.regions == 2 * a.regions and c.ops > a.ops


def test_churn_subprocess_reports_its_peak_rss_and_progress() -> None:
    seen: list[tuple[int, int]] = []
    cfg = ChurnConfig(128 * MiB, region_size=16 * MiB)  # 8 regions, 2 rounds
    r = run_in_subprocess(cfg, progress=lambda done, total: seen.append((done, total)))
    assert r.peak_rss_bytes >= r.baseline_rss_bytes > 0
    assert r.ops > 0
    # a unit per region populated and per region visit: 8 + 2 * 8, each reported once
    assert seen == [(k, 24) for k in range(1, 25)]


def test_churn_subprocess_failure_says_why() -> None:
    with pytest.raises(RuntimeError, match=r"(?s)churn subprocess failed \(1\).*ZeroDivisionError"):
        run_in_subprocess(ChurnConfig(0))  # no region fits: the child fails


def test_churn_progress_counts_regions_then_visits() -> None:
    seen: list[tuple[int, int]] = []
    cfg = ChurnConfig(4 * GiB, rounds=3, forks=0)  # 32 regions of 128 MiB
    run_churn(cfg, progress=lambda done, total: seen.append((done, total)))
    assert {total for _, total in seen} == {32 * (1 + 3)}
    done = [d for d, _ in seen]
    assert done == sorted(set(done)) and done[-1] == 128


def test_fault_unmap_counts_folios() -> None:
    r = fault_unmap(batch=64, repeats=3, single=10)
    assert r.folios == 192 and r.per_second > 0 and r.single_per_second > 0
    assert len(r.rates) == 3 and r.per_second == sorted(r.rates)[1]  # the median repeat


def _doc(steps: list[tuple[str, int]]) -> dict:
    return {"steps": [{"op": op, "ns": ns} for op, ns in steps]}


def test_ratios_by_op_and_overall_leave_out_observe_and_unmeasured_steps() -> None:
    sim = _doc([("mmap", 10), ("write", 30), ("observe", 999), ("write", 50)])
    live = _doc([("mmap", 20), ("write", 10), ("observe", 1), ("write", 0)])
    r = ratios([(sim, live)])
    assert r.ratio_by_op == {"mmap": 0.5, "write": 3.0}
    assert r.ratio_overall == pytest.approx(40 / 30)
    assert r.steps == 2 and r.count == {"mmap": 1, "write": 1}


def test_median_steps_takes_each_steps_median_over_the_runs() -> None:
    from foliosim.bench.corpus import median_steps

    runs = [{"name": "x", "steps": [{"op": "mmap", "ns": a, "ret": 0}, {"op": "write", "ns": b}]}
            for a, b in ((5, 40), (100, 10), (7, 20))]
    assert median_steps(runs) == {"name": "x", "steps": [{"op": "mmap", "ns": 7, "ret": 0},
                                                         {"op": "write", "ns": 20}]}


def test_corpus_native_time_is_each_steps_median_over_the_live_runs(monkeypatch) -> None:
    """The kernel side of the corpus ratio is a median over several live runs, as the
    simulator's side is: one slow or lucky run does not set it."""
    from foliosim.bench.corpus import LIVE_RUNS
    from foliosim.scenario import load_scenario
    from foliosim.targets import live, sim

    files = [f for f in corpus_files() if f.name.startswith("cow-thp-pmd-fork-writes")]
    doc = sim.run(load_scenario(files[0]))
    natives = iter([100, 5, 7])
    assert LIVE_RUNS == 3

    def fake_live_run(scenario: object) -> dict:
        ns = next(natives)
        return {**doc, "steps": [{**st, "ns": ns} for st in doc["steps"]]}

    monkeypatch.setattr(live, "unavailable_reason", lambda: None)
    monkeypatch.setattr(live, "run", fake_live_run)
    r = run_corpus(files)
    assert r.steps > 0 and not r.skipped
    assert sum(r.native_ns.values()) == 7 * r.steps  # every step: the median of 100, 5, 7


def test_corpus_one_scenario_on_both_targets() -> None:
    from foliosim.targets import live

    reason = live.unavailable_reason()
    if reason:
        pytest.skip(f"live kernel unavailable: {reason}")
    files = [f for f in corpus_files() if f.name.startswith("cow-thp-pmd-fork-writes")]
    r = run_corpus(files)
    assert r.scenarios == 1 and r.steps > 0 and r.ratio_overall is not None


def test_bench_json_shape_tiny(tmp_path: Path) -> None:
    md = tmp_path / "RESULTS.md"
    result = runner.invoke(app, ["bench", "--json", "--quick", "--no-corpus", "--sizes",
                                 "32M,64M", "--out", str(tmp_path), "--results", str(md)])
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("ratio_overall", "ratio_by_op", "tib_churn_seconds", "tib_churn_peak_rss_bytes",
                "ops_per_second", "growth", "fault_unmap_per_second"):
        assert key in s
    assert s["ratio_overall"] is None and s["ratio_by_op"] == {}  # --no-corpus
    assert s["tib_churn_seconds"] is None  # no 1 TiB size asked for
    assert [g["size_bytes"] for g in s["growth"]] == [32 * MiB, 64 * MiB]
    for g in s["growth"]:
        assert g["ops"] > 0 and g["seconds"] > 0 and g["peak_rss_bytes"] > 0
    assert s["fault_unmap_per_second"] > 0
    assert (tmp_path / "growth.png").stat().st_size > 0
    assert json.loads((tmp_path / "bench.json").read_text())["growth"] == s["growth"]
    text = md.read_text()
    assert "## 3. Growth" in text and "growth.png" in text
    assert "folios/s (median of 7 batches of 4,096;" in text  # --quick batches
    # re-render from the saved figures, measuring nothing
    md2 = tmp_path / "again.md"
    saved = tmp_path / "saved.json"
    saved.write_text((tmp_path / "bench.json").read_text())
    result = runner.invoke(app, ["bench", "--from-json", str(saved), "--out", str(tmp_path),
                                 "--results", str(md2)])
    assert result.exit_code == 0, result.output
    assert md2.read_text().split("## 3. Growth")[1] == text.split("## 3. Growth")[1]


def test_results_keep_the_hand_written_history(tmp_path: Path) -> None:
    """--results rewrites the generated sections and keeps the '## History' part as it was."""
    saved = tmp_path / "bench.json"
    repo = Path(__file__).parents[1]
    saved.write_text((repo / "benchmarks" / "bench.json").read_text())
    md = tmp_path / "RESULTS.md"
    history = "## History (by hand)\n\n| row |\n|---|\n| kept |\n\nA paragraph.\n"
    md.write_text("# stale generated part\n\n" + history)
    result = runner.invoke(app, ["bench", "--from-json", str(saved), "--out", str(tmp_path),
                                 "--results", str(md)])
    assert result.exit_code == 0, result.output
    text = md.read_text()
    assert "stale generated part" not in text
    assert text.startswith("# Benchmark results") and text.endswith("\n\n" + history)
    assert text.count("## History") == 1
    # a file without the section gets none
    md.write_text("# old\n")
    runner.invoke(app, ["bench", "--from-json", str(saved), "--out", str(tmp_path),
                        "--results", str(md)])
    assert "## History" not in md.read_text()


def test_quick_run_leaves_the_full_run_files_alone(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --out, --quick writes to benchmarks/quick/, not over benchmarks/bench.json."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "benchmarks").mkdir()
    full = tmp_path / "benchmarks" / "bench.json"
    full.write_text("{}")
    result = runner.invoke(app, ["bench", "--quick", "--no-corpus", "--sizes", "32M,64M"])
    assert result.exit_code == 0, result.output
    assert full.read_text() == "{}"
    quick = json.loads((tmp_path / "benchmarks" / "quick" / "bench.json").read_text())
    assert [g["size_bytes"] for g in quick["growth"]] == [32 * MiB, 64 * MiB]
    assert (tmp_path / "benchmarks" / "quick" / "growth.png").stat().st_size > 0


def test_memory_breakdown_and_vma_scaling() -> None:
    from foliosim.bench.profile import memory_breakdown, vma_scaling
    from foliosim.mm.system import System, ThpSettings

    s = System(ThpSettings())
    p = s.process("main")
    a = p.mmap_region(4 * MiB)
    p.madvise(a, 4 * MiB, "hugepage")
    p.write(a, 4 * MiB, 1)
    m = memory_breakdown(s)
    assert m["folios_live"] == 2 and m["pmd_leaves"] == 2 and m["vmas"] == 3  # 2 guards
    assert [n for n, _ in vma_scaling((4, 8), samples=4)] == [12, 24]


def test_bench_rejects_bad_sizes(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "--sizes", "1K", "--out", str(tmp_path)])
    assert result.exit_code == 2


@pytest.mark.parametrize(("args", "says"), [
    (["--profile", "abc"], "--profile: expected a size"),
    (["--profile", "1M"], "--profile: give sizes of at least 2M"),
    (["--from-json", "{dir}/bad.json"], "bad.json: not valid JSON"),
    (["--from-json", "{dir}/list.json"], "list.json: not a bench.json"),
])
def test_bench_names_the_bad_option_or_file(tmp_path: Path, args: list[str], says: str
                                            ) -> None:
    (tmp_path / "bad.json").write_text("{bad")
    (tmp_path / "list.json").write_text("[]")
    argv = ["bench", "--no-corpus", "--out", str(tmp_path)] + [
        a.format(dir=tmp_path) for a in args]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2
    assert says in result.output
    assert "Traceback" not in result.output


def test_time_by_kind_table_costliest_first() -> None:
    from foliosim.bench.results import _time_by_kind

    lines = _time_by_kind({"seconds_by_kind": {"munmap": 1.0, "fork": 3.0, "write": 0.004},
                           "ops_by_kind": {"munmap": 4, "fork": 2, "write": 10}})
    rows = [line for line in lines if line.startswith("| ") and "s |" in line]
    assert rows == ["| fork | 2 | 3.00 s | 75% | 1.50 s |",
                    "| munmap | 4 | 1.00 s | 25% | 250.0 ms |",
                    "| write | 10 | 0.00 s | 0% | 400 us |"]
    assert _time_by_kind({"ops_by_kind": {"fork": 1}}) == []  # figures saved before timing
