"""``foliosim fuzz``: random valid scenarios on the simulator and the live kernel, compared;
every disagreement is shrunk and saved as a scenario file (:mod:`foliosim.fuzz`)."""

from __future__ import annotations

import random
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

from foliosim.cli import EXIT_AGREE, EXIT_DIFFER, BadInput, guarded, out

__all__ = ["fuzz", "register"]

EXIT_INTERRUPTED = 130


def fuzz(
    count: Annotated[int, typer.Option("--count", "-n", min=1,
                                       help="how many random scenarios")] = 100,
    seed: Annotated[int | None, typer.Option("--seed", "-s",
                                             help="seed of the scenarios (default: random)")]
        = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o",
                                          help="directory for the disagreeing scenarios")]
        = Path("fuzz-out"),
    swap: Annotated[bool, typer.Option("--swap",
                                       help="also draw scenarios with a swap file (slow)")]
        = False,
    shrink: Annotated[bool, typer.Option("--shrink/--no-shrink",
                                         help="shrink disagreements to their fewest steps")]
        = True,
) -> None:
    """Run random scenarios on the simulator and the live kernel and compare them; save every
    disagreement, shrunk to the fewest steps that still disagree, as a scenario file in --out.
    Exit status 0 when every scenario agreed, 1 otherwise."""
    from foliosim.fuzz import runner
    from foliosim.fuzz.runner import FuzzResult, TargetUnavailable, describe_difference

    if out_dir.exists() and not out_dir.is_dir():
        raise BadInput(f"{out_dir}: exists and is not a directory")
    if not out_dir.parent.is_dir():
        raise BadInput(f"{out_dir}: directory {str(out_dir.parent)!r} does not exist")
    if seed is None:
        seed = random.SystemRandom().randrange(1 << 31)
    try:
        judge = runner.live_judge()
    except TargetUnavailable as e:
        raise BadInput(str(e)) from None
    out.print(f"fuzz: {count} scenarios, seed {seed}, disagreements to {out_dir}/",
              markup=False, soft_wrap=True)
    tally = {"agree": 0, "differ": 0, "flaky": 0, "error": 0}

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[tally]}"), TimeElapsedColumn(), console=out,
                  transient=True, disable=not out.is_terminal) as progress:
        task = progress.add_task(f"fuzz seed {seed}", total=count, tally="")

        def on_status(text: str) -> None:
            progress.update(task, description=text)

        def on_result(r: FuzzResult) -> None:
            tally[r.status] += 1
            done = sum(tally.values())
            progress.update(task, advance=1, tally=f"{tally['agree']}/{done} agree")
            if r.duplicate_of:
                out.print(f"{r.name}: {r.status}, shrinks to the same steps as "
                          f"{r.duplicate_of}: {r.path}", markup=False, soft_wrap=True)
            elif r.status == "differ":
                steps = len((r.shrunk or r.doc)["steps"])
                out.print(f"{r.name}: {len(r.diffs)} difference{'s' * (len(r.diffs) > 1)}; "
                          f"{steps} steps still differ: {r.path}", markup=False, soft_wrap=True)
                for d in r.shrunk_diffs[:5] or r.diffs[:5]:
                    out.print(f"  {describe_difference(d)}", markup=False, soft_wrap=True)
            elif r.status == "flaky":
                out.print(f"{r.name}: timing dependent ({r.message}): {r.path}",
                          markup=False, soft_wrap=True)
            elif r.status == "error":
                out.print(f"{r.name}: a run failed: {r.message}: {r.path}",
                          markup=False, soft_wrap=True)
            if not out.is_terminal and done % 50 == 0 and done < count:
                out.print(f"... {done} scenarios, {tally['agree']} agree",
                          markup=False, soft_wrap=True)

        try:
            report = runner.fuzz(count, seed, out_dir, judge=judge, swap=swap, shrink=shrink,
                              on_result=on_result, on_status=on_status)
        except TargetUnavailable as e:
            raise BadInput(str(e)) from None
        except KeyboardInterrupt:
            progress.stop()
            done = sum(tally.values())
            out.print(f"interrupted after {done} scenarios: {tally['agree']} agree, "
                      f"{tally['differ']} differ, {tally['flaky']} timing dependent, "
                      f"{tally['error']} failed to run", markup=False, soft_wrap=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
    out.print(report.summary(), markup=False, soft_wrap=True)
    raise typer.Exit(EXIT_AGREE if report.count("agree") == len(report.results)
                     else EXIT_DIFFER)


def register(app: typer.Typer) -> None:
    """Add ``fuzz`` to the command line."""
    app.command("fuzz")(guarded(fuzz))
