"""Policy experiments: runs of workloads under policies with the oracle and the metrics
(:mod:`.runner`), and suites of them by preset (:mod:`.suite`)."""

from foliosim.experiments.runner import (
    ExperimentRun,
    RunResult,
    SyscallDiff,
    run_scenario,
    thp_off,
    thp_off_results,
)

__all__ = ["ExperimentRun", "RunResult", "SyscallDiff", "run_scenario", "thp_off",
           "thp_off_results"]
