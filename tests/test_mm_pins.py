"""Long-term GUP pins through io_uring buffer registration (foliosim/mm/gup.py) and what they
block: folio split, reclaim, collapse.

Expected values come from shared/reference/linux-6.18-anon-large-folios.md (section 7 and
rules 10, 21, 23 of 12.2) and the live-kernel ground truth (S9a, S9b, S9c, finding 6).
"""

from __future__ import annotations

from mmhelpers import (
    KB,
    MB,
    PAGE,
    PMD,
    Counters,
    cmp_flags,
    folio_at,
    is_mlocked,
    is_partially_mapped,
    is_pmd_mapped,
    make_system,
    pages,
    pte_mapped_thp,
    region,
    smap_at,
    thp_region,
)

MTHP_64K = {"64K": "madvise", "2M": "never"}


def vm_pin_kb(p) -> int:
    return p.mm.pinned_vm * 4


# -- rule 21: what a pin does to a folio --------------------------------------------------------
def test_pin_of_64k_in_thp_keeps_one_pin_per_folio_and_changes_nothing_visible() -> None:
    """Rule 21: io_uring coalesces the buffer to one pin per folio: pincount 1, refcount +1;
    no PMD split, pagemap/kpageflags/kpagecount unchanged, VmPin charges the whole folio
    (S9a row 1: VmPin=2048; finding 6)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    f, _ = folio_at(p, a)
    before = pages(p, a, PMD)
    c = Counters(s)
    assert p.pin(a + MB, 64 * KB, "buf") == 0
    assert c.thp() == {}
    assert is_pmd_mapped(p, a)
    assert int(s.folios.pin[f]) == 1 and int(s.folios.ref[f]) == 2
    assert s.folios.maybe_dma_pinned(f)
    assert pages(p, a, PMD) == before
    assert vm_pin_kb(p) == 2048
    assert p.mm.has_pinned


def test_pin_across_mthps_keeps_one_pin_per_folio() -> None:
    """Rule 21: a buffer over whole folios of one size coalesces to one pin per folio."""
    s = make_system(sizes=MTHP_64K)
    p = s.process("main")
    a = thp_region(p)
    f0, _ = folio_at(p, a)
    f1, _ = folio_at(p, a + 64 * KB)
    assert p.pin(a, 128 * KB, "buf") == 0
    for f in (f0, f1):
        assert int(s.folios.pin[f]) == 1 and int(s.folios.ref[f]) == 17
    assert vm_pin_kb(p) == 128


def test_pin_that_cannot_coalesce_keeps_one_pin_per_page() -> None:
    """Rule 21: if the pages do not form runs of equal-size folios (here a 64 KiB folio then an
    order-0 page) io_uring keeps one pin per page: the large folio gets pincount 16 and
    refcount +16, the small one refcount +1024 (GUP_PIN_COUNTING_BIAS, section 7). VmPin charges
    each large folio once, whole (finding 6), and the small page."""
    s = make_system(sizes=MTHP_64K)
    p = s.process("main")
    a = region(p)
    assert p.madvise(a + 64 * KB, 64 * KB, "nohugepage") == 0
    assert p.write(a, 128 * KB, 1) == 0
    f0, _ = folio_at(p, a)
    g, _ = folio_at(p, a + 64 * KB)
    assert s.folios.order[f0] == 4 and s.folios.order[g] == 0
    assert p.pin(a, 68 * KB, "buf") == 0
    assert int(s.folios.pin[f0]) == 16 and int(s.folios.ref[f0]) == 32
    assert int(s.folios.ref[g]) == 1 + 1024
    assert s.folios.maybe_dma_pinned(g)
    assert vm_pin_kb(p) == 64 + 4


def test_unpin_drops_pins_and_charge() -> None:
    """Rule 21: IORING_UNREGISTER_BUFFERS drops the pin and VmPin (S9a row 5)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    f, _ = folio_at(p, a)
    assert p.pin(a + MB, 64 * KB, "buf") == 0
    assert p.unpin("buf") == 0
    assert int(s.folios.pin[f]) == 0 and int(s.folios.ref[f]) == 1
    assert vm_pin_kb(p) == 0


def test_unpin_of_failed_pin_is_enxio() -> None:
    """Spec section 1.1: a failed pin holds nothing; unpinning it returns ENXIO."""
    s = make_system()
    p = s.process("main")
    a = p.mmap_region(PMD, "r")
    assert p.pin(a, PAGE, "buf") < 0
    assert p.unpin("buf") == -6  # -ENXIO


def test_write_pin_populates_untouched_region() -> None:
    """Rule 21: pin_user_pages with FOLL_WRITE faults missing pages in (a THP here)."""
    s = make_system()
    p = s.process("main")
    a = region(p)
    c = Counters(s)
    assert p.pin(a, 64 * KB, "buf") == 0
    assert is_pmd_mapped(p, a)
    assert c["thp_fault_alloc"] == 1


def test_write_pin_breaks_cow_of_shared_page() -> None:
    """Rule 21: registration uses FOLL_WRITE, so a shared page is COW-broken first: the pinned
    page becomes an exclusive page of the pinning process."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    f, _ = folio_at(p, a)
    p.fork("child")
    assert p.pin(a + MB, PAGE, "buf") == 0
    g, _ = folio_at(p, a + MB)
    assert g != f and s.folios.order[g] == 0
    pg = pages(p, a + MB, PAGE)[0]
    assert pg.exclusive and "anon_exclusive" in pg.flags
    assert int(s.folios.ref[g]) == 1 + 1024


# -- rule 10: a pinned folio cannot be split ----------------------------------------------------
def test_pinned_partially_mapped_thp_fails_every_shrinker_pass_until_unpinned() -> None:
    """Rule 10: every shrinker pass fails to split the pinned, partially mapped folio
    (thp_split_page_failed/split_failed > 0) and leaves it queued; after unpin the next pass
    splits it (S9a rows 2-6)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.pin(a + MB, 64 * KB, "buf") == 0
    c = Counters(s)
    assert p.munmap(a + 1536 * KB, 512 * KB) == 0
    assert c.thp() == {"thp_split_pmd": 1, "nr_anon_transparent_hugepages": -1,
                       "thp_deferred_split_page": 1, "2048kB/split_deferred": 1,
                       "2048kB/nr_anon_partially_mapped": 1}
    f, _ = folio_at(p, a)
    for _ in range(2):
        c = Counters(s)
        s.shrink()
        d = c.thp()
        assert d.get("thp_split_page_failed", 0) > 0 and d.get("2048kB/split_failed", 0) > 0
        assert set(d) == {"thp_split_page_failed", "2048kB/split_failed"}
        assert f in s.deferred_queue and is_partially_mapped(s, f)
    assert vm_pin_kb(p) == 2048
    assert p.unpin("buf") == 0
    c = Counters(s)
    s.shrink()
    assert c.thp() == {"thp_split_page": 1, "2048kB/split": 1, "2048kB/nr_anon": -1,
                       "2048kB/nr_anon_partially_mapped": -1}


def test_pin_overlapping_unmapped_range_behaves_the_same() -> None:
    """Rule 10: when the unmapped range overlaps the pinned buffer the folio still cannot be
    split while pinned (S9b)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.pin(a + MB, 64 * KB, "buf") == 0
    assert p.munmap(a + 768 * KB, 512 * KB) == 0
    c = Counters(s)
    s.shrink()
    assert c["thp_split_page_failed"] > 0 and "thp_split_page" not in c.thp()
    assert p.unpin("buf") == 0
    s.shrink()
    assert c["thp_split_page"] == 1
    pg = pages(p, a, PMD)
    assert all(x.folio_order == 0 for x in pg[:192] + pg[320:])
    assert {cmp_flags(x) for x in pg[:192] + pg[320:]} == {
        frozenset({"anon", "anon_exclusive", "dirty"})}


def test_pinned_thp_outlives_its_mapping_until_unpin() -> None:
    """Rule 21: mlock works while pinned; munmap of the whole range removes the mapping
    (nr_anon_thp-1) but the pinned folio lives on (nr_anon unchanged) until unregister
    (S9c)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.pin(a, PMD, "buf") == 0
    assert vm_pin_kb(p) == 2048
    f, _ = folio_at(p, a)
    assert p.mlock(a, PMD) == 0
    assert is_mlocked(s, f) and is_pmd_mapped(p, a)
    c = Counters(s)
    assert p.munmap(a, PMD) == 0
    assert c.thp() == {"nr_anon_transparent_hugepages": -1}
    assert p.unpin("buf") == 0
    assert c.thp() == {"nr_anon_transparent_hugepages": -1, "2048kB/nr_anon": -1}


# -- rule 23: reclaim keeps pinned folios -------------------------------------------------------
def test_pageout_keeps_pinned_thp() -> None:
    """Rule 23: shrink_folio_list keeps a maybe-pinned folio: MADV_PAGEOUT of a pinned THP
    neither splits nor swaps it."""
    s = make_system(swap="file")
    p = s.process("main")
    a = thp_region(p)
    assert p.pin(a + MB, 64 * KB, "buf") == 0
    c = Counters(s)
    assert p.madvise(a, PMD, "pageout") == 0
    d = c.thp()
    assert "thp_split_page" not in d and "pswpout" not in d
    assert "thp_swpout_fallback" not in d


# -- section 8.7: a pin blocks MADV_COLLAPSE ----------------------------------------------------
def test_pin_blocks_collapse_of_pte_mapped_thp() -> None:
    """Section 8.7: MADV_COLLAPSE fails a range whose folio has unexpected references (a pin:
    SCAN_PAGE_COUNT); nothing is collapsed."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    pte_mapped_thp(p, a)
    f, _ = folio_at(p, a)
    assert p.pin(a, 64 * KB, "buf") == 0
    c = Counters(s)
    assert p.madvise(a, PMD, "collapse") < 0
    assert "thp_collapse_alloc" not in c.thp()
    assert folio_at(p, a)[0] == f and not is_pmd_mapped(p, a)


def test_partial_cold_of_pinned_pte_mapped_thp_leaves_it_alone() -> None:
    """Rule 10 and 17 (section 8.6): the split of a PTE-mapped large folio partly in the range
    fails on the pin (-EAGAIN, counted) and the folio is left alone."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    pte_mapped_thp(p, a)
    f, _ = folio_at(p, a)
    assert p.pin(a, 64 * KB, "buf") == 0
    c = Counters(s)
    assert p.madvise(a, MB, "cold") == 0
    assert c.thp() == {"thp_split_page_failed": 1, "2048kB/split_failed": 1}
    assert folio_at(p, a + MB)[0] == f


def test_partial_free_of_pinned_pmd_thp_keeps_the_pmd() -> None:
    """Rule 10 and 17 (section 8.5): MADV_FREE of part of a pinned PMD THP tries to split the
    whole folio, fails (counted) and leaves the PMD and the contents alone."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.pin(a + MB, 64 * KB, "buf") == 0
    c = Counters(s)
    assert p.madvise(a, 64 * KB, "free") == 0
    assert c.thp() == {"thp_split_page_failed": 1, "2048kB/split_failed": 1}
    assert is_pmd_mapped(p, a)
    assert smap_at(p, a).lazyfree_kb == 0


def test_pin_charges_a_large_folio_once_even_when_its_pages_come_back() -> None:
    """``io_buffer_account_pin`` / ``headpage_already_acct``: a large folio is charged once a
    buffer, also when another folio's page sits between its pages (live kernel: 64K mTHPs,
    one page of the second folio mremapped into the first, pin of [0,64K): VmPin 128 kB, not
    192; scenario pin-charges-each-large-folio-once)."""
    s = make_system(sizes={"64K": "madvise", "2M": "never"})
    p = s.process("main")
    a = thp_region(p, 256 * KB)
    assert p.mremap(a + 80 * KB, PAGE, PAGE, a + 16 * KB) == 0
    assert p.pin(a, 64 * KB, "p") == 0
    assert p.status()["vm_pin_kb"] == 128


def test_pin_slow_path_touches_what_it_follows_and_the_fast_path_does_not() -> None:
    """``pin_user_pages_fast``: gup-fast pins the leading present, writable pages untouched;
    from the first page it cannot take, ``__get_user_pages`` runs with FOLL_TOUCH and a clean
    writable page's folio becomes dirty (live kernel: MADV_FREE of 128 KiB, page 0 dropped;
    the pin of [0,64K) dirties pages 1-15, LazyFree 124 -> 64 kB; the pin of [64K,128K),
    all present, changes nothing; scenario pin-slow-path-redirties-lazyfree-pages)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p, PMD, advice="nohugepage")
    assert p.madvise(a, 128 * KB, "free") == 0
    assert p.madvise(a, PAGE, "dontneed") == 0
    assert smap_at(p, a).lazyfree_kb == 124
    assert p.pin(a, 64 * KB, "slow") == 0
    assert smap_at(p, a).lazyfree_kb == 64
    assert p.pin(a + 64 * KB, 64 * KB, "fast") == 0
    assert smap_at(p, a).lazyfree_kb == 64
    assert all("dirty" in cmp_flags(x) for x in pages(p, a + PAGE, 15 * PAGE))


def test_pin_of_more_than_1_gib_is_efault_before_anything_is_faulted() -> None:
    """``io_validate_user_buf_range``: a buffer of 0 bytes or over 1 GiB is refused with
    -EFAULT before any page is looked at (kernel source; too big for a live scenario)."""
    from foliosim.mm.system import System, ThpSettings

    s = System(ThpSettings(enabled="madvise"), ram_bytes=4 << 30)
    p = s.process("main")
    a = region(p, (1 << 30) + PMD)
    assert p.pin(a, (1 << 30) + PAGE, "big") == -14
    assert not p.mm.pmd  # nothing faulted in
    assert p.pin(a, 1 << 30, "max") == 0
