"""The fuzzing loop: generate, run on both targets, compare, shrink and save disagreements.

A scenario whose two runs differ is run twice more: when a later comparison does not list the
same differences, the live kernel answered differently to the same scenario (timing, or other
processes moving the global counters). It then gets one more attempt of three runs, which
decides when they all agree, or all list the same differences (``retried``); else its outcome
is timing dependent (status ``flaky``; saved under ``DIR/flaky/``, not shrunk).

A repeatable disagreement is shrunk (:mod:`foliosim.fuzz.shrink`), keeping only variants that
still differ in at least one of the fields the original differed in. The shrunk scenario must
repeat its differences twice more (else the whole scenario is kept); it is saved as
``DIR/<name>.yaml`` with the differences in its description and in comments at the top,
unless an earlier scenario shrank to the same steps. A run that raises (a model crash, a
failed live run) is shrunk to the fewest steps raising the same exception type and saved
under ``DIR/errors/``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foliosim.compare import Difference, compare
from foliosim.fuzz.generate import generate, load, scenario_yaml
from foliosim.fuzz.shrink import Shrinker
from foliosim.scenario import Scenario

__all__ = [
    "FuzzReport", "FuzzResult", "Judge", "TargetUnavailable", "describe_difference", "fuzz",
    "live_judge", "save",
]

Doc = dict[str, Any]
#: runs a scenario on both targets and returns their differences (sim first, live second)
Judge = Callable[[Scenario], list[Difference]]


class TargetUnavailable(Exception):
    """A target cannot run here at all: the fuzzing run stops (every other exception of a run
    ends only that scenario)."""


def live_judge() -> Judge:
    """Compare the simulator with this machine's live kernel (import both targets).

    :raises TargetUnavailable: now when the live kernel cannot be used, or later from a run
    """
    from foliosim.targets import live, sim

    reason = live.unavailable_reason()
    if reason:
        raise TargetUnavailable(f"the live target is unavailable: {reason}")

    def judge(scenario: Scenario) -> list[Difference]:
        a = sim.run(scenario)
        try:
            b = live.run(scenario)
        except live.LiveUnavailable as e:
            raise TargetUnavailable(f"the live target is unavailable: {e}") from None
        return compare(a, b)

    return judge


@dataclass
class FuzzResult:
    """What happened to one random scenario.

    :param status: ``agree``, ``differ``, ``flaky`` (the live kernel answered differently to a
        second run) or ``error`` (a run failed)
    :param diffs: the differences of the scenario as generated (for ``flaky``, of its first run)
    :param shrunk: the shrunk scenario, for ``differ``
    :param shrunk_diffs: its differences
    :param path: the file it was saved to (for a duplicate, the earlier one's)
    :param tests: runs the shrinker made
    :param duplicate_of: name of an earlier scenario that shrank to the same steps
    :param retried: the first runs did not repeat, a second attempt of three runs decided
    """

    index: int
    name: str
    status: str
    doc: Doc
    diffs: list[Difference] = field(default_factory=list)
    shrunk: Doc | None = None
    shrunk_diffs: list[Difference] = field(default_factory=list)
    path: Path | None = None
    message: str = ""
    tests: int = 0
    duplicate_of: str = ""
    retried: bool = False


@dataclass
class FuzzReport:
    """All results of one fuzzing run."""

    seed: int
    results: list[FuzzResult] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def rate(self) -> float:
        """Share of the scenarios whose simulator and live runs agreed."""
        return self.count("agree") / len(self.results) if self.results else 1.0

    @property
    def repeatable_rate(self) -> float:
        """Share of agreeing scenarios among those whose live outcome repeated (not flaky)."""
        n = len(self.results) - self.count("flaky")
        return self.count("agree") / n if n else 1.0

    def summary(self) -> str:
        n = len(self.results)
        text = (f"{n} scenarios (seed {self.seed}): {self.count('agree')} agree, "
                f"{self.count('differ')} differ, {self.count('flaky')} timing dependent, "
                f"{self.count('error')} failed to run; agreement {100 * self.rate:.1f}%")
        if self.count("flaky"):
            text += f" ({100 * self.repeatable_rate:.1f}% of those with a repeatable outcome)"
        retried = sum(r.retried for r in self.results)
        if retried:
            text += f"; {retried} decided on a second attempt"
        return text


def describe_difference(d: Difference) -> str:
    """``o1 main/a pages 0-511 mapcount: sim=1 live=2``."""
    where = "/".join(x for x in (d.process, d.region) if x)
    return " ".join(x for x in (d.observation, where, d.where) if x) + \
        f" {d.field}: sim={d.a!r} live={d.b!r}"


def _signature(diffs: list[Difference]) -> set[str]:
    """The fields that differ, whatever observation, step or page they are in."""
    return {d.field for d in diffs}


def _same(a: list[Difference], b: list[Difference]) -> bool:
    return [tuple(map(repr, d)) for d in a] == [tuple(map(repr, d)) for d in b]


#: runs of a disagreeing scenario (the first one included) that must list the same differences
REPEATS = 3
#: attempts of REPEATS runs more for a scenario whose first runs did not repeat
RETRIES = 1


def _repeat(judge: Judge, doc: Doc, diffs: list[Difference]) -> list[Difference] | None:
    """Run ``doc`` until it has been run :data:`REPEATS` times; the first list of differences
    that is not ``diffs``, or None when every run repeated them."""
    for _ in range(REPEATS - 1):
        again = judge(load(doc, doc["name"]))
        if not _same(diffs, again):
            return again
    return None


def _classify(judge: Judge, doc: Doc
              ) -> tuple[str, list[Difference], list[Difference], bool]:
    """``agree``, ``differ`` or ``flaky``; the differences; for ``flaky`` a later list that
    differs from them; whether a second attempt decided (see the module docstring)."""
    diffs = judge(load(doc, doc["name"]))
    if not diffs:
        return "agree", [], [], False
    other = _repeat(judge, doc, diffs)
    if other is None:
        return "differ", diffs, [], False
    for _ in range(RETRIES):
        first = judge(load(doc, doc["name"]))
        if _repeat(judge, doc, first) is None:
            return ("differ" if first else "agree"), first, [], True
    return "flaky", diffs, other, False


def canonical(doc: Doc) -> str:
    """The scenario with its names replaced in order of first appearance (regions ``r0``...,
    processes ``c0``..., pins ``p0``..., labels ``o0``...): equal for two scenarios that shrank
    to the same steps."""
    names: dict[tuple[str, str], str] = {}

    def rename(kind: str, name: str) -> str:
        return names.setdefault((kind, name), f"{kind[0]}{sum(k == kind for k, _ in names)}")

    kinds = {"region": "region", "to": "region", "child": "child", "proc": "child",
             "id": "pin", "label": "observation"}
    steps = []
    for step in doc["steps"]:
        steps.append({k: rename(kinds[k], v) if k in kinds and v != "main" else v
                      for k, v in step.items()})
    return scenario_yaml({"name": "x", "settings": doc.get("settings"), "steps": steps})


def fuzz(count: int, seed: int, out: Path, *, judge: Judge | None = None, swap: bool = False,
         shrink: bool = True, max_tests: int = 200,
         on_result: Callable[[FuzzResult], None] | None = None,
         on_status: Callable[[str], None] | None = None) -> FuzzReport:
    """Run ``count`` random scenarios of ``seed`` on both targets and save every disagreement.

    :param out: directory for the shrunk disagreeing scenarios (created when missing)
    :param judge: how a scenario is run and compared (default :func:`live_judge`)
    :param on_result: called after each scenario with its result
    :param on_status: called with a short text of what is running (for a progress bar)
    """
    judge = judge or live_judge()
    report = FuzzReport(seed)
    seen: dict[str, FuzzResult] = {}
    for index in range(count):
        doc = generate(seed, index, swap=swap)
        if on_status:
            on_status(doc["name"])
        result = check(index, doc, judge, out, seed=seed, shrink=shrink, max_tests=max_tests,
                       on_status=on_status, seen=seen)
        report.results.append(result)
        if on_result:
            on_result(result)
    return report


def check(index: int, doc: Doc, judge: Judge, out: Path, *, seed: int, shrink: bool = True,
          max_tests: int = 200, on_status: Callable[[str], None] | None = None,
          seen: dict[str, FuzzResult] | None = None) -> FuzzResult:
    """Run one generated scenario; classify, shrink and save it (see the module docstring).

    ``seen`` maps :func:`canonical` forms of the scenarios saved so far to their results: a
    scenario that shrinks to one of them is reported as its duplicate and not saved again.
    """
    name = doc["name"]
    seen = {} if seen is None else seen
    try:
        status, diffs, other, retried = _classify(judge, doc)
    except TargetUnavailable:
        raise
    except Exception as e:
        return _error(index, doc, e, judge, out, seed=seed, shrink=shrink, max_tests=max_tests,
                      on_status=on_status, seen=seen)
    if status == "agree":
        return FuzzResult(index, name, "agree", doc, retried=retried)
    if status == "flaky":
        result = FuzzResult(index, name, "flaky", doc, diffs, message=_flaky_note(diffs, other))
        result.path = save(out / "flaky", doc, diffs, seed=seed, index=index,
                           note=f"timing dependent: {result.message}")
        return result
    result = FuzzResult(index, name, "differ", doc, diffs, retried=retried)
    if not shrink:
        return _keep(result, out, seen, seed=seed)
    wanted = _signature(diffs)
    last: dict[str, list[Difference]] = {}

    def fails(variant: Doc) -> bool:
        if on_status:
            on_status(f"shrinking {name}: {len(variant['steps'])} steps")
        try:
            found = judge(load(variant, name))
        except TargetUnavailable:
            raise
        except Exception:
            return False
        last[scenario_yaml(variant)] = found
        return bool(_signature(found) & wanted)

    shrinker = Shrinker(fails, max_tests=max_tests)
    small = shrinker.shrink(doc)
    result.tests = shrinker.tests
    small_diffs = last.get(scenario_yaml(small), diffs)
    if small != doc:
        try:  # a variant may have differed once by chance: the shrunk scenario must repeat it
            confirmed = _repeat(judge, small, small_diffs) is None
        except TargetUnavailable:
            raise
        except Exception:
            confirmed = False
        if not confirmed:
            small, small_diffs = doc, diffs
            result.message = "the shrunk scenario did not repeat its differences; kept whole"
    result.shrunk, result.shrunk_diffs = small, small_diffs
    return _keep(result, out, seen, seed=seed)


def _keep(result: FuzzResult, out: Path, seen: dict[str, FuzzResult], *, seed: int
          ) -> FuzzResult:
    """Save a shrunk scenario, unless an earlier one shrank to the same steps."""
    small = result.shrunk if result.shrunk is not None else result.doc
    key = canonical(small)
    first = seen.get(key)
    if first is not None and first.status == result.status:
        result.duplicate_of, result.path = first.name, first.path
        return result
    directory = out / "errors" if result.status == "error" else out
    note = f"a run raised {result.message}" if result.status == "error" else result.message
    result.path = save(directory, small, result.shrunk_diffs, seed=seed, index=result.index,
                       original_steps=len(result.doc["steps"]) if result.shrunk else None,
                       note=note)
    seen[key] = result
    return result


def _error(index: int, doc: Doc, error: Exception, judge: Judge, out: Path, *, seed: int,
           shrink: bool, max_tests: int, on_status: Callable[[str], None] | None,
           seen: dict[str, FuzzResult]) -> FuzzResult:
    """A run that raised: shrink to the fewest steps raising the same exception type, save."""
    name = doc["name"]
    kind = type(error).__name__
    text = " ".join(str(error).split())
    result = FuzzResult(index, name, "error", doc,
                        message=f"{kind}: {text[:300]}" + ("..." if len(text) > 300 else ""))
    if shrink:
        def fails(variant: Doc) -> bool:
            if on_status:
                on_status(f"shrinking {name}: {len(variant['steps'])} steps")
            try:
                judge(load(variant, name))
            except TargetUnavailable:
                raise
            except Exception as e:
                return type(e).__name__ == kind
            return False

        shrinker = Shrinker(fails, max_tests=max_tests)
        result.shrunk = shrinker.shrink(doc)
        result.tests = shrinker.tests
    return _keep(result, out, seen, seed=seed)


def _flaky_note(first: list[Difference], second: list[Difference]) -> str:
    a = {describe_difference(d) for d in first}
    b = {describe_difference(d) for d in second}
    changed = sorted(a ^ b)
    return f"{len(first)} differences in the first run, {len(second)} in a later one; " \
           f"e.g. {changed[0] if changed else 'their order'}"


def save(directory: Path, doc: Doc, diffs: list[Difference], *, seed: int, index: int,
         original_steps: int | None = None, note: str = "") -> Path:
    """Write a disagreeing scenario as a ready scenario file; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    fields = sorted(_signature(diffs))
    shrunk = (f"; shrunk from {original_steps} to {len(doc['steps'])} steps"
              if original_steps is not None else "")
    description = f"found by foliosim fuzz --seed {seed} (scenario {index}){shrunk}"
    if fields:
        description += f"; sim and live differ in {', '.join(fields)}"
    if note:
        description += f"; {note}"
    comments = ["sim vs live:"] if diffs else []
    comments += [describe_difference(d) for d in diffs[:40]]
    if len(diffs) > 40:
        comments.append(f"... {len(diffs) - 40} more")
    path = directory / f"{doc['name']}.yaml"
    path.write_text(scenario_yaml({**doc, "description": description}, comments=comments))
    return path
