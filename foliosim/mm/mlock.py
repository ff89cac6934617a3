"""mlock of large folios: the folio-level flag and count, the rmap hooks, and the syscalls
(follows mm/mlock.c and the mlock helpers of mm/internal.h)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from foliosim.mm.folio import HUGE_ZERO_FID, PG_ACTIVE, PG_LRU, PG_MLOCKED, PG_UNEVICTABLE
from foliosim.mm.mm_types import (
    MM,
    VM_LOCKED,
    VM_LOCKED_MASK,
    VM_LOCKONFAULT,
    VM_READ,
    VM_WRITE,
    VMA,
)
from foliosim.mm.pgtable import P_SWAP, PMD_SIZE, PmdLeaf

if TYPE_CHECKING:
    from foliosim.mm.system import System


# -- the folio side ---------------------------------------------------------------------------
def mlock_folio(s: System, f: int) -> None:
    """``mlock_folio`` + ``__mlock_folio``: set PG_mlocked; an unevictable folio counts one more
    mlock, an evictable one moves to the unevictable list with mlock_count 1."""
    F = s.folios
    nr = F.nr(f)
    if not F.flags[f] & PG_MLOCKED:
        F.flags[f] |= PG_MLOCKED
        s.vmstat.count("nr_mlock", nr)
        s.vmstat.count("unevictable_pgs_mlocked", nr)
    if not F.flags[f] & PG_LRU:
        return  # nothing more while it is off the LRU
    if F.flags[f] & PG_UNEVICTABLE:
        F.mlock_count[f] += 1
        return
    F.flags[f] = (F.flags[f] & ~PG_ACTIVE) | PG_UNEVICTABLE
    F.mlock_count[f] = 1
    s.vmstat.count("unevictable_pgs_culled", nr)


def mlock_new_folio(s: System, f: int) -> None:
    """``mlock_new_folio``: a folio faulted into a VM_LOCKED VMA starts mlocked, count 1."""
    F = s.folios
    nr = F.nr(f)
    if not F.flags[f] & PG_MLOCKED:
        F.flags[f] |= PG_MLOCKED
        s.vmstat.count("nr_mlock", nr)
        s.vmstat.count("unevictable_pgs_mlocked", nr)
    F.flags[f] |= PG_UNEVICTABLE | PG_LRU
    F.mlock_count[f] = 1
    s.vmstat.count("unevictable_pgs_culled", nr)


def munlock_folio(s: System, f: int) -> None:
    """``munlock_folio`` + ``__munlock_folio``: count one mlock less; at zero (or when the folio
    was not unevictable, assumed the last mlock) clear PG_mlocked and rescue it."""
    F = s.folios
    nr = F.nr(f)
    isolated = bool(F.flags[f] & PG_LRU)
    if isolated and F.flags[f] & PG_UNEVICTABLE:
        if F.mlock_count[f]:
            F.mlock_count[f] -= 1
        if F.mlock_count[f]:
            return
    if F.flags[f] & PG_MLOCKED:
        F.flags[f] &= ~PG_MLOCKED
        s.vmstat.count("nr_mlock", -nr)
        s.vmstat.count("unevictable_pgs_munlocked", nr)
    if isolated and F.flags[f] & PG_UNEVICTABLE:
        F.flags[f] &= ~PG_UNEVICTABLE
        s.vmstat.count("unevictable_pgs_rescued", nr)


def mlock_vma_folio(s: System, f: int, vma: VMA) -> None:
    """``mlock_vma_folio``: mlock when the VMA is VM_LOCKED (the caller maps the whole folio)."""
    if vma.flags & VM_LOCKED:
        mlock_folio(s, f)


def munlock_vma_folio(s: System, f: int, vma: VMA) -> None:
    """``munlock_vma_folio``: any unmap in a VM_LOCKED VMA munlocks, even of one page; reclaim
    is left to correct a wrong munlock."""
    if vma.flags & VM_LOCKED:
        munlock_folio(s, f)


def mlock_folios_small(s: System, g: np.ndarray) -> None:
    """:func:`mlock_folio` on distinct order-0 folios at once."""
    F = s.folios
    fl = F.flags[g]
    newly = int(((fl & PG_MLOCKED) == 0).sum())
    s.vmstat.count("nr_mlock", newly)
    s.vmstat.count("unevictable_pgs_mlocked", newly)
    F.flags[g] = fl | PG_MLOCKED
    onlru = (fl & PG_LRU) != 0
    unev = onlru & ((fl & PG_UNEVICTABLE) != 0)
    F.mlock_count[g[unev]] += 1
    cull = g[onlru & ~unev]
    F.flags[cull] = (F.flags[cull] & ~PG_ACTIVE) | PG_UNEVICTABLE
    F.mlock_count[cull] = 1
    s.vmstat.count("unevictable_pgs_culled", len(cull))


def munlock_folios_small(s: System, g: np.ndarray) -> None:
    """:func:`munlock_folio` on distinct order-0 folios at once."""
    F = s.folios
    fl = F.flags[g]
    isolated = (fl & PG_LRU) != 0
    dec = isolated & ((fl & PG_UNEVICTABLE) != 0)
    mc = F.mlock_count[g]
    mc = np.where(dec & (mc > 0), mc - 1, mc)
    F.mlock_count[g] = mc
    go = ~(dec & (mc > 0))
    clear = go & ((fl & PG_MLOCKED) != 0)
    n = int(clear.sum())
    s.vmstat.count("nr_mlock", -n)
    s.vmstat.count("unevictable_pgs_munlocked", n)
    F.flags[g[clear]] &= ~PG_MLOCKED
    rescue = g[go & isolated & ((fl & PG_UNEVICTABLE) != 0)]
    F.flags[rescue] &= ~PG_UNEVICTABLE
    s.vmstat.count("unevictable_pgs_rescued", len(rescue))


# -- the page walk ----------------------------------------------------------------------------
def folio_within_range(s: System, f: int, vma: VMA, start: int, end: int) -> bool:
    """``folio_within_range``: the folio's whole virtual extent in this VMA lies inside
    ``[start, end)`` and the VMA (computed from folio->index and vm_pgoff)."""
    F = s.folios
    start = max(start, vma.start)
    end = min(end, vma.end)
    if start >= end:
        return False
    pgoff = int(F.index[f])
    if not vma.pgoff <= pgoff < vma.pgoff + ((vma.end - vma.start) >> 12):
        return False
    addr = vma.address_of(pgoff)
    return not (addr < start or end - addr < F.nr(f) * 4096)


def allow_mlock_munlock(s: System, f: int, vma: VMA, start: int, end: int, step: int) -> bool:
    """``allow_mlock_munlock``: munlock is always allowed (the VMA may have been split after
    the folio was mlocked); mlock only of a folio wholly inside the range, fully mapped here."""
    if not vma.flags & VM_LOCKED:
        return True  # munlock is always allowed
    if s.folios.order[f] == 0:
        return True  # any small folio is fine
    if not s.policy.mlock_allow_large(s, f, vma, start, end, step):
        return False
    return True


def folio_mlock_step(s: System, pt, i: int, f: int, limit: int) -> int:
    """``folio_mlock_step``: consecutive PTEs from slot ``i`` mapping consecutive pages of folio
    ``f``, up to ``limit`` PTEs (the same batch ``folio_pte_batch`` finds)."""
    from foliosim.mm.memory import folio_pte_batch

    return folio_pte_batch(s, pt, i, f, limit)


def mlock_pte_range(s: System, vma: VMA, start: int, end: int) -> None:
    """``mlock_pte_range`` over ``[start, end)``: mlock (or munlock, if the VMA is no longer
    VM_LOCKED) each mapped folio the rules allow."""
    mm = vma.mm
    lock = bool(vma.flags & VM_LOCKED)
    addr = start
    while addr < end:
        slot = addr >> 21
        nxt = min((slot + 1) << 21, end)
        ent = mm.pmd.get(slot)
        if isinstance(ent, PmdLeaf):
            if ent.fid != HUGE_ZERO_FID:
                (mlock_folio if lock else munlock_folio)(s, ent.fid)
                if s.tracing:
                    s.trace(f"{'mlocked' if lock else 'munlocked'} PMD-mapped {s.fname(ent.fid)} "
                        "(mlock_pte_range)")
        elif ent is not None:
            i = (addr >> 12) & 511
            iend = i + ((nxt - addr) >> 12)
            fids = ent.fid[i:iend]
            present = fids[(fids >= 0) & ((ent.bits[i:iend] & P_SWAP) == 0)]
            small = present[s.folios.order[present] == 0]
            if len(small):
                (mlock_folios_small if lock else munlock_folios_small)(s, small)
            if len(small) == len(present):
                addr = nxt
                continue
            while i < iend:
                f = int(ent.fid[i])
                if f < 0 or ent.bits[i] & P_SWAP or s.folios.order[f] == 0:
                    i += 1
                    continue
                step = 1
                if s.folios.order[f] > 0:
                    step = folio_mlock_step(s, ent, i, f, iend - i)
                    a = (slot << 21) + (i << 12)
                    if not allow_mlock_munlock(s, f, vma, start, end, step):
                        why = ("crosses the range" if not folio_within_range(s, f, vma, start, end)
                               else f"only {step} of its pages are mapped here")
                        if s.tracing:
                            s.trace(f"{s.fname(f)} at {s.fmt_addr(mm, a)} not mlocked: {why} "
                                "(allow_mlock_munlock)")
                        i += step
                        continue
                (mlock_folio if lock else munlock_folio)(s, f)
                if step > 1:
                    s.tracing and s.trace(f"{'mlocked' if lock else 'munlocked'} {s.fname(f)} "
                            "(mlock_pte_range)")
                i += step
        addr = nxt


# -- the syscalls -----------------------------------------------------------------------------
def mlock_fixup(s: System, vma: VMA, start: int, end: int, newflags: int) -> VMA:
    """``mlock_fixup``: change the VMA's lock flags on ``[start, end)``; account locked_vm by
    range; walk the pages unless the range was already locked."""
    from foliosim.mm.vma import vma_modify_flags

    mm = vma.mm
    oldflags = vma.flags
    if newflags == oldflags:
        return vma
    reason = "mlock" if newflags & VM_LOCKED else "munlock"
    vma = vma_modify_flags(vma, start, end, newflags, f"VMA boundary from {reason}")
    nr = (end - start) >> 12
    if not newflags & VM_LOCKED:
        nr = -nr
    elif oldflags & VM_LOCKED:
        nr = 0
    mm.locked_vm += nr
    if newflags & VM_LOCKED and oldflags & VM_LOCKED:
        return vma  # no work to do, and mlocking twice would be wrong
    mlock_pte_range(s, vma, start, end)
    return vma


def apply_vma_lock_flags(s: System, mm: MM, start: int, end: int, flags: int) -> int:
    """``apply_vma_lock_flags``: change the VMAs in order; a hole stops the walk with -ENOMEM
    after the VMAs before it were changed."""
    vma = mm.vma_at(start)
    if vma is None:
        return -12
    addr = start
    for vma in list(mm.vmas_in(start, end)):
        if vma.start > addr:
            return -12
        newflags = (vma.flags & ~VM_LOCKED_MASK) | flags
        tmp = min(vma.end, end)
        vma = mlock_fixup(s, vma, addr, tmp, newflags)
        addr = tmp
    return 0 if addr >= end else -12


def do_mlock(s: System, mm: MM, start: int, length: int, flags: int) -> int:
    """``do_mlock``: lock flags on the range, then populate it (``__mm_populate``)."""
    end = start + length
    if length == 0:
        return 0
    err = apply_vma_lock_flags(s, mm, start, end, flags)
    if err:
        return err
    if flags & VM_LOCKONFAULT:
        return 0
    from foliosim.mm.gup import mm_populate

    err = mm_populate(s, mm, start, end, ignore_errors=False)
    if err == -14:  # __mlock_posix_error_return
        return -12
    if err == -12:
        return -11
    return err


def do_munlock(s: System, mm: MM, start: int, length: int) -> int:
    if length == 0:
        return 0
    return apply_vma_lock_flags(s, mm, start, start + length, 0)


def apply_mlockall_flags(s: System, mm: MM, current: bool, future: bool, onfault: bool) -> None:
    """``apply_mlockall_flags``: MCL_FUTURE sets def_flags; MCL_CURRENT locks every VMA."""
    mm.def_flags &= ~VM_LOCKED_MASK
    if future:
        mm.def_flags |= VM_LOCKED | (VM_LOCKONFAULT if onfault else 0)
        if not current:
            return
    to_add = (VM_LOCKED | (VM_LOCKONFAULT if onfault else 0)) if current else 0
    for vma in list(mm.vmas):
        if vma not in mm.vmas:
            continue  # merged away
        newflags = (vma.flags & ~VM_LOCKED_MASK) | to_add
        mlock_fixup(s, vma, vma.start, vma.end, newflags)


def sys_mlockall(s: System, mm: MM, current: bool, future: bool, onfault: bool) -> int:
    """``mlockall``: EINVAL without MCL_CURRENT or MCL_FUTURE; populates with MCL_CURRENT
    (errors ignored, as ``mm_populate`` does)."""
    if not (current or future):
        return -22
    apply_mlockall_flags(s, mm, current, future, onfault)
    if current and not onfault:
        from foliosim.mm.gup import mm_populate

        mm_populate(s, mm, 0, 1 << 47, ignore_errors=True)
    return 0


def sys_munlockall(s: System, mm: MM) -> int:
    apply_mlockall_flags(s, mm, False, False, False)
    return 0


def vma_accessible(vma: VMA) -> bool:
    return bool(vma.flags & (VM_READ | VM_WRITE))


__all__ = [
    "PMD_SIZE", "allow_mlock_munlock", "apply_vma_lock_flags", "do_mlock", "do_munlock",
    "folio_within_range", "mlock_folio", "mlock_new_folio", "mlock_pte_range",
    "mlock_vma_folio", "munlock_folio", "munlock_vma_folio", "sys_mlockall", "sys_munlockall",
]
