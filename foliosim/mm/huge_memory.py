"""PMD THPs, PMD split, folio split and the deferred split queue (follows mm/huge_memory.c)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from foliosim.mm import memory, mlock, rmap
from foliosim.mm.folio import (
    HUGE_ZERO_FID,
    PG_ACTIVE,
    PG_ANON,
    PG_ANON_EXCLUSIVE,
    PG_DIRTY,
    PG_FREE,
    PG_LRU,
    PG_MLOCKED,
    PG_MM_SHARED,
    PG_PARTIALLY_MAPPED,
    PG_QUEUED,
    PG_SWAPBACKED,
    PG_SWAPCACHE,
    PG_UNEVICTABLE,
    ZERO_FID,
)
from foliosim.mm.mm_types import VM_HUGEPAGE, VM_LOCKED, VM_NOHUGEPAGE, VM_WRITE, VMA
from foliosim.mm.pgtable import NONE, P_DIRTY, P_SWAP, P_WRITE, PmdLeaf, PteTable

if TYPE_CHECKING:
    from foliosim.mm.system import System

EAGAIN, EBUSY, EINVAL = -11, -16, -22

#: The vectorised paths of the folio split (unmap, remap, free a page table or folio at a
#: time). They apply whenever tracing is off; the per-page loops are the reference, and the
#: tests switch this off to compare the two on the same state.
BULK = True

_AR512 = np.arange(512, dtype=np.int64)


# -- which orders a VMA may use ---------------------------------------------------------------
def thp_vma_suitable_order(vma: VMA, addr: int, order: int) -> bool:
    """``thp_vma_suitable_order``: the naturally aligned block around ``addr`` lies wholly
    inside the VMA."""
    size = 4096 << order
    haddr = addr & ~(size - 1)
    return haddr >= vma.start and haddr + size <= vma.end


def thp_vma_allowable_orders(s: System, vma: VMA, orders: Iterable[int], tva: str) -> list[int]:
    """``thp_vma_allowable_orders``: the per-size sysfs modes (always; madvise with
    VM_HUGEPAGE; inherit per the global mode), then ``__thp_vma_allowable_orders``
    (VM_NOHUGEPAGE; outside page faults, some aligned block of the order must fit)."""
    orders = tuple(orders)
    key = (vma.flags & (VM_HUGEPAGE | VM_NOHUGEPAGE), tva, orders)
    allowed = s.allowable_cache.get(key)
    if allowed is None:
        allowed = s.allowable_cache[key] = _sysfs_allowed(s, vma, orders, tva)
    if tva == "collapse" and vma.anon_vma is None:
        return []  # never faulted: only page faults and smaps may go ahead without an anon_vma
    if tva != "pagefault":
        for i, o in enumerate(allowed):
            if thp_vma_suitable_order(vma, vma.end - (4096 << o), o):
                return list(allowed[i:])
        return []
    return list(allowed)


def _sysfs_allowed(s: System, vma: VMA, orders: tuple[int, ...], tva: str) -> tuple[int, ...]:
    """The sysfs and VM_NOHUGEPAGE part of ``thp_vma_allowable_orders`` (cached per System:
    it depends only on the settings and the VMA's VM_HUGEPAGE/VM_NOHUGEPAGE)."""
    st = s.settings
    if tva != "collapse":
        hg = bool(vma.flags & VM_HUGEPAGE)
        glob = st.enabled == "always" or (hg and st.enabled == "madvise")
        keep = []
        for o in orders:
            mode = st.order_mode(o)
            if mode == "always" or (mode == "madvise" and hg) or (mode == "inherit" and glob):
                keep.append(o)
        orders = tuple(keep)
    if not orders or vma.flags & VM_NOHUGEPAGE:
        return ()
    return orders


def thp_vma_allowable_order(s: System, vma: VMA, order: int, tva: str) -> bool:
    return bool(thp_vma_allowable_orders(s, vma, [order], tva))


# -- PMD faults -------------------------------------------------------------------------------
def do_huge_pmd_anonymous_page(s: System, vma: VMA, addr: int, write: bool) -> int:
    """``do_huge_pmd_anonymous_page``: a read maps the huge zero folio (with use_zero_page),
    a write a new PMD THP that is queued as an underused candidate. Non-zero: fall back."""
    mm = vma.mm
    if not thp_vma_suitable_order(vma, addr, 9):
        return -1
    from foliosim.mm.vma import anon_vma_prepare

    anon_vma_prepare(vma)
    slot = addr >> 21
    if not write and s.settings.use_zero_page:
        if not s.get_huge_zero_folio():
            s.vmstat.count("thp_fault_fallback")
            s.tracing and s.trace("no huge zero folio to be had: PTE fallback "
                                  "(do_huge_pmd_anonymous_page)")
            return -1
        mm.pmd[slot] = PmdLeaf(HUGE_ZERO_FID, 0)
        s.tracing and s.trace(f"huge zero page mapped at {s.fmt_addr(mm, addr & ~0x1FFFFF)} "
                "(do_huge_pmd_anonymous_page)")
        return 0
    f = memory.folio_alloc(s, 9)
    if f is None:
        s.vmstat.count("thp_fault_fallback")
        s.vmstat.count_mthp(9, "anon_fault_fallback")
        if s.tracing:
            s.trace("PMD THP allocation failed, PTE fallback (do_huge_pmd_anonymous_page)")
        return -1
    map_anon_folio_pmd(s, vma, f, slot)
    deferred_split_folio(s, f, False)
    return 0


def map_anon_folio_pmd(s: System, vma: VMA, f: int, slot: int) -> None:
    """``map_anon_folio_pmd``: map a new THP by one PMD, always dirty, writable if VM_WRITE
    (``maybe_pmd_mkwrite(pmd_mkdirty(...))``: unlike a PTE fault, a read-only VMA's THP
    from a read fault without the huge zero page is dirty too)."""
    mm = vma.mm
    bits = P_DIRTY | (P_WRITE if vma.flags & VM_WRITE else 0)
    mm.pmd[slot] = PmdLeaf(f, bits)
    rmap.folio_add_new_anon_rmap(s, f, vma, slot << 21, pmd=True)
    memory.folio_add_lru_vma(s, f, vma)
    mm.anon_pages += 512
    s.vmstat.count("thp_fault_alloc")
    s.vmstat.count_mthp(9, "anon_fault_alloc")
    if s.tracing:
        s.trace(f"PMD THP {s.fname(f)} at {s.fmt_addr(mm, slot << 21)} "
                "(do_huge_pmd_anonymous_page)")


def do_huge_zero_wp_pmd(s: System, vma: VMA, addr: int) -> int:
    """``do_huge_zero_wp_pmd``: a write to the huge zero PMD allocates a THP, queued as an
    underused candidate like any faulted THP (the live 6.18 kernel does: its shrinker splits
    such a THP as underused; the v6.18.2 source does not queue it); if the allocation fails
    the huge zero PMD is split to zero-page PTEs."""
    slot = addr >> 21
    f = memory.folio_alloc(s, 9)
    if f is None:
        s.vmstat.count("thp_fault_fallback")
        s.vmstat.count_mthp(9, "anon_fault_fallback")
        split_huge_pmd(s, vma, slot, "huge zero write fallback")
        return -1
    del vma.mm.pmd[slot]
    map_anon_folio_pmd(s, vma, f, slot)
    deferred_split_folio(s, f, False)
    return 0


def do_huge_pmd_wp_page(s: System, vma: VMA, addr: int, unshare: bool) -> int:
    """``do_huge_pmd_wp_page``: reuse the PMD if the head is exclusive or the folio has no
    other reference; otherwise split the PMD and let the PTE path copy one page."""
    mm = vma.mm
    F = s.folios
    slot = addr >> 21
    ent = mm.pmd[slot]
    f = ent.fid
    reuse = F.pae(f, 0)
    if not reuse:
        swapcache = F.nr(f) if F.flags[f] & PG_SWAPCACHE else 0
        if int(F.ref[f]) <= 1 + swapcache and int(F.ref[f]) == 1:
            F.anon_vma[f] = vma.anon_vma.id  # folio_move_anon_rmap
            F.set_pae(f, 0, 1 if f in F.pages else 512, True)
            reuse = True
    if reuse:
        if not unshare:
            ent.bits |= P_WRITE | P_DIRTY
        return 0
    split_huge_pmd(s, vma, slot, "COW of a shared PMD THP (do_huge_pmd_wp_page)")
    return -1


def copy_huge_pmd(s: System, dst: VMA, src: VMA, slot: int, ent: PmdLeaf) -> int:
    """``copy_huge_pmd``: share the PMD with the child, write-protected in both; a maybe-pinned
    exclusive THP is PMD-split in the parent and copied at PTE level (-EAGAIN)."""
    F = s.folios
    if ent.fid == HUGE_ZERO_FID:
        dst.mm.pmd[slot] = PmdLeaf(HUGE_ZERO_FID, 0)
        return 0
    f = ent.fid
    if F.pae(f, 0):
        if memory.folio_needs_cow_for_dma(s, src, f):
            split_huge_pmd(s, src, slot, "fork of a maybe-pinned THP (copy_huge_pmd)")
            return EAGAIN
        F.set_pae(f, 0, 512, False)  # the head's bit; the tails' are clear under a PMD
    rmap.folio_dup_anon_rmap(s, f, 0, 512, dst, pmd=True)
    F.ref[f] += 1
    dst.mm.anon_pages += 512
    ent.bits &= 0xFF ^ P_WRITE
    dst.mm.pmd[slot] = PmdLeaf(f, ent.bits)
    return 0


# -- PMD split --------------------------------------------------------------------------------
def split_huge_pmd_address(vma: VMA, addr: int, reason: str) -> None:
    """``split_huge_pmd_address``: split the PMD mapping covering ``addr``, if any."""
    ent = vma.mm.pmd.get(addr >> 21)
    if isinstance(ent, PmdLeaf):
        split_huge_pmd(vma.mm.sys, vma, addr >> 21, reason)


def split_huge_pmd(s: System, vma: VMA, slot: int, reason: str) -> None:
    """``__split_huge_pmd_locked`` (non-freeze): the PMD becomes 512 PTEs of the same folio;
    PAE of the head goes to every page, the PMD's dirty bit to the folio; nothing is partially
    mapped and the folio stays whole."""
    mm = vma.mm
    F = s.folios
    ent = mm.pmd[slot]
    assert isinstance(ent, PmdLeaf)
    pt = PteTable()
    s.vmstat.count("thp_split_pmd")
    if ent.fid == HUGE_ZERO_FID:
        pt.fid[:] = ZERO_FID
        mm.pmd[slot] = pt
        s.tracing and s.trace(f"huge zero PMD split at {s.fmt_addr(mm, slot << 21)}: {reason}")
        return
    f = ent.fid
    excl = F.pae(f, 0)
    if ent.bits & P_DIRTY:
        F.flags[f] |= PG_DIRTY
    pt.fid[:] = f
    pt.set_idx(slice(None), _AR512)
    pt.bits[:] = ent.bits & (P_WRITE | P_DIRTY)
    mm.pmd[slot] = pt
    F.ref[f] += 511
    if not excl:
        # only the head's PageAnonExclusive means anything under a PMD: the tails are clear
        # (the model may have kept per-page copies of the head's bit, e.g. after a store)
        F.set_pae(f, 0, 512, False)
    rmap.folio_add_anon_rmap_ptes(s, f, 0, 512, vma, excl)
    rmap.folio_remove_rmap_pmd(s, f, vma)
    if s.tracing:
        s.trace(f"PMD split of {s.fname(f)} mapped at {s.fmt_addr(mm, slot << 21)}: {reason}")


# -- folio split ------------------------------------------------------------------------------
def can_split_folio(s: System, f: int) -> tuple[bool, int]:
    """``can_split_folio``: every reference must be a mapping (or the swapcache's); returns the
    verdict and the number of extra references."""
    F = s.folios
    extra = F.nr(f) if F.flags[f] & PG_SWAPCACHE else 0
    others = int(F.ref[f]) - extra - rmap.folio_mapcount(s, f)
    return others == 0, others


def split_folio(s: System, f: int, reason: str) -> int:
    """``split_folio`` -> ``__folio_split`` to order 0: fails with -EAGAIN on any extra
    reference (pins), -EBUSY when unmapped; on success every page becomes an order-0 folio,
    zero-filled pages are remapped to the shared zero page, unmapped pages are freed."""
    F = s.folios
    order = int(F.order[f])
    nr = F.nr(f)
    name = s.fname(f) if s.tracing else ""
    ok, extra = can_split_folio(s, f)
    ret = 0
    if not rmap.folio_mapped(s, f):
        ret = EBUSY
        why = "not mapped (folio_get_anon_vma)"
    elif not ok:
        ret = EAGAIN
        why = f"{extra} extra reference{'s' if extra != 1 else ''} (can_split_folio)"
    elif s.policy.split_meets_transient_ref(s, f):
        ret = EAGAIN
        why = "a speculative reference appeared (folio_ref_freeze)"
    if ret:
        if order == 9:
            s.vmstat.count("thp_split_page_failed")
        s.vmstat.count_mthp(order, "split_failed")
        s.stats_split_failures[why.split(" (")[-1].rstrip(")")] += 1
        s.tracing and s.trace(f"split of {name} failed: {why}; {reason}")
        return ret

    # unmap_folio: every mapping becomes a migration entry, recording PAE and PTE bits.
    bulk = BULK and not s.tracing and order > 0
    if bulk:
        batches = _unmap_folio_bulk(s, f, nr)
    else:
        maps = _unmap_folio(s, f, nr)
    # the folio leaves the deferred queue
    folio_unqueue_deferred_split(s, f)
    # __split_unmapped_folio: order-0 folios inheriting the folio flags
    flags = int(F.flags[f]) & (PG_MLOCKED | PG_UNEVICTABLE | PG_ACTIVE | PG_DIRTY
                               | PG_SWAPBACKED | PG_SWAPCACHE | PG_ANON | PG_LRU)
    uniform = f not in F.pages  # every page holds the folio's one value
    vals = F.values(f) if uniform else F.pages[f].val.copy()
    pfn = int(F.pfn[f])
    av, index = int(F.anon_vma[f]), int(F.index[f])
    swap = int(F.swap[f])
    if order == 9:
        s.vmstat.count("thp_split_page")
    s.vmstat.count_mthp(order, "split")
    s.vmstat.count_mthp(order, "nr_anon", -1)
    s.trace_split(f)
    F.release(f)
    zero_ok = s.policy.split_remaps_zero_pages(s) and not flags & PG_MLOCKED
    if bulk and zero_ok and swap < 0 and not (vals[0] if uniform else vals.any()) \
            and not any(b[0].flags & VM_LOCKED for b in batches):
        _split_to_zero_pages(s, batches, pfn, order)
        s.last_split = F.cycle_ids(nr)
        return 0
    ids = F.new_many(np.arange(pfn, pfn + nr, dtype=np.int64), 0,
                     ref=1 if flags & PG_SWAPCACHE else 0, anon_vma=av, flags=flags)
    F.val[ids] = int(vals[0]) if uniform else vals
    F.index.set_run(ids, index, nr)
    if swap >= 0:
        F.swap[ids] = swap + _AR512[:nr]
    if s.tracing:
        s.trace(f"split {name} into {nr} order-0 folios: {reason} (__folio_split)")
    # remap_page with RMP_USE_SHARED_ZEROPAGE (try_to_map_unused_to_zeropage: a zero-filled
    # page goes to the shared zero page unless mlocked or in a VM_LOCKED VMA)
    if bulk:
        _remap_folio_bulk(s, batches, ids, vals, zero_ok, uniform)
    else:
        _remap_folio(s, maps, ids.tolist(), vals, zero_ok)
    if bulk:
        _free_unused_bulk(s, ids, flags, pfn, order)
    else:
        dead = ids[F.ref[ids] == 0]
        if len(dead):
            nm = int(((F.flags[dead] & PG_MLOCKED) != 0).sum())
            if nm:
                s.vmstat.count("nr_mlock", -nm)
                s.vmstat.count("unevictable_pgs_cleared", nm)
            for q in F.pfn[dead].tolist():
                s.buddy.free_block(q, 0)
            F.flags[dead] = PG_FREE
            F.val.drop(dead)
            F.free_ids.extend(dead.tolist())
            F.live -= len(dead)
    s.last_split = ids
    return 0


_Map = tuple[VMA, PteTable, int, int, int, bool]


def _folio_slots(s: System, f: int, nr: int
                 ) -> Iterator[tuple[VMA, int, PmdLeaf | PteTable, int, int]]:
    """The rmap walk of ``unmap_folio`` a PMD slot at a time: for every VMA that may map
    folio ``f`` (``nr`` pages), each slot holding a PMD mapping of it (slots ``i0, i1`` unused)
    or a PTE table, with the table slots ``[i0, i1)`` the folio's extent covers there. A slot
    is looked at when the walk reaches it, after what the caller did to the ones before."""
    for vma, addr in list(rmap.rmap_walk(s, f)):
        lo = max(addr, vma.start)
        hi = min(addr + nr * 4096, vma.end)
        for slot in range(lo >> 21, ((hi - 1) >> 21) + 1):
            ent = vma.mm.pmd.get(slot)
            if isinstance(ent, PmdLeaf) and ent.fid == f:
                yield vma, slot, ent, 0, 0
            elif isinstance(ent, PteTable):
                a0 = max(lo, slot << 21)
                a1 = min(hi, (slot + 1) << 21)
                i0 = (a0 >> 12) & 511
                yield vma, slot, ent, i0, i0 + ((a1 - a0) >> 12)


def _unmap_folio(s: System, f: int, nr: int) -> list[_Map]:
    """``unmap_folio`` (``try_to_migrate`` of every mapping), page by page: a PMD mapping is
    frozen whole, each PTE of the folio is cleared and its rmap removed. Returns the entries
    to remap (VMA, table, slot, folio page, PTE bits, PageAnonExclusive). The reference for
    :func:`_unmap_folio_bulk`."""
    F = s.folios
    maps: list[_Map] = []
    for vma, slot, ent, i0, i1 in _folio_slots(s, f, nr):
        if isinstance(ent, PmdLeaf):
            maps.extend(_freeze_pmd(s, vma, slot, ent))
            continue
        for i in range(i0, i1):
            if int(ent.fid[i]) != f or ent.bits[i] & P_SWAP:
                continue
            k = int(ent.idx[i])
            excl = F.pae(f, k)
            bits = int(ent.bits[i])
            if bits & P_DIRTY:
                F.flags[f] |= PG_DIRTY
            maps.append((vma, ent, i, k, bits, excl))
            ent.fid[i] = NONE
            ent.bits[i] = 0
            rmap.folio_remove_rmap_ptes(s, f, k, 1, vma)
            F.ref[f] -= 1
    return maps


def _remap_folio(s: System, maps: list[_Map], new: list[int], vals: np.ndarray,
                 zero_ok: bool) -> None:
    """``remap_page`` after the split, entry by entry in rmap-walk order: a zero-filled page
    goes to the shared zero page (``zero_ok``, not in a VM_LOCKED VMA, and its new folio not
    mlocked by an earlier entry: ``try_to_map_unused_to_zeropage``), any other to its new
    order-0 folio (``folio_add_anon_rmap_pte``, PageAnonExclusive kept, ``mlock_vma_folio``
    in a VM_LOCKED VMA). The reference for :func:`_remap_folio_bulk`."""
    F = s.folios
    for vma, pt, i, k, bits, excl in maps:
        g = new[k]
        locked = vma.flags & VM_LOCKED
        if zero_ok and not locked and vals[k] == 0 and not F.flags[g] & PG_MLOCKED:
            pt.fid[i] = ZERO_FID
            pt.clear_idx(i)
            pt.bits[i] = 0
            vma.mm.anon_pages -= 1
            continue
        pt.fid[i] = g
        pt.clear_idx(i)
        pt.bits[i] = bits
        F.ref[g] += 1
        F.large[g] += 1  # folio_add_anon_rmap_pte of an order-0 folio
        if excl:
            F.flags[g] |= PG_ANON_EXCLUSIVE
        if locked:
            mlock.mlock_folio(s, g)  # mlock_vma_folio: the whole (small) folio is mapped


def _freeze_pmd(s: System, vma: VMA, slot: int, ent: PmdLeaf) -> list:
    """The freeze path of ``__split_huge_pmd_locked`` used by ``unmap_folio``: the PMD becomes
    512 migration entries and only the PMD rmap is removed (so a fully PMD-mapped folio never
    looks partially mapped here). Returns the entries to remap."""
    pt, bits, excl = _freeze_pmd_table(s, vma, slot, ent)
    return [(vma, pt, k, k, bits, excl) for k in range(512)]


def _freeze_pmd_table(s: System, vma: VMA, slot: int, ent: PmdLeaf
                      ) -> tuple[PteTable, int, bool]:
    """:func:`_freeze_pmd` returning the new table, the PTE bits and the head's PAE."""
    F = s.folios
    f = ent.fid
    s.vmstat.count("thp_split_pmd")
    bits = ent.bits & (P_WRITE | P_DIRTY)
    if bits & P_DIRTY:
        F.flags[f] |= PG_DIRTY
    excl = F.pae(f, 0)
    pt = PteTable()
    vma.mm.pmd[slot] = pt
    rmap.folio_remove_rmap_pmd(s, f, vma)
    F.ref[f] -= 1
    if s.tracing:
        s.trace(f"PMD split at {s.fmt_addr(vma.mm, slot << 21)} to unmap the folio (unmap_folio)")
    return pt, bits, excl


# -- the folio split a page table at a time ----------------------------------------------------
# (VMA, table, slots, pages, PTE bits, PAE); slots and pages None for a frozen PMD, whose bits
# and PAE are one value each
_Batch = tuple[VMA, PteTable, "np.ndarray | None", "np.ndarray | None", "np.ndarray | int",
               "np.ndarray | bool"]


def _unmap_folio_bulk(s: System, f: int, nr: int) -> list[_Batch]:
    """``unmap_folio`` (``try_to_migrate`` of every mapping) a page table at a time: the same
    walk as the per-page loop of :func:`split_folio`, each table's PTEs of the folio cleared
    and their rmap removed at once (:func:`_remove_rmap_ptes_bulk`). Returns per table the
    entries to remap: table slots, folio pages, PTE bits and PageAnonExclusive (for a frozen
    PMD: no slots or pages, meaning slot k for page k, and one value of the bits and PAE)."""
    F = s.folios
    out: list[_Batch] = []
    for vma, slot, ent, i0, i1 in _folio_slots(s, f, nr):
        if isinstance(ent, PmdLeaf):
            pt, bits, excl = _freeze_pmd_table(s, vma, slot, ent)
            out.append((vma, pt, None, None, bits, excl))  # slot k for page k, all alike
            continue
        sel = np.flatnonzero((ent.fid[i0:i1] == f) & ((ent.bits[i0:i1] & P_SWAP) == 0))
        if not len(sel):
            continue
        ii = sel + i0
        ks = ent.idx[ii].astype(np.int64)
        bits = ent.bits[ii]
        pa = F.pages.get(f)
        excl = pa.pae[ks] if pa is not None else np.full(
            len(ks), bool(F.flags[f] & PG_ANON_EXCLUSIVE))
        if (bits & P_DIRTY).any():
            F.flags[f] |= PG_DIRTY
        ent.fid[ii] = NONE
        ent.bits[ii] = 0
        _remove_rmap_ptes_bulk(s, f, ks, vma)
        F.ref[f] -= len(ks)
        out.append((vma, ent, ii, ks, bits, excl))
    return out


def _remove_rmap_ptes_bulk(s: System, f: int, ks: np.ndarray, vma: VMA) -> None:
    """``folio_remove_rmap_pte`` of pages ``ks`` of large folio ``f`` one after another, as
    ``try_to_migrate_one`` does, with the same outcome computed at once: per-page mapcounts,
    ``_nr_pages_mapped``, the per-mm slots, the partially-mapped queueing
    (``deferred_split_folio``, called as many times as the one-by-one removal would) and the
    munlock of a VM_LOCKED VMA (``munlock_vma_folio`` once per page)."""
    F = s.folios
    n = len(ks)
    nr = F.nr(f)
    # pages in increasing order (the common case) are each there once; otherwise count
    if n > 1 and not (ks[1:] > ks[:-1]).all() and np.bincount(ks, minlength=nr).max() > 1:
        for k in ks.tolist():  # a page twice: one by one
            rmap.folio_remove_rmap_ptes(s, f, k, 1, vma)
        return
    mapped = int(F.nr_mapped[f])
    if n == nr and f not in F.pages:
        # every page once, all with the same mapcount: it stays uniform, one less
        umc = int(F.umc[f]) - 1
        F.umc[f] = umc
        z = nr if umc == 0 else 0
    else:
        mc = F.arrays(f).mapcount
        mc[ks] -= 1
        z = int(np.count_nonzero(mc[ks] == 0))  # pages whose last PTE mapping went
    F.nr_mapped[f] = mapped - z
    _mm_sub_units(s, f, vma.mm.id, n)
    # each of those removals leaves nr_pages_mapped at mapped-1, ..., mapped-z; the ones that
    # leave it non-zero, with no PMD mapping, find the folio partially mapped
    partially = 0
    if z and F.entire[f] == 0:
        partially = z - (1 if 1 <= mapped <= z else 0)
    anon = F.flags[f] & PG_ANON
    for _ in range(partially):
        if not anon or F.flags[f] & PG_PARTIALLY_MAPPED:
            break
        deferred_split_folio(s, f, True)
    if vma.flags & VM_LOCKED:
        _munlock_folio_times(s, f, n)


def _mm_sub_units(s: System, f: int, mm_id: int, n: int) -> None:
    """``n`` single-mapping removals from ``mm_id``'s slot (``folio_sub_return_large_mapcount``
    of 1, n times): the same slot counts and the same clearing of the shared bit, which is
    looked at after each removal once the mm holds no slot."""
    F = s.folios
    total = int(F.large[f])
    in0, in1 = F.mm0[f] == mm_id, F.mm1[f] == mm_id
    cnt, slot = (int(F.mmc0[f]), 0) if in0 else (int(F.mmc1[f]), 1) if in1 else (0, -1)
    if (in0 and in1) or (slot >= 0 and cnt < 1):  # not a state the kernel reaches: one by one
        for _ in range(n):
            rmap._mm_sub(s, f, mm_id, 1)
        return
    F.large[f] = total - n
    if slot >= 0:
        if cnt > n:
            if slot == 0:
                F.mmc0[f] = cnt - n
            else:
                F.mmc1[f] = cnt - n
            return
        if slot == 0:
            F.mmc0[f] = F.mm0[f] = 0
        else:
            F.mmc1[f] = F.mm1[f] = 0
        first = cnt  # the removal that emptied the slot is the first to look
    else:
        first = 1
    lo, hi = total - n, total - first  # the totals the looking removals leave
    if lo <= int(F.mmc0[f]) <= hi or lo <= int(F.mmc1[f]) <= hi:
        F.flags[f] &= ~PG_MM_SHARED


def _munlock_folio_times(s: System, f: int, n: int) -> None:
    """``munlock_folio`` ``n`` times: each takes one off mlock_count; the one that reaches zero
    (or the first, when the folio is not on the unevictable list) clears PG_mlocked and
    rescues it, and the rest find nothing to do."""
    F = s.folios
    if n <= 0:
        return
    m = int(F.mlock_count[f])
    if F.flags[f] & PG_LRU and F.flags[f] & PG_UNEVICTABLE and m >= 1:
        F.mlock_count[f] = max(m - n + 1, 1)
    mlock.munlock_folio(s, f)


def _split_to_zero_pages(s: System, batches: list[_Batch], pfn: int, order: int) -> None:
    """The end of a split whose every page holds zero and whose every mapping may take the
    shared zero page (no VM_LOCKED VMA, no swap cache): ``remap_page`` puts the zero page in
    every entry :func:`_unmap_folio_bulk` cleared, and no new order-0 folio keeps a mapping or
    a reference, so all are freed at once and the whole block goes back to the allocator.
    The same state as :func:`_remap_folio_bulk` then :func:`_free_unused_bulk`, without
    making the order-0 folios that would be freed at once (the caller hands their ids
    through the free list, :meth:`Folios.cycle_ids`)."""
    for vma, pt, ii, _ks, _bits, _excl in batches:
        if ii is None:  # a fresh table from a frozen PMD: every slot
            pt.fid[:] = ZERO_FID
            vma.mm.anon_pages -= 512
            continue
        pt.fid[ii] = ZERO_FID
        pt.clear_idx(ii)
        pt.bits[ii] = 0
        vma.mm.anon_pages -= len(ii)
    s.buddy.free_block(pfn, order)


def _free_unused_bulk(s: System, ids: np.ndarray, flags: int, pfn: int, order: int) -> None:
    """Free the new order-0 folios nothing maps (unmapped, or remapped to the zero page), as
    the per-page path does, at once: they still carry the flags inherited from the folio
    (so each is PG_mlocked if it was: ``unevictable_pgs_cleared``), their pages go back in
    block at once (:meth:`BuddyAllocator.free_pages_of_block`) and their ids in page order."""
    F = s.folios
    k = np.flatnonzero(F.ref[ids] == 0)  # page k of the block is folio ids[k]
    if not len(k):
        return
    dead = ids[k]
    if flags & PG_MLOCKED:
        s.vmstat.count("nr_mlock", -len(k))
        s.vmstat.count("unevictable_pgs_cleared", len(k))
    s.buddy.free_pages_of_block(pfn, order, k)
    F.flags[dead] = PG_FREE
    F.val.drop(dead)
    F.free_ids.extend(dead)
    F.live -= len(k)


def _remap_folio_bulk(s: System, batches: list[_Batch], ids: np.ndarray, vals: np.ndarray,
                      zero_ok: bool, uniform: bool) -> None:
    """``remap_page`` after the split a page table at a time, as the per-page loop of
    :func:`split_folio`: zero-filled pages to the shared zero page (``zero_ok``, not in a
    VM_LOCKED VMA, the new folio not mlocked by an earlier batch), the others to their new
    order-0 folio with one mapping and reference, PageAnonExclusive kept, mlocked in a
    VM_LOCKED VMA. ``uniform``: every page holds the same value."""
    F = s.folios
    seen_locked = False  # an earlier batch mlocked new folios, which then keep their pages
    for vma, pt, ii, ks, bits, excl in batches:
        locked = vma.flags & VM_LOCKED
        zero_here = zero_ok and not locked
        if ii is None:  # a frozen PMD: slot k maps page k, the table is fresh
            if zero_here and uniform and vals[0] == 0 and not seen_locked:
                pt.fid[:] = ZERO_FID  # idx and bits are 0 already
                vma.mm.anon_pages -= len(ids)
                continue
            if not zero_here or (uniform and vals[0] != 0):  # no page to the zero page
                seen_locked |= bool(locked)
                pt.fid[:] = ids
                pt.bits[:] = bits
                F.ref[ids] += 1
                F.large[ids] += 1  # folio_add_anon_rmap_pte of an order-0 folio
                if excl:
                    F.flags[ids] |= PG_ANON_EXCLUSIVE
                if locked:
                    mlock.mlock_folios_small(s, ids)
                continue
            ii = ks = _AR512
            bits = np.full(512, bits, np.uint8)
            excl = np.full(512, excl)
        g = ids[ks]
        seen_locked |= bool(locked)
        if zero_here:
            zero = vals[ks] == 0
            if seen_locked:  # try_to_map_unused_to_zeropage: not for an mlocked folio
                zero &= (F.flags[g] & PG_MLOCKED) == 0
            nz = int(np.count_nonzero(zero))
            if nz:
                zi = ii[zero]
                pt.fid[zi] = ZERO_FID
                pt.clear_idx(zi)
                pt.bits[zi] = 0
                vma.mm.anon_pages -= nz
                keep = ~zero
                ii, g, bits, excl = ii[keep], g[keep], bits[keep], excl[keep]
        if not len(g):
            continue
        pt.fid[ii] = g
        pt.clear_idx(ii)
        pt.bits[ii] = bits
        F.ref[g] += 1
        F.large[g] += 1  # folio_add_anon_rmap_pte of an order-0 folio
        ex = g[excl]
        if len(ex):
            F.flags[ex] |= PG_ANON_EXCLUSIVE
        if locked:
            mlock.mlock_folios_small(s, g)  # mlock_vma_folio: the whole (small) folio is mapped


# -- the deferred split queue -----------------------------------------------------------------
def deferred_split_folio(s: System, f: int, partially_mapped: bool) -> None:
    """``deferred_split_folio``: queue a large folio; the first partial unmap flags it and
    counts ``thp_deferred_split_page`` (PMD size), ``split_deferred`` and
    ``nr_anon_partially_mapped``. Underused candidates only with shrink_underused."""
    if s.policy.deferred_split_folio(s, f, partially_mapped):
        return  # the policy queued it its own way
    F = s.folios
    order = int(F.order[f])
    if order <= 1:
        return
    if not partially_mapped and not s.settings.shrink_underused:
        return
    if F.flags[f] & PG_SWAPCACHE:
        return
    if partially_mapped:
        if not F.flags[f] & PG_PARTIALLY_MAPPED:
            F.flags[f] |= PG_PARTIALLY_MAPPED
            if order == 9:
                s.vmstat.count("thp_deferred_split_page")
            s.vmstat.count_mthp(order, "split_deferred")
            s.vmstat.count_mthp(order, "nr_anon_partially_mapped")
            s.tracing and s.trace(f"{s.fname(f)} partially mapped: queued for deferred split "
                    "(deferred_split_folio)")
    if not F.flags[f] & PG_QUEUED:
        F.flags[f] |= PG_QUEUED
        s.deferred_queue[f] = None


def folio_unqueue_deferred_split(s: System, f: int) -> None:
    """``__folio_unqueue_deferred_split``: leave the queue, dropping the partially-mapped flag
    and gauge."""
    F = s.folios
    if F.flags[f] & PG_QUEUED:
        F.flags[f] &= ~PG_QUEUED
        s.deferred_queue.pop(f, None)
    if F.flags[f] & PG_PARTIALLY_MAPPED:
        s.vmstat.count_mthp(int(F.order[f]), "nr_anon_partially_mapped", -1)
        F.flags[f] &= ~PG_PARTIALLY_MAPPED


def thp_underused(s: System, f: int) -> bool:
    """``thp_underused``: more than max_ptes_none zero-filled pages (never at 511)."""
    mpn = s.settings.max_ptes_none
    if mpn == 511:
        return False
    F = s.folios
    if f not in F.pages:  # every page holds the folio's one value
        return int(F.val[f]) == 0 and F.nr(f) > mpn
    return int(np.count_nonzero(F.pages[f].val == 0)) > mpn


def deferred_split_scan(s: System) -> int:
    """``deferred_split_scan``: split partially mapped folios (requeued when the split fails);
    check unflagged PMD THPs once for underuse (dropped from the queue unless split)."""
    F = s.folios
    split = 0
    for f in list(s.deferred_queue):
        if f not in s.deferred_queue:
            continue
        partial = bool(F.flags[f] & PG_PARTIALLY_MAPPED)
        underused = False
        decision = s.policy.deferred_split_decision(s, f, partial)
        if decision == "skip":
            F.flags[f] &= ~PG_QUEUED
            s.deferred_queue.pop(f, None)
            continue
        if not partial:
            if F.flags[f] & PG_MLOCKED:
                if s.tracing:
                    s.trace(f"{s.fname(f)} mlocked: not checked for underuse (deferred_split_scan)")
            else:
                underused = thp_underused(s, f)
            if not underused and decision != "split":
                F.flags[f] &= ~PG_QUEUED
                s.deferred_queue.pop(f, None)
                continue
        ret = split_folio(s, f, "deferred split shrinker (deferred_split_scan)")
        if ret == 0:
            split += 1
            if underused:
                s.vmstat.count("thp_underused_split_page")
        elif not partial and decision != "split":
            F.flags[f] &= ~PG_QUEUED
            s.deferred_queue.pop(f, None)
    return split


# -- other PMD-level operations ---------------------------------------------------------------
def change_huge_pmd(s: System, vma: VMA, ent: PmdLeaf, writable: bool) -> None:
    """``change_huge_pmd``: mprotect of a whole PMD keeps it; write permission is granted only
    where the folio is exclusive (``can_change_pmd_writable``)."""
    if ent.fid == HUGE_ZERO_FID:
        return
    if not writable:
        ent.bits &= 0xFF ^ P_WRITE
    elif s.folios.pae(ent.fid, 0):
        ent.bits |= P_WRITE


def folio_flags_for_observation(s: System, f: int) -> int:
    return int(s.folios.flags[f])


__all__ = [
    "PG_ANON", "can_split_folio", "deferred_split_folio", "deferred_split_scan",
    "do_huge_pmd_anonymous_page", "mlock", "split_folio", "split_huge_pmd",
    "thp_vma_allowable_orders",
]
