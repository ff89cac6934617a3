"""madvise on large folios (foliosim/mm/madvise.py) and the reclaim of what MADV_PAGEOUT hands
over (vmscan.py, swap.py).

Expected values come from shared/reference/linux-6.18-anon-large-folios.md (sections 8.4-8.7, 9
and rules 7, 17, 23 of 12.2) and the live-kernel ground truth (S7, S11, S12, S15, S18, S19).
"""

from __future__ import annotations

import pytest
from mmhelpers import (
    KB,
    MB,
    PAGE,
    PMD,
    THP_FRESH,
    THP_SPLIT_PMD,
    Counters,
    cmp_flags,
    folio_at,
    is_pmd_mapped,
    make_system,
    page_at,
    pages,
    pte_mapped_thp,
    region,
    smap_at,
    thp_region,
    vma_list,
)

EINVAL = -22
MTHP_64K = {"64K": "madvise", "2M": "never"}
SPLIT_4K = frozenset({"anon", "anon_exclusive", "dirty"})  # AXDB on order 0


# -- rule 7: MADV_DONTNEED of part of a PMD -----------------------------------------------------
def test_dontneed_4k_splits_pmd_without_vma_split_and_queues_folio() -> None:
    """Rule 7: a zap of less than a full PMD splits the PMD, then removes the PTEs; no VMA split
    (THPeligible stays 1), Rss 2044, folio queued (S7a row 1)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    c = Counters(s)
    assert p.madvise(a + MB, PAGE, "dontneed") == 0
    assert c.thp() == {"thp_split_pmd": 1, "nr_anon_transparent_hugepages": -1,
                       "thp_deferred_split_page": 1, "2048kB/split_deferred": 1,
                       "2048kB/nr_anon_partially_mapped": 1}
    [(lo, hi, sm)] = vma_list(p, a, PMD)
    assert (lo, hi, sm.rss_kb, sm.anon_huge_pages_kb, sm.thp_eligible) == (0, PMD, 2044, 0, True)
    pg = pages(p, a, PMD)
    assert pg[256].state == "none"
    assert {cmp_flags(x) for i, x in enumerate(pg) if i != 256} == {THP_SPLIT_PMD}


def test_retouch_after_dontneed_and_split_faults_a_4k_page() -> None:
    """Rule 1 and 7: the PMD slot now holds a page table, so re-touching the hole faults a
    4 KiB page (S7a rows 2-3: Rss 2044 -> 2048, AXB)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.madvise(a + MB, 64 * KB, "dontneed") == 0
    s.shrink()
    assert smap_at(p, a).rss_kb == 1984  # S7b row 2
    c = Counters(s)
    assert p.write(a + MB, PAGE, 1) == 0
    pg = page_at(p, a + MB)
    assert pg.folio_order == 0 and pg.exclusive and cmp_flags(pg) == {"anon", "anon_exclusive"}
    assert smap_at(p, a).rss_kb == 1988  # S7b row 3
    assert c.thp() == {}


# -- rule 17: EINVAL on VM_LOCKED, splits of partly covered folios ------------------------------
@pytest.mark.parametrize("advice", ["dontneed", "free", "cold", "pageout"])
def test_madvise_on_vm_locked_vma_is_einval(advice: str) -> None:
    """Rule 17: MADV_DONTNEED, FREE, COLD and PAGEOUT return EINVAL on a VM_LOCKED VMA and
    change nothing (S19 row 1, S12c)."""
    s = make_system(swap="file")
    p = s.process("main")
    a = thp_region(p)
    assert p.mlock(a, PMD) == 0
    before = pages(p, a, PMD)
    c = Counters(s)
    assert p.madvise(a, PAGE if advice == "dontneed" else PMD, advice) == EINVAL
    assert c.thp() == {}
    assert pages(p, a, PMD) == before


def test_free_of_part_of_thp_splits_folio_synchronously() -> None:
    """Rule 17: MADV_FREE of 64 KiB inside a PMD THP splits the whole folio in the syscall
    (thp_split_page, no deferred counter); the freed pages lose DIRTY (S15a row 1)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    c = Counters(s)
    assert p.madvise(a + MB, 64 * KB, "free") == 0
    d = c.thp()
    d.pop("pglazyfree", None)  # counted when the lazyfree batch drains (S15a)
    assert d == {"thp_split_page": 1, "thp_split_pmd": 1, "nr_anon_transparent_hugepages": -1,
                 "2048kB/split": 1, "2048kB/nr_anon": -1}
    pg = pages(p, a, PMD)
    assert all(x.folio_order == 0 and x.exclusive and x.mapcount == 1 for x in pg)
    assert {cmp_flags(x) for x in pg[256:272]} == {frozenset({"anon", "anon_exclusive"})}
    assert {cmp_flags(x) for x in pg[:256] + pg[272:]} == {SPLIT_4K}


def test_pageout_discards_lazyfree_pieces_and_reads_map_zero_page() -> None:
    """Rule 23 (section 8.5): reclaim discards clean lazyfree folios without swap:
    pglazyfree/pglazyfreed +16, Rss 1984; reading them maps the zero page (S15a rows 2-3)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    c = Counters(s)
    assert p.madvise(a + MB, 64 * KB, "free") == 0
    assert p.madvise(a, PMD, "pageout") == 0
    d = c.thp()
    assert d["pglazyfree"] == 16 and d["pglazyfreed"] == 16
    assert "pswpout" not in d
    assert smap_at(p, a).rss_kb == 1984
    assert all(x.state == "none" for x in pages(p, a + MB, 64 * KB))
    assert p.read(a, PMD) == 0
    pg = pages(p, a + MB, 64 * KB)
    assert all("zero" in x.flags and x.mapcount == 0 and not x.exclusive for x in pg)
    assert smap_at(p, a).rss_kb == 1984


def test_free_of_whole_thp_marks_it_lazyfree_without_split() -> None:
    """Rule 17 / section 8.5: MADV_FREE of a whole THP clears dirty and swapbacked, no split;
    LazyFree 2048 with AnonHugePages 2048 (S15b row 1: TAX)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    c = Counters(s)
    assert p.madvise(a, PMD, "free") == 0
    assert c.thp() == {"pglazyfree": 512}
    assert is_pmd_mapped(p, a)
    assert {cmp_flags(x) for x in pages(p, a, PMD)} == {
        frozenset({"anon", "anon_exclusive", "thp"})}
    sm = smap_at(p, a)
    assert (sm.rss_kb, sm.anon_huge_pages_kb, sm.lazyfree_kb) == (2048, 2048, 2048)


def test_pageout_discards_clean_lazyfree_thp_whole() -> None:
    """Rule 23 (section 8.5, 9 step 4): a clean lazyfree THP is discarded whole, unsplit:
    pglazyfreed +512, nr_anon -1, and only thp_split_pmd +1 from the unmap; reads then map
    the small zero page (S15b rows 2-3: zero x0 c0 ZR)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.madvise(a, PMD, "free") == 0
    c = Counters(s)
    assert p.madvise(a, PMD, "pageout") == 0
    assert c.thp() == {"pglazyfreed": 512, "2048kB/nr_anon": -1,
                       "nr_anon_transparent_hugepages": -1, "thp_split_pmd": 1}
    assert smap_at(p, a).rss_kb == 0
    assert p.read(a, PMD) == 0
    pg = pages(p, a, PMD)
    assert all(x.folio_order == 0 and cmp_flags(x) == {"zero"} and x.mapcount == 0 for x in pg)


def test_pageout_keeps_redirtied_lazyfree_thp_unsplit() -> None:
    """Rule 23 (section 8.5): a lazyfree THP written again is found dirty by reclaim, made
    swapbacked again and kept unsplit; only the PMD is split by the unmap attempt (S15c)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.madvise(a, PMD, "free") == 0
    assert p.write(a + MB, PAGE, 9) == 0
    assert {cmp_flags(x) for x in pages(p, a, PMD)} == {
        frozenset({"anon", "anon_exclusive", "thp"})}  # S15c row 0: TAX
    c = Counters(s)
    assert p.madvise(a, PMD, "pageout") == 0
    assert c.thp() == {"thp_split_pmd": 1, "nr_anon_transparent_hugepages": -1}
    pg = pages(p, a, PMD)
    assert all(x.folio_order == 9 for x in pg)
    assert {cmp_flags(x) for x in pg} == {THP_SPLIT_PMD}  # S15c row 1: TAXDB
    assert smap_at(p, a).rss_kb == 2048


@pytest.mark.parametrize(("size", "flags"), [
    (PMD, frozenset({"anon", "anon_exclusive", "thp"})),
    (PAGE, frozenset({"anon", "anon_exclusive"})),
])
def test_pageout_keeps_pinned_lazyfree_folio_lazyfree(size: int, flags: frozenset) -> None:
    """``try_to_unmap_one`` / ``__discard_anon_folio_pmd_locked``: a clean lazyfree folio with
    a reference besides its mappings (a pin) is left mapped and NOT made swapbacked again:
    only a redirtied one is. LazyFree keeps counting it (seen on the live kernel: scenario
    reclaim-pinned-lazyfree-stays-lazyfree)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p) if size == PMD else thp_region(p, size, advice="nohugepage")
    assert p.pin(a, PAGE, "p") == 0
    assert p.madvise(a, size, "free") == 0
    c = Counters(s)
    assert p.madvise(a, size, "pageout") == 0
    assert "pglazyfreed" not in c.thp()
    assert {cmp_flags(x) for x in pages(p, a, size)} == {flags}
    assert smap_at(p, a).lazyfree_kb == size // KB


def test_free_of_part_of_mthp_splits_it() -> None:
    """Rule 17: MADV_FREE of 16 KiB inside a 64 KiB folio splits it synchronously; the
    PTE-by-PTE unmap makes it transiently partially mapped (S10_15 row 1: 64K/split+1,
    64K/split_deferred+1, 64K/nr_anon-1)."""
    s = make_system(sizes=MTHP_64K)
    p = s.process("main")
    a = thp_region(p)
    c = Counters(s)
    assert p.madvise(a + 16 * KB, 16 * KB, "free") == 0
    d = c.thp()
    d.pop("pglazyfree", None)  # counted at batch drain (S10_15)
    assert d == {"64kB/split": 1, "64kB/split_deferred": 1, "64kB/nr_anon": -1}
    pg = pages(p, a, 32 * PAGE)
    assert all(x.folio_order == 0 for x in pg[:16])
    assert {cmp_flags(x) for x in pg[4:8]} == {frozenset({"anon", "anon_exclusive"})}
    assert {cmp_flags(x) for x in pg[:4] + pg[8:16]} == {SPLIT_4K}
    assert all(x.folio_order == 4 for x in pg[16:])


def test_free_of_whole_mthp_does_not_split() -> None:
    """Rule 17: MADV_FREE of a whole 64 KiB folio marks it lazyfree without split (S10_15
    row 2: TAX, LazyFree counts its 64 kB)."""
    s = make_system(sizes=MTHP_64K)
    p = s.process("main")
    a = thp_region(p)
    c = Counters(s)
    assert p.madvise(a + 64 * KB, 64 * KB, "free") == 0
    assert c.thp() == {"pglazyfree": 16}
    pg = pages(p, a + 64 * KB, 64 * KB)
    assert {cmp_flags(x) for x in pg} == {frozenset({"anon", "anon_exclusive", "thp"})}
    assert smap_at(p, a).lazyfree_kb == 64


def test_cold_of_part_of_thp_splits_folio() -> None:
    """Rule 17: MADV_COLD of 1 MiB of a THP splits the whole folio in the syscall; MADV_NOHUGEPAGE
    before keeps the PMD (THPeligible 0, AnonHugePages 2048) (S18)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    c = Counters(s)
    assert p.madvise(a, PMD, "nohugepage") == 0
    sm = smap_at(p, a)
    assert (sm.anon_huge_pages_kb, sm.thp_eligible, sm.vmflags) == (2048, False, ["nh"])
    assert c.thp() == {}
    assert p.madvise(a, MB, "cold") == 0
    assert c.thp() == {"thp_split_page": 1, "thp_split_pmd": 1, "2048kB/split": 1,
                       "2048kB/nr_anon": -1, "nr_anon_transparent_hugepages": -1}
    pg = pages(p, a, PMD)
    assert all(x.folio_order == 0 for x in pg)
    assert {cmp_flags(x) for x in pg} == {SPLIT_4K}


def test_cold_of_part_of_shared_thp_skips_it() -> None:
    """Rule 17: a folio that may be mapped shared is skipped by partial MADV_COLD (no split at
    all, not even of the PMD)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    p.fork("child")
    c = Counters(s)
    assert p.madvise(a, MB, "cold") == 0
    assert c.thp() == {}
    assert is_pmd_mapped(p, a)


def test_cold_of_whole_thp_does_not_split() -> None:
    """Rule 17: MADV_COLD of a whole THP deactivates it without split."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    c = Counters(s)
    assert p.madvise(a, PMD, "cold") == 0
    assert c.thp() == {}
    assert is_pmd_mapped(p, a)


# -- rule 23: reclaim (MADV_PAGEOUT) ------------------------------------------------------------
def test_pageout_without_swap_splits_thp_and_frees_nothing() -> None:
    """Rule 23: no swap means no large swap slot: the THP is split (thp_swpout_fallback,
    swpout_fallback) and nothing is reclaimed; rc 0 (S12d row 1)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    c = Counters(s)
    assert p.madvise(a, PMD, "pageout") == 0
    assert c.thp() == {"thp_split_page": 1, "thp_split_pmd": 1, "thp_swpout_fallback": 1,
                       "2048kB/split": 1, "2048kB/swpout_fallback": 1, "2048kB/nr_anon": -1,
                       "nr_anon_transparent_hugepages": -1}
    pg = pages(p, a, PMD)
    assert all(x.folio_order == 0 and x.exclusive and x.mapcount == 1 for x in pg)
    assert {cmp_flags(x) for x in pg} == {SPLIT_4K}
    assert smap_at(p, a).rss_kb == 2048


def test_pageout_with_swap_file_splits_and_swaps_4k_pages() -> None:
    """Rule 23: a swap file holds no order > 0 entries: the THP is split and 512 pages are
    written (pswpout+512, no thp_swpout); Rss 0, Swap 2048; a read maps back the same PFN
    from the swap cache (S12a rows 1, 3)."""
    s = make_system(swap="file")
    p = s.process("main")
    a = thp_region(p)
    before = pages(p, a, PMD)
    c = Counters(s)
    assert p.madvise(a, PMD, "pageout") == 0
    assert c.thp() == {"thp_split_page": 1, "thp_split_pmd": 1, "thp_swpout_fallback": 1,
                       "2048kB/split": 1, "2048kB/swpout_fallback": 1, "2048kB/nr_anon": -1,
                       "nr_anon_transparent_hugepages": -1, "pswpout": 512}
    assert all(x.state == "swap" for x in pages(p, a, PMD))
    sm = smap_at(p, a)
    assert (sm.rss_kb, sm.swap_kb) == (0, 2048)
    assert p.mm.swap_ents * 4 == 2048
    assert p.read(a + MB, PAGE) == 0
    pg = page_at(p, a + MB)
    assert pg.pfn == before[256].pfn and pg.folio_order == 0
    assert cmp_flags(pg) == {"anon", "anon_exclusive", "swapcache"}
    sm = smap_at(p, a)
    assert (sm.rss_kb, sm.swap_kb) == (4, 2044)
    assert "pswpin" not in c.thp()


@pytest.mark.parametrize(("mib", "flags"), [
    (60, {"anon", "anon_exclusive", "swapcache"}),
    (72, {"anon", "anon_exclusive", "dirty"}),
])
def test_swapin_read_frees_the_swap_slot_once_swap_is_half_used(mib: int, flags: set) -> None:
    """``should_try_to_free_swap``: with more than half the swap space used
    (``vm_swap_full``), even a read fault drops the swap cache and dirties the page; below it
    the page stays in the swap cache (live kernel, 128 MiB swap file: 72 MiB paged out vs 60,
    scenario swap-half-full-read-frees-swap-slot)."""
    s = make_system(swap="file")
    p = s.process("main")
    a = thp_region(p, mib * MB)
    assert p.madvise(a, mib * MB, "pageout") == 0
    assert p.read(a, 2 * PAGE) == 0
    assert {frozenset(cmp_flags(x)) for x in pages(p, a, 2 * PAGE)} == {frozenset(flags)}


@pytest.mark.parametrize(("mib", "how", "flags"), [
    (1, "exit", {"anon", "swapcache"}),
    (80, "exit", {"anon", "dirty"}),
    (1, "free", {"anon", "swapcache"}),
])
def test_last_swap_entry_gone_keeps_a_mapped_swapcache_page(mib: int, how: str,
                                                          flags: set) -> None:
    """``free_swap_and_cache_nr``: when the child's swap entry, the slot's last, goes (exit, or
    MADV_FREE of the child's range), the swap-cache page the parent mapped back is reclaimed
    (``__try_to_reclaim_swap`` with ``TTRS_UNMAPPED | TTRS_FULL``: dropped from the swap cache
    and dirtied) only if nothing maps it or the swap space is more than half used; otherwise
    it stays in the swap cache, holding its slot. Live kernel, 128 MiB swap file: a few small
    pages or a 64K mTHP paged out leave ``anon,swapcache``, 80 MiB of THPs ``anon,dirty``
    (the page is not PageAnonExclusive since the fork; scenarios
    swap-fork-child-exit-keeps-mapped-swapcache-page,
    swap-fork-child-exit-reclaims-mapped-swapcache-page-swap-full and
    swap-fork-child-free-keeps-mapped-swapcache-page; small pages in a review run)."""
    s = make_system(swap="file")
    p = s.process("main")
    a = thp_region(p, mib * MB)
    assert p.madvise(a, mib * MB, "pageout") == 0
    c = p.fork("child")
    assert p.read(a, PAGE) == 0
    slot = int(s.folios.swap[folio_at(p, a)[0]])
    if how == "exit":
        c.exit()
    else:
        assert c.madvise(a, PAGE, "free") == 0
    assert cmp_flags(page_at(p, a)) == flags
    assert (slot in s.swap.free) == ("swapcache" not in flags)


def test_pageout_writes_only_pages_that_are_not_zero_filled() -> None:
    """``swap_writeout``: a zero-filled page goes to the swap device's zeromap without I/O, so
    only the other pages count in pswpout; every page still leaves a swap entry (live
    kernel: 15 zero pages and one written, pswpout 1; scenario
    swap-zero-filled-pages-not-written)."""
    s = make_system(swap="file")
    p = s.process("main")
    a = thp_region(p, 64 * KB, value=0, advice="nohugepage")
    assert p.write(a, PAGE, 5) == 0
    c = Counters(s)
    assert p.madvise(a, 64 * KB, "pageout") == 0
    assert c.thp() == {"pswpout": 1}
    assert all(x.state == "swap" for x in pages(p, a, 64 * KB))


@pytest.mark.parametrize("size", [4 * PAGE, 64 * PAGE])  # one-by-one walk and bulk path
def test_free_of_swapped_in_pages_drops_their_swap_copy(size: int) -> None:
    """``madvise_free_pte_range``: a swap-cached folio that no swap entry refers to any more
    loses its swap copy (``folio_free_swap``) and becomes lazyfree; a later MADV_PAGEOUT
    discards it (live kernel: swapcache gone, LazyFree 16 kB and pglazyfree +4 after the free,
    pglazyfreed +4 and the pages gone after the pageout; scenario
    swap-free-of-swapped-in-pages-drops-swap-copy)."""
    s = make_system(swap="file")
    p = s.process("main")
    a = thp_region(p, size, advice="nohugepage")
    assert p.madvise(a, size, "pageout") == 0
    assert p.read(a, size) == 0
    assert {frozenset(cmp_flags(x)) for x in pages(p, a, size)} == {
        frozenset({"anon", "anon_exclusive", "swapcache"})}
    c = Counters(s)
    assert p.madvise(a, size, "free") == 0
    assert c.thp() == {"pglazyfree": size // PAGE}
    assert {frozenset(cmp_flags(x)) for x in pages(p, a, size)} == {
        frozenset({"anon", "anon_exclusive"})}
    assert smap_at(p, a).lazyfree_kb == size // KB
    assert p.madvise(a, size, "pageout") == 0
    assert c.thp() == {"pglazyfree": size // PAGE, "pglazyfreed": size // PAGE}
    assert all(x.state == "none" for x in pages(p, a, size))


def test_reclaim_takes_a_split_thps_head_then_its_tails_from_the_last() -> None:
    """``shrink_folio_list`` after ``split_folio_to_list``: the head goes on at once, the
    tails were added at the list's end, which reclaim takes first: pages 0, 511, 510, ..., 1.
    With 66 THPs and 32767 swap slots the last THP keeps only page 1 in memory (live
    kernel: page 32257 of the region; scenario swap-exhausted-split-pieces-order)."""
    s = make_system(swap="file")
    p = s.process("main")
    a = thp_region(p, 132 * MB)
    assert p.madvise(a, 132 * MB, "pageout") == 0
    last = pages(p, a + 63 * PMD, PMD)
    assert [i for i, x in enumerate(last) if x.state != "swap"] == [1]
    assert all(x.state == "swap" for x in pages(p, a, 63 * PMD))


def _paged_out_then_one_read_back(s, size: int = 4 * PAGE) -> tuple:
    """Small pages written and paged out; page 0 read back from the swap cache."""
    p = s.process("main")
    a = thp_region(p, size, advice="nohugepage")
    assert p.madvise(a, size, "pageout") == 0
    assert p.read(a, PAGE) == 0
    return p, a


def test_repageout_of_clean_swapcache_page_drops_it_and_reads_from_the_device() -> None:
    """``shrink_folio_list`` of a swap-cache folio mapped again: ``try_to_unmap`` puts its old
    slot back in the PTE, the folio is clean so nothing is written and ``__remove_mapping``
    frees it; the next touch reads the slot from the device (``swapin_readahead``: pswpin +1).
    Live kernel: page 0 swapped again, Swap 16 kB, pswpout 4 and pswpin 1 in all (scenario
    swap-repageout-clean-page-read-from-device)."""
    s = make_system(swap="file")
    p, a = _paged_out_then_one_read_back(s)
    c = Counters(s)
    assert p.madvise(a, 4 * PAGE, "pageout") == 0
    assert c.thp() == {}
    assert all(x.state == "swap" for x in pages(p, a, 4 * PAGE))
    assert smap_at(p, a).swap_kb == 16
    assert p.read(a, PAGE) == 0
    assert c.thp() == {"pswpin": 1}
    assert cmp_flags(page_at(p, a)) == {"anon", "anon_exclusive", "swapcache"}
    assert p.value_at(a) == 7


def test_repageout_of_dirty_swapcache_page_writes_it_again_and_keeps_it() -> None:
    """A swap-cache folio written after it was mapped back is dirty: reclaim writes it to its
    old slot again (pswpout +1) and keeps it in the swap cache; reading it again needs no I/O
    (live kernel: pswpout 5 in all; scenario swap-repageout-dirty-page-written-again)."""
    s = make_system(swap="file")
    p, a = _paged_out_then_one_read_back(s)
    assert p.write(a, PAGE, 77) == 0
    c = Counters(s)
    assert p.madvise(a, 4 * PAGE, "pageout") == 0
    assert c.thp() == {"pswpout": 1}
    assert p.read(a, PAGE) == 0
    assert c.thp() == {"pswpout": 1}
    assert p.value_at(a) == 77


def test_pinned_exclusive_swapcache_page_stays_mapped_at_repageout() -> None:
    """``try_to_unmap_one``: an exclusive page that may be pinned cannot be shared
    (``folio_try_share_anon_rmap_pte`` fails), so the PTE stays; after unpin the page is
    dropped and read back from the device (live kernel: page 0 present, Swap 12 kB; then
    pswpin 1; scenario swap-pinned-swapcache-page-stays-mapped)."""
    s = make_system(swap="file")
    p, a = _paged_out_then_one_read_back(s)
    assert p.pin(a, PAGE, "p") == 0
    assert p.madvise(a, 4 * PAGE, "pageout") == 0
    assert page_at(p, a).state == "present"
    assert smap_at(p, a).swap_kb == 12
    p.unpin("p")
    c = Counters(s)
    assert p.madvise(a, 4 * PAGE, "pageout") == 0
    assert page_at(p, a).state == "swap"
    assert p.read(a, 4 * PAGE) == 0
    assert c.thp() == {"pswpin": 1}


def test_collapse_over_a_page_on_the_swap_device_fails_with_eagain() -> None:
    """``__collapse_huge_page_swapin``: the read from the device leaves the new folio locked,
    ``do_swap_page`` returns VM_FAULT_RETRY and the collapse ends with SCAN_PAGE_LOCK:
    -EAGAIN, nothing collapsed, the page read into the swap cache but not mapped (live kernel:
    EAGAIN, pswpin 1, Swap 64 kB; scenario swap-collapse-over-device-entries-eagain)."""
    s = make_system(swap="file")
    p = s.process("main")
    a = thp_region(p, PMD, advice="nohugepage")
    assert p.madvise(a, 64 * KB, "pageout") == 0
    assert p.read(a, PAGE) == 0
    assert p.madvise(a, 64 * KB, "pageout") == 0
    assert p.madvise(a, PMD, "hugepage") == 0
    c = Counters(s)
    assert p.madvise(a, PMD, "collapse") == -11
    assert c.thp().get("pswpin") == 1
    assert smap_at(p, a).swap_kb == 64
    assert not is_pmd_mapped(p, a)


@pytest.mark.parametrize("how", ["munmap", "collapse"])
def test_unmapping_swapped_in_pages_frees_their_swap_copy(how: str) -> None:
    """``free_pages_and_swap_cache`` (zap) and ``__collapse_huge_page_copy_succeeded`` call
    ``free_swap_cache``: a swap-cache folio nothing maps any more gives back its slot and is
    freed (kernel source; nothing a scenario observes shows it, but the slots count towards
    ``vm_swap_full``)."""
    s = make_system(swap="file")
    p = s.process("main")
    a = thp_region(p, PMD, advice="nohugepage")
    assert p.madvise(a, 16 * KB, "pageout") == 0
    assert p.read(a, 16 * KB) == 0
    assert len(s.swap.cache) == 4
    if how == "munmap":
        assert p.munmap(a, MB) == 0
    else:
        assert p.madvise(a, PMD, "hugepage") == 0
        assert p.madvise(a, PMD, "collapse") == 0
    assert not s.swap.cache and not s.swap.count
    assert s.swap.next - 1 == len(s.swap.free)  # every slot handed out is free again


def test_vm_swap_full_is_fewer_than_half_the_slots_free() -> None:
    """``vm_swap_full``: free * 2 < total, the header page not counted (32767 slots in a
    128 MiB swap file): full from 16384 slots used."""
    from foliosim.mm.swap import SWAP_FILE_PAGES, SwapFile

    sw = SwapFile()
    assert SWAP_FILE_PAGES == 32768
    for _ in range(16383):
        sw.alloc()
    assert not sw.full()
    slot = sw.alloc()
    assert sw.full()
    sw.free.append(slot)  # freed again
    assert not sw.full()


def test_pageout_of_half_thp_with_swap_file() -> None:
    """Rule 17 and 23: MADV_PAGEOUT of half a THP splits the folio (no swpout_fallback: the
    split is for the partial range) and swaps out 256 pages (S12b)."""
    s = make_system(swap="file")
    p = s.process("main")
    a = thp_region(p)
    c = Counters(s)
    assert p.madvise(a, MB, "pageout") == 0
    assert c.thp() == {"thp_split_page": 1, "thp_split_pmd": 1, "2048kB/split": 1,
                       "2048kB/nr_anon": -1, "nr_anon_transparent_hugepages": -1,
                       "pswpout": 256}
    pg = pages(p, a, PMD)
    assert all(x.state == "swap" for x in pg[:256])
    assert all(x.folio_order == 0 for x in pg[256:])
    assert {cmp_flags(x) for x in pg[256:]} == {SPLIT_4K}
    sm = smap_at(p, a)
    assert (sm.rss_kb, sm.swap_kb) == (1024, 1024)


def test_pageout_of_mthps_with_swap_file_splits_each() -> None:
    """Rule 23: four 64 KiB folios are each split (the PTE-by-PTE unmap counts split_deferred)
    and swapped as 4 KiB pages (S12e row 1)."""
    s = make_system(sizes=MTHP_64K, swap="file")
    p = s.process("main")
    a = thp_region(p)
    c = Counters(s)
    assert p.madvise(a, 256 * KB, "pageout") == 0
    assert c.thp() == {"64kB/split": 4, "64kB/split_deferred": 4, "64kB/swpout_fallback": 4,
                       "64kB/nr_anon": -4, "pswpout": 64}
    sm = smap_at(p, a)
    assert (sm.rss_kb, sm.swap_kb) == (1792, 256)


def test_pageout_of_pte_mapped_thp_counts_transient_deferred_split() -> None:
    """Rule 23 and 8: a PTE-mapped THP is unmapped PTE by PTE by the split, so it is
    transiently partially mapped: thp_deferred_split_page+1 (S12f row 1)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    pte_mapped_thp(p, a)
    c = Counters(s)
    assert p.madvise(a, PMD, "pageout") == 0
    assert c.thp() == {"thp_split_page": 1, "thp_swpout_fallback": 1,
                       "thp_deferred_split_page": 1, "2048kB/split": 1,
                       "2048kB/split_deferred": 1, "2048kB/swpout_fallback": 1,
                       "2048kB/nr_anon": -1}


def test_pageout_of_partially_mapped_thp_splits_it_without_swpout_fallback() -> None:
    """Rule 23: a partially mapped folio is split first (no large swap attempt), then its mapped
    pages go out as order-0 pages."""
    s = make_system(swap="file")
    p = s.process("main")
    a = thp_region(p)
    assert p.munmap(a + MB, MB) == 0
    c = Counters(s)
    assert p.madvise(a, MB, "pageout") == 0
    d = c.thp()
    assert d.get("thp_split_page") == 1 and "thp_swpout_fallback" not in d
    assert d.get("pswpout") == 256


# -- section 8.7: MADV_COLLAPSE -----------------------------------------------------------------
def test_collapse_of_512_small_pages_makes_new_pmd_thp() -> None:
    """Section 8.7: MADV_COLLAPSE copies 512 present 4 KiB pages into a new PMD THP with the
    content preserved; thp_collapse_alloc+1, no anon_fault_alloc (S11a)."""
    s = make_system()
    p = s.process("main")
    a = region(p, advice="nohugepage")
    for i in range(0, 512, 64):
        assert p.write(a + i * PAGE, 64 * PAGE, 100 + i) == 0
    assert p.madvise(a, PMD, "hugepage") == 0
    c = Counters(s)
    assert p.madvise(a, PMD, "collapse") == 0
    assert c.thp() == {"thp_collapse_alloc": 1, "2048kB/nr_anon": 1,
                       "nr_anon_transparent_hugepages": 1}
    assert is_pmd_mapped(p, a)
    pg = pages(p, a, PMD)
    assert {cmp_flags(x) for x in pg} == {THP_FRESH}
    assert [x.value for x in pg] == [100 + (i // 64) * 64 for i in range(512)]
    sm = smap_at(p, a)
    assert (sm.anon_huge_pages_kb, sm.thp_eligible) == (2048, True)


def test_collapse_ignores_sysfs_and_max_ptes_none() -> None:
    """Section 8.7: MADV_COLLAPSE works without VM_HUGEPAGE under enabled=madvise and with a
    single present page; Rss 4 -> 2048, THPeligible stays 0 (S11b)."""
    s = make_system()
    p = s.process("main")
    a = region(p, advice=None)
    assert p.write(a, PAGE, 1) == 0
    c = Counters(s)
    assert p.madvise(a, PMD, "collapse") == 0
    assert c.thp() == {"thp_collapse_alloc": 1, "2048kB/nr_anon": 1,
                       "nr_anon_transparent_hugepages": 1}
    sm = smap_at(p, a)
    assert (sm.rss_kb, sm.anon_huge_pages_kb, sm.thp_eligible) == (2048, 2048, False)


def test_collapse_in_nohugepage_vma_is_einval() -> None:
    """Section 8.7: TVA_FORCED_COLLAPSE does not override VM_NOHUGEPAGE (S11c)."""
    s = make_system()
    p = s.process("main")
    a = region(p, advice="nohugepage")
    assert p.write(a, PMD, 1) == 0
    c = Counters(s)
    assert p.madvise(a, PMD, "collapse") == EINVAL
    assert c.thp() == {}
    assert all(x.folio_order == 0 for x in pages(p, a, PMD))


def test_collapse_of_split_thp_with_hole_fills_it() -> None:
    """Section 8.7: a THP split after DONTNEED of 4 KiB collapses again; the hole becomes
    zero-filled memory, Rss 2044 -> 2048 (S11d)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.madvise(a + MB, PAGE, "dontneed") == 0
    s.shrink()
    assert smap_at(p, a).rss_kb == 2044
    assert p.madvise(a, PMD, "collapse") == 0
    assert is_pmd_mapped(p, a)
    assert smap_at(p, a).rss_kb == 2048
    assert page_at(p, a + MB).value == 0


def test_collapse_of_pte_mapped_thp_copies_into_new_folio() -> None:
    """Section 8.7 and 8.8: a PTE-mapped intact THP is collapsed by copying into a new THP (new
    PFNs), not remapped in place (S11e)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    pte_mapped_thp(p, a)
    old = page_at(p, a).folio_pfn
    c = Counters(s)
    assert p.madvise(a, PMD, "collapse") == 0
    assert c.thp() == {"thp_collapse_alloc": 1, "nr_anon_transparent_hugepages": 1}
    pg = pages(p, a, PMD)
    assert pg[0].folio_pfn != old and pg[0].folio_order == 9
    assert {cmp_flags(x) for x in pg} == {THP_FRESH}


# -- section 8.7: MADV_HUGEPAGE / NOHUGEPAGE ----------------------------------------------------
def test_madvise_hugepage_leaves_existing_folios_alone() -> None:
    """Section 8.7: MADV_HUGEPAGE flips the flag only; existing 4 KiB pages stay (no collapse)."""
    s = make_system()
    p = s.process("main")
    a = region(p, advice=None)
    assert p.write(a, PMD, 1) == 0
    c = Counters(s)
    assert p.madvise(a, PMD, "hugepage") == 0
    assert c.thp() == {}
    assert all(x.folio_order == 0 for x in pages(p, a, PMD))
    assert smap_at(p, a).vmflags == ["hg"]


def test_madvise_range_with_hole_is_enomem() -> None:
    """do_madvise: a range with an unmapped hole returns ENOMEM."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p, 4 * MB)
    assert p.munmap(a + MB, MB) == 0
    assert p.madvise(a, 4 * MB, "nohugepage") == -12


def test_dontneed_of_whole_pte_mapped_thp_frees_the_table_so_refault_gets_a_thp() -> None:
    """Rule 1 and 7 (section 8.4, PT_RECLAIM): a DONTNEED covering a whole 2 MiB frees the
    emptied PTE table, so the next fault there can map a PMD THP again."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    pte_mapped_thp(p, a)
    assert p.madvise(a, PMD, "dontneed") == 0
    c = Counters(s)
    assert p.write(a, PAGE, 1) == 0
    assert is_pmd_mapped(p, a)
    assert c["thp_fault_alloc"] == 1


def test_collapse_ignores_enabled_never() -> None:
    """Section 8.7: MADV_COLLAPSE (TVA_FORCED_COLLAPSE) ignores sysfs enabled, even never."""
    s = make_system(enabled="never")
    p = s.process("main")
    a = region(p)
    assert p.write(a, PMD, 1) == 0
    assert not is_pmd_mapped(p, a)
    assert p.madvise(a, PMD, "collapse") == 0
    assert is_pmd_mapped(p, a)


def test_populate_read_maps_huge_zero_and_populate_write_a_thp() -> None:
    """Rule 3: MADV_POPULATE_READ faults for read (the huge zero page in a MADV_HUGEPAGE VMA),
    MADV_POPULATE_WRITE for write (a THP, replacing the huge zero PMD, 6.18)."""
    s = make_system()
    p = s.process("main")
    a = region(p)
    assert p.madvise(a, PMD, "populate_read") == 0
    assert "zero" in page_at(p, a).flags and smap_at(p, a).rss_kb == 0
    c = Counters(s)
    assert p.madvise(a, PMD, "populate_write") == 0
    assert is_pmd_mapped(p, a) and smap_at(p, a).rss_kb == 2048
    assert c["thp_fault_alloc"] == 1 and "thp_split_pmd" not in c.thp()


def test_free_of_part_of_shared_thp_skips_it() -> None:
    """Rule 17 (section 8.5): MADV_FREE skips a folio that may be mapped shared: no split, no
    lazyfree."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    p.fork("child")
    c = Counters(s)
    assert p.madvise(a, 64 * KB, "free") == 0
    assert p.madvise(a, PMD, "free") == 0
    assert c.thp() == {}
    assert is_pmd_mapped(p, a)
