"""Faults, COW, zapping and page-table copying at fork (follows mm/memory.c)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from foliosim.mm import huge_memory, mlock, rmap, swap
from foliosim.mm.folio import (
    HUGE_ZERO_FID,
    PG_ANON,
    PG_ANON_EXCLUSIVE,
    PG_DIRTY,
    PG_LRU,
    PG_MLOCKED,
    PG_PARTIALLY_MAPPED,
    PG_QUEUED,
    PG_SWAPBACKED,
    PG_SWAPCACHE,
    PG_UNEVICTABLE,
    ZERO_FID,
)
from foliosim.mm.mm_types import MM, VM_LOCKED, VM_WRITE, VMA
from foliosim.mm.page_alloc import OutOfMemory
from foliosim.mm.pgtable import (
    NO_IDX,
    NONE,
    P_DIRTY,
    P_SWAP,
    P_WRITE,
    PMD_SIZE,
    PTRS_PER_PTE,
    PmdLeaf,
    PteTable,
)
from foliosim.mm.vma import anon_vma_prepare

if TYPE_CHECKING:
    from foliosim.mm.system import System

VM_FAULT_OOM = -12
VM_FAULT_SIGSEGV = -14


# -- allocation -------------------------------------------------------------------------------
def folio_alloc(s: System, order: int) -> int | None:
    """``vma_alloc_folio``: a new anon folio, or None when the allocator (or the policy's
    fault injection) says no."""
    if s.alloc_fails(order):
        return None
    try:
        pfn = s.buddy.alloc(order)
    except OutOfMemory:
        return None
    f = s.folios.new(pfn, order)
    s.folios.flags[f] = PG_SWAPBACKED | PG_LRU
    return f


def folio_add_lru_vma(s: System, f: int, vma: VMA) -> None:
    """``folio_add_lru_vma``: a new folio in a VM_LOCKED VMA is mlocked (``mlock_new_folio``)."""
    if vma.flags & VM_LOCKED:
        mlock.mlock_new_folio(s, f)


def folio_put(s: System, f: int, n: int = 1) -> None:
    """Drop ``n`` references; the last one frees the folio (``__folio_put``)."""
    F = s.folios
    F.ref[f] -= n
    if F.ref[f] <= 0:
        free_folio(s, f)


def free_folio(s: System, f: int) -> None:
    """``__folio_put`` -> ``free_pages_prepare``: unqueue from the deferred list, drop the mTHP
    gauge, clear a leftover PG_mlocked (unevictable_pgs_cleared), give the pages back."""
    from foliosim.mm.folio import PG_MLOCKED

    F = s.folios
    huge_memory.folio_unqueue_deferred_split(s, f)
    order = int(F.order[f])
    if order > 0 and F.flags[f] & PG_ANON:
        s.vmstat.count_mthp(order, "nr_anon", -1)
    if F.flags[f] & PG_MLOCKED:
        s.vmstat.count("nr_mlock", -F.nr(f))
        s.vmstat.count("unevictable_pgs_cleared", F.nr(f))
    s.buddy.free_block(int(F.pfn[f]), order)
    s.trace_free(f)
    F.release(f)


# -- faults -----------------------------------------------------------------------------------
def handle_mm_fault(s: System, vma: VMA, addr: int, write: bool, unshare: bool = False) -> int:
    """``__handle_mm_fault``: a PMD THP only where the PMD slot is empty and order 9 is
    allowed; otherwise the PTE path. Returns 0 or a negative errno."""
    mm = vma.mm
    slot = addr >> 21
    ent = mm.pmd.get(slot)
    if ent is None and huge_memory.thp_vma_allowable_order(s, vma, 9, "pagefault"):
        if huge_memory.do_huge_pmd_anonymous_page(s, vma, addr, write) == 0:
            return 0
        ent = mm.pmd.get(slot)
    if isinstance(ent, PmdLeaf):
        if not (write or unshare) or ent.bits & P_WRITE:
            return 0
        if ent.fid == HUGE_ZERO_FID:
            if unshare:
                return 0
            if huge_memory.do_huge_zero_wp_pmd(s, vma, addr) == 0:
                return 0
        elif huge_memory.do_huge_pmd_wp_page(s, vma, addr, unshare) == 0:
            return 0
        ent = mm.pmd.get(slot)
    if ent is None:
        ent = PteTable()
        mm.pmd[slot] = ent
    return handle_pte_fault(s, vma, ent, addr, write, unshare)


def handle_pte_fault(s: System, vma: VMA, pt: PteTable, addr: int, write: bool,
                     unshare: bool) -> int:
    """``handle_pte_fault``: none -> anonymous fault, swap -> swap-in, read-only -> COW."""
    i = (addr >> 12) & 511
    fid = int(pt.fid[i])
    if fid == NONE:
        return do_anonymous_page(s, vma, pt, addr, write)
    if pt.bits[i] & P_SWAP:
        from foliosim.mm.swap import do_swap_page

        r = do_swap_page(s, vma, pt, addr, write)
        if r or not write or pt.bits[i] & P_WRITE:
            return r
    if (write or unshare) and not pt.bits[i] & P_WRITE:
        return do_wp_page(s, vma, pt, addr, unshare)
    if write:
        pt.bits[i] |= P_DIRTY
    return 0


def pte_range_none(pt: PteTable, i: int, n: int) -> bool:
    return bool((pt.fid[i:i + n] == NONE).all())


def alloc_anon_folio(s: System, vma: VMA, pt: PteTable, addr: int) -> int | None:
    """``alloc_anon_folio``: the highest allowed mTHP order whose aligned block lies in the VMA
    and is entirely pte_none; fall back order by order, finally to order 0."""
    orders = huge_memory.thp_vma_allowable_orders(s, vma, range(8, 1, -1), "pagefault")
    orders = [o for o in orders if huge_memory.thp_vma_suitable_order(vma, addr, o)]
    while orders:
        o = orders[0]
        a = addr & ~((4096 << o) - 1)
        if pte_range_none(pt, (a >> 12) & 511, 1 << o):
            break
        orders.pop(0)
    for o in orders:
        f = folio_alloc(s, o)
        if f is not None:
            return f
        s.vmstat.count_mthp(o, "anon_fault_fallback")
        s.tracing and s.trace(f"order-{o} allocation failed, falling back (alloc_anon_folio)")
    return folio_alloc(s, 0)


def do_anonymous_page(s: System, vma: VMA, pt: PteTable, addr: int, write: bool) -> int:
    """``do_anonymous_page``: a read maps the shared zero page; a write maps a new folio of the
    order ``alloc_anon_folio`` chose, every PTE writable and dirty."""
    mm = vma.mm
    i = (addr >> 12) & 511
    if not write:
        pt.fid[i] = ZERO_FID
        pt.clear_idx(i)
        pt.bits[i] = 0
        return 0
    anon_vma_prepare(vma)
    f = alloc_anon_folio(s, vma, pt, addr)
    if f is None:
        return VM_FAULT_OOM
    F = s.folios
    nr = F.nr(f)
    order = int(F.order[f])
    a = addr & ~((nr << 12) - 1)
    F.ref[f] += nr - 1
    mm.anon_pages += nr
    s.vmstat.count_mthp(order, "anon_fault_alloc")
    rmap.folio_add_new_anon_rmap(s, f, vma, a, pmd=False)
    folio_add_lru_vma(s, f, vma)
    j = (a >> 12) & 511
    pt.fid[j:j + nr] = f
    pt.set_idx(slice(j, j + nr), range(nr))
    pt.bits[j:j + nr] = (P_WRITE | P_DIRTY) if vma.flags & VM_WRITE else 0
    if order:
        s.tracing and s.trace(f"order-{order} folio {s.fname(f)} at {s.fmt_addr(mm, a)} "
                "(alloc_anon_folio: highest allowed order with an empty PTE range)")
    return 0


def _new_anon_folios(s: System, vma: VMA, pfns: list[int] | np.ndarray, order: int,
                     index: np.ndarray) -> np.ndarray:
    """``folio_alloc`` + the flag, anon_vma and index part of ``folio_add_new_anon_rmap``
    (exclusive) + ``folio_add_lru_vma`` for many new folios of ``order`` at once: mlocked,
    with the counters, in a VM_LOCKED VMA (``mlock_new_folio``). ``index`` is each folio's
    page index; the caller sets the mapcounts. Returns the folio ids."""
    F = s.folios
    f = F.new_many(pfns, order)
    flags = PG_SWAPBACKED | PG_LRU | PG_ANON | PG_ANON_EXCLUSIVE
    if vma.flags & VM_LOCKED:
        flags |= PG_MLOCKED | PG_UNEVICTABLE
        F.mlock_count[f] = 1
        nr = len(f) << order
        s.vmstat.count("nr_mlock", nr)
        s.vmstat.count("unevictable_pgs_mlocked", nr)
        s.vmstat.count("unevictable_pgs_culled", nr)
    F.flags[f] = flags
    F.anon_vma[f] = vma.anon_vma.id
    F.index[f] = index
    return f


def do_anonymous_pages_bulk(s: System, vma: VMA, pt: PteTable, addr: int, n: int,
                            value: int) -> int:
    """``n`` consecutive write faults on pte_none entries from slot ``i`` where only order 0 is
    possible (no mTHP order allowed): each maps a new exclusive order-0 folio, exactly as
    ``do_anonymous_page`` one at a time would, done as one vectorised step. ``addr`` is the
    first page's address. Returns the number of pages mapped (0 when the model must take the
    one-by-one path). Only as many pages as the allocator has are mapped: the fault after
    them fails one by one, as it would."""
    n = min(n, s.buddy.nr_free)
    if n <= 1 or s.alloc_fails(0) or s.tracing:
        return 0
    i = (addr >> 12) & 511
    ids = _small_folios_faulted(s, vma, s.buddy.alloc_many(n), addr, value)
    pt.fid[i:i + n] = ids
    pt.clear_idx(slice(i, i + n))
    pt.bits[i:i + n] = (P_WRITE | P_DIRTY) if vma.flags & VM_WRITE else 0
    return n


def _small_folios_faulted(s: System, vma: VMA, pfns: np.ndarray, addr: int, value: int
                          ) -> np.ndarray:
    """The new exclusive order-0 folios at ``pfns`` of write faults on the pages from
    ``addr`` on: each mapped once, holding ``value``, counted in the mm; the caller writes
    the PTEs. Returns their ids."""
    F = s.folios
    anon_vma_prepare(vma)
    ids = _new_anon_folios(s, vma, pfns, 0,
                           vma.linear_page_index(addr) + np.arange(len(pfns), dtype=np.int64))
    F.large[ids] = 1
    F.val[ids] = value
    vma.mm.anon_pages += len(ids)
    return ids


def do_anonymous_slots_bulk(s: System, vma: VMA, addr: int, end: int, value: int) -> int:
    """Write faults (``do_anonymous_page``, each mapping a new exclusive order-0 folio) over
    the whole empty PMD slots from ``addr`` (on a slot boundary) up to ``end`` (in ``vma``)
    where only order-0 folios can result (no PMD THP, no mTHP order allowed): the same as
    :func:`bulk_fault` then :func:`do_anonymous_pages_bulk` slot after slot (each slot's
    pages allocated in turn, so the same PFNs and folio ids), with the steps on the new
    folios done once for all of them. Returns the pages mapped (0: fewer than two such
    slots, or less free memory than they need: slot by slot)."""
    if s.tracing or s.alloc_fails(0):
        return 0
    mm = vma.mm
    slot, k = addr >> 21, _empty_slots(mm, addr, min(end, vma.end))
    n = k * PTRS_PER_PTE
    if k < 2 or n > s.buddy.nr_free or not _pte_level_fault(s, vma, None, addr) \
            or huge_memory.thp_vma_allowable_orders(s, vma, range(8, 1, -1), "pagefault"):
        return 0
    pfns = np.concatenate([s.buddy.alloc_many(PTRS_PER_PTE) for _ in range(k)])
    ids = _small_folios_faulted(s, vma, pfns, addr, value)
    bits = (P_WRITE | P_DIRTY) if vma.flags & VM_WRITE else 0
    for j in range(k):
        pt = PteTable()
        pt.fid[:] = ids[j * PTRS_PER_PTE:(j + 1) * PTRS_PER_PTE]
        pt.bits[:] = bits
        mm.pmd[slot + j] = pt
    return n


def _empty_slots(mm: MM, addr: int, end: int) -> int:
    """How many PMD slots in a row from ``addr`` (on a slot boundary), each wholly below
    ``end``, have nothing mapped (no PTE table, no PMD mapping)."""
    slot, last = addr >> 21, end >> 21
    k = 0
    while slot + k < last and slot + k not in mm.pmd:
        k += 1
    return k


def _pte_level_fault(s: System, vma: VMA, ent: PmdLeaf | PteTable | None, addr: int) -> bool:
    """Does a write fault at ``addr`` (slot entry ``ent``) go to the PTE level: no PMD
    mapping there, and an empty slot that gets no PMD THP (``__handle_mm_fault``)?"""
    if isinstance(ent, PmdLeaf):
        return False
    return ent is not None or not (
        huge_memory.thp_vma_allowable_order(s, vma, 9, "pagefault")
        and huge_memory.thp_vma_suitable_order(vma, addr, 9))


def bulk_fault(s: System, vma: VMA, addr: int, end: int, value: int) -> int:
    """Fast path of a store over ``[addr, end)`` (one PMD slot, one VMA): when only order-0
    folios can result (no PMD THP possible here, no mTHP order allowed), map the run of
    pte_none pages from ``addr`` at once and store ``value``. Returns pages mapped (0: none)."""
    mm = vma.mm
    slot = addr >> 21
    ent = mm.pmd.get(slot)
    if not _pte_level_fault(s, vma, ent, addr):
        return 0
    orders = huge_memory.thp_vma_allowable_orders(s, vma, range(8, 1, -1), "pagefault")
    if ent is None:
        if orders:
            return 0  # an empty table: mTHPs (do_anonymous_mthp_bulk)
        ent = PteTable()
        mm.pmd[slot] = ent
    i = (addr >> 12) & 511
    n = (end - addr) >> 12
    if orders:
        # the block of the highest order holding addr qualifies: an mTHP goes there
        size = 4096 << orders[0]
        a0 = addr & ~(size - 1)
        i0 = (a0 >> 12) & 511
        if a0 >= vma.start and a0 + size <= vma.end \
                and (ent.fid[i0:i0 + (1 << orders[0])] == NONE).all():
            return 0
    none = ent.fid[i:i + n] == NONE
    if orders:
        # alloc_anon_folio falls back to order 0 for a page no suitable block of an allowed
        # order around it is wholly pte_none; the run stops before the first that has one
        allnone = ent.fid == NONE
        base = addr - (i << 12)
        for o in orders:
            nr = 1 << o
            blk = allnone.reshape(512 >> o, nr).all(axis=1)
            starts = base + (np.arange(512 >> o, dtype=np.int64) << (12 + o))
            blk &= (starts >= vma.start) & (starts + (nr << 12) <= vma.end)
            none &= ~np.repeat(blk, nr)[i:i + n]
    run = n if none.all() else int(none.argmin())
    if run < 2:
        return 0
    return do_anonymous_pages_bulk(s, vma, ent, addr, run, value)


def do_wp_page(s: System, vma: VMA, pt: PteTable, addr: int, unshare: bool) -> int:
    """``do_wp_page``: reuse an exclusive page (or a folio ``wp_can_reuse_anon_folio`` allows),
    else copy into a new order-0 page (``wp_page_copy``)."""
    F = s.folios
    i = (addr >> 12) & 511
    f = int(pt.fid[i])
    if f >= 0 and F.flags[f] & PG_ANON:
        k = int(pt.idx[i])
        if F.pae(f, k) or wp_can_reuse_anon_folio(s, f, vma):
            if not F.pae(f, k):
                F.set_pae(f, k, 1, True)
            if unshare:
                return 0
            pt.bits[i] |= P_WRITE | P_DIRTY  # wp_page_reuse
            return 0
    return wp_page_copy(s, vma, pt, addr)


def do_anonymous_mthp_bulk(s: System, vma: VMA, addr: int, end: int,
                           value: int | None = None) -> int:
    """Write faults over ``[addr, end)`` (one PMD slot, one VMA) where ``alloc_anon_folio``
    picks an mTHP order: each naturally aligned block of the highest allowed order from the
    one holding ``addr`` that lies in the VMA and is entirely pte_none gets a new folio of
    that order (``do_anonymous_page``), all at once, with the same counters and mlock; the
    pages read zero until the caller stores. Stops at the first block that does not qualify.
    Returns the pages mapped from ``addr`` (0: take the one-by-one path); with a ``value``
    to store and ``addr`` on a block boundary, the folios wholly inside ``[addr, end)`` get
    it and the result is minus the pages so stored."""
    if s.tracing:
        return 0
    mm = vma.mm
    slot = addr >> 21
    ent = mm.pmd.get(slot)
    if not _pte_level_fault(s, vma, ent, addr):
        return 0
    orders = huge_memory.thp_vma_allowable_orders(s, vma, range(8, 1, -1), "pagefault")
    if not orders:
        return 0
    o = orders[0]
    nr = 1 << o
    size = 4096 << o
    a0 = addr & ~(size - 1)
    lo = max(a0, vma.start)
    if lo != a0 or s.alloc_fails(o):
        return 0
    hi = min(((end - 1) | (size - 1)) + 1, vma.end, (slot + 1) << 21)
    nblk = (hi - a0) // size
    if nblk < 2 or s.buddy.free_pages() < 4 * nblk * nr:
        return 0
    if ent is None:
        ent = PteTable()
        mm.pmd[slot] = ent
    i0 = (a0 >> 12) & 511
    none = (ent.fid[i0:i0 + nblk * nr] == NONE).reshape(nblk, nr).all(axis=1)
    nblk = nblk if none.all() else int(none.argmin())
    if nblk < 2:
        return 0
    anon_vma_prepare(vma)
    F = s.folios
    pfns = s.buddy.alloc_upto(o, nblk)  # the fault after the last block it gets fails
    if not pfns:
        return 0
    nblk = len(pfns)
    f = _new_anon_folios(s, vma, pfns, o,
                         vma.linear_page_index(a0) + nr * np.arange(nblk, dtype=np.int64))
    F.ref[f] = nr
    F.umc[f] = 1
    F.nr_mapped[f] = nr
    F.large[f] = nr
    F.mm0[f] = mm.id
    F.mmc0[f] = nr
    j = slice(i0, i0 + nblk * nr)
    ent.fid[j] = np.repeat(f, nr)
    ent.set_idx(j, _tiled(o)[:nblk * nr])
    ent.bits[j] = (P_WRITE | P_DIRTY) if vma.flags & VM_WRITE else 0
    mm.anon_pages += nr * nblk
    s.vmstat.count_mthp(o, "anon_fault_alloc", nblk)
    s.vmstat.count_mthp(o, "nr_anon", nblk)
    if value is not None and a0 == addr:
        # a store over the range: the folios it covers whole take the value (uniform)
        whole = min(nblk, (end - a0) // size)
        F.val[f[:whole]] = value
        if whole:
            return -(whole * nr)
    return (a0 + nblk * size - addr) >> 12


def do_wp_pages_bulk(s: System, vma: VMA, pt: PteTable, addr: int, end: int) -> int:
    """Write faults (``do_wp_page``) on the run of present, write-protected PTEs of order-0
    anon folios from ``addr`` (at most to ``end``, within one table), done at once: a page
    that is PageAnonExclusive, or whose folio has no other reference, is reused (made
    exclusive and writable); the others are copied into new exclusive order-0 folios
    (``wp_page_copy``), the old folio losing this mapping and a reference. Folios in the swap
    cache stop the run. Returns the pages handled (0: take the one-by-one path)."""
    if s.tracing or s.alloc_fails(0):
        return 0
    F = s.folios
    i = (addr >> 12) & 511
    n = (end - addr) >> 12
    fids = pt.fid[i:i + n]
    bits = pt.bits[i:i + n]
    f0 = int(fids[0])
    if f0 >= 0 and F.order[f0] > 0:
        return _wp_large_run(s, vma, pt, addr, n, f0)
    if f0 == ZERO_FID:
        return _wp_zero_run(s, vma, pt, addr, n)
    safe = np.where(fids >= 0, fids, 0)
    fl = F.flags[safe]
    ok = (fids >= 0) & ((bits & (P_WRITE | P_SWAP)) == 0) & (F.order[safe] == 0) \
        & ((fl & PG_ANON) != 0) & ((fl & PG_SWAPCACHE) == 0)
    run = n if ok.all() else int(ok.argmin())
    if run < 2:
        return 0
    f = fids[:run].astype(np.int64)
    if len(np.unique(f)) != run:
        return 0
    fl = fl[:run]
    reuse = ((fl & PG_ANON_EXCLUSIVE) != 0) | (F.ref[f] == 1)
    copies = np.flatnonzero(~reuse)
    if len(copies) > s.buddy.nr_free:
        # the run ends at the first copy the allocator can't back (it fails one by one)
        run = int(copies[s.buddy.nr_free])
        if run < 2:
            return 0
        f, fl, reuse = f[:run], fl[:run], reuse[:run]
    anon_vma_prepare(vma)
    r = f[reuse]
    F.anon_vma[r[(fl[reuse] & PG_ANON_EXCLUSIVE) == 0]] = vma.anon_vma.id  # folio_move_anon_rmap
    F.flags[r] |= PG_ANON_EXCLUSIVE
    pos = np.flatnonzero(~reuse)
    if len(pos):
        old = f[pos]
        k = len(old)
        new = _new_anon_folios(s, vma, s.buddy.alloc_many(k), 0,
                               vma.linear_page_index(addr) + pos)
        F.large[new] = 1
        F.val[new] = F.val[old]
        pt.fid[i + pos] = new
        pt.clear_idx(i + pos)
        F.large[old] -= 1
        if vma.flags & VM_LOCKED:
            mlock.munlock_folios_small(s, old)
        F.ref[old] -= 1
    pt.bits[i:i + run] |= P_WRITE | P_DIRTY
    return run


def _wp_zero_run(s: System, vma: VMA, pt: PteTable, addr: int, n: int) -> int:
    """``do_wp_page`` on the run of shared-zero-page PTEs from ``addr``: each gets a new
    exclusive order-0 folio (``wp_page_copy`` of the zero page), mlocked in a VM_LOCKED VMA.
    Returns the pages handled (0: take the one-by-one path)."""
    F = s.folios
    i = (addr >> 12) & 511
    ok = (pt.fid[i:i + n] == ZERO_FID) & ((pt.bits[i:i + n] & P_SWAP) == 0)
    run = min(n if ok.all() else int(ok.argmin()), s.buddy.nr_free)
    if run < 2:
        return 0
    anon_vma_prepare(vma)
    new = _new_anon_folios(s, vma, s.buddy.alloc_many(run), 0,
                           vma.linear_page_index(addr) + _arange(run).astype(np.int64))
    F.large[new] = 1
    pt.fid[i:i + run] = new
    pt.clear_idx(slice(i, i + run))
    pt.bits[i:i + run] = P_WRITE | P_DIRTY
    vma.mm.anon_pages += run
    return run


def _wp_large_run(s: System, vma: VMA, pt: PteTable, addr: int, n: int, f: int) -> int:
    """``do_wp_page`` on the run of write-protected PTEs from ``addr`` that map consecutive
    pages of the large anon folio ``f``:

    - when ``wp_can_reuse_anon_folio`` allows reuse (it changes no mapcount or reference, so
      it holds for every page of the run), each page becomes PageAnonExclusive and its PTE
      writable (``wp_page_reuse``);
    - when the folio is mapped by another mm too (``folio_maybe_mapped_shared``), every page
      that is not PageAnonExclusive is copied (``wp_page_copy``): the other mm's mappings
      keep it shared until this run's last copy, so no reuse check in between can succeed.

    Returns the pages handled (0: take the one-by-one path)."""
    F = s.folios
    if not F.flags[f] & PG_ANON or F.flags[f] & PG_SWAPCACHE:
        return 0
    i = (addr >> 12) & 511
    k0 = int(pt.idx[i])
    n = min(n, F.nr(f) - k0)
    ok = (pt.fid[i:i + n] == f) & (pt.idx[i:i + n] == k0 + _arange(n)) \
        & ((pt.bits[i:i + n] & (P_WRITE | P_SWAP)) == 0)
    run = n if ok.all() else int(ok.argmin())
    if run < 1:
        return 0
    ks = pt.idx[i:i + run]
    if int(F.large[f]) > 1 and not F.maybe_mapped_shared(f) \
            and int(F.large[f]) == int(F.ref[f]):
        if f not in F.pages and run == F.nr(f):
            F.flags[f] |= PG_ANON_EXCLUSIVE
        else:
            F.arrays(f).pae[ks] = True
            if k0 == 0:
                F.flags[f] |= PG_ANON_EXCLUSIVE
        pt.bits[i:i + run] |= P_WRITE | P_DIRTY
        return run
    run = min(run, s.buddy.nr_free)  # the copies the allocator can back
    if not F.maybe_mapped_shared(f) or vma.flags & VM_LOCKED or run < 2 \
            or s.alloc_fails(0):
        return 0
    ks = ks[:run]
    pa = F.pages.get(f)
    if (pa.pae[ks].any() if pa is not None else F.flags[f] & PG_ANON_EXCLUSIVE):
        return 0
    anon_vma_prepare(vma)
    new = F.new_many(s.buddy.alloc_many(run))
    F.flags[new] = PG_SWAPBACKED | PG_LRU | PG_ANON | PG_ANON_EXCLUSIVE
    F.large[new] = 1
    F.anon_vma[new] = vma.anon_vma.id
    F.index[new] = vma.linear_page_index(addr) + _arange(run).astype(np.int64)
    F.val[new] = pa.val[ks] if pa is not None else F.val[f]
    pt.fid[i:i + run] = new
    pt.clear_idx(slice(i, i + run))
    pt.bits[i:i + run] = P_WRITE | P_DIRTY
    rmap.folio_remove_rmap_ptes(s, f, k0, run, vma)
    folio_put(s, f, run)
    return run


def wp_can_reuse_anon_folio(s: System, f: int, vma: VMA) -> bool:
    """``wp_can_reuse_anon_folio``: a small folio only with refcount 1 (after dropping the
    swapcache); a large one via ``__wp_can_reuse_large_anon_folio`` (6.15+): mapped more than
    once, all in this mm, and no reference beyond the mappings."""
    F = s.folios
    if F.order[f] > 0:
        if int(F.large[f]) <= 1:
            return False  # free a folio with a single mapped page instead
        if F.maybe_mapped_shared(f):
            return False
        if F.flags[f] & PG_SWAPCACHE:
            return False
        return int(F.large[f]) == int(F.ref[f])
    swapcache = 1 if F.flags[f] & PG_SWAPCACHE else 0
    if int(F.ref[f]) > 1 + swapcache:
        return False
    if swapcache:
        from foliosim.mm.swap import folio_free_swap

        folio_free_swap(s, f)
    if int(F.ref[f]) != 1:
        return False
    F.anon_vma[f] = vma.anon_vma.id  # folio_move_anon_rmap
    return True


def wp_page_copy(s: System, vma: VMA, pt: PteTable, addr: int) -> int:
    """``wp_page_copy``: a new exclusive order-0 page with the old contents; the old page loses
    this mapping (which can leave a large folio partially mapped)."""
    mm = vma.mm
    F = s.folios
    i = (addr >> 12) & 511
    old = int(pt.fid[i])
    old_k = int(pt.idx[i])
    anon_vma_prepare(vma)
    new = folio_alloc(s, 0)
    if new is None:
        return VM_FAULT_OOM
    if old >= 0:
        F.val[new] = F.value(old, int(pt.idx[i]))
    else:
        mm.anon_pages += 1
    rmap.folio_add_new_anon_rmap(s, new, vma, addr & ~4095, pmd=False)
    folio_add_lru_vma(s, new, vma)
    pt.fid[i] = new
    pt.clear_idx(i)
    pt.bits[i] = P_WRITE | P_DIRTY
    if old >= 0:
        rmap.folio_remove_rmap_ptes(s, old, old_k, 1, vma)
        folio_put(s, old)
        s.tracing and s.trace(f"COW copy of one page of {s.fname(old)} at {s.fmt_addr(mm, addr)} "
                "(wp_page_copy)")
    return 0


# -- zapping ----------------------------------------------------------------------------------
class ZapBatch:
    """PTE segments and PMD-mapped THPs gathered for zapping at once, over one or more VMAs
    of one mm (``unmap_vmas`` over several VMAs gathers across them). Whatever must go one
    by one flushes what was gathered before it, so it keeps its order."""

    def __init__(self, s: System, reclaim_pt: bool = False) -> None:
        self.s = s
        self.reclaim_pt = reclaim_pt
        self.segs: list[tuple[int, PteTable, int, int, VMA]] = []
        self.simple: list[tuple[int, VMA]] = []
        self.shared: list[tuple[int, VMA]] = []

    def flush_ptes(self) -> None:
        """Zap the gathered PTE segments (bulk first, then one by one)."""
        s, segs = self.s, self.segs
        if not segs:
            return
        if len(segs) <= 2 and sum(_batches(pt, i, e) for _, pt, i, e, _ in segs) <= 8:
            left = [True] * len(segs)  # a few batches: one by one is cheaper
        else:
            # the bulk steps first, chunks of alike tables (they never meet a folio another
            # segment's one-by-one step touches: a page is mapped once per mm, and a large
            # folio they do is mapped whole inside its segment), then what is left in order
            more: dict[int, bool] = {}
            for chunk in _alike_chunks(segs):
                for g, m in zip(chunk, zap_ptes_bulk(s, chunk[0][4].mm, chunk).tolist(),
                                strict=True):
                    more[id(g)] = m
            left = [more[id(g)] for g in segs]
        for (slot, pt, i, e, vma), m in zip(segs, left, strict=True):
            if m:
                zap_pte_range(s, vma, pt, i, e)
            if self.reclaim_pt and e - i == 512 and pt.empty():
                del vma.mm.pmd[slot]
        segs.clear()

    def flush(self) -> None:
        self.flush_ptes()
        if self.simple:
            zap_huge_pmds_bulk(self.s, self.simple[0][1], np.array([f for f, _ in self.simple],
                                                                   np.int64))
            self.simple.clear()
        if self.shared:
            zap_huge_pmds_shared_bulk(self.s, self.shared[0][1],
                                      np.array([f for f, _ in self.shared], np.int64))
            self.shared.clear()


def _batches(pt: PteTable, i: int, e: int) -> int:
    """About how many ``folio_pte_batch`` batches the slots ``[i, e)`` hold (the number of
    places the entry changes folio, plus one)."""
    f = pt.fid[i:e]
    return int(np.count_nonzero(f[1:] != f[:-1])) + 1


def zap_page_range_single(s: System, vma: VMA, start: int, end: int,
                          reclaim_pt: bool = False, batch: ZapBatch | None = None) -> None:
    """``zap_page_range_single`` / ``unmap_page_range`` over ``[start, end)`` of one VMA:
    full PMDs go whole (``zap_huge_pmd``), partial ones are split first (``zap_pmd_range``).
    Unless the VMA is VM_LOCKED (or explanations are on), the PTE tables are gathered and
    zapped many at once (:func:`zap_ptes_bulk`, then the one-by-one path for what is left),
    and PMD-mapped THPs that are freed or stay mapped elsewhere are done at once; whatever
    goes one by one keeps its order. A caller zapping several VMAs passes one ``batch``
    and flushes it."""
    mm = vma.mm
    F = s.folios
    bulk = not s.tracing and not vma.flags & VM_LOCKED
    own = batch is None
    if batch is None:
        batch = ZapBatch(s, reclaim_pt)
    addr = start
    while addr < end:
        slot = addr >> 21
        nxt = min((slot + 1) << 21, end)
        ent = mm.pmd.get(slot)
        if isinstance(ent, PmdLeaf):
            if nxt - addr == PMD_SIZE:
                f = ent.fid
                if f == HUGE_ZERO_FID:  # nothing to unmap from the rmap
                    del mm.pmd[slot]
                    addr = nxt
                    continue
                if bulk and f >= 0 and not F.flags[f] & _NOT_SIMPLE and F.ref[f] == 1:
                    batch.simple.append((f, vma))  # freed at the flush, all at once
                elif bulk and f >= 0 and not F.flags[f] & _NOT_SIMPLE \
                        and F.entire[f] >= 2 and F.ref[f] >= 2:
                    batch.shared.append((f, vma))  # stays mapped elsewhere
                else:
                    batch.flush_ptes()
                    zap_huge_pmd(s, vma, slot, ent)
                del mm.pmd[slot]
                addr = nxt
                continue
            batch.flush_ptes()
            huge_memory.split_huge_pmd(s, vma, slot, "partial zap (zap_pmd_range)")
            ent = mm.pmd.get(slot)
        if isinstance(ent, PteTable):
            i = (addr >> 12) & 511
            e = i + ((nxt - addr) >> 12)
            if bulk:
                batch.segs.append((slot, ent, i, e, vma))
            else:
                batch.flush_ptes()
                zap_pte_range(s, vma, ent, i, e)
                if reclaim_pt and e - i == 512 and ent.empty():
                    del mm.pmd[slot]
        addr = nxt
    if own:
        batch.flush()


def zap_huge_pmds_shared_bulk(s: System, vma: VMA, f: np.ndarray) -> None:
    """``zap_huge_pmd`` for PMD-mapped THPs also PMD-mapped elsewhere and referenced beyond
    this mapping (after a fork, say): each loses one entire mapping and reference; none is
    freed or partially mapped, no counter moves."""
    F = s.folios
    vma.mm.anon_pages -= 512 * len(f)
    F.entire[f] -= 1
    rmap.mm_sub_many(s, f, vma.mm.id, 1)
    F.ref[f] -= 1


_NOT_SIMPLE = PG_MLOCKED | PG_SWAPCACHE | PG_PARTIALLY_MAPPED


def zap_huge_pmds_bulk(s: System, vma: VMA, f: np.ndarray) -> None:
    """``zap_huge_pmd`` for PMD-mapped THPs whose only reference is that one mapping (not
    mlocked, not in the swap cache): the rmap removal and the free of each, done at once
    with the same counters (``nr_anon_transparent_hugepages``, per-size ``nr_anon``)."""
    F = s.folios
    n = len(f)
    vma.mm.anon_pages -= 512 * n
    s.vmstat.count("nr_anon_transparent_hugepages", -n)
    s.vmstat.count_mthp(9, "nr_anon", -n)
    queued = f[(F.flags[f] & PG_QUEUED) != 0]
    for g in queued.tolist():
        s.deferred_queue.pop(g, None)
    s.buddy.free_many(F.pfn[f], 9)
    F.release_many(f)


def do_huge_pmd_anonymous_pages_bulk(s: System, vma: VMA, addr: int, end: int,
                                     value: int) -> int:
    """Write faults on consecutive empty PMD slots wholly covered by ``[addr, end)``, each
    mapping a new PMD THP (``do_huge_pmd_anonymous_page``), done at once: same counters, same
    underused-candidate queueing (``deferred_split_folio``, the policy's hook first, folio
    after folio), same mlock in a VM_LOCKED VMA. Returns bytes covered."""
    mm = vma.mm
    if s.tracing or s.alloc_fails(9) or addr % PMD_SIZE:
        return 0
    slots = list(range(addr >> 21, (addr >> 21) + _empty_slots(mm, addr, end)))
    if len(slots) < 2:
        return 0
    anon_vma_prepare(vma)
    F = s.folios
    pfns = s.buddy.alloc_upto(9, len(slots))  # the fault after the last THP it gets
    if not pfns:                                 # falls back to small pages
        return 0
    n = len(pfns)
    slots = slots[:n]
    f = _new_anon_folios(s, vma, pfns, 9,
                         vma.linear_page_index(addr) + 512 * np.arange(n, dtype=np.int64))
    F.entire[f] = 1
    F.large[f] = 1
    F.mm0[f] = mm.id
    F.mmc0[f] = 1
    F.val[f] = value
    bits = P_DIRTY | (P_WRITE if vma.flags & VM_WRITE else 0)  # as map_anon_folio_pmd
    # deferred_split_folio(folio, false) after each map: a policy may queue its own way (or
    # not at all); otherwise underused candidates when the shrinker may split them
    queue, queued = s.settings.shrink_underused, []
    for slot, g in zip(slots, f.tolist(), strict=True):
        mm.pmd[slot] = PmdLeaf(g, bits)
        if not s.policy.deferred_split_folio(s, g, False) and queue:
            queued.append(g)
            s.deferred_queue[g] = None
    F.flags[queued] |= PG_QUEUED
    mm.anon_pages += 512 * n
    s.vmstat.count("nr_anon_transparent_hugepages", n)
    s.vmstat.count("thp_fault_alloc", n)
    s.vmstat.count_mthp(9, "anon_fault_alloc", n)
    s.vmstat.count_mthp(9, "nr_anon", n)
    return n * PMD_SIZE


def zap_huge_pmd(s: System, vma: VMA, slot: int, ent: PmdLeaf) -> None:
    """``zap_huge_pmd``: remove a whole PMD mapping."""
    if ent.fid == HUGE_ZERO_FID:
        return
    f = ent.fid
    vma.mm.anon_pages -= 512
    rmap.folio_remove_rmap_pmd(s, f, vma)
    folio_put(s, f)


def zap_pte_range(s: System, vma: VMA, pt: PteTable, i: int, iend: int) -> None:
    """``zap_pte_range`` one batch at a time over slots ``[i, iend)``: clear PTEs in batches
    of consecutive pages of one folio (``folio_pte_batch``), removing the rmap once per
    batch (the reference path; :func:`zap_ptes_bulk` does the common cases at once)."""
    mm = vma.mm
    todo = np.flatnonzero(pt.fid[i:iend] != NONE)
    if not len(todo):
        return
    i0 = i
    i = i0 + int(todo[0])
    while i < iend:
        f = int(pt.fid[i])
        if f == NONE:
            nxt = todo[np.searchsorted(todo, i - i0, "right"):]
            i = i0 + int(nxt[0]) if len(nxt) else iend
            continue
        if pt.bits[i] & P_SWAP:
            swap.free_swap_entry(s, f)
            mm.swap_ents -= 1
            pt.fid[i] = NONE
            pt.bits[i] = 0
            i += 1
            continue
        if f == ZERO_FID:
            pt.fid[i] = NONE
            i += 1
            continue
        n = folio_pte_batch(s, pt, i, f, iend - i)
        k = int(pt.idx[i])
        pt.fid[i:i + n] = NONE
        pt.bits[i:i + n] = 0
        mm.anon_pages -= n
        rmap.folio_remove_rmap_ptes(s, f, k, n, vma)
        folio_put(s, f, n)
        swap.free_swap_cache(s, f)  # free_pages_and_swap_cache
        i += n


def folio_pte_batch(s: System, pt: PteTable, i: int, f: int, limit: int) -> int:
    """``folio_pte_batch``: consecutive present PTEs from ``i`` mapping consecutive pages of
    folio ``f`` (dirty, young and write bits ignored), at most ``limit``."""
    if s.folios.order[f] == 0:
        return 1
    k = int(pt.idx[i])
    n = min(limit, s.folios.nr(f) - k)
    fids = pt.fid[i:i + n]
    idxs = pt.idx[i:i + n]
    bits = pt.bits[i:i + n]
    ok = (fids == f) & (idxs == (k + _arange(n))) & ((bits & P_SWAP) == 0)
    if ok.all():
        return n
    return int(ok.argmin())


_AR = None


_TILED: dict[int, np.ndarray] = {}


def _tiled(order: int) -> np.ndarray:
    """The page indexes of a table filled with folios of ``order``: 0..nr-1 repeated
    (read-only, shared)."""
    a = _TILED.get(order)
    if a is None:
        a = _TILED[order] = np.tile(np.arange(1 << order, dtype=np.int16), 512 >> order)
        a.flags.writeable = False
    return a


def _arange(n: int) -> np.ndarray:
    global _AR
    if _AR is None:
        _AR = np.arange(512, dtype=np.int16)
    return _AR[:n]


def free_pgtables(mm: MM, start: int, end: int) -> None:
    """``free_pgtables``: after munmap, PTE tables of 2 MiB slots that no VMA overlaps go."""
    for slot in range(start >> 21, ((end - 1) >> 21) + 1):
        ent = mm.pmd.get(slot)
        if ent is not None and not mm.vmas_in(slot << 21, (slot + 1) << 21):
            del mm.pmd[slot]


# -- fork -------------------------------------------------------------------------------------
def folio_needs_cow_for_dma(s: System, vma: VMA, f: int) -> bool:
    """``folio_needs_cow_for_dma``: the mm has pinned at some point and the folio may be."""
    return vma.mm.has_pinned and s.folios.maybe_dma_pinned(f)


class CopyBatch:
    """PTE segments and PMD-mapped THPs gathered at fork for copying at once, over all the
    VMAs of one mm that has never pinned (nothing of these is order-dependent)."""

    def __init__(self, s: System) -> None:
        self.s = s
        self.segs: list[tuple[int, PteTable, int, int, VMA, VMA]] = []
        self.shared: list[int] = []
        self.dst: VMA | None = None

    def flush(self) -> None:
        s = self.s
        for chunk in _alike_chunks(self.segs):
            left, masks = copy_ptes_bulk(s, chunk[0][4].mm, chunk)
            for (slot, spt, i, e, dst, src), more, m in zip(chunk, left.tolist(), masks,
                                                             strict=True):
                if more:
                    copy_pte_range(s, dst, src, spt, (slot << 21) + (i << 12),
                                   (slot << 21) + (e << 12), m)
        self.segs.clear()
        if self.shared:
            assert self.dst is not None
            _copy_huge_pmds_bulk(s, self.dst, np.array(self.shared, np.int64))
            self.shared.clear()


def _alike_chunks(segs: list) -> Iterator[list]:
    """The segments in chunks of at most :data:`_CHUNK` alike ones, each group in its order:
    whole tables that never held a large folio's page, other whole tables, then the partial
    ones the same way, so that most chunks a bulk step gathers take its quicker paths (whole
    tables, no page indexes, order-0 only)."""
    groups: tuple[list, list, list, list] = ([], [], [], [])
    for g in segs:
        groups[2 * (g[2] != 0 or g[3] != PTRS_PER_PTE) + (g[1].idx is not NO_IDX)].append(g)
    for grp in groups:
        for c in range(0, len(grp), _CHUNK):
            yield grp[c:c + _CHUNK]


def copy_page_range(s: System, dst: VMA, src: VMA, batch: CopyBatch | None = None) -> None:
    """``copy_page_range``: share every mapped page with the child, write-protected in both;
    exclusive pages of maybe-pinned folios are copied for the child instead. Without pins
    (``folio_needs_cow_for_dma`` false everywhere) the PMD copies' folio side and the PTE
    tables are gathered (into ``batch`` if given: the caller flushes it) and done many at
    once (:func:`_copy_huge_pmds_bulk`, :func:`copy_ptes_bulk`, then the one-by-one path for
    what is left)."""
    smm, dmm = src.mm, dst.mm
    bulk = not s.tracing and not smm.has_pinned
    own = batch is None
    if batch is None:
        batch = CopyBatch(s)
    batch.dst = dst
    for slot in range(src.start >> 21, ((src.end - 1) >> 21) + 1):
        ent = smm.pmd.get(slot)
        if ent is None:
            continue
        if isinstance(ent, PmdLeaf):
            if bulk and ent.fid >= 0:
                ent.bits &= 0xFF ^ P_WRITE
                dmm.pmd[slot] = PmdLeaf(ent.fid, ent.bits)
                batch.shared.append(ent.fid)
                continue
            if huge_memory.copy_huge_pmd(s, dst, src, slot, ent) == 0:
                continue
            ent = smm.pmd.get(slot)
        lo = max(src.start, slot << 21)
        hi = min(src.end, (slot + 1) << 21)
        if bulk:
            i = (lo >> 12) & 511
            batch.segs.append((slot, ent, i, i + ((hi - lo) >> 12), dst, src))
        else:
            copy_pte_range(s, dst, src, ent, lo, hi)
    if own:
        batch.flush()


def _copy_huge_pmds_bulk(s: System, dst: VMA, f: np.ndarray) -> None:
    """The folio side of ``copy_huge_pmd`` for PMD-mapped THPs that cannot be pinned, done at
    once: PageAnonExclusive of the head cleared, one more entire mapping (to the child's mm
    slot) and reference."""
    F = s.folios
    if F.pages:
        for g in f.tolist():
            if g in F.pages and F.flags[g] & PG_ANON_EXCLUSIVE:
                F.pages[g].pae[:] = False
    F.flags[f] &= ~PG_ANON_EXCLUSIVE
    F.entire[f] += 1
    rmap.mm_add_many(s, f, dst.mm.id, 1)
    F.ref[f] += 1
    dst.mm.anon_pages += 512 * len(f)


def copy_pte_range(s: System, dst: VMA, src: VMA, spt: PteTable, lo: int, hi: int,
                   handled: np.ndarray | None = None) -> None:
    """``copy_pte_range`` / ``copy_present_ptes`` batch by batch over ``[lo, hi)``, skipping
    the slots ``handled`` marks (done by :func:`copy_ptes_bulk`)."""
    F = s.folios
    dmm = dst.mm
    slot = lo >> 21
    dpt = dmm.pmd.get(slot)
    if dpt is None:
        dpt = PteTable()
        dmm.pmd[slot] = dpt
    i = (lo >> 12) & 511
    iend = i + ((hi - lo) >> 12)
    if handled is None:
        handled = np.zeros(512, bool) if s.tracing else \
            _copy_small_and_zero_ptes(s, dst, src, spt, dpt, i, iend)
    todo = np.flatnonzero((spt.fid[i:iend] != NONE) & ~handled[i:iend]) + i
    for i in todo.tolist():
        if handled[i]:
            continue
        f = int(spt.fid[i])
        if spt.bits[i] & P_SWAP:
            from foliosim.mm.swap import swap_duplicate

            swap_duplicate(s, f)
            dpt.fid[i] = f
            dpt.bits[i] = spt.bits[i]
            dmm.swap_ents += 1
            continue
        if f == ZERO_FID:
            dpt.fid[i] = ZERO_FID
            dpt.bits[i] = 0
            continue
        k = int(spt.idx[i])
        n = folio_pte_batch(s, spt, i, f, iend - i)
        if folio_needs_cow_for_dma(s, src, f):
            # folio_try_dup_anon_rmap_ptes fails on exclusive pages: copy those one by one
            for j in range(n):
                if F.pae(f, k + j):
                    copy_present_page(s, dst, dpt, i + j, f, k + j, lo & ~(PMD_SIZE - 1))
                else:
                    _share(s, dst, spt, dpt, i + j, f, k + j, 1)
        else:
            _share(s, dst, spt, dpt, i, f, k, n)
        handled[i:i + n] = True


def _copy_small_and_zero_ptes(s: System, dst: VMA, src: VMA, spt: PteTable, dpt: PteTable,
                              i: int, iend: int) -> np.ndarray:
    """The common case of ``copy_present_ptes`` done at once: zero-page PTEs are copied, and
    order-0 folios that cannot be DMA-pinned are shared (PageAnonExclusive cleared, both PTEs
    write-protected, one more mapping and reference), exactly as one by one. Returns the mask
    of entries handled (over the whole table)."""
    F = s.folios
    handled = np.zeros(512, bool)
    fids = spt.fid[i:iend]
    bits = spt.bits[i:iend]
    zero = np.nonzero((fids == ZERO_FID) & ((bits & P_SWAP) == 0))[0] + i
    dpt.fid[zero] = ZERO_FID
    dpt.bits[zero] = 0
    handled[zero] = True
    idx = np.nonzero((fids >= 0) & ((bits & P_SWAP) == 0))[0]
    f = fids[idx]
    ok = F.order[f] == 0
    if src.mm.has_pinned:
        ok &= F.ref[f] < 1024  # folio_maybe_dma_pinned of a small folio
    j = idx[ok] + i
    g = f[ok]
    if len(g):
        F.flags[g] &= ~PG_ANON_EXCLUSIVE
        F.ref[g] += 1
        F.large[g] += 1
        spt.bits[j] &= 0xFF ^ P_WRITE
        dpt.fid[j] = g
        dpt.clear_idx(j)
        dpt.bits[j] = spt.bits[j]
        dst.mm.anon_pages += len(g)
        handled[j] = True
    return handled


def whole_folio_runs(s: System, pt: PteTable, i: int, iend: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The present (not swap, not zero-page) PTE runs in ``[i, iend)`` that each map one
    whole folio, its pages in order: returns their first slots, folio ids and lengths
    (order-0 folios are runs of one)."""
    G = _Gather(s, [(0, pt, i, iend)])
    return G.starts + i, G.f, G.nr


def uniform_mask(s: System, f: np.ndarray) -> np.ndarray:
    """Mask of the folios whose per-page state is uniform (no per-page arrays)."""
    P = s.folios.pages
    if not P:
        return np.ones(len(f), bool)
    return np.fromiter((g not in P for g in f.tolist()), bool, len(f))


def _uniform_or_small(s: System, f: np.ndarray, small: np.ndarray) -> np.ndarray:
    """Mask: order-0 folio, or large folio with uniform per-page state."""
    out = small.copy()
    big = np.flatnonzero(~small)
    if len(big):
        out[big] = uniform_mask(s, f[big])
    return out


def _pick(a: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``a[mask]``, without the copy when the mask takes everything."""
    return a if mask.all() else a[mask]


def run_mask(n: int, starts: np.ndarray, lens: np.ndarray | None) -> np.ndarray:
    """Mask over ``n`` slots of the runs ``(starts, lens)``, which never overlap (``lens``
    None: runs of one slot)."""
    out = np.zeros(n + 1, np.bool_)
    out[starts] = True
    if lens is None:
        return out[:n]
    # the state toggles where a run starts and where one ends (twice, so not at all, where
    # one ends and the next starts)
    out[starts + lens] ^= True
    return np.logical_xor.accumulate(out[:n])


def _share(s: System, dst: VMA, spt: PteTable, dpt: PteTable, i: int, f: int, k: int,
           n: int) -> None:
    F = s.folios
    F.set_pae(f, k, n, False)
    F.ref[f] += n
    rmap.folio_dup_anon_rmap(s, f, k, n, dst, pmd=False)
    dst.mm.anon_pages += n
    spt.bits[i:i + n] &= 0xFF ^ P_WRITE
    dpt.fid[i:i + n] = f
    dpt.set_idx(slice(i, i + n), spt.idx[i:i + n])
    dpt.bits[i:i + n] = spt.bits[i:i + n]


def copy_present_page(s: System, dst: VMA, dpt: PteTable, i: int, f: int, k: int,
                      base: int) -> None:
    """``copy_present_page``: the child gets its own exclusive order-0 copy."""
    F = s.folios
    new = folio_alloc(s, 0)
    if new is None:
        return
    F.val[new] = F.value(f, k)
    addr = base + (i << 12)
    rmap.folio_add_new_anon_rmap(s, new, dst, addr, pmd=False)
    folio_add_lru_vma(s, new, dst)
    dst.mm.anon_pages += 1
    dpt.fid[i] = new
    dpt.clear_idx(i)
    dpt.bits[i] = (P_WRITE | P_DIRTY) if dst.flags & VM_WRITE else P_DIRTY
    s.tracing and s.trace(f"fork copied page {k} of maybe-pinned {s.fname(f)} for the child "
            "(copy_present_page)")


# -- many page tables at once -----------------------------------------------------------------
# A segment is (slot, table, i, iend, ...): the slots [i, iend) of one PTE table in one VMA.
Seg = tuple  # (slot, table, i, iend, *the VMAs it belongs to)
_CHUNK = 1024  # segments a bulk step gathers at once (bounds its temporary arrays)


class _Gather:
    """The entries of many segments side by side, and the runs in them that each map one
    whole folio, its pages in order (runs never cross a segment's edge). A page is mapped at
    most once in an mm, so a folio has at most one whole run among the segments of one mm:
    updating the folio columns through the runs' folio ids never meets a folio twice."""

    def __init__(self, s: System, segs: list[Seg]) -> None:
        F = s.folios
        self.segs = segs
        # whole tables (the common case at fork and exit) need no slicing
        self.whole = all(g[2] == 0 and g[3] == PTRS_PER_PTE for g in segs)
        if self.whole:
            self.lens = np.full(len(segs), PTRS_PER_PTE, np.int64)
            self.offs = np.arange(0, PTRS_PER_PTE * len(segs), PTRS_PER_PTE, dtype=np.int64)
            self.fid = np.concatenate([g[1].fid for g in segs])
            self.bits = np.concatenate([g[1].bits for g in segs])
        else:
            self.lens = np.fromiter((g[3] - g[2] for g in segs), np.int64, len(segs))
            self.offs = np.cumsum(self.lens) - self.lens
            self.fid = np.concatenate([g[1].fid[g[2]:g[3]] for g in segs])
            self.bits = np.concatenate([g[1].bits[g[2]:g[3]] for g in segs])
        n = len(self.fid)
        # tables that never mapped a large folio's page share the all-zero NO_IDX
        self.no_idx = all(g[1].idx is NO_IDX for g in segs)
        self.idx = np.zeros(n, np.int16) if self.no_idx else \
            np.concatenate([g[1].idx[g[2]:g[3]] for g in segs])
        fid, idx = self.fid, self.idx
        self.swap = (self.bits & P_SWAP) != 0
        self.present = present = (fid >= 0) & ~self.swap
        self.zero = (fid == ZERO_FID) & ~self.swap
        # order-0 folios are runs of one page; only large folios' pages need the run search
        # (folio ids as intp once: numpy gathers with them fastest)
        fid64 = fid.astype(np.intp)
        allp = bool(present.all())
        if not allp:
            fid64[~present] = 0
        small = F.order[fid64] == 0
        if not allp:
            small &= present
        some_small = bool(small.any())
        if allp and not some_small:  # every entry a large folio's page: no gathers
            p0, pb = np.zeros(0, np.intp), np.arange(n)
            fb, ib = fid64, idx
        elif allp and small.all():  # every entry an order-0 folio: no search at all
            p0, pb = np.arange(n), np.zeros(0, np.intp)
        else:
            p0 = np.flatnonzero(small)
            pb = np.flatnonzero(present & ~small)
            fb, ib = fid64[pb], idx[pb]
        self.small_only = not len(pb)
        if len(pb):
            segstart = np.zeros(n, bool)
            segstart[self.offs] = True
            cont = np.zeros(len(pb), bool)
            cont[1:] = (fb[1:] == fb[:-1]) & (ib[1:] == ib[:-1] + 1)
            if len(pb) < n:
                cont[1:] &= (pb[1:] == pb[:-1] + 1) & ~segstart[pb[1:]]
            else:
                cont[1:] &= ~segstart[1:]
            first = np.flatnonzero(~cont)
            lens = np.diff(np.append(first, len(pb)))
            ok = (ib[first] == 0) & (lens == np.left_shift(1, F.order[fb[first]].astype(np.intp)))
            first, lens = first[ok], lens[ok]
            self.starts = np.concatenate((p0, pb[first]))
            self.f = np.concatenate((fid64[p0], fb[first]))
            self.nr = np.concatenate((np.ones(len(p0), np.int32), lens.astype(np.int32)))
        else:
            self.starts, self.f = p0, fid64 if len(p0) == n else fid64[p0]
            self.nr = np.ones(len(p0), np.int32)

    def run_mask(self, sel: np.ndarray) -> np.ndarray:
        """Mask of the entries in the runs ``sel`` picks."""
        return run_mask(len(self.fid), _pick(self.starts, sel),
                        None if self.small_only else self.nr[sel])

    def per_segment(self, mask: np.ndarray) -> np.ndarray:
        """Per segment: is any of its entries in ``mask``?"""
        if not len(self.offs):
            return np.zeros(0, bool)
        if self.whole:
            return mask.reshape(-1, PTRS_PER_PTE).any(axis=1)
        return np.logical_or.reduceat(mask, self.offs)

    def leftover(self, handled: np.ndarray) -> np.ndarray:
        """Per segment: does it keep entries for the one-by-one path?"""
        return self.per_segment((self.present | self.swap | self.zero) & ~handled)


def zap_ptes_bulk(s: System, mm: MM, segs: list) -> np.ndarray:
    """``zap_pte_range`` over many page tables of VMAs of ``mm`` (none VM_LOCKED) at once, for the
    common cases, exactly as batch by batch: zero-page entries are cleared; order-0 folios
    mapped only here with no other reference are freed; order-0 folios mapped elsewhere too
    lose a mapping and a reference; large folios mapped whole here by a run of PTEs (uniform
    per-page state) lose the run's mappings and references when mapped elsewhere too, or are
    freed when this run was their only mapping and reference. None of these moves a counter
    but per-size ``nr_anon``, none is queued for deferred split. Returns, per segment,
    whether entries are left for the one-by-one path."""
    F = s.folios
    G = _Gather(s, segs)
    f, nr = G.f, G.nr
    ref, large, fl = F.ref[f], F.large[f], F.flags[f]
    small = nr == 1
    excl0 = small & (ref == 1) & (large == 1) \
        & ((fl & (PG_MLOCKED | PG_SWAPCACHE | PG_QUEUED)) == 0)
    shared0 = small & (large >= 2) & (ref >= 2)
    big = ~small
    if big.any():
        umc, entire = F.umc[f], F.entire[f]
        uni = _uniform_or_small(s, f, small)
        shared = big & (umc >= 2) & (ref > nr) & uni
        excl = big & (umc == 1) & (ref == nr) & (large == nr) & (entire == 0) & uni \
            & ((fl & (PG_MLOCKED | PG_SWAPCACHE | PG_ANON)) == PG_ANON)
    else:
        shared = excl = np.zeros(len(f), bool)
    sel = excl0 | shared0 | shared | excl
    excl0 &= sel
    shared0 &= sel
    shared &= sel
    excl &= sel
    covered = G.run_mask(sel)
    handled = covered | G.zero
    mm.anon_pages -= int(np.count_nonzero(covered))
    # order 0, freed
    g = _pick(f, excl0)
    s.buddy.free_many(F.pfn[g], 0)
    F.large[g] = 0
    F.ref[g] = 0
    F.release_many(g)
    # order 0, mapped elsewhere
    g = _pick(f, shared0)
    F.large[g] -= 1
    F.ref[g] -= 1
    # large, mapped elsewhere
    g = f[shared]
    if len(g):
        F.ref[g] -= nr[shared]
        F.umc[g] -= 1
        rmap.mm_sub_many(s, g, mm.id, nr[shared])
    # large, freed
    g = f[excl]
    if len(g):
        for h in g[(F.flags[g] & (PG_QUEUED | PG_PARTIALLY_MAPPED)) != 0].tolist():
            huge_memory.folio_unqueue_deferred_split(s, h)
        orders = F.order[g]
        for o in np.unique(orders).tolist():
            s.vmstat.count_mthp(o, "nr_anon", -int((orders == o).sum()))
        for pfn, o in zip(F.pfn[g].tolist(), orders.tolist(), strict=True):
            s.buddy.free_block(pfn, o)
        for col in (F.umc, F.nr_mapped, F.large, F.ref, F.mm0, F.mmc0, F.mm1, F.mmc1):
            col[g] = 0
        F.release_many(g)
    # the page tables
    fid = np.where(handled, np.int32(NONE), G.fid)
    bits = np.where(handled, np.uint8(0), G.bits)
    for (_, pt, i, e, *_), o in zip(segs, G.offs.tolist(), strict=True):
        pt.fid[i:e] = fid[o:o + e - i]
        pt.bits[i:e] = bits[o:o + e - i]
    return G.leftover(handled)


def copy_ptes_bulk(s: System, dmm: MM, segs: list
                   ) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """``copy_pte_range`` over many page tables of an mm that has never pinned, at once,
    for the common cases, exactly as batch by batch: zero-page entries are copied; order-0
    folios, and large folios mapped whole by a run of PTEs with uniform per-page state, are
    shared with the child (PageAnonExclusive cleared, both PTEs write-protected, one more
    mapping per page - a large folio's to the child's mm slot - and reference). The child's
    tables are created as needed. Returns, per segment, whether entries are left for the
    one-by-one path, and each segment's mask of handled slots (over its table)."""
    F = s.folios
    G = _Gather(s, segs)
    f, nr = G.f, G.nr
    small = nr == 1
    uni = _uniform_or_small(s, f, small)
    sel = uni
    g0 = _pick(f, sel & small)
    F.flags[g0] &= ~PG_ANON_EXCLUSIVE
    F.ref[g0] += 1
    F.large[g0] += 1
    big = sel & ~small
    g = f[big]
    if len(g):
        F.flags[g] &= ~PG_ANON_EXCLUSIVE
        F.ref[g] += nr[big]
        F.umc[g] += 1
        rmap.mm_add_many(s, g, dmm.id, nr[big])
    shared = G.run_mask(sel)
    dmm.anon_pages += int(np.count_nonzero(shared))
    handled = shared | G.zero
    pbits = np.where(shared, G.bits & np.uint8(0xFF ^ P_WRITE), G.bits)
    cfid = np.where(handled, G.fid, np.int32(NONE))
    cbits = np.where(shared, pbits, np.uint8(0))
    left = G.leftover(handled)
    if G.no_idx:
        cidx = G.idx
        big_idx = [False] * len(segs)
    else:
        cidx = np.where(handled, G.idx, 0).astype(np.int16)
        big_idx = G.per_segment(cidx != 0).tolist()  # a large folio's pages
    masks: list[np.ndarray | None] = []
    for (slot, spt, i, e, *_), o, more, bi in zip(segs, G.offs.tolist(), left.tolist(),
                                                  big_idx, strict=True):
        k = e - i
        spt.bits[i:e] = pbits[o:o + k]
        dpt = dmm.pmd.get(slot)
        idx = cidx[o:o + k] if bi else NO_IDX
        if dpt is None and k == 512:
            dmm.pmd[slot] = dpt = PteTable.of(cfid[o:o + k], idx, cbits[o:o + k])
        else:
            if dpt is None:
                dpt = PteTable()
                dmm.pmd[slot] = dpt
            dpt.fid[i:e] = cfid[o:o + k]
            dpt.set_idx(slice(i, e), idx)
            dpt.bits[i:e] = cbits[o:o + k]
        m = None
        if more:
            m = np.zeros(512, bool)
            m[i:e] = handled[o:o + k]
        masks.append(m)
    return left, masks


__all__ = ["PG_DIRTY", "handle_mm_fault", "zap_page_range_single", "copy_page_range"]
