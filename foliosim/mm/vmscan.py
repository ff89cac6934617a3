"""Reclaim of the folios MADV_PAGEOUT hands over (follows mm/vmscan.c:shrink_folio_list and
reclaim_pages)."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import numpy as np

from foliosim.mm import huge_memory, memory, rmap, swap
from foliosim.mm.folio import (
    GUP_PIN_COUNTING_BIAS,
    PG_ANON_EXCLUSIVE,
    PG_DIRTY,
    PG_FREE,
    PG_MLOCKED,
    PG_PARTIALLY_MAPPED,
    PG_QUEUED,
    PG_SWAPBACKED,
    PG_SWAPCACHE,
    PG_UNEVICTABLE,
)
from foliosim.mm.mm_types import VM_LOCKED
from foliosim.mm.pgtable import NONE, P_DIRTY, P_SWAP, PteTable

if TYPE_CHECKING:
    from foliosim.mm.system import System


def reclaim_pages(s: System, folios: list[int]) -> None:
    """``reclaim_pages`` -> ``shrink_folio_list`` for each isolated folio (split-off pieces
    go first). Without a swap device, an order-0 swap-backed folio that is not in the swap
    cache is kept as it is (:func:`shrink_folio` does nothing to it), so those are passed
    over at once."""
    F = s.folios
    skip = s.swap is None and not s.tracing
    bulk = s.swap is not None and not s.tracing
    work = deque(_not_kept(s, folios) if skip else folios)
    while work:
        f = work.popleft()
        if F.flags[f] & PG_FREE:  # freed meanwhile
            continue
        pieces = shrink_folio(s, f)  # _pieces already leaves kept ones out
        if pieces and bulk:
            _shrink_pieces(s, pieces)  # what the list meets next, taken at once
        else:
            work.extendleft(reversed(pieces))


def _not_kept(s: System, folios: list[int]) -> list[int]:
    """``folios`` without the order-0 swap-backed ones outside the swap cache, which
    :func:`shrink_folio` keeps as they are when there is no swap device."""
    if len(folios) < 8:
        return folios
    f = np.asarray(folios, np.int64)
    return f[~_kept_without_swap(s, f)].tolist()


def _kept_without_swap(s: System, f: np.ndarray) -> np.ndarray:
    """Mask of the folios :func:`shrink_folio` keeps as they are when there is no swap
    device: live order-0 swap-backed folios outside the swap cache."""
    F = s.folios
    fl = F.flags[f]
    return (F.order[f] == 0) & ((fl & (PG_SWAPBACKED | PG_SWAPCACHE | PG_FREE))
                                == PG_SWAPBACKED)


def shrink_folio(s: System, f: int) -> list[int]:
    """One folio of ``shrink_folio_list``; returns folios split off that join the list."""
    F = s.folios
    if F.flags[f] & (PG_MLOCKED | PG_UNEVICTABLE):
        return []
    if not F.flags[f] & PG_SWAPBACKED:
        return _discard_lazyfree(s, f)
    if F.flags[f] & PG_SWAPCACHE:
        return _reclaim_swapcache(s, f)
    if F.maybe_dma_pinned(f):
        return []
    order = int(F.order[f])
    pfn = int(F.pfn[f])
    nr = F.nr(f)
    if order > 0:
        ok, _ = huge_memory.can_split_folio(s, f)
        if not ok:
            return []
        if F.flags[f] & PG_QUEUED and F.flags[f] & PG_PARTIALLY_MAPPED:
            if huge_memory.split_folio(s, f, "reclaim of a partially mapped folio"):
                return []
            return _pieces(s, pfn, nr)
        # a swap file has no order > 0 slots: split and swap 4 KiB pages
        if huge_memory.split_folio(s, f, "no large swap slot (shrink_folio_list)"):
            return []
        if order == 9:
            s.vmstat.count("thp_swpout_fallback")
        s.vmstat.count_mthp(order, "swpout_fallback")
        return _pieces(s, pfn, nr)
    if s.swap is None:
        return []
    return _swap_out(s, f)


def _pieces(s: System, pfn: int, nr: int) -> list[int]:
    """The order-0 folios a split just made that are still alive, in the order
    ``shrink_folio_list`` meets them: the head goes on at once, the tails were added at the
    end of the list (``split_folio_to_list``), which is taken from its end, so the last page
    comes next and page 1 last. Without a swap device the swap-backed ones are left out, as
    :func:`reclaim_pages` passes them over: nothing changes them before their turn and
    :func:`shrink_folio` would keep them as they are."""
    ids = np.asarray(s.last_split, np.int64)
    ids = np.concatenate((ids[:1], ids[:0:-1]))
    keep = (s.folios.flags[ids] & PG_FREE) == 0
    if s.swap is None and not s.tracing:
        keep &= ~_kept_without_swap(s, ids)
    return ids[keep].tolist()


def _shrink_pieces(s: System, ids: list[int]) -> None:
    """:func:`shrink_folio` of the order-0 pieces of a split, in turn, as the list meets them
    next (an order-0 folio adds nothing to the list). Runs of pieces that :func:`_swap_out`
    would take as they are (swap-backed, not in the swap cache, not mlocked or maybe pinned,
    mapped by one PTE, in a VMA that is not VM_LOCKED) are swapped out at once
    (:func:`_swap_out_many`); any other piece goes through :func:`shrink_folio` in its
    place, so the swap slots are handed out in the same order."""
    F = s.folios
    g = np.asarray(ids, np.int64)
    fl = F.flags[g]
    ok = ((fl & (PG_MLOCKED | PG_UNEVICTABLE | PG_SWAPBACKED | PG_SWAPCACHE | PG_FREE))
          == PG_SWAPBACKED) & (F.order[g] == 0) & (F.large[g] == 1) \
        & (F.ref[g] < GUP_PIN_COUNTING_BIAS)  # not folio_maybe_dma_pinned
    maps = _single_ptes(s, g, ok)
    n = len(ids)
    k = 0
    while k < n:
        if maps[k] is None:
            if not F.flags[ids[k]] & PG_FREE:
                shrink_folio(s, ids[k])
            k += 1
            continue
        j = k + 1
        while j < n and maps[j] is not None:
            j += 1
        _swap_out_many(s, g[k:j], maps[k:j])
        k = j


def _single_ptes(s: System, g: np.ndarray, ok: np.ndarray) -> list:
    """Per order-0 folio of ``g`` that ``ok`` marks: ``(vma, table, slot)`` when
    :func:`_mappings` would find exactly one PTE mapping it and that VMA is not VM_LOCKED,
    else None (found without counting an rmap walk)."""
    F = s.folios
    out: list = [None] * len(g)
    hits = np.zeros(len(g), np.int64)
    avs = F.anon_vma[g]
    index = F.index[g]
    for a in np.unique(avs[ok]).tolist():
        av = s.anon_vmas.get(a)
        if av is None:
            continue
        sel = np.flatnonzero(ok & (avs == a))
        for vma in av.vmas:  # any order: only a folio found once is kept
            addr = vma.start + ((index[sel] - vma.pgoff) << 12)
            inside = (addr >= vma.start) & (addr < vma.end)
            who, addr = sel[inside], addr[inside]
            slots = addr >> 21
            for slot in np.unique(slots).tolist():
                pt = vma.mm.pmd.get(slot)
                if not isinstance(pt, PteTable):
                    continue
                at = slots == slot
                here, i = who[at], (addr[at] >> 12) & 511
                m = (pt.fid[i] == g[here]) & ((pt.bits[i] & P_SWAP) == 0) & (pt.idx[i] == 0)
                hits[here[m]] += 1
                for x, j in zip(here[m].tolist(), i[m].tolist(), strict=True):
                    out[x] = None if vma.flags & VM_LOCKED else (vma, pt, j)
    return [o if h == 1 else None for o, h in zip(out, hits.tolist(), strict=True)]


def _swap_out_many(s: System, g: np.ndarray, maps: list) -> None:
    """:func:`_swap_out` of order-0 folios ``g`` in turn, each mapped by the one PTE of
    ``maps`` in a VMA that is not VM_LOCKED, done at once: as many get a slot as the swap
    file has (in :meth:`SwapFile.alloc` order; the rest are kept), become swap-cache folios
    whose mapping is a swap entry of their slot (exclusive if the page was
    PageAnonExclusive), and are written out clean (``pswpout`` for those not zero-filled).
    Each counts its rmap walk."""
    F = s.folios
    sw = s.swap
    s.stats_rmap_walks += len(g)
    slots = sw.alloc_many(len(g))
    g, maps = g[:len(slots)], maps[:len(slots)]
    if not len(g):
        return
    fl = F.flags[g]
    F.flags[g] = (fl | PG_SWAPCACHE) & ~(PG_DIRTY | PG_ANON_EXCLUSIVE)
    F.swap[g] = slots
    F.large[g] -= 1  # the PTE mapping goes; the swap cache's reference replaces its one
    excl = ((fl & PG_ANON_EXCLUSIVE) != 0).tolist()
    written = 0
    for f, slot, (vma, pt, i), ex, v in zip(g.tolist(), slots, maps, excl,
                                            F.val[g].tolist(), strict=True):
        sw.cache[slot] = f
        sw.count[slot] = 1
        sw.exclusive[slot] = ex
        pt.fid[i] = slot
        pt.bits[i] = P_SWAP
        vma.mm.anon_pages -= 1
        vma.mm.swap_ents += 1
        if v:
            sw.data[slot] = v
            written += 1
        else:
            sw.data.pop(slot, None)
    if written:
        s.vmstat.count("pswpout", written)


def _mappings(s: System, f: int):
    F = s.folios
    for vma, addr in list(rmap.rmap_walk(s, f)):
        ent = vma.mm.pmd.get(addr >> 21)
        if isinstance(ent, PteTable) and vma.start <= addr < vma.end:
            i = (addr >> 12) & 511
            if int(ent.fid[i]) == f and not ent.bits[i] & P_SWAP and int(ent.idx[i]) == 0:
                yield vma, ent, i
    del F


def _swap_out(s: System, f: int) -> list[int]:
    """``folio_alloc_swap``, ``try_to_unmap`` (a VM_LOCKED mapping keeps it), ``pageout``:
    the page is written (``pswpout``; a zero-filled one is not, ``swap_writeout`` notes it in
    the swap device's zeromap) and stays in the swap cache."""
    F = s.folios
    maps = list(_mappings(s, f))
    if any(vma.flags & VM_LOCKED for vma, _, _ in maps):
        return []
    slot = s.swap.alloc()
    if slot is None:
        return []
    F.flags[f] |= PG_SWAPCACHE | PG_DIRTY  # folio_alloc_swap; reclaim marks it dirty
    F.swap[f] = slot
    F.ref[f] += 1
    s.swap.cache[slot] = f
    s.swap.count[slot] = 0
    _unmap_to_swap(s, f, maps, slot)
    _pageout(s, f, slot)
    return []


def _unmap_to_swap(s: System, f: int, maps: list, slot: int) -> None:
    """``try_to_unmap_one`` of an order-0 swap-cache folio: each mapping becomes a swap entry
    of ``slot`` (one more swap count), exclusive if the page was PageAnonExclusive; a dirty PTE
    dirties the folio."""
    F = s.folios
    s.swap.exclusive[slot] = F.pae(f, 0)
    for vma, pt, i in maps:
        if pt.bits[i] & P_DIRTY:
            F.flags[f] |= PG_DIRTY
        pt.fid[i] = slot
        pt.bits[i] = P_SWAP
        vma.mm.anon_pages -= 1
        vma.mm.swap_ents += 1
        s.swap.count[slot] = s.swap.count.get(slot, 0) + 1
        rmap.folio_remove_rmap_ptes(s, f, 0, 1, vma)
        memory.folio_put(s, f)
    F.set_pae(f, 0, 1, False)


def _pageout(s: System, f: int, slot: int) -> None:
    """``pageout`` -> ``swap_writeout`` of a dirty swap-cache folio: the page goes to the
    device (``pswpout``) unless it is zero-filled (then only the zeromap notes it); the folio
    is clean and stays in the swap cache (writeback taken as finished)."""
    F = s.folios
    F.flags[f] &= ~PG_DIRTY
    value = F.value(f, 0)
    if value:
        s.swap.data[slot] = value
        s.vmstat.count("pswpout")
    else:
        s.swap.data.pop(slot, None)


def _activate_swapcache(s: System, f: int) -> list[int]:
    """``activate_locked`` of a swap-cache folio reclaim keeps: its swap copy is dropped when
    the swap space is more than half used or the folio is mlocked (``folio_free_swap``)."""
    if s.swap.full() or s.folios.flags[f] & PG_MLOCKED:
        swap.folio_free_swap(s, f)
    return []


def _reclaim_swapcache(s: System, f: int) -> list[int]:
    """``shrink_folio_list`` of an order-0 folio already in the swap cache (mapped again since
    it was written): no new slot; ``try_to_unmap`` turns its mappings into swap entries of its
    slot, unless a mapping is VM_LOCKED or the page is exclusive and maybe pinned (then it
    stays mapped, :func:`_activate_swapcache`); a maybe pinned folio is kept, unmapped; a
    dirty one is written again and stays cached; a clean one leaves the swap cache and is
    freed (``__remove_mapping``), so the next fault reads the slot from the device."""
    F = s.folios
    slot = int(F.swap[f])
    maps = list(_mappings(s, f))
    if any(vma.flags & VM_LOCKED for vma, _, _ in maps) or (
            F.pae(f, 0) and F.maybe_dma_pinned(f)):  # folio_try_share_anon_rmap_pte fails
        return _activate_swapcache(s, f)
    _unmap_to_swap(s, f, maps, slot)
    if F.maybe_dma_pinned(f):
        return _activate_swapcache(s, f)
    if F.flags[f] & PG_DIRTY:
        _pageout(s, f, slot)
        return []
    if int(F.ref[f]) != 1:  # more than the swap cache's reference: kept
        return []
    swap.swap_cache_del_folio(s, f)  # __remove_mapping: the slot keeps its swap entries
    return []


def _discard_lazyfree(s: System, f: int) -> list[int]:
    """A lazyfree (MADV_FREE'd) folio in ``try_to_unmap_one``: a PMD mapping is split first
    (as the live kernel does, ``thp_split_pmd`` +1 in ground truth S15b/S15c, where the
    v6.18.2 source would discard it whole in ``unmap_huge_pmd_locked``); the PTEs of a clean
    folio are then discarded in batches (``folio_unmap_pte_batch``, so it never looks
    partially mapped) and ``pglazyfreed`` counts it; a folio written to again is made
    swapbacked and stays mapped; one with a reference besides its mappings (a pin) stays
    mapped and lazyfree (``__discard_anon_folio_pmd_locked`` alike). A VM_LOCKED mapping
    keeps it."""
    from foliosim.mm.pgtable import PmdLeaf

    F = s.folios
    nr = F.nr(f)
    walk = list(rmap.rmap_walk(s, f))
    if any(vma.flags & VM_LOCKED for vma, _ in walk):
        return []
    runs = []
    for vma, addr in walk:
        mm = vma.mm
        lo, hi = max(addr, vma.start), min(addr + nr * 4096, vma.end)
        for slot in range(lo >> 21, ((hi - 1) >> 21) + 1):
            ent = mm.pmd.get(slot)
            if isinstance(ent, PmdLeaf) and ent.fid == f:
                huge_memory.split_huge_pmd(s, vma, slot, "reclaim of a lazyfree THP "
                                           "(try_to_unmap_one)")
                ent = mm.pmd[slot]
            if not isinstance(ent, PteTable):
                continue
            a0, a1 = max(lo, slot << 21), min(hi, (slot + 1) << 21)
            i, iend = (a0 >> 12) & 511, ((a0 >> 12) & 511) + ((a1 - a0) >> 12)
            while i < iend:
                if int(ent.fid[i]) != f or ent.bits[i] & P_SWAP:
                    i += 1
                    continue
                n = memory.folio_pte_batch(s, ent, i, f, iend - i)
                if (ent.bits[i:i + n] & P_DIRTY).any():
                    F.flags[f] |= PG_DIRTY
                runs.append((vma, ent, i, n))
                i += n
    if F.flags[f] & PG_DIRTY:
        F.flags[f] |= PG_SWAPBACKED  # redirtied: it cannot be discarded
        return []
    if int(F.ref[f]) != rmap.folio_mapcount(s, f):
        return []  # an extra reference (a pin, say): kept as it is, still lazyfree
    for vma, pt, i, n in runs:
        k = int(pt.idx[i])
        pt.fid[i:i + n] = NONE
        pt.bits[i:i + n] = 0
        vma.mm.anon_pages -= n
        rmap.folio_remove_rmap_ptes(s, f, k, n, vma)
        memory.folio_put(s, f, n)
    s.vmstat.count("pglazyfreed", nr)
    return []
