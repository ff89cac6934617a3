"""The churn workload of ``foliosim bench`` at one size, with a readable summary.

    python benchmarks/churn.py [--size 1T] [--seed 1] [--profile]

Runs :func:`foliosim.bench.churn.run_in_subprocess` (a fresh process, so the peak RSS is the
simulator's own); with ``--profile`` runs it in this process under cProfile instead and lists
the model's hot spots with their call paths.
"""

from __future__ import annotations

import argparse

from foliosim.bench.churn import ChurnConfig, run_in_subprocess
from foliosim.bench.results import human
from foliosim.scenario.model import parse_size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="1T")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    cfg = ChurnConfig(parse_size(a.size), seed=a.seed)
    if a.profile:
        from foliosim.bench.profile import hot_spots, hot_spots_markdown

        spots, total = hot_spots(cfg, top=15)
        print(hot_spots_markdown(spots, total, cfg))
        return
    r = run_in_subprocess(cfg)
    print(f"{human(r.size)}: {r.regions:,} regions, {r.ops:,} ops in {r.seconds:,.1f} s "
          f"({r.ops_per_second:,.0f} ops/s); phases "
          + ", ".join(f"{k} {v:,.1f} s" for k, v in r.phase_seconds.items()))
    print(f"peak RSS {human(r.peak_rss_bytes)} (baseline {human(r.baseline_rss_bytes)}), "
          f"{human(r.bytes_per_gib)} per simulated GiB")
    res = r.resident_bytes_by_order
    print(f"resident at the end: PMD {human(res['pmd'])}, mTHP {human(res['mthp'])}, small "
          f"{human(res['order0'])} ({r.small_page_fraction:.0%} small); {r.errors} errors")


if __name__ == "__main__":
    main()
