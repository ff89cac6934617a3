"""Part 1 of ``foliosim bench``: the scenario corpus on the simulator and on the live kernel,
time per step compared (sim/native) per op kind and over all non-observe steps.

The simulator is timed warm: every scenario runs once to warm up, then :data:`SIM_RUNS` timed
runs give each step the median of its times (a step of a few microseconds is otherwise at the
mercy of one scheduler hiccup or collection). The native time is the ``ns`` the live runner
measured around each syscall in its agent, each step the median of :data:`LIVE_RUNS` runs
(each a fresh agent process; the first run of a scenario is often the slowest). Steps the
live runner answers without a syscall (``ns == 0``: an access check that found the range
unmapped) and ``observe`` steps are left out of both sides.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foliosim.scenario import Scenario, load_scenario

__all__ = ["CorpusResult", "LIVE_RUNS", "SIM_RUNS", "corpus_files", "run_corpus", "ratios",
           "median_steps"]

SIM_RUNS = 5
LIVE_RUNS = 3

CORPUS = Path(__file__).resolve().parents[2] / "scenarios"


@dataclass
class CorpusResult:
    """Summed step times by op kind on both targets, and what could not be compared."""

    scenarios: int = 0
    steps: int = 0
    sim_ns: dict[str, int] = field(default_factory=dict)
    native_ns: dict[str, int] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    unavailable: str | None = None

    @property
    def ratio_overall(self) -> float | None:
        sim, nat = sum(self.sim_ns.values()), sum(self.native_ns.values())
        return sim / nat if nat else None

    @property
    def ratio_by_op(self) -> dict[str, float]:
        return {op: self.sim_ns[op] / self.native_ns[op]
                for op in sorted(self.native_ns) if self.native_ns[op]}


def corpus_files(directory: Path = CORPUS, quick: bool = False) -> list[Path]:
    """The corpus files (``*.yaml`` of ``directory``); ``quick`` takes every fourth."""
    files = sorted(directory.glob("*.yaml"))
    return files[::4] if quick else files


def ratios(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> CorpusResult:
    """Sum the step times of (sim document, live document) pairs by op kind."""
    res = CorpusResult()
    sim_ns: defaultdict[str, int] = defaultdict(int)
    nat_ns: defaultdict[str, int] = defaultdict(int)
    count: defaultdict[str, int] = defaultdict(int)
    for sim_doc, live_doc in pairs:
        res.scenarios += 1
        for a, b in zip(sim_doc["steps"], live_doc["steps"], strict=True):
            if a["op"] == "observe" or not b.get("ns"):
                continue
            sim_ns[a["op"]] += int(a["ns"])
            nat_ns[a["op"]] += int(b["ns"])
            count[a["op"]] += 1
            res.steps += 1
    res.sim_ns, res.native_ns, res.count = dict(sim_ns), dict(nat_ns), dict(count)
    return res


def median_steps(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The first of several runs of one scenario with each step's ``ns`` the median of that
    step's ``ns`` over the runs (the runs are deterministic: the same steps in order)."""
    out = dict(docs[0])
    out["steps"] = [{**st, "ns": int(statistics.median(int(d["steps"][i]["ns"]) for d in docs))}
                    for i, st in enumerate(docs[0]["steps"])]
    return out


def run_corpus(files: list[Path], progress: Callable[[str, int, int], None] | None = None
               ) -> CorpusResult:
    """Run every scenario warm on the simulator and :data:`LIVE_RUNS` times on the live kernel;
    a scenario the live kernel cannot run (simulator-only ops) or one of whose runs fails is
    listed in ``skipped``.
    When the live kernel is not usable here, ``unavailable`` says why and nothing runs."""
    from foliosim.targets import live, sim

    reason = live.unavailable_reason()
    if reason:
        return CorpusResult(unavailable=reason)
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    skipped: list[str] = []
    for k, path in enumerate(files):
        scenario: Scenario = load_scenario(path)
        if progress:
            progress(scenario.name, k, len(files))
        try:
            live_doc = median_steps([live.run(scenario) for _ in range(LIVE_RUNS)])
        except live.LiveUnavailable as e:
            skipped.append(f"{scenario.name}: {e}")
            continue
        except (live.LiveError, live.MemoryLimitExceeded) as e:
            skipped.append(f"{scenario.name}: live run failed: {e}")
            continue
        sim.run(scenario)  # warm-up
        pairs.append((median_steps([sim.run(scenario) for _ in range(SIM_RUNS)]), live_doc))
    res = ratios(pairs)
    res.skipped = skipped
    return res
