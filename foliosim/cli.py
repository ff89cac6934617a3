"""The ``foliosim`` command line: run a scenario on a target, diff targets, show observations.

No model logic lives here: commands load input (:mod:`foliosim.scenario`,
:func:`foliosim.compare.load_observations`), call a target, :func:`foliosim.compare.compare`
and :mod:`foliosim.show`. Bad input of any kind ends with one message naming the file, line,
step and field, and exit status 2; disagreement between targets is exit status 1.

Later commands (compare, bench, fuzz, ...) live in their own modules, each with a
``register(app: typer.Typer) -> None`` that adds its command with the helpers below
(:func:`guarded`, :func:`target_module`, :data:`out`); list the module in
:data:`COMMAND_MODULES`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import tempfile
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, TypeVar

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from foliosim.scenario import Scenario, ScenarioError, load_scenario

__all__ = ["COMMAND_MODULES", "BadInput", "app", "guarded", "out", "target_module"]

EXIT_AGREE, EXIT_DIFFER, EXIT_BAD_INPUT = 0, 1, 2
SCENARIO_SUFFIXES = (".yaml", ".yml")
COMMAND_MODULES: tuple[str, ...] = ("foliosim.commands.compare", "foliosim.commands.fuzz",
                                     "foliosim.commands.bench")

app = typer.Typer(
    name="foliosim",
    help="Linux 6.18 anonymous large folios: run scenarios on the simulator or the live "
         "kernel and compare what they observe.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


class BadInput(Exception):
    """Input the command refuses (arguments, files, an unavailable target): exit status 2."""


F = TypeVar("F", bound=Callable[..., Any])


def guarded(command: F) -> F:
    """Turn bad input raised by ``command`` into one message on stderr and exit status 2,
    without a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (BadInput, ScenarioError) as e:
            message = str(e)
        except ValidationError as e:
            message = str(e).splitlines()[0] if str(e) else "invalid input"
        except yaml.YAMLError as e:
            message = f"not valid YAML: {e}"
        except json.JSONDecodeError as e:
            message = f"not valid JSON: {e.msg} at line {e.lineno}"
        except OSError as e:
            message = f"{e.filename or ''}: {e.strerror or e}".lstrip(": ")
        err.print(f"error: {message}", markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT)

    return wrapper  # type: ignore[return-value]


class Target(StrEnum):
    """Where a scenario runs."""

    sim = "sim"
    live = "live"


def target_module(target: Target) -> ModuleType:
    """Import a target lazily; the live one must also say it can run here.

    :raises BadInput: when the target is not installed or the live kernel cannot be used
    """
    name = f"foliosim.targets.{target.value}"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is None or not name.startswith(e.name):
            raise
        raise BadInput(f"the {target.value} target is not available: {e}") from None
    if target is Target.live:
        reason = module.unavailable_reason()
        if reason:
            raise BadInput(f"the live target is unavailable: {reason}")
    return module


def run_on(module: ModuleType, target: Target, scenario: Scenario, *,
           explain: bool = False) -> dict[str, Any]:
    """One run of ``scenario``; a live target that turns out unavailable is bad input."""
    if target is Target.sim:
        return module.run(scenario, explain=explain)
    try:
        return module.run(scenario)
    except module.LiveUnavailable as e:
        raise BadInput(f"the live target is unavailable: {e}") from None


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``, so that
    ``path`` holds either its old content or all of the new."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@app.command()
@guarded
def run(
    file: Annotated[Path, typer.Argument(help="scenario file (YAML)", show_default=False)],
    target: Annotated[Target, typer.Option("--target", "-t", help="where to run it")]
        = Target.sim,
    as_json: Annotated[bool, typer.Option("--json", help="print the observation document")]
        = False,
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="write the observation document here")]
        = None,
    explain: Annotated[bool, typer.Option("--explain",
                                          help="show why the simulator did what it did")]
        = False,
) -> None:
    """Run one scenario on a target and show or save what it observed."""
    if explain and target is not Target.sim:
        raise BadInput("--explain needs --target sim: only the simulator explains its steps")
    if output is not None and not output.parent.is_dir():
        raise BadInput(f"{output}: directory {str(output.parent)!r} does not exist")
    scenario = load_scenario(file)
    module = target_module(target)
    doc = run_on(module, target, scenario, explain=explain)
    text = json.dumps(doc, indent=1) + "\n"
    if output is not None:
        write_atomically(output, text)
    if as_json:
        typer.echo(text, nl=False)
    else:
        from foliosim.show import render_document

        render_document(doc, out, explain=explain)


@app.command()
@guarded
def diff(
    paths: Annotated[list[Path], typer.Argument(
        help="scenario files, directories of *.yaml, or pairs of observation files (.json)",
        show_default=False)],
) -> None:
    """Run scenarios on both targets, or take two observation files; report every difference."""
    from foliosim.compare import compare, load_observations
    from foliosim.show import render_differences

    scenarios, json_files = _diff_inputs(paths)
    pairs = [(fa, fb, load_observations(fa), load_observations(fb))
             for fa, fb in zip(json_files[::2], json_files[1::2], strict=True)]
    sim = live = None
    if scenarios:
        sim, live = target_module(Target.sim), target_module(Target.live)
    agree = differ = 0

    def report(name: str, a_name: str, b_name: str, diffs: list) -> None:
        nonlocal agree, differ
        if not diffs:
            agree += 1
            out.print(f"{name}: agree", markup=False, soft_wrap=True)
            return
        differ += 1
        out.print(f"{name}: {len(diffs)} difference{'s' if len(diffs) > 1 else ''}",
                  markup=False, soft_wrap=True)
        render_differences(diffs, out, a_name, b_name)

    for fa, fb, a, b in pairs:
        name = a.get("scenario", fa.stem)
        if b.get("scenario") != a.get("scenario"):
            name = f"{a.get('scenario')} vs {b.get('scenario')}"
        names = (a.get("target"), b.get("target"))
        if names[0] == names[1] or not all(names):
            names = (str(fa), str(fb))
        report(name, str(names[0]), str(names[1]), compare(a, b))

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=out, transient=True, disable=not out.is_terminal) as progress:
        task = progress.add_task("diff", total=len(scenarios))
        for path, scenario in scenarios:
            progress.update(task, description=scenario.name)
            try:
                a = run_on(sim, Target.sim, scenario)
                b = run_on(live, Target.live, scenario)
            except BadInput:
                raise
            except Exception as e:  # one broken run must not hide the other scenarios' results
                differ += 1
                out.print(f"{scenario.name}: the run failed ({path}): {type(e).__name__}: {e}",
                          markup=False, soft_wrap=True)
            else:
                report(scenario.name, "sim", "live", compare(a, b))
            progress.advance(task)

    total = agree + differ
    out.print(f"{total} scenarios, {agree} agree, {differ} differ", markup=False, soft_wrap=True)
    raise typer.Exit(EXIT_DIFFER if differ else EXIT_AGREE)


def _diff_inputs(paths: list[Path]) -> tuple[list[tuple[Path, Scenario]], list[Path]]:
    """Scenarios to run (every one loaded before anything runs) and observation files to
    compare, decided per argument by its suffix."""
    scenario_files: list[Path] = []
    json_files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix in SCENARIO_SUFFIXES)
            if not found:
                raise BadInput(f"{p}: the directory holds no scenario file (*.yaml)")
            scenario_files.extend(found)
        elif p.suffix == ".json":
            json_files.append(p)
        elif p.suffix in SCENARIO_SUFFIXES:
            scenario_files.append(p)
        else:
            raise BadInput(f"{p}: expected a scenario file (.yaml, .yml), a directory of them, "
                           "or observation files (.json)")
    if len(json_files) % 2:
        raise BadInput(f"observation files (.json) are compared in pairs; got {len(json_files)}: "
                       + " ".join(map(str, json_files)))
    return [(f, load_scenario(f)) for f in scenario_files], json_files


@app.command()
@guarded
def show(
    file: Annotated[Path, typer.Argument(help="observation file (.json)", show_default=False)],
) -> None:
    """Show a saved observation file as tables."""
    from foliosim.compare import load_observations
    from foliosim.show import render_document

    render_document(load_observations(file), out, explain=True)


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)
