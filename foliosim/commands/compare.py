"""``foliosim compare``: run the policies of issue 4 on every workload and seed of a preset,
with the oracle and the metrics, and write the comparison report."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from foliosim.cli import BadInput, guarded, out

__all__ = ["Preset", "register"]


class Preset(StrEnum):
    """How much to run (see :data:`foliosim.experiments.suite.PRESETS`)."""

    quick = "quick"
    standard = "standard"
    full = "full"


def compare(
    preset: Annotated[Preset, typer.Option("--preset", "-p",
                                           help="quick (< 2 min), standard (< 10 min), full")]
        = Preset.quick,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="directory for the report")]
        = Path("foliosim-report"),
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=0,
                                      help="worker processes (0: one per CPU)")] = 0,
) -> None:
    """Compare the thread's policies on seeded workloads and write the report.

    Runs linux-6.18, split-on-cut, split-or-copy, copy-unsafe, deferred-rmap-check,
    mlock-split and linux-6.11 on every workload and seed of the preset, with the data
    oracle and a THP-disabled control, then writes report.md, report.html, summary.json and
    PNG figures to --out.
    """
    from foliosim.experiments.suite import PRESETS, run_suite
    from foliosim.report import verdicts, write_report

    if out_dir.exists() and not out_dir.is_dir():
        raise BadInput(f"{out_dir}: exists and is not a directory")
    chosen = PRESETS[preset.value]
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=out, transient=True,
                  disable=not out.is_terminal) as progress:
        task = progress.add_task(f"compare ({chosen.name})", total=chosen.nruns)

        def advance(what: str, n: int) -> None:
            progress.update(task, advance=n, description=f"compare ({chosen.name}): {what}")

        suite = run_suite(chosen, jobs=jobs or None, progress=advance)
    paths = write_report(suite, out_dir)
    for v in verdicts(suite):
        mark = "keeps rules 1-3" if v.keeps_all else f"{v.rule1}; {v.rule2}; {v.rule3}"
        if v.keeps_all and v.totals["corruptions_by_model"]:
            mark += (f", but the model alone corrupted {v.totals['corruptions_by_model']} "
                     "pages (a model bug; see the report)")
        out.print(f"{v.policy}: {mark}", markup=False, soft_wrap=True)
    out.print(f"{len(suite.runs) + len(suite.controls)} runs in {suite.seconds:.1f} s; "
              f"report: {paths['report.md']} and {paths['report.html']}, "
              f"totals: {paths['summary.json']}", markup=False, soft_wrap=True)


HELP = ("Compare the thread's policies on seeded workloads and write the report.\n\n"
        "Runs linux-6.18, split-on-cut, split-or-copy, copy-unsafe, deferred-rmap-check, "
        "mlock-split and linux-6.11 on every workload and seed of the preset, with the data "
        "oracle and a THP-disabled control, then writes report.md, report.html, summary.json "
        "and PNG figures to --out.")


def register(app: typer.Typer) -> None:
    """Add ``compare`` to the command line."""
    app.command("compare", help=HELP)(guarded(compare))
