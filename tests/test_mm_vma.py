"""VMA operations that cut large folios: mprotect, munmap, mremap, and the PMD splits at VMA
boundaries (foliosim/mm/vma.py, mprotect.py, mmap.py, mremap.py).

Expected values come from shared/reference/linux-6.18-anon-large-folios.md (sections 3.1, 8.1-8.3,
8.8 and rules 6, 7, 22 of 12.2) and the live-kernel ground truth (S4, S5, S6a-d, S17, S18).
"""

from __future__ import annotations

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
    has_pte_table,
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


def vma_summary(p, a: int, length: int) -> list[tuple]:
    """(start kB, end kB, perms, Rss, AnonHugePages, THPeligible) of each VMA of the range."""
    return [(lo // KB, hi // KB, sm.perms, sm.rss_kb, sm.anon_huge_pages_kb, sm.thp_eligible)
            for lo, hi, sm in vma_list(p, a, length)]


# -- rule 6: a VMA boundary inside a PMD-mapped THP ---------------------------------------------
def test_mprotect_of_half_thp_splits_vma_and_pmd_not_folio() -> None:
    """Rule 6: mprotect(PROT_READ) of the second half splits the VMA and the PMD; the folio stays
    intact and fully mapped, PAE copied to all pages, DIRTY transferred; not in AnonHugePages
    any more (S5 row 1)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    f, _ = folio_at(p, a)
    c = Counters(s)
    assert p.mprotect(a + MB, MB, "r") == 0
    assert c.thp() == {"thp_split_pmd": 1, "nr_anon_transparent_hugepages": -1}
    assert vma_summary(p, a, PMD) == [(0, 1024, "rw-p", 1024, 0, False),
                                     (1024, 2048, "r--p", 1024, 0, False)]
    F = s.folios
    assert F.order[f] == 9 and all(F.pae(f, k) for k in range(512))
    assert int(F.ref[f]) == 512   # section 3.1: the refcount becomes 512
    assert not is_partially_mapped(s, f)
    pg = pages(p, a, PMD)
    assert all(x.folio_pfn == pg[0].folio_pfn and x.exclusive and x.mapcount == 1 for x in pg)
    assert {cmp_flags(x) for x in pg} == {THP_SPLIT_PMD}


def test_vma_merge_does_not_restore_pmd_mapping() -> None:
    """Section 8.8: mprotect back merges the VMAs (THPeligible 1) but the THP stays PTE-mapped;
    a later write changes nothing (S5 rows 2-4)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.mprotect(a + MB, MB, "r") == 0
    c = Counters(s)
    s.shrink()
    assert p.mprotect(a + MB, MB, "rw") == 0
    assert vma_summary(p, a, PMD) == [(0, 2048, "rw-p", 2048, 0, True)]
    assert p.write(a + MB + PAGE, PAGE, 3) == 0
    assert has_pte_table(p, a)
    assert c.thp() == {}
    assert {cmp_flags(x) for x in pages(p, a, PMD)} == {THP_SPLIT_PMD}


def test_mprotect_of_exactly_one_aligned_thp_keeps_its_pmd() -> None:
    """Rule 6: a boundary on a 2 MiB boundary splits the VMA without a PMD split; a full aligned
    PMD goes through change_huge_pmd (S17 row 1)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p, 4 * MB)
    c = Counters(s)
    assert p.mprotect(a + PMD, PMD, "r") == 0
    assert c.thp() == {}
    assert vma_summary(p, a, 4 * MB) == [(0, 2048, "rw-p", 2048, 2048, True),
                                        (2048, 4096, "r--p", 2048, 2048, True)]
    assert is_pmd_mapped(p, a) and is_pmd_mapped(p, a + PMD)
    assert {cmp_flags(x) for x in pages(p, a, 4 * MB)} == {THP_FRESH}


def test_munmap_of_exactly_one_aligned_thp_frees_it_whole() -> None:
    """Rule 6 and 7: munmap of exactly one aligned THP zaps its PMD whole: no split counters
    (S17 row 2)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p, 4 * MB)
    c = Counters(s)
    assert p.munmap(a + PMD, PMD) == 0
    assert c.thp() == {"2048kB/nr_anon": -1, "nr_anon_transparent_hugepages": -1}
    assert vma_summary(p, a, 4 * MB) == [(0, 2048, "rw-p", 2048, 2048, True)]


def test_madvise_nohugepage_of_part_of_thp_splits_its_pmd() -> None:
    """Rule 6: a madvise flag change on part of a PMD THP splits the VMA, hence the PMD."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    c = Counters(s)
    assert p.madvise(a, MB, "nohugepage") == 0
    assert c.thp() == {"thp_split_pmd": 1, "nr_anon_transparent_hugepages": -1}
    assert [sm.vmflags for _, _, sm in vma_list(p, a, PMD)] == [["nh"], ["hg"]]


def test_madvise_nohugepage_of_whole_thp_keeps_pmd() -> None:
    """Rule 6: the flag change on exactly the aligned 2 MiB keeps the PMD; THPeligible 0,
    AnonHugePages 2048 (S18 row 0)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    c = Counters(s)
    assert p.madvise(a, PMD, "nohugepage") == 0
    assert c.thp() == {}
    sm = smap_at(p, a)
    assert (sm.anon_huge_pages_kb, sm.thp_eligible) == (2048, False)


def test_mlock_boundary_inside_thp_splits_pmd() -> None:
    """Rule 6: mlock of a subrange is a VMA boundary too (S1 row 1)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    c = Counters(s)
    assert p.mlock(a + 512 * KB, 512 * KB) == 0
    assert c.thp() == {"thp_split_pmd": 1, "nr_anon_transparent_hugepages": -1}
    assert len(vma_list(p, a, PMD)) == 3


# -- rule 7: munmap of part of a PMD ------------------------------------------------------------
def test_munmap_of_middle_splits_vma_and_pmd_and_unmaps_ptes() -> None:
    """Rule 7: munmap of 512 KiB in the middle splits the VMA and the PMD, then removes the
    PTEs: two VMAs of 768 kB, pages 192-319 none (S4 row 1)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.munmap(a + 768 * KB, 512 * KB) == 0
    assert vma_summary(p, a, PMD) == [(0, 768, "rw-p", 768, 0, False),
                                     (1280, 2048, "rw-p", 768, 0, False)]
    pg = pages(p, a, PMD)
    assert [x.state for x in pg] == ["present"] * 192 + ["none"] * 128 + ["present"] * 192


def test_munmap_of_part_of_mthp_splits_vma_only() -> None:
    """Rule 7 on an mTHP: munmap of 16 KiB in the middle of a 64 KiB folio unmaps 4 PTEs, the
    rest stays mapped at the same folio offsets (S10_4 row 1)."""
    s = make_system(sizes=MTHP_64K)
    p = s.process("main")
    a = thp_region(p)
    assert p.munmap(a + 72 * KB, 16 * KB) == 0
    pg = pages(p, a, 32 * PAGE)
    assert all(x.state == "none" for x in pg[18:22])
    assert [x.pfn - x.folio_pfn for x in pg[16:18] + pg[22:32]] == [0, 1] + list(range(6, 16))
    assert [(lo // KB, hi // KB) for lo, hi, _ in vma_list(p, a, PMD)] == [(0, 72), (88, 2048)]


# -- rule 22: mremap ----------------------------------------------------------------------------
def test_mremap_of_part_splits_pmd_without_partial_map() -> None:
    """Rule 22: mremap of 512 KiB out of a THP splits the PMD and moves PTEs; no rmap change,
    so the folio is mapped at two places but not partially mapped; the shrinker does nothing
    (S6a rows 1-2)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    dst = p.mmap_region(512 * KB, "none")
    f, _ = folio_at(p, a)
    c = Counters(s)
    assert p.mremap(a + 512 * KB, 512 * KB, 512 * KB, dst) == 0
    assert c.thp() == {"thp_split_pmd": 1, "nr_anon_transparent_hugepages": -1}
    assert not is_partially_mapped(s, f)
    assert vma_summary(p, a, PMD) == [(0, 512, "rw-p", 512, 0, False),
                                     (1024, 2048, "rw-p", 1024, 0, False)]
    assert vma_summary(p, dst, 512 * KB) == [(0, 512, "rw-p", 512, 0, False)]
    moved = pages(p, dst, 512 * KB)
    assert all(x.folio_pfn == moved[0].folio_pfn and x.folio_order == 9 for x in moved)
    assert [x.pfn - x.folio_pfn for x in moved] == list(range(128, 256))
    s.shrink()
    assert c.thp() == {"thp_split_pmd": 1, "nr_anon_transparent_hugepages": -1}
    assert s.folios.order[f] == 9


def test_exit_after_partial_mremap_counts_transient_deferred_split() -> None:
    """Finding 7: a folio mapped by several VMAs is zapped piecewise at exit, transiently
    partially mapped: thp_deferred_split_page and split_deferred +1 without a split (S6a
    whole-process deltas)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    dst = p.mmap_region(512 * KB, "none")
    assert p.mremap(a + 512 * KB, 512 * KB, 512 * KB, dst) == 0
    c = Counters(s)
    p.exit()
    d = c.thp()
    assert d.get("thp_deferred_split_page") == 1 and d.get("2048kB/split_deferred") == 1
    assert "thp_split_page" not in d and d.get("2048kB/nr_anon") == -1


def test_mremap_of_whole_thp_to_aligned_destination_moves_the_pmd() -> None:
    """Rule 22: a full 2 MiB extent moves the PMD whole; nothing else changes (S6b)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    dst = p.mmap_region(PMD, "none")
    c = Counters(s)
    assert p.mremap(a, PMD, PMD, dst) == 0
    assert c.thp() == {}
    assert is_pmd_mapped(p, dst)
    assert vma_summary(p, dst, PMD) == [(0, 2048, "rw-p", 2048, 2048, True)]
    assert all(x.state == "none" for x in pages(p, a, PMD))
    assert {cmp_flags(x) for x in pages(p, dst, PMD)} == {THP_FRESH}


def test_mremap_of_whole_thp_to_misaligned_destination_splits_pmd() -> None:
    """Rule 22: a destination 4 KiB off alignment forces PMD split and PTE moves: the folio is
    PTE-mapped intact across two page tables, THPeligible 0; exit counts one deferred split
    (S6c)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    dst = p.mmap_region(PMD, "none", misalign=4 * KB)
    c = Counters(s)
    assert p.mremap(a, PMD, PMD, dst) == 0
    assert c.thp() == {"thp_split_pmd": 1, "nr_anon_transparent_hugepages": -1}
    assert vma_summary(p, dst, PMD) == [(0, 2048, "rw-p", 2048, 0, False)]
    pg = pages(p, dst, PMD)
    assert [x.pfn - x.folio_pfn for x in pg] == list(range(512))
    assert {cmp_flags(x) for x in pg} == {THP_SPLIT_PMD}
    s.shrink()
    assert c.thp() == {"thp_split_pmd": 1, "nr_anon_transparent_hugepages": -1}
    p.exit()
    assert c["thp_deferred_split_page"] == 1


def test_mremap_shrink_behaves_like_partial_munmap() -> None:
    """Rule 22 (S6d): shrinking 2 MiB to 1 MiB unmaps the tail like a partial munmap (deferred
    split), the rest moves; the shrinker then splits the folio."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    dst = p.mmap_region(MB, "none")
    c = Counters(s)
    assert p.mremap(a, PMD, MB, dst) == 0
    assert c.thp() == {"thp_split_pmd": 1, "nr_anon_transparent_hugepages": -1,
                       "thp_deferred_split_page": 1, "2048kB/split_deferred": 1,
                       "2048kB/nr_anon_partially_mapped": 1}
    assert vma_summary(p, dst, MB) == [(0, 1024, "rw-p", 1024, 0, False)]
    s.shrink()
    assert c["thp_split_page"] == 1 and c["2048kB/nr_anon_partially_mapped"] == 0
    assert all(x.folio_order == 0 for x in pages(p, dst, MB))


def test_mremap_clears_vm_locked_on_old_range_and_keeps_mlock_state() -> None:
    """Section 5.5: mremap moves PTEs without rmap changes, so the mlock state of a folio moved
    whole is unchanged; the new VMA keeps VM_LOCKED."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.mlock(a, PMD) == 0
    f, _ = folio_at(p, a)
    dst = p.mmap_region(PMD, "none")
    assert p.mremap(a, PMD, PMD, dst) == 0
    assert is_mlocked(s, f)
    assert smap_at(p, dst).vmflags == ["hg", "lo"]
    assert p.mm.locked_vm * 4 == 2048


def test_mprotect_range_with_hole_is_enomem() -> None:
    """do_mprotect_pkey: a range with a hole returns ENOMEM."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p, 4 * MB)
    assert p.munmap(a + MB, MB) == 0
    assert p.mprotect(a, 4 * MB, "r") == -12


def test_vma_boundary_inside_huge_zero_pmd_splits_it_to_zero_ptes() -> None:
    """Rule 6 (section 3.1): thp_split_pmd counts every PMD split, huge-zero PMDs included; the
    huge zero PMD becomes 512 small zero-page PTEs, still out of Rss."""
    s = make_system()
    p = s.process("main")
    a = region(p)
    assert p.read(a, PAGE) == 0
    c = Counters(s)
    assert p.mprotect(a + MB, MB, "r") == 0
    assert c.thp() == {"thp_split_pmd": 1}
    pg = pages(p, a, PMD)
    assert all(x.folio_order == 0 and cmp_flags(x) == {"zero"} for x in pg)
    assert sum(sm.rss_kb for _, _, sm in vma_list(p, a, PMD)) == 0


def test_mremap_grow_of_locked_mapping_populates_the_new_part() -> None:
    """Section 5.5: a grown VM_LOCKED mapping is populated; the new 2 MiB gets an mlocked THP
    of its own, the moved THP keeps its mlock."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.mlock(a, PMD) == 0
    f, _ = folio_at(p, a)
    dst = p.mmap_region(4 * MB, "none")
    c = Counters(s)
    assert p.mremap(a, PMD, 4 * MB, dst) == 0
    assert c["thp_fault_alloc"] == 1
    assert folio_at(p, dst)[0] == f and is_mlocked(s, f)
    g, _ = folio_at(p, dst + PMD)
    assert g != f and s.folios.order[g] == 9 and is_mlocked(s, g)
    sm = smap_at(p, dst)
    assert (sm.rss_kb, sm.locked_kb) == (4096, 4096)


# -- vma_merge_existing_range / vma_merge_new_range: both sides mergeable --------------------
def _middle_between_two_anon_vmas(p, how: str) -> int:
    """A 6 MiB region whose [0,2M) and [4M,6M) were written separately (each its own anon_vma)
    and whose never-faulted middle then gets their flags again (or is mremapped there)."""
    a = region(p, 6 * MB, advice=None)
    assert p.mprotect(a + 2 * MB, 2 * MB, "r") == 0
    assert p.write(a, PAGE, 1) == 0
    assert p.write(a + 4 * MB, PAGE, 2) == 0
    if how == "mprotect":
        assert p.mprotect(a + 2 * MB, 2 * MB, "rw") == 0
    else:  # an unfaulted 2 MiB VMA moved over the middle
        src = region(p, 2 * MB, advice=None)
        assert p.mremap(src, 2 * MB, 2 * MB, a + 2 * MB) == 0
    return a


def test_middle_joins_only_the_left_neighbour_when_their_anon_vmas_differ() -> None:
    """``can_vma_merge_right``: the middle could merge with either neighbour alone, but prev
    and next have different anon_vmas, so it merges with prev only (live kernel: [0,4M) and
    [4M,6M) for mprotect and for mremap into the gap; a review finding)."""
    for how in ("mprotect", "mremap"):
        s = make_system()
        p = s.process("main")
        a = _middle_between_two_anon_vmas(p, how)
        assert [(lo // KB, hi // KB) for lo, hi, _ in vma_list(p, a, 6 * MB)] == [
            (0, 4096), (4096, 6144)], how


def test_mlockall_merges_the_middle_with_the_left_neighbour_only() -> None:
    """The same rule under mlockall (a fuzz finding shrunk to five steps; live kernel:
    [0,4092K) and [4092K,4M))."""
    s = make_system()
    p = s.process("main")
    a = region(p, 4 * MB, advice=None)
    assert p.mlock(a, 832 * KB) == 0
    assert p.mlock(a + 4092 * KB, PAGE) == 0
    assert p.mlockall(current=True) == 0
    assert [(lo // KB, hi // KB) for lo, hi, _ in vma_list(p, a, 4 * MB)] == [
        (0, 4092), (4092, 4096)]
