"""The costs of a policy, sampled after every step of a run: RSS, bloat (memory held by
partially mapped folios), THP coverage, deferred queue length, mlock gaps, and the cumulative
counters (splits by outcome and cause, rmap walks and pages scanned, pages copied).

Simulated time advances one second per step, so ``bloat_byte_seconds`` is the sum over steps
of the bloat in bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from foliosim.mm.folio import PG_ANON, PG_FREE, PG_MLOCKED
from foliosim.mm.mm_types import VM_LOCKED
from foliosim.mm.pgtable import P_SWAP, PmdLeaf, PteTable

if TYPE_CHECKING:
    from foliosim.mm.system import System
    from foliosim.policies.base import Policy

__all__ = ["SERIES", "Sampler", "mlock_gap_pages", "split_successes"]

PAGE = 4096
SERIES = ("rss_bytes", "bloat_bytes", "thp_coverage", "pmd_coverage", "deferred_queue",
          "mlock_gap_pages", "split_attempts", "split_failures", "rmap_walks", "pages_copied")
"""The per-step series every run records (cumulative counters for the last four)."""


def split_successes(s: System) -> int:
    """Folio splits that succeeded (every order's ``split`` stat)."""
    return sum(stats.get("split", 0) for stats in s.vmstat.mthp.values())


def folio_usage(s: System) -> tuple[int, int, int, int]:
    """``(mapped anon pages, mapped pages in large folios, pages of PMD-mapped folios, pages
    held unmapped by partially mapped folios)`` over every live anon folio."""
    F = s.folios
    n = F.next_id
    flags = F.flags[:n]
    live = ((flags & PG_FREE) == 0) & ((flags & PG_ANON) != 0)
    order = F.order[:n].astype(np.int64)
    nr = np.left_shift(1, order)
    entire = F.entire[:n]
    large = live & (order > 0)
    mapped = np.where(entire > 0, nr, F.nr_mapped[:n])
    small_mapped = live & (order == 0) & (F.large[:n] > 0)
    total = int(small_mapped.sum()) + int(mapped[large].sum())
    in_large = int(mapped[large].sum())
    pmd = int(nr[large & (entire > 0)].sum())
    nrm = F.nr_mapped[:n]
    partial = large & (entire == 0) & (nrm > 0) & (nrm < nr)
    bloat = int((nr - nrm)[partial].sum())
    return total, in_large, pmd, bloat


def mlock_gap_pages(s: System) -> int:
    """Resident pages in VM_LOCKED VMAs whose folio is not PG_mlocked (so reclaim may evict
    them), over every process."""
    F = s.folios
    gap = 0
    for p in s.processes.values():
        for vma in p.mm.vmas:
            if not vma.flags & VM_LOCKED:
                continue
            addr = vma.start
            while addr < vma.end:
                slot = addr >> 21
                nxt = min((slot + 1) << 21, vma.end)
                ent = p.mm.pmd.get(slot)
                if isinstance(ent, PmdLeaf):
                    if ent.fid >= 0 and not F.flags[ent.fid] & PG_MLOCKED:
                        gap += (nxt - addr) >> 12
                elif isinstance(ent, PteTable):
                    i0 = (addr >> 12) & 511
                    i1 = i0 + ((nxt - addr) >> 12)
                    fids = ent.fid[i0:i1]
                    ok = (fids >= 0) & ((ent.bits[i0:i1] & P_SWAP) == 0)
                    if ok.any():
                        gap += int(((F.flags[fids[ok]] & PG_MLOCKED) == 0).sum())
                addr = nxt
    return gap


@dataclass
class Sampler:
    """Per-step series of one run (:data:`SERIES`), filled by :meth:`sample`."""

    series: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in SERIES})

    def sample(self, s: System, policy: Policy) -> None:
        total, in_large, pmd, bloat = folio_usage(s)
        rss = sum(p.mm.anon_pages for p in s.processes.values())
        ok = split_successes(s)
        failed = sum(s.stats_split_failures.values())
        row = {
            "rss_bytes": rss * PAGE,
            "bloat_bytes": bloat * PAGE,
            "thp_coverage": in_large / total if total else 0.0,
            "pmd_coverage": pmd / total if total else 0.0,
            "deferred_queue": len(s.deferred_queue),
            "mlock_gap_pages": mlock_gap_pages(s),
            "split_attempts": ok + failed,
            "split_failures": failed,
            "rmap_walks": s.stats_rmap_walks,
            "pages_copied": policy.pages_copied,
        }
        for k, v in row.items():
            self.series[k].append(v)
