"""What pagemap, /proc/kpageflags and /proc/kpagecount say about each page of a range
(follows fs/proc/task_mmu.c:pagemap_pmd_range / pte_to_pagemap_entry and
fs/proc/page.c:stable_page_flags)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from foliosim.mm.folio import (
    HUGE_ZERO_FID,
    PG_ACTIVE,
    PG_ANON,
    PG_DIRTY,
    PG_LRU,
    PG_MLOCKED,
    PG_SWAPBACKED,
    PG_SWAPCACHE,
    PG_UNEVICTABLE,
    ZERO_FID,
)
from foliosim.mm.mm_types import MM
from foliosim.mm.pgtable import P_SWAP, PmdLeaf
from foliosim.observation import NONE_PAGE, SWAP_PAGE, Page

if TYPE_CHECKING:
    from foliosim.mm.system import System

ZERO_PFN = 0x1000  # where the shared zero page sits in the model's physical map


def stable_page_flags(s: System, f: int) -> tuple[str, ...]:
    """``stable_page_flags``: the folio's (head page's) flags, reported on every page; bit 34
    (PG_owner_2 = PG_anon_exclusive) is the head page's."""
    F = s.folios
    fl = int(F.flags[f])
    out = []
    if fl & PG_ACTIVE:
        out.append("active")
    if fl & PG_ANON:
        out.append("anon")
        if F.pae(f, 0):
            out.append("anon_exclusive")
    if fl & PG_DIRTY:
        out.append("dirty")
    if fl & PG_LRU:
        out.append("lru")
    if fl & PG_MLOCKED:
        out.append("mlocked")
    if fl & PG_SWAPBACKED:
        out.append("swapbacked")
        if fl & PG_SWAPCACHE:
            out.append("swapcache")
    if F.order[f] > 0:
        out.append("thp")
    if fl & PG_UNEVICTABLE:
        out.append("unevictable")
    return tuple(out)


def range_pages(s: System, mm: MM, start: int, end: int) -> Iterator[Page]:
    """One :class:`Page` per 4 KiB page of ``[start, end)``."""
    F = s.folios
    flag_cache: dict[int, tuple[str, ...]] = {}
    a = start
    while a < end:
        slot = a >> 21
        nxt = min((slot + 1) << 21, end)
        ent = mm.pmd.get(slot)
        if ent is None:
            for _ in range(a, nxt, 4096):
                yield NONE_PAGE
            a = nxt
            continue
        i0 = (a >> 12) & 511
        n = (nxt - a) >> 12
        if isinstance(ent, PmdLeaf):
            f = ent.fid
            if f == HUGE_ZERO_FID:
                base = s.huge_zero_pfn
                for i in range(i0, i0 + n):
                    yield Page("present", base + i, base, 9, False, 0, ("thp", "zero"), 0)
            else:
                pfn = int(F.pfn[f])
                fl = stable_page_flags(s, f)
                excl = F.precise_mapcount(f, 0) == 1  # the head page speaks for the PMD
                for i in range(i0, i0 + n):
                    yield Page("present", pfn + i, pfn, 9, excl, F.precise_mapcount(f, i), fl,
                               F.value(f, i))
            a = nxt
            continue
        for i in range(i0, i0 + n):
            f = int(ent.fid[i])
            if f == -1:
                yield NONE_PAGE
            elif ent.bits[i] & P_SWAP:
                yield SWAP_PAGE
            elif f == ZERO_FID:
                yield Page("present", ZERO_PFN, ZERO_PFN, 0, False, 0, ("zero",), 0)
            else:
                k = int(ent.idx[i])
                fl = flag_cache.get(f)
                if fl is None:
                    fl = flag_cache[f] = stable_page_flags(s, f)
                mc = F.precise_mapcount(f, k)
                pfn = int(F.pfn[f])
                yield Page("present", pfn + k, pfn, int(F.order[f]), mc == 1, mc, fl,
                           F.value(f, k))
        a = nxt
