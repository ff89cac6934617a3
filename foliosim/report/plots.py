"""The report's figures (matplotlib, written as PNG): series over simulated time per policy,
one panel per workload, and bars of each policy's costs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from foliosim.experiments.suite import SuiteResult
from foliosim.report.aggregate import policy_totals

__all__ = ["FIGURES", "write_figures"]

FIGURES: dict[str, tuple[str, str, float]] = {
    "bloat_over_time.png": ("bloat_bytes", "bloat (MiB held by partially mapped folios)",
                            1 / (1 << 20)),
    "rss_over_time.png": ("rss_bytes", "anonymous RSS (MiB)", 1 / (1 << 20)),
    "mlock_gap_over_time.png": ("mlock_gap_pages", "resident VM_LOCKED pages not mlocked", 1),
    "deferred_queue_over_time.png": ("deferred_queue", "deferred split queue length", 1),
    "thp_coverage_over_time.png": ("thp_coverage", "share of mapped anon pages in large "
                                   "folios", 1),
}
"""Time-series figures: file name -> (series, y label, scale)."""

_STYLES = [("-", "o"), ("--", "s"), ("-.", "^"), (":", "D"), ("-", "v"), ("--", "x"),
           ("-.", "+"), (":", "*")]


def _mean_series(suite: SuiteResult, policy: str, workload: str, key: str) -> np.ndarray:
    """The series averaged over seeds, step by step (runs of different length padded)."""
    rows = [r.series.get(key, []) for r in suite.runs
            if r.policy == policy and r.workload == workload]
    rows = [x for x in rows if x]
    if not rows:
        return np.zeros(0)
    n = max(len(x) for x in rows)
    arr = np.full((len(rows), n), np.nan)
    for i, x in enumerate(rows):
        arr[i, :len(x)] = x
    return np.nanmean(arr, axis=0)


def write_figures(suite: SuiteResult, out: Path) -> list[str]:
    """Write every figure into ``out``; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    wl = list(suite.preset.workloads)
    pols = list(suite.preset.policies)
    cols = min(3, len(wl))
    rows = (len(wl) + cols - 1) // cols
    for fname, (key, label, scale) in FIGURES.items():
        fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.4 * rows), squeeze=False)
        for ax, w in zip(axes.flat, wl, strict=False):
            for i, p in enumerate(pols):
                y = _mean_series(suite, p, w, key) * scale
                ls, mk = _STYLES[i % len(_STYLES)]
                ax.plot(np.arange(len(y)), y, ls, marker=mk, markevery=max(1, len(y) // 8),
                        markersize=4, linewidth=1.3, alpha=0.85, label=p)
            ax.set_title(w, fontsize=10)
            ax.set_xlabel("step (simulated seconds)", fontsize=8)
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(wl):]:
            ax.axis("off")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(pols), 7), fontsize=8,
                   frameon=False)
        fig.suptitle(f"{label}: mean over {len(suite.preset.seeds)} seeds", fontsize=11)
        fig.tight_layout(rect=(0, 0.06, 1, 0.96))
        fig.savefig(out / fname, dpi=90)
        plt.close(fig)
        names.append(fname)

    costs = [("pages_copied", "pages copied"), ("split_failures", "failed splits"),
             ("rmap_walks", "rmap walks"), ("bloat_byte_seconds", "bloat (MiB x steps)"),
             ("mlock_gap_pages", "mlock gap pages (sum of peaks)"),
             ("corruptions", "corrupted pages")]
    tots = {p: policy_totals(suite, p) for p in pols}
    fig, axes = plt.subplots(2, 3, figsize=(15, 6.5), squeeze=False)
    colors = [f"C{i}" for i in range(len(pols))]
    for ax, (key, label) in zip(axes.flat, costs, strict=True):
        vals = [tots[p][key] / ((1 << 20) if key == "bloat_byte_seconds" else 1) for p in pols]
        ax.bar(range(len(pols)), vals, color=colors)
        ax.set_xticks(range(len(pols)), pols, rotation=30, ha="right", fontsize=8)
        ax.set_title(label, fontsize=10)
        ax.tick_params(labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"what each policy cost, all workloads and {len(suite.preset.seeds)} seeds",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(out / "costs.png", dpi=90)
    plt.close(fig)
    names.append("costs.png")
    return names
