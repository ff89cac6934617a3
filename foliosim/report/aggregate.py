"""From a suite's runs to the numbers the report shows: totals per policy (summary.json),
tables per metric (policy x workload, mean over seeds), and the verdict on the thread's rules.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, NamedTuple

from foliosim.experiments.suite import SuiteResult

__all__ = ["TABLE_METRICS", "Verdict", "metric_table", "policy_totals",
           "summary", "verdicts"]

SUMMARY_KEYS = ("corruptions", "thp_syscall_failures", "bloat_peak_bytes",
                "bloat_byte_seconds", "split_failures", "pages_copied", "mlock_gap_pages",
                "rmap_walks", "thp_coverage")

TABLE_METRICS: dict[str, str] = {
    "corruptions": "pages read wrong (oracle)",
    "thp_syscall_failures": "syscalls whose result differs from the THP-disabled run",
    "bloat_peak_bytes": "peak bytes held by partially mapped folios",
    "bloat_byte_seconds": "bloat integrated over the run (byte-steps)",
    "rss_peak_bytes": "peak anonymous RSS, all processes (bytes)",
    "thp_coverage": "share of mapped anon pages in large folios (mean over steps)",
    "pmd_coverage": "share of mapped anon pages in PMD-mapped THPs (mean over steps)",
    "split_attempts": "folio split attempts",
    "split_failures": "folio splits that failed",
    "deferred_queue_peak": "longest deferred split queue",
    "rmap_walks": "rmap walks (splits, reclaim and the policy's own checks)",
    "pages_scanned": "page-table entries scanned by the policy's rmap checks",
    "pages_copied": "pages the policy replaced with copies",
    "mlock_gap_pages": "peak resident pages in VM_LOCKED VMAs not mlocked",
}
"""Each metric of the per-metric tables, with what it counts."""

def policy_totals(suite: SuiteResult, policy: str) -> dict[str, Any]:
    """The policy's totals over every workload and seed: counts and integrals are summed,
    ``bloat_peak_bytes`` is the largest peak, ``mlock_gap_pages`` the sum of each run's peak,
    coverage the mean of each run's mean."""
    runs = list(suite.by_policy(policy))
    tot: dict[str, Any] = {}
    for k in ("corruptions", "thp_syscall_failures", "split_attempts", "split_successes",
              "split_failures", "pages_copied", "mlock_gap_pages", "rmap_walks",
              "pages_scanned", "corruptions_by_model"):
        tot[k] = int(sum(r.totals.get(k, 0) for r in runs))
    tot["bloat_peak_bytes"] = int(max((r.totals.get("bloat_peak_bytes", 0) for r in runs),
                                      default=0))
    tot["bloat_byte_seconds"] = float(sum(r.totals.get("bloat_byte_seconds", 0.0)
                                          for r in runs))
    for k in ("thp_coverage", "pmd_coverage"):
        tot[k] = float(sum(r.totals.get(k, 0.0) for r in runs) / len(runs)) if runs else 0.0
    causes: Counter[str] = Counter()
    for r in runs:
        causes.update(r.totals.get("split_failures_by_cause", {}))
    tot["split_failures_by_cause"] = dict(causes)
    tot["errors"] = sum(1 for r in runs if r.error)
    return tot


def summary(suite: SuiteResult) -> dict[str, Any]:
    """summary.json as issue 4 specifies it."""
    pols = {}
    for name in suite.preset.policies:
        tot = policy_totals(suite, name)
        pols[name] = {k: tot[k] for k in SUMMARY_KEYS}
    return {"policies": pols, "workloads": list(suite.preset.workloads),
            "seeds": list(suite.preset.seeds)}


def metric_table(suite: SuiteResult, metric: str) -> dict[str, dict[str, float]]:
    """``{policy: {workload: mean over seeds}}`` of one run total."""
    out: dict[str, dict[str, float]] = {}
    for p in suite.preset.policies:
        row = {}
        for w in suite.preset.workloads:
            vals = [r.totals.get(metric, 0) for r in suite.runs
                    if r.policy == p and r.workload == w]
            row[w] = float(sum(vals) / len(vals)) if vals else 0.0
        out[p] = row
    return out


class Verdict(NamedTuple):
    """One policy against the thread's rules, and what it cost."""

    policy: str
    rule1: str
    rule2: str
    rule3: str
    totals: dict[str, Any]

    @property
    def keeps_all(self) -> bool:
        return all(v.startswith("kept") for v in (self.rule1, self.rule2, self.rule3))


def verdicts(suite: SuiteResult) -> list[Verdict]:
    """Rule 1: no syscall result differs from the THP-disabled run. Rule 2: every split
    failure met (pins and speculative references) was absorbed: no run stopped on an error,
    and rules 1 and 3 held through them. Rule 3: the oracle found no page read wrong that a
    policy action caused (corruptions the model causes by itself are shown apart)."""
    out = []
    for p in suite.preset.policies:
        t = policy_totals(suite, p)
        r1 = "kept" if t["thp_syscall_failures"] == 0 else \
            f"broken: {t['thp_syscall_failures']} syscalls"
        policy_corrupt = t["corruptions"] - t["corruptions_by_model"]
        r3 = "kept" if policy_corrupt == 0 else f"broken: {policy_corrupt} pages"
        if t["corruptions_by_model"]:
            r3 += f" (model alone: {t['corruptions_by_model']})"
        if t["errors"]:
            r2 = f"broken: {t['errors']} runs stopped"
        elif r1 == "kept" and r3.startswith("kept"):
            r2 = f"kept: {t['split_failures']} failed splits absorbed"
        else:
            r2 = f"not shown: {t['split_failures']} failed splits met"
        out.append(Verdict(p, r1, r2, r3, t))
    return out
