"""Suites of runs: every policy on every workload and seed of a preset, each (workload, seed)
also run with THP disabled (the control for rule 1, and a check of the oracle itself).

Example::

    from foliosim.experiments.suite import PRESETS, run_suite

    suite = run_suite(PRESETS["quick"])
    print(len(suite.runs), f"{suite.seconds:.0f}s")
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

from foliosim.experiments.runner import RunResult, run_scenario, thp_off
from foliosim.policies import POLICIES
from foliosim.workloads import WORKLOADS, generate

__all__ = ["CONTROL", "PRESETS", "Preset", "SuiteResult", "run_group", "run_suite"]

CONTROL = "thp-off"
"""The policy name of the THP-disabled control runs."""


@dataclass(frozen=True)
class Preset:
    """What a suite runs.

    :ivar seeds: one run per workload, seed and policy
    :ivar scale: workload size (rounds multiplier of the generators)
    :ivar transient_p: probability that a split attempt meets a speculative reference
    """

    name: str
    seeds: tuple[int, ...]
    scale: int
    transient_p: float = 0.1
    workloads: tuple[str, ...] = tuple(WORKLOADS)
    policies: tuple[str, ...] = tuple(POLICIES)

    @property
    def nruns(self) -> int:
        """Runs including the THP-disabled controls."""
        return len(self.workloads) * len(self.seeds) * (len(self.policies) + 1)


PRESETS: dict[str, Preset] = {
    "quick": Preset("quick", seeds=tuple(range(5)), scale=2),
    "standard": Preset("standard", seeds=tuple(range(10)), scale=4),
    "full": Preset("full", seeds=tuple(range(30)), scale=8),
}


@dataclass
class SuiteResult:
    """Every run of a suite; ``controls`` are the THP-disabled runs by (workload, seed)."""

    preset: Preset
    runs: list[RunResult] = field(default_factory=list)
    controls: dict[tuple[str, int], RunResult] = field(default_factory=dict)
    seconds: float = 0.0

    def by_policy(self, policy: str) -> Iterator[RunResult]:
        return (r for r in self.runs if r.policy == policy)


def run_group(preset: Preset, workload: str, seed: int) -> list[RunResult]:
    """The control and every policy's run of one (workload, seed); the control comes first."""
    sc = generate(workload, seed, preset.scale)
    control = run_scenario(thp_off(sc), "linux-6.18", workload=workload, seed=seed, catch=True)
    control.policy = CONTROL
    out = [control]
    for name in preset.policies:
        out.append(run_scenario(sc, name, transient_p=preset.transient_p, seed=seed,
                                baseline=control.results, workload=workload, catch=True))
    return out


def run_suite(preset: Preset, jobs: int | None = None,
              progress: Callable[[str, int], None] | None = None) -> SuiteResult:
    """Run the whole preset.

    :param jobs: worker processes (default: one per CPU; 1 runs in this process)
    :param progress: called with a description and the number of runs just finished
    """
    t0 = time.perf_counter()
    jobs = jobs or os.cpu_count() or 1
    groups = [(w, s) for w in preset.workloads for s in preset.seeds]
    res = SuiteResult(preset)

    def take(w: str, s: int, runs: list[RunResult]) -> None:
        res.controls[(w, s)] = runs[0]
        res.runs.extend(runs[1:])
        if progress is not None:
            progress(f"{w} seed {s}", len(runs))

    if jobs == 1:
        for w, s in groups:
            take(w, s, run_group(preset, w, s))
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futs = {pool.submit(run_group, preset, w, s): (w, s) for w, s in groups}
            for fut in as_completed(futs):
                take(*futs[fut], fut.result())
    order = {(w, s, p): i for i, (w, s, p) in enumerate(
        (w, s, p) for w in preset.workloads for s in preset.seeds for p in preset.policies)}
    res.runs.sort(key=lambda r: order.get((r.workload, r.seed, r.policy), 0))
    res.seconds = time.perf_counter() - t0
    return res
