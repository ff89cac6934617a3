"""Part 4 of ``foliosim bench``: whole-folio fault+unmap operations per second.

Each operation write-faults one whole 2 MiB slot of a MADV_HUGEPAGE region (one PMD THP) and
unmaps it. Done the most efficient way the API allows: a region of ``batch`` slots is mapped,
written at once and unmapped at once, ``repeats`` times; the figure is the median of the
repeats' rates (a short timing on a shared machine: one slow repeat does not move it). The rate
of the one-slot-at-a-time way (write 2 MiB, munmap 2 MiB) is measured too, for comparison.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from foliosim.mm.system import System, ThpSettings

__all__ = ["FaultUnmapResult", "fault_unmap"]

SLOT = 2 << 20


@dataclass
class FaultUnmapResult:
    """Folios faulted and unmapped, their time, and the rates (folios per second):
    ``per_second`` is the median of ``rates``, one per repeat of a batch."""

    folios: int
    seconds: float
    per_second: float
    single_folios: int
    single_per_second: float
    rates: list[float] = field(default_factory=list)


def fault_unmap(batch: int = 16384, repeats: int = 7, single: int = 2000) -> FaultUnmapResult:
    """Fault and unmap ``batch * repeats`` THPs in batches, and ``single`` one at a time."""
    system = System(ThpSettings(enabled="madvise"), ram_bytes=max(1 << 40, 2 * batch * SLOT))
    p = system.process("main")
    size = batch * SLOT
    times = []
    for _ in range(repeats):
        a = p.mmap_region(size)
        p.madvise(a, size, "hugepage")
        t0 = time.perf_counter()
        if p.write(a, size, 1) or p.munmap(a, size):
            raise RuntimeError("fault+unmap: a syscall failed")
        times.append(time.perf_counter() - t0)
    if system.folios.live:
        raise RuntimeError("fault+unmap: folios left behind")
    a = p.mmap_region(single * SLOT)
    p.madvise(a, single * SLOT, "hugepage")
    t0 = time.perf_counter()
    for k in range(single):
        p.write(a + k * SLOT, SLOT, 1)
        p.munmap(a + k * SLOT, SLOT)
    ts = time.perf_counter() - t0
    rates = [batch / t if t else 0.0 for t in times]
    return FaultUnmapResult(folios=batch * repeats, seconds=sum(times),
                            per_second=statistics.median(rates), single_folios=single,
                            single_per_second=single / ts if ts else 0.0, rates=rates)
