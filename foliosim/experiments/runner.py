"""One run of a scenario under one policy, with the device, the oracle and the metrics, and
its THP-disabled twin for rule 1.

Example::

    from foliosim.experiments import run_scenario, thp_off_results
    from foliosim.workloads import generate

    sc = generate("pinned-buffers", seed=1)
    base = thp_off_results(sc)
    r = run_scenario(sc, "copy-unsafe", transient_p=0.1, seed=1, baseline=base,
                     workload="pinned-buffers")
    print(r.totals["corruptions"], r.corruptions[:1])
"""

from __future__ import annotations

import errno
import traceback
import zlib
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from foliosim.experiments.device import Device
from foliosim.experiments.metrics import Sampler, split_successes
from foliosim.oracle import Corruption, Oracle
from foliosim.policies import Policy, make_policy
from foliosim.scenario.model import SIZE_NAMES, Scenario, Settings
from foliosim.targets.sim import SimRun

__all__ = ["ExperimentRun", "RunResult", "SyscallDiff", "policy_seed", "run_scenario",
           "thp_off", "thp_off_results"]

MAX_REPORTED = 50
"""Corruptions kept in full per run (all are counted)."""


class SyscallDiff(NamedTuple):
    """A step whose result differs from the same run with THP disabled (rule 1)."""

    step: int
    op: str
    result: str
    without_thp: str


def _errname(ret: int) -> str:
    return "0" if ret >= 0 else f"-{errno.errorcode.get(-ret, str(-ret))}"


class ExperimentRun(SimRun):
    """:class:`SimRun` whose ``dma_write`` steps go through a :class:`Device` that writes
    exactly the pinned pages."""

    def __init__(self, scenario: Scenario, policy: object | None = None) -> None:
        super().__init__(scenario, policy=policy)
        self.device = Device(self.system)

    def step(self, index: int, st: Any) -> int:
        if st.op == "dma_write":
            return self.device.write(st.id, st.value)
        ret = super().step(index, st)
        if st.op == "pin" and ret == 0:
            addr = self.regions[st.proc][st.region][0] + st.offset
            self.device.attach(st.id, self.system.processes[st.proc].mm, addr, st.length)
        return ret


@dataclass
class RunResult:
    """What one run measured.

    :ivar results: each step's return value (0 or -errno)
    :ivar series: per-step samples (:data:`foliosim.experiments.metrics.SERIES`)
    :ivar totals: the run's totals (see :func:`run_scenario`)
    :ivar corruptions: the first :data:`MAX_REPORTED` corruptions the oracle found
    :ivar thp_failures: steps whose result differs from the THP-disabled run
    :ivar error: the exception that stopped the run early, if any
    """

    workload: str
    seed: int
    policy: str
    results: list[int] = field(default_factory=list)
    series: dict[str, list[float]] = field(default_factory=dict)
    totals: dict[str, Any] = field(default_factory=dict)
    corruptions: list[Corruption] = field(default_factory=list)
    thp_failures: list[SyscallDiff] = field(default_factory=list)
    error: str | None = None


def policy_seed(workload: str, seed: int) -> int:
    """The seed of a run's speculative references: the same for every policy of a
    (workload, seed) pair."""
    return zlib.crc32(f"{workload}/{seed}".encode())


def thp_off(scenario: Scenario) -> Scenario:
    """The same scenario with THP disabled (``enabled=never``, every size ``never``)."""
    st = scenario.settings.model_dump()
    st.update(enabled="never", sizes={name: "never" for name in SIZE_NAMES})
    return scenario.model_copy(update={"settings": Settings(**st)})


def thp_off_results(scenario: Scenario) -> list[int]:
    """Every step's result with THP disabled (Linux 6.18, no fault injection)."""
    return run_scenario(thp_off(scenario), "linux-6.18").results


def run_scenario(scenario: Scenario, policy: str | Policy, *, transient_p: float = 0.0,
                 seed: int = 0, baseline: list[int] | None = None, workload: str = "",
                 catch: bool = False) -> RunResult:
    """Run ``scenario`` under ``policy``, checking every step with the oracle and sampling the
    metrics after it.

    :param policy: a policy name (made with ``transient_p``, its failures seeded by
        :func:`policy_seed` of the workload and ``seed``) or a policy object
    :param seed: the workload's seed, as reported
    :param baseline: the THP-disabled results (:func:`thp_off_results`) to count rule-1
        failures against
    :param catch: record an exception in ``error`` instead of raising it
    :returns: the run's result; ``totals`` holds ``corruptions`` (and
        ``corruptions_by_model``, those no policy action explains), ``thp_syscall_failures``,
        ``bloat_peak_bytes``, ``bloat_byte_seconds``, ``split_attempts``,
        ``split_successes``, ``split_failures``, ``split_failures_by_cause``,
        ``pages_copied``, ``mlock_gap_pages`` (peak), ``rmap_walks``, ``pages_scanned``,
        ``thp_coverage`` and ``pmd_coverage`` (means over steps), ``rss_peak_bytes``,
        ``deferred_queue_peak``, ``steps``
    """
    workload = workload or scenario.name
    pol = (make_policy(policy, transient_p, policy_seed(workload, seed))
           if isinstance(policy, str) else policy)
    res = RunResult(workload, seed, pol.name)
    run = ExperimentRun(scenario, policy=pol)
    s = run.system
    oracle = Oracle()
    sampler = Sampler()
    ncorrupt = nmodel = 0
    try:
        for i, st in enumerate(scenario.steps):
            pol.step = i
            ret = run.step(i, st)
            res.results.append(ret)
            oracle.after_step(i, st, ret, run)
            found = oracle.check(i, s, pol.actions)
            ncorrupt += len(found)
            nmodel += sum(1 for c in found if not c.by_policy)
            res.corruptions.extend(found[:MAX_REPORTED - len(res.corruptions)])
            sampler.sample(s, pol)
    except Exception as e:
        if not catch:
            raise
        res.error = f"step {len(res.results)}: {type(e).__name__}: {e}\n" + \
            "".join(traceback.format_exc(limit=-3))
    if baseline is not None:
        res.thp_failures = [SyscallDiff(i, scenario.steps[i].op, _errname(a), _errname(b))
                            for i, (a, b) in enumerate(zip(res.results, baseline, strict=False))
                            if a != b]
    res.series = sampler.series
    ser = sampler.series
    n = len(ser["rss_bytes"])
    res.totals = {
        "steps": n,
        "corruptions": ncorrupt,
        "corruptions_by_model": nmodel,
        "thp_syscall_failures": len(res.thp_failures),
        "bloat_peak_bytes": int(max(ser["bloat_bytes"], default=0)),
        "bloat_byte_seconds": float(sum(ser["bloat_bytes"])),
        "split_attempts": split_successes(s) + sum(s.stats_split_failures.values()),
        "split_successes": split_successes(s),
        "split_failures": sum(s.stats_split_failures.values()),
        "split_failures_by_cause": dict(s.stats_split_failures),
        "pages_copied": pol.pages_copied,
        "mlock_gap_pages": int(max(ser["mlock_gap_pages"], default=0)),
        "rmap_walks": s.stats_rmap_walks,
        "pages_scanned": pol.pages_scanned,
        "thp_coverage": float(sum(ser["thp_coverage"]) / n) if n else 0.0,
        "pmd_coverage": float(sum(ser["pmd_coverage"]) / n) if n else 0.0,
        "rss_peak_bytes": int(max(ser["rss_bytes"], default=0)),
        "deferred_queue_peak": int(max(ser["deferred_queue"], default=0)),
    }
    return res
