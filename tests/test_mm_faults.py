"""Faults (foliosim/mm/memory.py, the PMD fault path of huge_memory.py): which order a fault
allocates, the zero pages, and the state of a new anon folio.

Expected values come from shared/reference/linux-6.18-anon-large-folios.md (sections 1, 2 and
rules 1-4 of 12.2) and the live-kernel ground truth (S0a-S0d, S7c, S10_fault).
"""

from __future__ import annotations

from mmhelpers import (
    MB,
    PAGE,
    PMD,
    THP_FRESH,
    Counters,
    cmp_flags,
    folio_at,
    has_pte_table,
    is_pmd_mapped,
    make_system,
    mapcount,
    page_at,
    pages,
    region,
    smap_at,
)

from foliosim.mm.invariants import check_invariants

MTHP_64K = {"64K": "madvise", "2M": "never"}


# -- rule 1: when a fault installs a PMD THP ----------------------------------------------------
def test_write_fault_in_hugepage_vma_maps_one_pmd_thp() -> None:
    """Rule 1 and rule 4: a write in an empty, aligned 2 MiB of a MADV_HUGEPAGE VMA maps a new
    order-9 folio by one PMD (S0a)."""
    s = make_system()
    p = s.process("main")
    a = region(p)
    c = Counters(s)
    assert p.write(a, PAGE, 1) == 0
    assert is_pmd_mapped(p, a)
    f, _ = folio_at(p, a)
    assert s.folios.order[f] == 9
    # S0a row 1: 2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1
    assert c.thp() == {"thp_fault_alloc": 1, "nr_anon_transparent_hugepages": 1,
                       "2048kB/anon_fault_alloc": 1, "2048kB/nr_anon": 1}
    sm = smap_at(p, a)
    assert (sm.rss_kb, sm.anonymous_kb, sm.anon_huge_pages_kb) == (2048, 2048, 2048)
    assert sm.thp_eligible


def test_pmd_thp_not_allowed_without_vm_hugepage_under_enabled_madvise() -> None:
    """Rule 1: with enabled=madvise and 2M=inherit, a VMA without VM_HUGEPAGE gets no THP
    (section 2.1: inherit follows the global mode); THPeligible is 0 (S11b row 0)."""
    s = make_system()
    p = s.process("main")
    a = region(p, advice=None)
    c = Counters(s)
    assert p.write(a, PAGE, 1) == 0
    assert not is_pmd_mapped(p, a)
    assert page_at(p, a).folio_order == 0
    assert "thp_fault_alloc" not in c.thp()
    assert not smap_at(p, a).thp_eligible


def test_enabled_always_gives_pmd_thp_without_madvise() -> None:
    """Rule 1: enabled=always lets inherit-mode order 9 fault without VM_HUGEPAGE."""
    s = make_system(enabled="always")
    p = s.process("main")
    a = region(p, advice=None)
    assert p.write(a, PAGE, 1) == 0
    assert is_pmd_mapped(p, a)


def test_pmd_size_never_disables_pmd_thp_even_with_vm_hugepage() -> None:
    """Rule 1: the per-size sysfs mode gates order 9 (hugepages-2048kB/enabled=never)."""
    s = make_system(sizes={"2M": "never"})
    p = s.process("main")
    a = region(p)
    assert p.write(a, PAGE, 1) == 0
    assert not is_pmd_mapped(p, a)
    assert page_at(p, a).folio_order == 0


def test_nohugepage_vma_gets_4k_pages() -> None:
    """Rule 1: VM_NOHUGEPAGE rejects every THP order (S0d: 4K x1 c1 AXB, Rss4, E0, nh)."""
    s = make_system(sizes={"64K": "always"})
    p = s.process("main")
    a = region(p, advice="nohugepage")
    c = Counters(s)
    assert p.write(a, PAGE, 1) == 0
    pg = pages(p, a, PMD)
    assert pg[0].folio_order == 0 and pg[0].exclusive and pg[0].mapcount == 1
    assert cmp_flags(pg[0]) == {"anon", "anon_exclusive"}
    assert all(x.state == "none" for x in pg[1:])
    sm = smap_at(p, a)
    assert (sm.rss_kb, sm.thp_eligible, sm.vmflags) == (4, False, ["nh"])
    assert c.thp() == {}


def test_pmd_thp_only_for_the_aligned_2m_inside_a_misaligned_vma() -> None:
    """Rule 1: the aligned 2 MiB block must lie wholly inside the VMA; a 4 MiB region starting
    1 MiB past a 2 MiB boundary gets one THP in the middle and 4 KiB pages at the edges (S0c)."""
    s = make_system()
    p = s.process("main")
    a = region(p, 4 * MB, misalign=MB)
    c = Counters(s)
    assert p.write(a, 4 * MB, 1) == 0
    pg = pages(p, a, 4 * MB)
    assert {x.folio_order for x in pg[:256]} == {0}
    assert {x.folio_order for x in pg[256:768]} == {9}
    assert len({x.folio_pfn for x in pg[256:768]}) == 1
    assert {x.folio_order for x in pg[768:]} == {0}
    assert c.thp() == {"thp_fault_alloc": 1, "nr_anon_transparent_hugepages": 1,
                       "2048kB/anon_fault_alloc": 1, "2048kB/nr_anon": 1}
    sm = smap_at(p, a)
    assert (sm.rss_kb, sm.anon_huge_pages_kb) == (4096, 2048)


def test_existing_pte_table_prevents_pmd_thp_fault() -> None:
    """Rule 1 (section 2): once a PTE table exists for a 2 MiB range, a fault can never create
    a PMD THP there, even after MADV_HUGEPAGE."""
    s = make_system()
    p = s.process("main")
    a = region(p, advice="nohugepage")
    assert p.write(a, PAGE, 1) == 0
    assert p.madvise(a, PMD, "hugepage") == 0
    c = Counters(s)
    assert p.write(a + MB, PAGE, 2) == 0
    assert has_pte_table(p, a)
    assert page_at(p, a + MB).folio_order == 0
    assert "thp_fault_alloc" not in c.thp()


def test_dontneed_of_whole_pmd_frees_table_so_refault_gets_a_thp() -> None:
    """Rule 1 (section 8.4, PT_RECLAIM): MADV_DONTNEED of a whole THP frees it without split
    counters and the re-touch faults a new THP (S7c)."""
    s = make_system()
    p = s.process("main")
    a = region(p)
    assert p.write(a, PMD, 1) == 0
    c = Counters(s)
    assert p.madvise(a, PMD, "dontneed") == 0
    # S7c row 1: 2M/nr_anon-1 nr_anon_thp-1
    assert c.thp() == {"2048kB/nr_anon": -1, "nr_anon_transparent_hugepages": -1}
    assert p.write(a, PAGE, 2) == 0
    assert is_pmd_mapped(p, a)
    # S7c row 2: 2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1
    assert c.thp() == {"2048kB/anon_fault_alloc": 1, "thp_fault_alloc": 1}


# -- rule 2: mTHP order on the PTE path --------------------------------------------------------
def test_mthp_fault_allocates_highest_allowed_order() -> None:
    """Rule 2: with 64K=madvise and 2M=never a write faults a 64 KiB folio, counted only in the
    64kB stats; AnonHugePages stays 0 and THPeligible is 1 (S10_fault row 0)."""
    s = make_system(sizes=MTHP_64K)
    p = s.process("main")
    a = region(p)
    c = Counters(s)
    assert p.write(a, PAGE, 1) == 0
    pg = pages(p, a, 64 * PAGE)
    assert all(x.folio_order == 4 and x.exclusive and x.mapcount == 1 for x in pg[:16])
    assert {cmp_flags(x) for x in pg[:16]} == {THP_FRESH}
    assert all(x.state == "none" for x in pg[16:])
    assert c.thp() == {"64kB/anon_fault_alloc": 1, "64kB/nr_anon": 1}
    sm = smap_at(p, a)
    assert (sm.rss_kb, sm.anon_huge_pages_kb, sm.thp_eligible) == (64, 0, True)


def test_mthp_fault_prefers_larger_of_several_enabled_orders() -> None:
    """Rule 2: the highest allowed order wins (64K over 16K)."""
    s = make_system(sizes={"16K": "madvise", "64K": "madvise", "2M": "never"})
    p = s.process("main")
    a = region(p)
    assert p.write(a, PAGE, 1) == 0
    assert page_at(p, a).folio_order == 4


def test_mthp_order_skipped_when_its_block_is_not_pte_none() -> None:
    """Rule 2: an order whose aligned block holds a PTE (here the zero page of an earlier read)
    is skipped; the next lower order whose block is empty is used."""
    s = make_system(sizes={"16K": "madvise", "64K": "madvise", "2M": "never"})
    p = s.process("main")
    a = region(p)
    assert p.read(a, PAGE) == 0
    assert p.write(a + 8 * PAGE, PAGE, 1) == 0
    f, k = folio_at(p, a + 8 * PAGE)
    assert s.folios.order[f] == 2 and k == 0


def test_mthp_block_must_lie_inside_the_vma() -> None:
    """Rule 2: the aligned block of an order must lie inside the VMA (thp_vma_suitable_order):
    in a 96 KiB VMA the 64 KiB block at 64K does not fit, so the page there is order 0."""
    s = make_system(sizes=MTHP_64K)
    p = s.process("main")
    a = region(p, 96 * 1024)
    assert p.write(a + 64 * 1024, PAGE, 1) == 0
    assert page_at(p, a + 64 * 1024).folio_order == 0
    assert p.write(a, PAGE, 1) == 0
    assert page_at(p, a).folio_order == 4


def test_mthp_allocation_failure_falls_back_order_by_order() -> None:
    """Rule 2: a failed allocation counts anon_fault_fallback for that order and tries the next
    lower allowed order."""
    s = make_system(sizes={"16K": "madvise", "64K": "madvise", "2M": "never"})
    s.fail_orders = {4}
    p = s.process("main")
    a = region(p)
    c = Counters(s)
    assert p.write(a, PAGE, 1) == 0
    assert page_at(p, a).folio_order == 2
    assert c.thp() == {"64kB/anon_fault_fallback": 1, "16kB/anon_fault_alloc": 1,
                       "16kB/nr_anon": 1}


def test_mthp_allocation_failure_of_every_order_ends_at_order_0() -> None:
    """Rule 2: when every mTHP order fails, the fault falls back to order 0."""
    s = make_system(sizes={"16K": "madvise", "64K": "madvise", "2M": "never"})
    s.fail_orders = {2, 4}
    p = s.process("main")
    a = region(p)
    c = Counters(s)
    assert p.write(a, PAGE, 1) == 0
    assert page_at(p, a).folio_order == 0
    assert c.thp() == {"64kB/anon_fault_fallback": 1, "16kB/anon_fault_fallback": 1}


def test_pmd_thp_allocation_failure_counts_fallback_and_uses_pte_path() -> None:
    """Rule 2 / section 2.2 step 3: a failed PMD allocation counts thp_fault_fallback and the
    order-9 anon_fault_fallback, then the PTE path runs."""
    s = make_system()
    s.fail_orders = {9}
    p = s.process("main")
    a = region(p)
    c = Counters(s)
    assert p.write(a, PAGE, 1) == 0
    assert has_pte_table(p, a)
    assert page_at(p, a).folio_order == 0
    assert c.thp() == {"thp_fault_fallback": 1, "2048kB/anon_fault_fallback": 1}


# -- rule 3: read faults and the zero pages -----------------------------------------------------
def test_read_fault_maps_huge_zero_page() -> None:
    """Rule 3: a read fault where a PMD is allowed maps the huge zero folio: THP|ZERO, count 0,
    bit 56 = 0, not in Rss (S0b row 0, Q4)."""
    s = make_system()
    p = s.process("main")
    a = region(p)
    assert p.read(a, PAGE) == 0
    pg = pages(p, a, PMD)
    assert all(x.state == "present" and x.folio_order == 9 for x in pg)
    assert {cmp_flags(x) for x in pg} == {frozenset({"thp", "zero"})}
    assert all(x.mapcount == 0 and not x.exclusive for x in pg)
    sm = smap_at(p, a)
    assert (sm.rss_kb, sm.anonymous_kb, sm.anon_huge_pages_kb) == (0, 0, 0)


def test_write_after_huge_zero_read_allocates_thp_directly() -> None:
    """Rule 3: a write to the huge zero PMD allocates a THP (6.18 do_huge_zero_wp_pmd), no
    PMD split and no 4 KiB fallback (S0b row 1)."""
    s = make_system()
    p = s.process("main")
    a = region(p)
    assert p.read(a, PAGE) == 0
    c = Counters(s)
    assert p.write(a, PAGE, 1) == 0
    assert is_pmd_mapped(p, a)
    assert c.thp() == {"thp_fault_alloc": 1, "nr_anon_transparent_hugepages": 1,
                       "2048kB/anon_fault_alloc": 1, "2048kB/nr_anon": 1}
    assert {cmp_flags(x) for x in pages(p, a, PMD)} == {THP_FRESH}


def test_write_to_huge_zero_pmd_splits_to_zero_ptes_when_allocation_fails() -> None:
    """Rule 3: if the THP allocation for a write to the huge zero PMD fails, the huge-zero PMD
    is split into small zero-page PTEs (thp_split_pmd) and the write copies at order 0."""
    s = make_system()
    p = s.process("main")
    a = region(p)
    assert p.read(a, PAGE) == 0
    s.fail_orders = {9}
    c = Counters(s)
    assert p.write(a, PAGE, 1) == 0
    d = c.thp()
    assert d.get("thp_split_pmd") == 1
    assert "thp_fault_alloc" not in d
    pg = pages(p, a, 2 * PAGE)
    assert pg[0].folio_order == 0 and "zero" not in pg[0].flags
    assert "zero" in pg[1].flags and pg[1].mapcount == 0


def test_read_fault_with_use_zero_page_off_allocates_thp() -> None:
    """Rule 3 (section 2.2 step 2): the huge zero page needs use_zero_page; without it the read
    fault allocates a THP."""
    s = make_system(use_zero_page=False)
    p = s.process("main")
    a = region(p)
    c = Counters(s)
    assert p.read(a, PAGE) == 0
    assert is_pmd_mapped(p, a)
    assert c["thp_fault_alloc"] == 1


def test_read_fault_never_allocates_mthp_and_write_after_it_is_order_0() -> None:
    """Rule 3: on the PTE path a read maps the small zero page (no mTHP on read faults) and a
    later write to it copies into an order-0 page, never an mTHP."""
    s = make_system(sizes=MTHP_64K)
    p = s.process("main")
    a = region(p)
    c = Counters(s)
    assert p.read(a, PAGE) == 0
    pg = pages(p, a, 16 * PAGE)
    assert "zero" in pg[0].flags and pg[0].mapcount == 0 and not pg[0].exclusive
    assert all(x.state == "none" for x in pg[1:])
    assert smap_at(p, a).rss_kb == 0
    assert p.write(a, PAGE, 1) == 0
    assert page_at(p, a).folio_order == 0
    assert c.thp() == {}


# -- rule 4: the state of a new anon folio ------------------------------------------------------
def test_new_pmd_thp_is_exclusive_with_one_reference() -> None:
    """Rule 4: a new PMD THP has refcount 1 (one PMD mapping), entire and large mapcount 1,
    PAE on the head; pagemap x1, kpagecount 1, flags TAXB without DIRTY (S0a, DIRTY note)."""
    s = make_system()
    p = s.process("main")
    a = region(p)
    assert p.write(a, PAGE, 1) == 0
    f, _ = folio_at(p, a)
    F = s.folios
    assert int(F.ref[f]) == 1
    assert int(F.entire[f]) == 1 and mapcount(s, f) == 1
    assert F.pae(f, 0)
    pg = pages(p, a, PMD)
    assert all(x.exclusive and x.mapcount == 1 for x in pg)
    assert {cmp_flags(x) for x in pg} == {THP_FRESH}


def test_new_mthp_has_one_reference_and_pae_per_pte() -> None:
    """Rule 4: an mTHP starts with refcount = nr_pages (one per PTE), large mapcount nr, and
    PAE on every page (section 1.2)."""
    s = make_system(sizes=MTHP_64K)
    p = s.process("main")
    a = region(p)
    assert p.write(a, PAGE, 1) == 0
    f, _ = folio_at(p, a)
    F = s.folios
    assert int(F.ref[f]) == 16
    assert mapcount(s, f) == 16
    assert all(F.pae(f, k) for k in range(16))


def test_every_new_mthp_counts_anon_fault_alloc_and_nr_anon() -> None:
    """Rule 4: filling 2 MiB with 64 KiB folios counts 32 faults and 32 folios, no vmstat
    thp_* event (S10_fault: 64K/anon_fault_alloc+32 64K/nr_anon+32 in total)."""
    s = make_system(sizes=MTHP_64K)
    p = s.process("main")
    a = region(p)
    c = Counters(s)
    assert p.write(a, PMD, 1) == 0
    assert c.thp() == {"64kB/anon_fault_alloc": 32, "64kB/nr_anon": 32}
    pg = pages(p, a, PMD)
    assert len({x.folio_pfn for x in pg}) == 32
    assert {cmp_flags(x) for x in pg} == {THP_FRESH}


def test_per_size_madvise_mode_does_not_need_global_mode() -> None:
    """Rule 1 (section 2.1): hugepages-2048kB/enabled=madvise allows order 9 in a VM_HUGEPAGE
    VMA even with the global enabled=never; =always allows it without VM_HUGEPAGE."""
    s = make_system(enabled="never", sizes={"2M": "madvise"})
    p = s.process("main")
    a = region(p)
    b = region(p, advice=None)
    assert p.write(a, PAGE, 1) == 0 and p.write(b, PAGE, 1) == 0
    assert is_pmd_mapped(p, a) and not is_pmd_mapped(p, b)
    s = make_system(enabled="never", sizes={"2M": "always"})
    p = s.process("main")
    b = region(p, advice=None)
    assert p.write(b, PAGE, 1) == 0
    assert is_pmd_mapped(p, b)


def test_inherit_mthp_size_follows_global_always() -> None:
    """Rule 2 (section 2.1): an inherit-mode mTHP size is allowed when the global mode is
    always, without VM_HUGEPAGE."""
    s = make_system(enabled="always", sizes={"64K": "inherit", "2M": "never"})
    p = s.process("main")
    a = region(p, advice=None)
    assert p.write(a, PAGE, 1) == 0
    assert page_at(p, a).folio_order == 4


def test_failed_pmd_thp_falls_back_to_mthp() -> None:
    """Rule 1 and 2: after a failed PMD allocation the PTE path picks the highest allowed mTHP
    order."""
    s = make_system(sizes={"64K": "madvise"})
    s.fail_orders = {9}
    p = s.process("main")
    a = region(p)
    c = Counters(s)
    assert p.write(a, PAGE, 1) == 0
    assert page_at(p, a).folio_order == 4
    assert c.thp() == {"thp_fault_fallback": 1, "2048kB/anon_fault_fallback": 1,
                       "64kB/anon_fault_alloc": 1, "64kB/nr_anon": 1}


def test_huge_zero_page_is_allocated_once() -> None:
    """Section 2.2 step 2: thp_zero_page_alloc increments the first time the huge zero folio is
    allocated only; later read faults reuse it."""
    s = make_system()
    p = s.process("main")
    c = Counters(s)
    for _ in range(3):
        assert p.read(region(p), PAGE) == 0
    assert c.thp() == {"thp_zero_page_alloc": 1}


def test_read_fault_falls_back_when_the_huge_zero_folio_cannot_be_had() -> None:
    """do_huge_pmd_anonymous_page: when get_huge_zero_folio finds no order-9 block
    (thp_zero_page_alloc_failed) the read fault falls back to the PTE level
    (thp_fault_fallback, VM_FAULT_FALLBACK) and maps the small zero page; the huge zero folio
    is allocated by a later read once a block is free."""
    from foliosim.mm.system import System, ThpSettings

    s = System(ThpSettings(enabled="madvise"), ram_bytes=4 << 20)  # one order-10 block
    p = s.process("main")
    small = region(p, 4 * MB, advice="nohugepage")
    assert p.write(small, 600 * PAGE, 1) == 0  # 424 pages left: no order-9 block
    c = Counters(s)
    a = region(p)
    assert p.read(a, 2 * PAGE) == 0
    assert c.thp() == {"thp_zero_page_alloc_failed": 1, "thp_fault_fallback": 1}
    assert not s.huge_zero_allocated
    assert [x.state for x in pages(p, a, 2 * PAGE)] == ["present"] * 2
    assert {x.folio_order for x in pages(p, a, 2 * PAGE)} == {0}
    assert p.munmap(small, 4 * MB) == 0
    b = region(p)
    assert p.read(b, PAGE) == 0
    assert s.huge_zero_allocated and c.thp()["thp_zero_page_alloc"] == 1
    assert check_invariants(s) == []


# -- page tables of small pages share one read-only page-index array -----------------------------
def test_pte_table_of_small_pages_shares_the_zero_page_indexes() -> None:
    """A table that only maps order-0 folios keeps ``NO_IDX`` (read-only: a stray write
    raises); the first page of a large folio mapped in it gives it its own indexes, and a
    split back to order-0 pages keeps them correct (all zero)."""
    import numpy as np
    import pytest

    from foliosim.mm.pgtable import NO_IDX

    s = make_system(enabled="never")
    p = s.process("main")
    a = region(p, PMD)
    assert p.write(a, 64 * PAGE, 1) == 0
    pt = p.mm.pmd[a >> 21]
    assert pt.idx is NO_IDX
    with pytest.raises(ValueError):
        pt.idx[0] = 1
    s2 = make_system(enabled="never", sizes=MTHP_64K)
    p2 = s2.process("main")
    b = region(p2, PMD)
    assert p2.madvise(b, PMD, "hugepage") == 0
    assert p2.write(b + 16 * PAGE, 16 * PAGE, 1) == 0
    pt2 = p2.mm.pmd[b >> 21]
    assert pt2.idx is not NO_IDX
    assert pt2.idx[16:32].tolist() == list(range(16))
    assert p2.madvise(b + 20 * PAGE, PAGE, "dontneed") == 0
    s2.shrink()  # the partially mapped mTHP is split: its pages become order-0 folios
    mapped = pt2.fid[16:32] >= 0
    assert mapped.sum() == 15 and (s2.folios.order[pt2.fid[16:32][mapped]] == 0).all()
    assert not np.any(pt2.idx[16:32][mapped])  # an empty entry's index means nothing


def test_thp_of_a_read_fault_in_a_read_only_vma_is_dirty() -> None:
    """``map_anon_folio_pmd`` always makes the PMD dirty (writable only with VM_WRITE), unlike
    a PTE fault: with use_zero_page=0 a read fault in a read-only MADV_HUGEPAGE VMA maps a
    THP whose pages read dirty once the PMD is split (live kernel: pages 0-511 dirty after
    mprotect(rw) of the first 1 MiB; a review finding)."""
    s = make_system(use_zero_page=False)
    p = s.process("main")
    a = region(p, prot="r")
    assert p.read(a, PAGE) == 0
    assert is_pmd_mapped(p, a)
    assert p.mprotect(a, MB, "rw") == 0
    assert all("dirty" in cmp_flags(x) for x in pages(p, a, PMD))
