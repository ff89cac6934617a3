"""``foliosim bench``: the simulator beside the live kernel (scenario corpus, sim/native time
per step), the 1 TiB churn, its growth from 1 GiB, and whole-folio fault+unmap throughput
(issue 6). Figures, not tests: nothing here fails on a missed target."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from foliosim.cli import BadInput, guarded, out, write_atomically

__all__ = ["bench", "register"]

FULL_SIZES = "1G,16G,256G,1T"
QUICK_SIZES = "1G,4G,16G"
FULL_OUT = Path("benchmarks")
QUICK_OUT = FULL_OUT / "quick"  # ignored by git


def _sizes(text: str, option: str = "--sizes") -> list[int]:
    """The sizes of a comma-separated ``option`` value, each at least 2 MiB, sorted."""
    from foliosim.scenario.model import parse_size

    try:
        sizes = [parse_size(x.strip()) for x in text.split(",") if x.strip()]
    except (ValueError, TypeError) as e:
        raise BadInput(f"{option}: {e}") from None
    if not sizes or any(s < (2 << 20) for s in sizes):
        raise BadInput(f"{option}: give sizes of at least 2M, e.g. 1G,16G,256G,1T")
    return sorted(set(sizes))


def bench(
    quick: Annotated[bool, typer.Option("--quick", help="a quarter of the corpus, churn at "
                                        f"{QUICK_SIZES} (no 1 TiB), fewer fault+unmaps")]
        = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as one JSON "
                                          "object (progress goes to stderr)")] = False,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", "-o", help="directory for growth.png and bench.json (default benchmarks/, "
        "with --quick benchmarks/quick/: a quick run leaves the full run's files alone)")]
        = None,
    sizes: Annotated[str | None, typer.Option("--sizes", help="churn sizes, comma-separated "
                                              f"(default {FULL_SIZES})")] = None,
    corpus: Annotated[bool, typer.Option("--corpus/--no-corpus",
                                         help="run part 1 (needs the live kernel)")] = True,
    results: Annotated[Path | None, typer.Option(
        "--results", help="also write the figures as markdown here (benchmarks/RESULTS.md); "
        "a '## History' section already there, written by hand, is kept at the end")]
        = None,
    profile: Annotated[str | None, typer.Option("--profile", help="also profile the churn at "
                                                "this size (e.g. 16G) and list the hot spots")]
        = None,
    seed: Annotated[int, typer.Option("--seed", help="seed of the churn")] = 1,
    from_json: Annotated[Path | None, typer.Option("--from-json", help="measure nothing: take "
                                                   "the figures of a saved bench.json (to "
                                                   "re-render or re-profile)")] = None,
) -> None:
    """Benchmark the simulator: sim/native time per step on the scenario corpus, the 1 TiB
    churn (wall time, operations/s, peak RSS), its growth, and whole-folio fault+unmap/s."""
    from foliosim.bench import churn as ch
    from foliosim.bench import results as rs

    size_list = _sizes(sizes or (QUICK_SIZES if quick else FULL_SIZES))
    prof_size = _sizes(profile, "--profile")[0] if profile else None
    if out_dir is None:
        out_dir = QUICK_OUT if quick else FULL_OUT
        out_dir.mkdir(parents=True, exist_ok=True)
    if not out_dir.is_dir():
        if not out_dir.parent.is_dir():
            raise BadInput(f"{out_dir}: directory {str(out_dir.parent)!r} does not exist")
        out_dir.mkdir()
    if results is not None and not results.parent.is_dir():
        raise BadInput(f"{results}: directory {str(results.parent)!r} does not exist")
    say = Console(stderr=True, highlight=False) if as_json else out

    def log(msg: str) -> None:
        say.print(msg, markup=False, soft_wrap=True)

    if from_json is not None:
        try:
            summary = json.loads(from_json.read_text())
        except FileNotFoundError:
            raise BadInput(f"{from_json}: no such file") from None
        except json.JSONDecodeError as e:
            raise BadInput(f"{from_json}: not valid JSON ({e})") from None
        if not isinstance(summary, dict) or "growth" not in summary:
            raise BadInput(f"{from_json}: not a bench.json of foliosim bench")
    else:
        summary = _measure(size_list, quick, corpus, seed, log, say)

    hot = summary.get("hot_spots_markdown")
    if prof_size:
        from foliosim.bench.profile import profile_report

        cfg = ch.ChurnConfig(prof_size, seed=seed)
        log(f"profiling the churn at {rs.human(prof_size)}")
        hot, spots = profile_report(cfg)
        for h in spots[:5]:
            log(f"   {h.name}: {h.self_seconds:.2f} s own; {' > '.join(h.path)}")

    if hot:
        summary["hot_spots_markdown"] = hot
    growth = summary["growth"]
    if len(growth) > 1:
        summary["plot"] = str(out_dir / "growth.png")
    write_atomically(out_dir / "bench.json", json.dumps(summary, indent=1) + "\n")
    if len(growth) > 1:
        rs.plot_growth(growth, out_dir / "growth.png")
        log(f"plot: {summary['plot']}")
    if results is not None:
        rel = None
        if "plot" in summary:
            try:
                rel = str(Path(summary["plot"]).resolve().relative_to(results.parent.resolve()))
            except ValueError:
                rel = str(Path(summary["plot"]).resolve())
        old = results.read_text() if results.is_file() else ""
        write_atomically(results, rs.render_markdown(summary, plot=rel, hot_spots=hot)
                         + rs.kept_history(old))
        log(f"results: {results}")
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        _print_summary(summary)


def _bar(console: Console) -> Progress:
    """A progress bar on ``console`` (gone when done; off when it is not a terminal). It is
    drawn only when told (:func:`_set_done`), between the steps being timed: a refresh
    thread would take the interpreter from the simulator while it is timed."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=True, auto_refresh=False,
                    disable=not console.is_terminal)


def _set_done(bar: Progress, task: TaskID, done: int, total: int | None,
              description: str | None = None) -> None:
    """Move ``task`` of ``bar`` to ``done`` of ``total`` and redraw."""
    bar.update(task, completed=done, total=total, description=description)
    bar.refresh()


def _measure(size_list: list[int], quick: bool, corpus: bool, seed: int,
             log: Callable[[str], None], console: Console) -> dict[str, Any]:
    """Parts 1-4: the corpus beside the kernel, the churn at every size, fault+unmap, with
    progress bars on ``console``."""
    from foliosim.bench import churn as ch
    from foliosim.bench import corpus as cp
    from foliosim.bench import faultunmap
    from foliosim.bench import results as rs

    corpus_res = None
    if corpus:
        files = cp.corpus_files(quick=quick)
        log(f"1. corpus: {len(files)} scenarios on the simulator (warm) and the live kernel")
        with _bar(console) as bar:
            task = bar.add_task("corpus", total=len(files))

            def scenario_done(name: str, k: int, n: int) -> None:
                _set_done(bar, task, k, n, f"corpus: {name}")

            corpus_res = cp.run_corpus(files, progress=scenario_done)
        if corpus_res.unavailable:
            log(f"   skipped: the live kernel is unavailable here ({corpus_res.unavailable})")
        else:
            by_op = corpus_res.ratio_by_op
            log(f"   sim/native overall {corpus_res.ratio_overall:.2f} over "
                f"{corpus_res.steps} steps; by op: "
                + ", ".join(f"{k} {v:.2f}" for k, v in sorted(by_op.items(), key=lambda x: -x[1])))
            for s in corpus_res.skipped:
                log(f"   not compared: {s}")

    growth: list[Any] = []
    log(f"2/3. churn at {', '.join(rs.human(s) for s in size_list)} (each in a subprocess)")
    with _bar(console) as bar:
        for size in size_list:
            task = bar.add_task(f"churn at {rs.human(size)} (regions populated, then visited)",
                                total=None)
            r = ch.run_in_subprocess(ch.ChurnConfig(size, seed=seed),
                                     progress=partial(_set_done, bar, task))
            bar.remove_task(task)
            growth.append(r)
            log(f"   {rs.human(size)}: {r.ops:,} ops in {r.seconds:,.1f} s "
                f"({r.ops_per_second:,.0f} ops/s), peak RSS {rs.human(r.peak_rss_bytes)}, "
                f"{rs.human(r.bytes_per_gib)} per simulated GiB, "
                f"{r.small_page_fraction:.0%} of resident memory in small pages")

    log("4. whole-folio fault+unmap")
    fu = faultunmap.fault_unmap(batch=4096 if quick else 16384)
    log(f"   {fu.per_second:,.0f} folios/s in batches ({fu.folios:,} THPs), "
        f"{fu.single_per_second:,.0f}/s one at a time")

    return rs.summary(corpus_res, growth, fu, rs.machine())


def _print_summary(s: dict[str, Any]) -> None:
    from foliosim.bench.results import human

    def fmt(v: Any, f: str) -> str:
        return "n/a" if v is None else format(v, f)

    out.print(f"sim/native overall {fmt(s['ratio_overall'], '.2f')} (target <= 1.0), "
              f"max by op {fmt(max(s['ratio_by_op'].values(), default=None), '.2f')} "
              "(target <= 10)", markup=False)
    if s["tib_churn_seconds"] is not None:
        out.print(f"1 TiB churn: {s['tib_churn_seconds']:,.1f} s (target <= 60), peak RSS "
                  f"{human(s['tib_churn_peak_rss_bytes'])} (target <= 4 GiB), "
                  f"{s['ops_per_second']:,.0f} ops/s", markup=False)
    out.print(f"fault+unmap: {fmt(s['fault_unmap_per_second'], ',.0f')}/s (target >= 200,000)",
              markup=False)


def register(app: typer.Typer) -> None:
    """Add ``bench`` to the command line."""
    app.command("bench")(guarded(bench))
