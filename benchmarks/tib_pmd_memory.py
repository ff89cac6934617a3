"""Memory of the model for one process with a large PMD-mapped anonymous region.

Maps ``--size`` (default 1 TiB) with MADV_HUGEPAGE, write-faults every 2 MiB as one THP, and
prints the simulator's peak RSS, its bytes per simulated GiB and the fault rate. The issue's
target: 1 TiB of PMD-mapped THPs in under 2 GiB of simulator memory.

    python benchmarks/tib_pmd_memory.py [--size 1T]
"""

from __future__ import annotations

import argparse
import resource
import time

from foliosim.mm.system import System, ThpSettings
from foliosim.scenario.model import parse_size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="1T")
    size = parse_size(ap.parse_args().size)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    system = System(ThpSettings(), ram_bytes=max(size * 2, 1 << 40))
    p = system.process("main")
    a = p.mmap_region(size)
    p.madvise(a, size, "hugepage")
    t0 = time.perf_counter()
    step = 1 << 21
    for off in range(0, size, step):
        p.write(a + off, step, 1)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    gib = size / (1 << 30)
    thps = system.vmstat.mthp[9]["nr_anon"]
    print(f"simulated: {gib:.0f} GiB in {thps} PMD-mapped THPs")
    print(f"faults: {dt:.1f} s, {thps / dt:,.0f} THP faults/s")
    print(f"simulator peak RSS: {rss / (1 << 20):,.0f} MiB (baseline {rss0 / (1 << 20):,.0f} MiB)")
    print(f"simulator bytes per simulated GiB: {(rss - rss0) / gib:,.0f}")


if __name__ == "__main__":
    main()
