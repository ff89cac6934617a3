"""PMD split vs folio split, the deferred split queue and its shrinker
(foliosim/mm/huge_memory.py, rmap.py's partial-map detection).

Expected values come from shared/reference/linux-6.18-anon-large-folios.md (sections 3, 4 and
rules 5, 8, 9, 10, 11 of 12.2) and the live-kernel ground truth (S4, S4b, S4c, S10_4, S16, S19).
"""

from __future__ import annotations

from mmhelpers import (
    KB,
    MB,
    PAGE,
    PMD,
    THP_SPLIT_PMD,
    Counters,
    cmp_flags,
    folio_at,
    is_mlocked,
    is_partially_mapped,
    is_pmd_mapped,
    make_system,
    pages,
    region,
    smap_at,
    thp_region,
    vma_list,
)

MTHP_64K = {"64K": "madvise", "2M": "never"}


# -- rule 5: underused candidates ---------------------------------------------------------------
def test_new_pmd_thp_is_queued_as_underused_candidate_without_counters() -> None:
    """Rule 5: every PMD THP from a fault goes on the deferred queue, not flagged partially
    mapped, and no counter moves (section 4.1)."""
    s = make_system()
    p = s.process("main")
    a = region(p)
    c = Counters(s)
    assert p.write(a, PAGE, 1) == 0
    f, _ = folio_at(p, a)
    assert f in s.deferred_queue
    assert not is_partially_mapped(s, f)
    d = c.thp()
    assert "thp_deferred_split_page" not in d and "2048kB/split_deferred" not in d


def test_shrink_underused_off_does_not_queue_new_thp() -> None:
    """Rule 5 (section 4.1): deferred_split_folio(false) is ignored with shrink_underused=0."""
    s = make_system(shrink_underused=False)
    p = s.process("main")
    a = thp_region(p)
    f, _ = folio_at(p, a)
    assert f not in s.deferred_queue


def test_mthp_is_never_queued_at_fault() -> None:
    """Rule 5: mTHPs are not queued as underused candidates."""
    s = make_system(sizes=MTHP_64K)
    p = s.process("main")
    thp_region(p)
    assert not s.deferred_queue


def test_thp_from_huge_zero_write_is_queued_and_split_when_underused() -> None:
    """Rule 5 / section 2.2 say do_huge_zero_wp_pmd does not queue the THP (the v6.18.2
    source), but the live kernel does: with max_ptes_none=256, 16 pages written over the huge
    zero PMD, the shrinker splits the THP as underused (thp_underused_split_page 1,
    thp_split_pmd 1; a fuzz finding, scenario huge-zero-write-then-underused-split)."""
    s = make_system(max_ptes_none=256)
    p = s.process("main")
    a = region(p)
    assert p.read(a, PAGE) == 0
    assert p.write(a + MB, 64 * KB, 1) == 0
    f, _ = folio_at(p, a)
    assert f in s.deferred_queue
    c = Counters(s)
    s.shrink()
    assert c.thp()["thp_underused_split_page"] == 1
    assert c.thp()["thp_split_pmd"] == 1


def test_underused_split_keeps_real_pages_mlocked_through_an_earlier_mapping() -> None:
    """``remove_migration_pte`` walks the rmap: the parent's locked mapping comes first and
    mlocks the new page (``mlock_vma_folio``), so the child's unlocked mapping of the same
    zero-filled page cannot take the zero page (``try_to_map_unused_to_zeropage`` refuses an
    mlocked folio). Live kernel (max_ptes_none=255, 64 KiB of a THP written, parent mlocks
    the first 1 MiB, fork, shrink): pages 16-255 stay real, mapcount 2, mlocked; child Rss
    1024 kB; parent Locked 512 kB (shared: half); the unlocked half goes to the zero page in
    both (scenario underused-split-shared-keeps-pages-mlocked-by-parent)."""
    s = make_system(max_ptes_none=255)
    p = s.process("main")
    a = region(p)
    assert p.write(a, 64 * KB, 1) == 0
    assert p.mlock(a, MB) == 0
    c = p.fork("child")
    s.shrink()
    assert s.vmstat.events.get("thp_underused_split_page") == 1
    for proc in (p, c):
        pg = pages(proc, a, PMD)
        assert all(x.state == "present" and x.mapcount == 2 for x in pg[16:256])
        assert all("mlocked" in cmp_flags(x) for x in pg[16:256])
        assert all(cmp_flags(x) == {"zero"} for x in pg[256:])
    assert smap_at(c, a + MB - PAGE).rss_kb == 1024
    assert smap_at(p, a).locked_kb == 512


def test_collapsed_thp_is_queued_as_underused_candidate() -> None:
    """Rule 5 / section 8.7: the THP made by MADV_COLLAPSE is queued (khugepaged.c:1237)."""
    s = make_system()
    p = s.process("main")
    a = region(p, advice="nohugepage")
    assert p.write(a, PMD, 1) == 0
    assert p.madvise(a, PMD, "hugepage") == 0
    assert p.madvise(a, PMD, "collapse") == 0
    f, _ = folio_at(p, a)
    assert s.folios.order[f] == 9
    assert f in s.deferred_queue and not is_partially_mapped(s, f)


# -- rule 8: partial mapping --------------------------------------------------------------------
def test_partial_munmap_queues_thp_as_partially_mapped() -> None:
    """Rule 8: munmap of 512 KiB in the middle splits the PMD and leaves the folio partially
    mapped and queued: thp_deferred_split_page, split_deferred, nr_anon_partially_mapped; the
    folio is not split (S4 row 1)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    f, _ = folio_at(p, a)
    c = Counters(s)
    assert p.munmap(a + 768 * KB, 512 * KB) == 0
    assert c.thp() == {"thp_split_pmd": 1, "nr_anon_transparent_hugepages": -1,
                       "thp_deferred_split_page": 1, "2048kB/split_deferred": 1,
                       "2048kB/nr_anon_partially_mapped": 1}
    assert f in s.deferred_queue and is_partially_mapped(s, f)
    pg = pages(p, a, PMD)
    assert all(x.folio_order == 9 and x.exclusive and x.mapcount == 1
               for x in pg[:192] + pg[320:])
    assert all(x.state == "none" for x in pg[192:320])
    assert {cmp_flags(x) for x in pg[:192] + pg[320:]} == {THP_SPLIT_PMD}
    assert [(lo, hi, sm.rss_kb, sm.anon_huge_pages_kb, sm.thp_eligible)
            for lo, hi, sm in vma_list(p, a, PMD)] == [
        (0, 768 * KB, 768, 0, False), (1280 * KB, PMD, 768, 0, False)]


def test_partial_map_is_counted_only_once() -> None:
    """Rule 8: only the first partial unmap counts; later ones change nothing (section 4.1)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.munmap(a + 768 * KB, 512 * KB) == 0
    c = Counters(s)
    assert p.munmap(a, 64 * KB) == 0
    assert p.madvise(a + 1536 * KB, 4 * KB, "dontneed") == 0
    assert c.thp() == {}


def test_munmap_of_first_half_edge_queues_like_middle() -> None:
    """Rule 8: munmap of the first 1 MiB behaves as S4 (S4c row 0)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    c = Counters(s)
    assert p.munmap(a, MB) == 0
    assert c.thp() == {"thp_split_pmd": 1, "nr_anon_transparent_hugepages": -1,
                       "thp_deferred_split_page": 1, "2048kB/split_deferred": 1,
                       "2048kB/nr_anon_partially_mapped": 1}


def test_whole_munmap_frees_thp_without_split_counters() -> None:
    """Rule 8: a fully unmapped folio is not partially mapped; it is freed (S0a row 3)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    c = Counters(s)
    assert p.munmap(a, PMD) == 0
    assert c.thp() == {"2048kB/nr_anon": -1, "nr_anon_transparent_hugepages": -1}
    assert not s.deferred_queue


def test_mthp_partial_unmap_counts_only_per_size_stats() -> None:
    """Rule 8: for an mTHP only split_deferred and nr_anon_partially_mapped of its size move,
    never the PMD-size vmstat thp_deferred_split_page (S10_4 rows 1-2)."""
    s = make_system(sizes=MTHP_64K)
    p = s.process("main")
    a = thp_region(p)
    c = Counters(s)
    assert p.munmap(a + 72 * KB, 16 * KB) == 0
    assert c.thp() == {"64kB/split_deferred": 1, "64kB/nr_anon_partially_mapped": 1}
    assert p.madvise(a + 132 * KB, 4 * KB, "dontneed") == 0
    assert c.thp() == {"64kB/split_deferred": 2, "64kB/nr_anon_partially_mapped": 2}


def test_exit_without_shrinker_unqueues_partially_mapped_folio() -> None:
    """Rule 8 / section 4.3: freeing a queued folio unqueues it; nr_anon_partially_mapped goes
    back to 0 and no split is counted (S4b)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.munmap(a + 768 * KB, 512 * KB) == 0
    c = Counters(s)
    p.exit()
    assert c.thp() == {"2048kB/nr_anon_partially_mapped": -1, "2048kB/nr_anon": -1}
    assert not s.deferred_queue


def test_mprotect_of_half_thp_does_not_queue() -> None:
    """Rule 8 vs rule 6: a PMD split alone leaves the folio fully mapped, so it is not partially
    mapped (S5 row 1)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    f, _ = folio_at(p, a)
    c = Counters(s)
    assert p.mprotect(a + MB, MB, "r") == 0
    assert c.thp() == {"thp_split_pmd": 1, "nr_anon_transparent_hugepages": -1}
    assert not is_partially_mapped(s, f)


def test_unmap_spanning_two_vmas_counts_transient_partial_map() -> None:
    """Rule 8 (section 4.1, transient case): unmapping a folio that spans two VMAs in one
    munmap marks it partially mapped on the first VMA's zap and counts it (S6a exit)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.mprotect(a + MB, MB, "r") == 0
    c = Counters(s)
    assert p.munmap(a, PMD) == 0
    d = c.thp()
    assert d.get("thp_deferred_split_page") == 1 and d.get("2048kB/split_deferred") == 1
    assert d.get("2048kB/nr_anon") == -1


# -- rule 9: the shrinker -----------------------------------------------------------------------
def test_shrinker_splits_partially_mapped_thp_keeping_pfns() -> None:
    """Rule 9 and rule 11: drop_caches=2 splits the queued folio; the 384 mapped pages stay at
    their PFNs as order-0 folios (AXDB), Rss unchanged (S4 row 3)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.munmap(a + 768 * KB, 512 * KB) == 0
    before = pages(p, a, PMD)
    c = Counters(s)
    s.shrink()
    assert c.thp() == {"thp_split_page": 1, "2048kB/split": 1, "2048kB/nr_anon": -1,
                       "2048kB/nr_anon_partially_mapped": -1}
    after = pages(p, a, PMD)
    for i in list(range(192)) + list(range(320, 512)):
        assert after[i].pfn == before[i].pfn
        assert after[i].folio_order == 0 and after[i].folio_pfn == after[i].pfn
        assert after[i].exclusive and after[i].mapcount == 1
        assert cmp_flags(after[i]) == {"anon", "anon_exclusive", "dirty"}
    assert not s.deferred_queue
    assert sum(sm.rss_kb for _, _, sm in vma_list(p, a, PMD)) == 1536


def test_split_frees_the_unmapped_pages() -> None:
    """Rule 11 (section 3.2 step 12): the 128 unmapped pages are freed by the split; only the
    384 mapped order-0 folios remain."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.munmap(a + 768 * KB, 512 * KB) == 0
    s.shrink()
    assert s.folios.live == 384


def test_shrinker_leaves_fully_mapped_thp_at_default_max_ptes_none() -> None:
    """Rule 9: with max_ptes_none=511 the underused test is off; a THP with two non-zero pages
    is not split (S16a_ctl) and is dropped from the queue for good (one-shot check)."""
    s = make_system()
    p = s.process("main")
    a = region(p)
    assert p.write(a, 2 * PAGE, 1) == 0
    f, _ = folio_at(p, a)
    c = Counters(s)
    s.shrink()
    assert c.thp() == {}
    assert is_pmd_mapped(p, a)
    assert f not in s.deferred_queue


def test_shrinker_splits_underused_thp_and_maps_zero_pages_to_zero_page() -> None:
    """Rule 9 and rule 11: with max_ptes_none=256 a THP with 2 non-zero pages is split as
    underused and its 510 zero-filled pages become the shared zero page: Rss 2048 -> 8 (S16a)."""
    s = make_system(max_ptes_none=256)
    p = s.process("main")
    a = region(p)
    assert p.write(a, 2 * PAGE, 1) == 0
    c = Counters(s)
    s.shrink()
    # S16a row 1
    assert c.thp() == {"thp_underused_split_page": 1, "thp_split_page": 1, "thp_split_pmd": 1,
                       "nr_anon_transparent_hugepages": -1, "2048kB/split": 1,
                       "2048kB/nr_anon": -1}
    pg = pages(p, a, PMD)
    assert all(x.folio_order == 0 and x.exclusive and x.mapcount == 1 for x in pg[:2])
    assert {cmp_flags(x) for x in pg[:2]} == {frozenset({"anon", "anon_exclusive", "dirty"})}
    assert all("zero" in x.flags and x.mapcount == 0 and not x.exclusive for x in pg[2:])
    sm = smap_at(p, a)
    assert (sm.rss_kb, sm.anon_huge_pages_kb) == (8, 0)
    # S16a row 2: a write to a zero-page-mapped page faults one order-0 page
    assert p.write(a + MB, PAGE, 2) == 0
    assert smap_at(p, a).rss_kb == 12


def test_shrinker_does_not_split_thp_without_zero_pages() -> None:
    """Rule 9: max_ptes_none=256 but every page non-zero: not underused, not split (S16b)."""
    s = make_system(max_ptes_none=256)
    p = s.process("main")
    a = thp_region(p)
    c = Counters(s)
    s.shrink()
    assert c.thp() == {}
    assert is_pmd_mapped(p, a)


def test_underused_check_skips_mlocked_thp() -> None:
    """Rule 9: the shrinker never checks an mlocked THP for underuse."""
    s = make_system(max_ptes_none=256)
    p = s.process("main")
    a = region(p)
    assert p.write(a, PAGE, 1) == 0
    assert p.mlock(a, PMD) == 0
    c = Counters(s)
    s.shrink()
    assert "thp_split_page" not in c.thp()
    assert is_pmd_mapped(p, a)


def test_underused_is_ignored_when_shrink_underused_is_off() -> None:
    """Rule 5 and 9: with shrink_underused=0 nothing is queued, so an underused THP stays."""
    s = make_system(max_ptes_none=0, shrink_underused=False)
    p = s.process("main")
    a = region(p)
    assert p.write(a, PAGE, 1) == 0
    s.shrink()
    assert is_pmd_mapped(p, a)


def test_mthp_partially_mapped_split_by_shrinker() -> None:
    """Rule 9: queued mTHPs are split too, counted per size only (S10_4 row 3)."""
    s = make_system(sizes=MTHP_64K)
    p = s.process("main")
    a = thp_region(p)
    assert p.munmap(a + 72 * KB, 16 * KB) == 0
    assert p.madvise(a + 132 * KB, 4 * KB, "dontneed") == 0
    c = Counters(s)
    s.shrink()
    assert c.thp() == {"64kB/nr_anon": -2, "64kB/nr_anon_partially_mapped": -2, "64kB/split": 2}
    pg = pages(p, a, 64 * PAGE)
    assert all(x.folio_order == 0 for x in pg[16:18] + pg[22:33] + pg[34:48])
    assert {cmp_flags(x) for x in pg[16:18] + pg[22:33] + pg[34:48]} == {
        frozenset({"anon", "anon_exclusive", "dirty"})}
    assert all(x.folio_order == 4 for x in pg[:16] + pg[48:64])


# -- rule 10: when a folio split fails ----------------------------------------------------------
def test_pinned_folio_split_fails_and_stays_queued() -> None:
    """Rule 10: a pin makes can_split_folio fail (-EAGAIN), counted as thp_split_page_failed
    and split_failed; a partially mapped folio stays queued and flagged (S9a rows 3-4)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.pin(a + MB, 64 * KB, "buf") == 0
    assert p.munmap(a + 1536 * KB, 512 * KB) == 0
    f, _ = folio_at(p, a)
    c = Counters(s)
    s.shrink()
    d = c.thp()
    assert d.get("thp_split_page_failed", 0) > 0
    assert d.get("2048kB/split_failed", 0) > 0
    assert "thp_split_page" not in d
    assert s.folios.order[f] == 9
    assert f in s.deferred_queue and is_partially_mapped(s, f)


# -- rule 11: what a successful split does ------------------------------------------------------
def test_split_remaps_zero_filled_pages_of_partially_mapped_thp_to_zero_page() -> None:
    """Rule 11: on every successful anon split zero-filled order-0 pages are mapped to the
    shared zero page and leave Rss (RMP_USE_SHARED_ZEROPAGE, section 3.2 step 11)."""
    s = make_system()
    p = s.process("main")
    a = region(p)
    assert p.write(a, PAGE, 1) == 0  # page 0 non-zero, the rest of the THP zero-filled
    assert p.munmap(a + MB, MB) == 0
    s.shrink()
    pg = pages(p, a, MB)
    assert pg[0].folio_order == 0 and "zero" not in pg[0].flags
    assert all("zero" in x.flags for x in pg[1:])
    assert smap_at(p, a).rss_kb == 4


def test_split_does_not_remap_zero_pages_in_vm_locked_vma() -> None:
    """Rule 11: zero-page remap is skipped for mlocked folios and VM_LOCKED VMAs; the pages
    remapped into the VM_LOCKED VMAs are mlocked again one by one (S19 row 3)."""
    s = make_system()
    p = s.process("main")
    a = region(p)
    assert p.write(a, PAGE, 1) == 0
    assert p.mlock(a, PMD) == 0
    assert p.munmap(a + 768 * KB, 512 * KB) == 0
    s.shrink()
    pg = pages(p, a, PMD)
    mapped = pg[:192] + pg[320:]
    assert not any("zero" in x.flags for x in mapped)
    assert all(x.folio_order == 0 and "mlocked" in x.flags for x in mapped)
    assert sum(sm.rss_kb for _, _, sm in vma_list(p, a, PMD)) == 1536


def test_unpinned_folio_is_split_by_the_next_shrinker() -> None:
    """Rule 10 and rule 11: after IORING_UNREGISTER_BUFFERS the next shrinker pass splits the
    folio that failed while pinned; the pieces inherit DIRTY (S9a rows 5-6: AXDB)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.pin(a + MB, 64 * KB, "buf") == 0
    assert p.munmap(a + 1536 * KB, 512 * KB) == 0
    s.shrink()
    assert p.unpin("buf") == 0
    c = Counters(s)
    s.shrink()
    assert c.thp() == {"thp_split_page": 1, "2048kB/split": 1, "2048kB/nr_anon": -1,
                       "2048kB/nr_anon_partially_mapped": -1}
    pg = pages(p, a, 1536 * KB)
    assert all(x.folio_order == 0 for x in pg)
    assert {cmp_flags(x) for x in pg} == {frozenset({"anon", "anon_exclusive", "dirty"})}


def test_split_of_mlocked_partially_mapped_thp_relocks_pieces() -> None:
    """Rule 11 and 15: the partial munmap munlocked the folio; after the split each remapped
    order-0 page in a VM_LOCKED VMA is mlocked again (S19 rows 2-3)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.mlock(a, PMD) == 0
    assert p.munmap(a + 768 * KB, 512 * KB) == 0
    f, _ = folio_at(p, a)
    assert not is_mlocked(s, f)
    s.shrink()
    for off in (0, 191 * PAGE, 1280 * KB, PMD - PAGE):
        g, _ = folio_at(p, a + off)
        assert s.folios.order[g] == 0 and is_mlocked(s, g)
    assert s.vmstat.events["nr_mlock"] == 384


def test_underused_needs_more_zero_pages_than_max_ptes_none() -> None:
    """Rule 9 (section 4.2, thp_underused): underused once zero-filled pages > max_ptes_none;
    with max_ptes_none=256, 256 zero pages are not enough, 257 are."""
    s = make_system(max_ptes_none=256)
    p = s.process("main")
    a = region(p)
    assert p.write(a, 256 * PAGE, 1) == 0      # 256 filled, 256 zero-filled
    b = region(p)
    assert p.write(b, 255 * PAGE, 1) == 0      # 255 filled, 257 zero-filled
    c = Counters(s)
    s.shrink()
    assert is_pmd_mapped(p, a)
    assert not is_pmd_mapped(p, b)
    assert c["thp_underused_split_page"] == 1


def test_any_zero_page_makes_thp_underused_with_max_ptes_none_0() -> None:
    """Rule 9: with max_ptes_none=0 a single zero-filled page makes a THP underused."""
    s = make_system(max_ptes_none=0)
    p = s.process("main")
    a = thp_region(p)
    assert p.write(a + MB, PAGE, 0) == 0
    c = Counters(s)
    s.shrink()
    assert c["thp_underused_split_page"] == 1
    assert "zero" in pages(p, a + MB, PAGE)[0].flags
    assert smap_at(p, a).rss_kb == 2044


def test_dropped_underused_candidate_is_queued_again_when_partially_unmapped() -> None:
    """Rule 8 and 9: the one-shot underused check drops a fully used THP from the queue; a later
    partial unmap queues it again as partially mapped, counted, and the shrinker splits it."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    f, _ = folio_at(p, a)
    s.shrink()
    assert f not in s.deferred_queue
    c = Counters(s)
    assert p.munmap(a + MB, MB) == 0
    assert f in s.deferred_queue and is_partially_mapped(s, f)
    assert c["thp_deferred_split_page"] == 1
    s.shrink()
    assert c["thp_split_page"] == 1


def test_split_of_unmapped_pinned_underused_thp_fails_with_ebusy_and_is_dropped() -> None:
    """Rule 10 (section 3.2 step 3): a queued folio that is no longer mapped has no anon_vma to
    lock: the split fails (-EBUSY) and is counted as failed; not partially mapped, it is dropped
    from the queue, so the next pass does not try again."""
    s = make_system(max_ptes_none=256)
    p = s.process("main")
    a = region(p)
    assert p.write(a, PAGE, 1) == 0   # underused: 511 zero-filled pages
    assert p.pin(a, PAGE, "buf") == 0
    f, _ = folio_at(p, a)
    assert p.munmap(a, PMD) == 0
    assert f in s.deferred_queue
    c = Counters(s)
    s.shrink()
    assert c.thp() == {"thp_split_page_failed": 1, "2048kB/split_failed": 1}
    assert f not in s.deferred_queue and s.folios.order[f] == 9
    s.shrink()
    assert c.thp() == {"thp_split_page_failed": 1, "2048kB/split_failed": 1}
