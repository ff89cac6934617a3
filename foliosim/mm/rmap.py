"""Reverse mapping: adding and removing folio mappings, mapcounts, the per-mm owner slots, and
the rmap walk (follows mm/rmap.c and include/linux/rmap.h, CONFIG_PAGE_MAPCOUNT=y)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from foliosim.mm import huge_memory, mlock
from foliosim.mm.folio import PG_ANON, PG_MM_SHARED, PG_PARTIALLY_MAPPED, PG_SWAPCACHE
from foliosim.mm.mm_types import VMA

if TYPE_CHECKING:
    from foliosim.mm.system import System


# -- per-mm owner slots (folio_add/sub_return_large_mapcount) ---------------------------------
def _mm_add(s: System, f: int, mm_id: int, diff: int) -> None:
    """Account ``diff`` new mappings of a large folio to ``mm_id`` and keep the shared bit."""
    F = s.folios
    F.large[f] += diff
    total = int(F.large[f])
    if F.mm0[f] == mm_id:
        F.mmc0[f] += diff
    elif F.mm1[f] == mm_id:
        F.mmc1[f] += diff
    elif F.mm0[f] == 0:
        F.mm0[f] = mm_id
        F.mmc0[f] = diff
        if total != diff:  # other mappings exist already
            F.flags[f] |= PG_MM_SHARED
    elif F.mm1[f] == 0:
        F.mm1[f] = mm_id
        F.mmc1[f] = diff
        F.flags[f] |= PG_MM_SHARED
    # no free slot: the shared bit is already set


def _mm_sub(s: System, f: int, mm_id: int, diff: int) -> None:
    F = s.folios
    F.large[f] -= diff
    total = int(F.large[f])
    if F.mm0[f] == mm_id:
        F.mmc0[f] -= diff
        if F.mmc0[f] > 0:
            return
        F.mmc0[f] = 0
        F.mm0[f] = 0
    elif F.mm1[f] == mm_id:
        F.mmc1[f] -= diff
        if F.mmc1[f] > 0:
            return
        F.mmc1[f] = 0
        F.mm1[f] = 0
    # if one slot owns all mappings, the folio is mapped exclusively again
    if F.mmc0[f] == total or F.mmc1[f] == total:
        F.flags[f] &= ~PG_MM_SHARED


def mm_add_many(s: System, f: np.ndarray, mm_id: int, diff: np.ndarray | int) -> None:
    """:func:`_mm_add` for many distinct large folios at once (same slot rules)."""
    F = s.folios
    diff = np.broadcast_to(np.asarray(diff, np.int16), f.shape)
    F.large[f] += diff
    total = F.large[f]
    m0, m1 = F.mm0[f], F.mm1[f]
    in0 = m0 == mm_id
    in1 = ~in0 & (m1 == mm_id)
    rest = ~in0 & ~in1
    to0 = rest & (m0 == 0)
    to1 = rest & ~to0 & (m1 == 0)
    F.mmc0[f[in0]] += diff[in0]
    F.mmc1[f[in1]] += diff[in1]
    F.mm0[f[to0]] = mm_id
    F.mmc0[f[to0]] = diff[to0]
    F.mm1[f[to1]] = mm_id
    F.mmc1[f[to1]] = diff[to1]
    shared = to1 | (to0 & (total != diff))
    F.flags[f[shared]] |= PG_MM_SHARED


def mm_sub_many(s: System, f: np.ndarray, mm_id: int, diff: np.ndarray | int) -> None:
    """:func:`_mm_sub` for many distinct large folios at once (same slot rules)."""
    F = s.folios
    diff = np.broadcast_to(np.asarray(diff, np.int16), f.shape)
    F.large[f] -= diff
    total = F.large[f]
    in0 = F.mm0[f] == mm_id
    in1 = ~in0 & (F.mm1[f] == mm_id)
    g0, g1 = f[in0], f[in1]
    F.mmc0[g0] -= diff[in0]
    F.mmc1[g1] -= diff[in1]
    gone0 = g0[F.mmc0[g0] <= 0]
    F.mmc0[gone0] = 0
    F.mm0[gone0] = 0
    gone1 = g1[F.mmc1[g1] <= 0]
    F.mmc1[gone1] = 0
    F.mm1[gone1] = 0
    # slots still held keep the folio as it was; otherwise one owner of all mappings clears
    # the shared bit
    held = np.zeros(len(f), bool)
    held[np.flatnonzero(in0)[F.mmc0[g0] > 0]] = True
    held[np.flatnonzero(in1)[F.mmc1[g1] > 0]] = True
    check = ~held
    g = f[check]
    t = total[check]
    excl = (F.mmc0[g] == t) | (F.mmc1[g] == t)
    F.flags[g[excl]] &= ~PG_MM_SHARED


def _stat_pmd(s: System, delta: int) -> None:
    s.vmstat.count("nr_anon_transparent_hugepages", delta)


# -- adding mappings --------------------------------------------------------------------------
def folio_add_new_anon_rmap(s: System, f: int, vma: VMA, addr: int, pmd: bool,
                            exclusive: bool = True) -> None:
    """``folio_add_new_anon_rmap``: a folio that is not anon yet (freshly allocated, or just
    read from swap) mapped whole, by one PMD (order 9) or by PTEs; with RMAP_EXCLUSIVE (the
    default) every page (the head, for a PMD) is PageAnonExclusive."""
    F = s.folios
    nr = F.nr(f)
    F.flags[f] |= PG_ANON
    av = vma.anon_vma
    while not exclusive and av is not None and av.parent is not None:
        av = av.parent  # __folio_set_anon: a folio maybe shared takes the root anon_vma
    F.anon_vma[f] = av.id if av is not None else -1
    F.index[f] = vma.linear_page_index(addr)
    F.set_pae(f, 0, nr, exclusive)
    order = int(F.order[f])
    if order == 0:
        F.large[f] = 1
    elif pmd:
        F.entire[f] = 1
        _mm_add(s, f, vma.mm.id, 1)
        _stat_pmd(s, 1)
    else:
        F.umc[f] = 1
        F.nr_mapped[f] = nr
        _mm_add(s, f, vma.mm.id, nr)
    if order > 0:
        s.vmstat.count_mthp(order, "nr_anon")


def folio_add_anon_rmap_ptes(s: System, f: int, i: int, n: int, vma: VMA,
                             exclusive: bool) -> None:
    """``folio_add_anon_rmap_ptes``: map pages ``[i, i + n)`` of an existing anon folio by PTEs.
    Only a call that maps the whole folio mlocks it in a VM_LOCKED VMA."""
    F = s.folios
    nr = F.nr(f)
    if F.order[f] == 0:
        F.large[f] += 1
    else:
        if f not in F.pages and i == 0 and n == nr:
            F.umc[f] += 1
            first = n if F.umc[f] == 1 else 0
        else:
            seg = F.arrays(f).mapcount[i:i + n]
            first = int(np.count_nonzero(seg == 0))
            seg += 1
        F.nr_mapped[f] += first
        _mm_add(s, f, vma.mm.id, n)
    if exclusive:
        F.set_pae(f, i, n, True)
    if n == nr:
        mlock.mlock_vma_folio(s, f, vma)


def folio_add_anon_rmap_pmd(s: System, f: int, vma: VMA, exclusive: bool) -> None:
    """``folio_add_anon_rmap_pmd``: one more PMD mapping of an order-9 folio."""
    F = s.folios
    F.entire[f] += 1
    _mm_add(s, f, vma.mm.id, 1)
    if F.entire[f] == 1:
        _stat_pmd(s, 1)
    if exclusive:
        F.set_pae(f, 0, 1, True)
    mlock.mlock_vma_folio(s, f, vma)


def folio_dup_anon_rmap(s: System, f: int, i: int, n: int, child_vma: VMA, pmd: bool) -> None:
    """The mapcount side of ``__folio_try_dup_anon_rmap`` (the caller cleared PAE)."""
    F = s.folios
    if F.order[f] == 0:
        F.large[f] += 1
        return
    if pmd:
        F.entire[f] += 1
        _mm_add(s, f, child_vma.mm.id, 1)
        return
    if f not in F.pages and i == 0 and n == F.nr(f):
        F.umc[f] += 1
    else:
        F.arrays(f).mapcount[i:i + n] += 1
    _mm_add(s, f, child_vma.mm.id, n)


# -- removing mappings ------------------------------------------------------------------------
def folio_remove_rmap_ptes(s: System, f: int, i: int, n: int, vma: VMA) -> None:
    """``folio_remove_rmap_ptes``: unmap pages ``[i, i + n)``; a large folio left partly mapped
    with no PMD goes on the deferred split queue; a VM_LOCKED VMA always munlocks."""
    F = s.folios
    partially = False
    if F.order[f] == 0:
        F.large[f] -= 1
    else:
        nr = F.nr(f)
        if f not in F.pages and i == 0 and n == nr:
            F.umc[f] -= 1
            last = n if F.umc[f] == 0 else 0
        else:
            seg = F.arrays(f).mapcount[i:i + n]
            seg -= 1
            last = int(np.count_nonzero(seg == 0))
        F.nr_mapped[f] -= last
        _mm_sub(s, f, vma.mm.id, n)
        nr_unmapped = last if F.entire[f] == 0 else 0
        partially = bool(nr_unmapped) and F.nr_mapped[f] != 0
    _after_remove(s, f, vma, partially)


def folio_remove_rmap_pmd(s: System, f: int, vma: VMA) -> None:
    """``folio_remove_rmap_pmd``: drop one PMD mapping; if it was the last and some pages are
    still PTE-mapped, the folio is partially mapped."""
    F = s.folios
    _mm_sub(s, f, vma.mm.id, 1)
    F.entire[f] -= 1
    partially = False
    if F.entire[f] == 0:
        _stat_pmd(s, -1)
        mapped = int(F.nr_mapped[f])
        nr_unmapped = F.nr(f) - mapped
        partially = 0 < nr_unmapped < F.nr(f)
    _after_remove(s, f, vma, partially)


def _after_remove(s: System, f: int, vma: VMA, partially: bool) -> None:
    F = s.folios
    if partially and F.flags[f] & PG_ANON and not F.flags[f] & PG_PARTIALLY_MAPPED:
        huge_memory.deferred_split_folio(s, f, True)
    mlock.munlock_vma_folio(s, f, vma)


def folio_mapped(s: System, f: int) -> bool:
    return int(s.folios.large[f]) > 0 or int(s.folios.entire[f]) > 0


def folio_mapcount(s: System, f: int) -> int:
    """``folio_mapcount``: every PTE and PMD mapping of the folio."""
    return int(s.folios.large[f])


def folio_expected_ref_count(s: System, f: int) -> int:
    """``folio_expected_ref_count`` for anon: swapcache references plus mappings."""
    F = s.folios
    return (F.nr(f) if F.flags[f] & PG_SWAPCACHE else 0) + folio_mapcount(s, f)


# -- the rmap walk ----------------------------------------------------------------------------
def rmap_walk(s: System, f: int) -> Iterator[tuple[VMA, int]]:
    """``rmap_walk_anon``: every VMA chained to the folio's anon_vma whose range may map it,
    with the virtual address of the folio's first page there (``vma_address``)."""
    F = s.folios
    av = s.anon_vmas.get(int(F.anon_vma[f]))
    if av is None:
        return
    s.stats_rmap_walks += 1
    index = int(F.index[f])
    nr = F.nr(f)
    for vma in sorted(av.vmas, key=lambda v: (v.mm.id, v.start)):
        addr = vma.address_of(index)
        if addr + nr * 4096 <= vma.start or addr >= vma.end:
            continue
        yield vma, addr
