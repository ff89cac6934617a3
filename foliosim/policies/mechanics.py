"""The model operations the policies compose: finding the large folios a new VMA boundary cuts,
replacing a folio's pages in one mapping with fresh copies (with or without the
PageAnonExclusive rule), putting a folio on the deferred split queue, and the rmap walk that
tells whether a queued folio is still wholly mapped inside one VMA.

Everything here acts through the model's own functions (:func:`rmap.folio_add_new_anon_rmap`,
:func:`rmap.folio_remove_rmap_ptes`, :func:`memory.folio_put`, ...), so the model's counters,
mlock and deferred-queue bookkeeping follow as they would for the kernel's own callers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from foliosim.mm import memory, rmap
from foliosim.mm.folio import PG_FREE, PG_QUEUED, PG_SWAPCACHE
from foliosim.mm.mm_types import MM, VM_WRITE, VMA
from foliosim.mm.pgtable import P_DIRTY, P_SWAP, P_WRITE, PMD_SIZE, PmdLeaf, PteTable

if TYPE_CHECKING:
    from foliosim.mm.system import System

__all__ = [
    "FolioWalk", "folio_try_share_anon_rmap_pte", "folios_across", "mapped_ptes",
    "queue_folio", "replace_with_copies", "rmap_folio_walk",
]


def mapped_ptes(mm: MM, start: int, end: int) -> Iterator[tuple[PteTable, int, int, int]]:
    """The PTE tables of ``mm`` over ``[start, end)``: ``(table, first index, end index,
    address of index 0)`` per 2 MiB slot that has a PTE table."""
    addr = start
    while addr < end:
        slot = addr >> 21
        nxt = min((slot + 1) << 21, end)
        ent = mm.pmd.get(slot)
        if isinstance(ent, PteTable):
            yield ent, (addr >> 12) & 511, ((addr >> 12) & 511) + ((nxt - addr) >> 12), slot << 21
        addr = nxt


def _large_fids(s: System, mm: MM, start: int, end: int) -> set[int]:
    """Large folios with a present PTE in ``[start, end)`` of ``mm``."""
    F = s.folios
    found: set[int] = set()
    for pt, i0, i1, _ in mapped_ptes(mm, start, end):
        fids = pt.fid[i0:i1]
        ok = (fids >= 0) & ((pt.bits[i0:i1] & P_SWAP) == 0)
        if not ok.any():
            continue
        fids = np.unique(fids[ok])
        found.update(int(f) for f in fids[F.order[fids] > 0])
    return found


def folios_across(s: System, lo: VMA, hi: VMA, addr: int) -> list[int]:
    """The large folios a new VMA boundary at ``addr`` cuts: mapped by PTEs both in ``lo``
    below ``addr`` and in ``hi`` above it (a large folio has at most 512 pages, so 2 MiB on
    each side is enough). A PMD mapping never crosses: ``__split_vma`` has split it already."""
    below = _large_fids(s, lo.mm, max(lo.start, addr - PMD_SIZE), addr)
    if not below:
        return []
    above = _large_fids(s, hi.mm, addr, min(hi.end, addr + PMD_SIZE))
    return sorted(below & above)


def folio_try_share_anon_rmap_pte(s: System, f: int, k: int) -> bool:
    """``folio_try_share_anon_rmap_pte``: mark page ``k`` maybe shared (clear
    PageAnonExclusive) unless the folio may be DMA-pinned, in which case the page must stay
    exclusive and must not be replaced (the thread's rule 3)."""
    F = s.folios
    if not F.pae(f, k):
        return True  # already maybe shared
    if F.maybe_dma_pinned(f):
        return False  # a pinned exclusive page stays where the device writes
    F.set_pae(f, k, 1, False)
    return True


def _mappings_of(s: System, f: int, vmas: tuple[VMA, ...], start: int,
                 end: int) -> list[tuple[VMA, PteTable, int, int, int]]:
    """Present PTEs mapping folio ``f`` in ``vmas`` within ``[start, end)``:
    ``(vma, table, index, page of the folio, address)``."""
    out = []
    for vma in vmas:
        for pt, i0, i1, base in mapped_ptes(vma.mm, max(start, vma.start), min(end, vma.end)):
            hit = np.flatnonzero((pt.fid[i0:i1] == f) & ((pt.bits[i0:i1] & P_SWAP) == 0))
            for j in hit:
                i = i0 + int(j)
                out.append((vma, pt, i, int(pt.idx[i]), base + (i << 12)))
    return out


def replace_with_copies(s: System, f: int, vmas: tuple[VMA, ...], start: int, end: int,
                        respect_exclusive: bool) -> int:
    """Replace every page of folio ``f`` that ``vmas`` map within ``[start, end)`` with a fresh
    exclusive order-0 copy, as ``wp_page_copy`` would one by one; the old folio loses those
    mappings (and is freed, queued as partially mapped, or kept alive by a pin).

    With ``respect_exclusive`` an exclusive page must first be marked maybe shared
    (:func:`folio_try_share_anon_rmap_pte`); if any cannot be, nothing is replaced.

    :returns: the number of pages replaced, or -1 when the exclusive rule refused
    """
    F = s.folios
    maps = _mappings_of(s, f, vmas, start, end)
    # a refusal is folio-wide (maybe pinned) and comes at the first exclusive page, before
    # any page was marked shared
    if respect_exclusive and not all(folio_try_share_anon_rmap_pte(s, f, k)
                                     for _, _, _, k, _ in maps):
        return -1
    done = 0
    for vma, pt, i, k, addr in maps:
        new = memory.folio_alloc(s, 0)
        if new is None:
            break  # out of memory: the rest stays mapped to the old folio
        F.val[new] = F.value(f, k)
        rmap.folio_add_new_anon_rmap(s, new, vma, addr, pmd=False)
        memory.folio_add_lru_vma(s, new, vma)
        pt.fid[i] = new
        pt.clear_idx(i)
        pt.bits[i] = (P_WRITE | P_DIRTY) if vma.flags & VM_WRITE else P_DIRTY
        rmap.folio_remove_rmap_ptes(s, f, k, 1, vma)
        memory.folio_put(s, f)  # the last mapping's reference may free the old folio here
        done += 1
    return done


def queue_folio(s: System, f: int) -> bool:
    """Put a large folio on the deferred split queue without marking it partially mapped
    (the list_add_tail of ``deferred_split_folio``). Not :func:`huge_memory.deferred_split_folio`
    with ``partially_mapped=False``: that one is gated by the ``shrink_underused`` knob.

    :returns: whether the folio was added (it was not queued already)
    """
    F = s.folios
    if F.order[f] <= 1 or F.flags[f] & (PG_SWAPCACHE | PG_FREE):
        return False  # no _deferred_list (order 1), or reclaim owns it (swapcache)
    if F.flags[f] & PG_QUEUED:
        return False
    F.flags[f] |= PG_QUEUED
    s.deferred_queue[f] = None
    return True


class FolioWalk(NamedTuple):
    """What an rmap walk of one folio found.

    :ivar mapped: pages of the folio mapped by at least one PTE or PMD anywhere
    :ivar crosses_vma: some VMA maps part of the folio while the folio's extent there is not
        wholly inside that VMA
    :ivar pages_scanned: page-table entries the walk looked at
    :ivar extents: ``(process, start, end)`` of the folio in every VMA that maps part of it
    """

    mapped: int
    crosses_vma: bool
    pages_scanned: int
    extents: tuple[tuple[str, int, int], ...]


def rmap_folio_walk(s: System, f: int) -> FolioWalk:
    """Walk the rmap of ``f`` (``rmap_walk_anon``, counted in ``stats_rmap_walks``) and record
    which of its pages are mapped and whether a VMA boundary cuts it."""
    F = s.folios
    nr = F.nr(f)
    seen = np.zeros(nr, bool)
    crosses = False
    scanned = 0
    extents = []
    for vma, addr in list(rmap.rmap_walk(s, f)):
        lo, hi = max(addr, vma.start), min(addr + nr * 4096, vma.end)
        ent = vma.mm.pmd.get(addr >> 21)
        if isinstance(ent, PmdLeaf) and ent.fid == f:
            seen[:] = True
            scanned += 1
            extents.append((vma.mm.name, lo, hi))
            continue
        here = False
        for pt, i0, i1, _ in mapped_ptes(vma.mm, lo, hi):
            scanned += i1 - i0
            hit = (pt.fid[i0:i1] == f) & ((pt.bits[i0:i1] & P_SWAP) == 0)
            if hit.any():
                here = True
                seen[pt.idx[i0:i1][hit]] = True
        if here:
            extents.append((vma.mm.name, lo, hi))
            if lo > addr or hi < addr + nr * 4096:
                crosses = True  # this VMA maps part of a folio that extends beyond it
    return FolioWalk(int(seen.sum()), crosses, scanned, tuple(extents))
