"""``/proc/PID/smaps`` fields of one VMA (follows fs/proc/task_mmu.c: smaps_pte_entry,
smaps_pmd_entry, smaps_account, __show_smap)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from foliosim.mm import huge_memory
from foliosim.mm.folio import PG_ANON, PG_DIRTY, PG_SWAPBACKED
from foliosim.mm.mm_types import (
    VM_DONTCOPY,
    VM_HUGEPAGE,
    VM_LOCKED,
    VM_LOCKONFAULT,
    VM_NOHUGEPAGE,
    VM_READ,
    VM_WRITE,
    VMA,
)
from foliosim.mm.pgtable import P_DIRTY, P_SWAP, PmdLeaf

if TYPE_CHECKING:
    from foliosim.mm.system import System

PSS_SHIFT = 12


class Smaps(NamedTuple):
    """The smaps fields foliosim observes, in kB."""

    rss_kb: int
    anonymous_kb: int
    anon_huge_pages_kb: int
    locked_kb: int
    swap_kb: int
    lazyfree_kb: int
    thp_eligible: bool
    vmflags: list[str]
    perms: str


def vma_perms(vma: VMA) -> str:
    return (("r" if vma.flags & VM_READ else "-") + ("w" if vma.flags & VM_WRITE else "-")
            + "-p")


def vma_vmflags(vma: VMA) -> list[str]:
    """The ``VmFlags`` mnemonics among hg, nh, lo, lf, dc (``show_smap_vma_flags``)."""
    out = []
    for bit, name in ((VM_DONTCOPY, "dc"), (VM_HUGEPAGE, "hg"), (VM_LOCKONFAULT, "lf"),
                      (VM_LOCKED, "lo"), (VM_NOHUGEPAGE, "nh")):
        if vma.flags & bit:
            out.append(name)
    return out


def show_smap(s: System, vma: VMA) -> Smaps:
    """Walk the VMA's page tables as ``smap_gather_stats`` does."""
    F = s.folios
    mm = vma.mm
    rss = anon = ahp = swap = lazy = 0
    pss_locked = 0
    locked = bool(vma.flags & VM_LOCKED)
    full = 4096 << PSS_SHIFT
    for slot in range(vma.start >> 21, ((vma.end - 1) >> 21) + 1):
        ent = mm.pmd.get(slot)
        if ent is None:
            continue
        if isinstance(ent, PmdLeaf):
            f = ent.fid
            if f < 0:
                continue  # the huge zero folio is not a normal page
            rss += 512
            anon += 512
            ahp += 512
            flags = int(F.flags[f])
            if not flags & PG_SWAPBACKED and not (ent.bits & P_DIRTY or flags & PG_DIRTY):
                lazy += 512
            if locked:
                if int(F.ref[f]) == 1:
                    pss_locked += 512 * full
                else:
                    for k in range(512):
                        mc = F.precise_mapcount(f, k)
                        pss_locked += full // mc if mc >= 2 else full
            continue
        lo = max(vma.start, slot << 21)
        hi = min(vma.end, (slot + 1) << 21)
        i0 = (lo >> 12) & 511
        i1 = i0 + ((hi - lo) >> 12)
        fid = ent.fid[i0:i1]
        bits = ent.bits[i0:i1]
        swapm = (bits & P_SWAP) != 0
        swap += int(swapm.sum())
        present = (fid >= 0) & ~swapm
        if not present.any():
            continue
        idx = ent.idx[i0:i1]
        for f in np.unique(fid[present]):
            f = int(f)
            sel = present & (fid == f)
            n = int(sel.sum())
            rss += n
            flags = int(F.flags[f])
            if flags & PG_ANON:
                anon += n
            if not flags & PG_SWAPBACKED:
                if flags & PG_DIRTY:
                    pass
                else:
                    lazy += int((sel & ((bits & P_DIRTY) == 0)).sum())
            if locked:
                if int(F.ref[f]) == 1:
                    pss_locked += n * full
                else:
                    for k in idx[sel]:
                        mc = F.precise_mapcount(f, int(k))
                        pss_locked += full // mc if mc >= 2 else full
    eligible = bool(huge_memory.thp_vma_allowable_orders(s, vma, range(9, 1, -1), "smaps"))
    return Smaps(rss * 4, anon * 4, ahp * 4, (pss_locked >> PSS_SHIFT) // 1024, swap * 4,
                 lazy * 4, eligible, vma_vmflags(vma), vma_perms(vma))
