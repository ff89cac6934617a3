"""mlock of large folios (foliosim/mm/mlock.py and the rmap hooks).

Expected values come from shared/reference/linux-6.18-anon-large-folios.md (section 5 and
rules 12-16 of 12.2) and the live-kernel ground truth (S1, S2, S3, S10_1, S13, S14, S19).
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
    is_pmd_mapped,
    is_unevictable,
    make_system,
    pages,
    region,
    smap_at,
    thp_region,
    vma_list,
)

MTHP_64K = {"64K": "madvise", "2M": "never"}
LOCKED_THP = frozenset({"anon", "anon_exclusive", "mlocked", "swapbacked", "thp", "unevictable"})


def vm_lck_kb(p) -> int:
    return p.mm.locked_vm * 4


# -- rule 12 and 13: mlock of a range -----------------------------------------------------------
def test_mlock_of_whole_pmd_thp_mlocks_folio_without_split() -> None:
    """Rule 13: mlock of exactly the aligned 2 MiB mlocks the PMD-mapped folio whole, no split;
    munlock reverses it (S2)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    f, _ = folio_at(p, a)
    c = Counters(s)
    assert p.mlock(a, PMD) == 0
    assert c.thp() == {}
    assert is_pmd_mapped(p, a)
    assert is_mlocked(s, f) and is_unevictable(s, f)
    assert {cmp_flags(x) for x in pages(p, a, PMD)} == {LOCKED_THP}
    sm = smap_at(p, a)
    assert (sm.locked_kb, sm.vmflags) == (2048, ["hg", "lo"])
    assert vm_lck_kb(p) == 2048
    # section 5.2: NR_MLOCK and unevictable_pgs_mlocked move by nr pages
    assert c["nr_mlock"] == 512 and c["unevictable_pgs_mlocked"] == 512
    assert p.munlock(a, PMD) == 0
    assert not is_mlocked(s, f) and not is_unevictable(s, f)
    assert smap_at(p, a).locked_kb == 0
    assert c["nr_mlock"] == 0


def test_mlock_skips_folio_crossing_range() -> None:
    """Rule 13 and 16: mlock of the first 1 MiB splits VMA and PMD but does not mlock the folio,
    which crosses the range; smaps Locked and VmLck say 1024 anyway (S1 row 1)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    f, _ = folio_at(p, a)
    c = Counters(s)
    assert p.mlock(a, MB) == 0
    assert c.thp() == {"thp_split_pmd": 1, "nr_anon_transparent_hugepages": -1}
    assert not is_mlocked(s, f)
    assert {cmp_flags(x) for x in pages(p, a, PMD)} == {THP_SPLIT_PMD}
    assert [(lo, hi, sm.locked_kb, sm.vmflags, sm.thp_eligible)
            for lo, hi, sm in vma_list(p, a, PMD)] == [
        (0, MB, 1024, ["hg", "lo"], False), (MB, PMD, 0, ["hg"], False)]
    assert vm_lck_kb(p) == 1024
    assert c["nr_mlock"] == 0


def test_mlock_never_splits_folios() -> None:
    """Rule 12: mlock and munlock split VMAs and PMDs, never folios (S1, S3)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p, 4 * MB)
    c = Counters(s)
    assert p.mlock(a, MB) == 0
    assert p.mlock(a + 3 * MB, 512 * KB) == 0
    assert p.munlock(a + 256 * KB, 64 * KB) == 0
    s.shrink()
    d = c.thp()
    assert "thp_split_page" not in d and "2048kB/split" not in d
    assert d.get("thp_split_pmd") == 2
    assert all(x.folio_order == 9 for x in pages(p, a, 4 * MB))


def test_shrinker_leaves_crossing_mlock_folio_alone() -> None:
    """Rule 9 and 13: the folio cut by the mlock boundary is fully mapped, not queued as
    partially mapped; the shrinker does nothing (S1 row 2)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.mlock(a, MB) == 0
    c = Counters(s)
    s.shrink()
    assert c.thp() == {}


def test_munlock_merges_vmas_but_pmd_mapping_does_not_come_back() -> None:
    """Section 8.8: munlock of the first 1 MiB re-merges the VMAs (THPeligible 1 again), the
    THP stays PTE-mapped (S1 row 3)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.mlock(a, MB) == 0
    assert p.munlock(a, MB) == 0
    [(lo, hi, sm)] = vma_list(p, a, PMD)
    assert (lo, hi, sm.anon_huge_pages_kb, sm.thp_eligible, sm.locked_kb) == (0, PMD, 0, True, 0)
    assert not is_pmd_mapped(p, a)
    assert vm_lck_kb(p) == 0


def test_mlock_of_whole_range_mlocks_pte_mapped_folio() -> None:
    """Rule 13: a PTE-mapped large folio fully inside the range and VMA, mapped by consecutive
    PTEs, is mlocked (S1 row 4: TAMUXDB, Locked 2048)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.mlock(a, MB) == 0
    assert p.munlock(a, MB) == 0
    assert p.mlock(a, PMD) == 0
    f, _ = folio_at(p, a)
    assert is_mlocked(s, f)
    assert {cmp_flags(x) for x in pages(p, a, PMD)} == {LOCKED_THP | {"dirty"}}
    assert smap_at(p, a).locked_kb == 2048


def test_munlock_of_part_munlocks_whole_folio_and_remlock_of_part_does_not_relock() -> None:
    """Rule 13 and section 5.3: munlock of [1M,2M) munlocks all of THP 0 (munlock is always
    allowed), while Locked still shows 1024 for its locked half; re-mlock of [1M,2M) merges
    the VMAs but THP 0 is not inside that call's range, so it stays unlocked; THP 1 keeps its
    PMD and its mlock throughout (S3)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p, 4 * MB)
    f0, _ = folio_at(p, a)
    f1, _ = folio_at(p, a + PMD)
    assert p.mlock(a, 4 * MB) == 0
    assert is_mlocked(s, f0) and is_mlocked(s, f1)
    c = Counters(s)
    assert p.munlock(a + MB, MB) == 0
    assert c.thp() == {"thp_split_pmd": 1, "nr_anon_transparent_hugepages": -1}
    assert not is_mlocked(s, f0) and is_mlocked(s, f1)
    assert [(lo, hi, sm.locked_kb, sm.anon_huge_pages_kb, sm.vmflags)
            for lo, hi, sm in vma_list(p, a, 4 * MB)] == [
        (0, MB, 1024, 0, ["hg", "lo"]), (MB, PMD, 0, 0, ["hg"]),
        (PMD, 4 * MB, 2048, 2048, ["hg", "lo"])]
    assert vm_lck_kb(p) == 3072
    assert p.mlock(a + MB, MB) == 0
    [(lo, hi, sm)] = vma_list(p, a, 4 * MB)
    assert (lo, hi, sm.locked_kb, sm.anon_huge_pages_kb) == (0, 4 * MB, 4096, 2048)
    assert not is_mlocked(s, f0) and is_mlocked(s, f1)
    assert vm_lck_kb(p) == 4096


def test_mlock_of_mthp_exact_and_straddling_ranges() -> None:
    """Rule 13 on 64 KiB folios: half a folio is not mlocked, exactly one folio is, of 2.5
    folios the two whole ones are and the straddling one is not; munlock of half an mlocked
    folio munlocks all of it (S10_1)."""
    s = make_system(sizes=MTHP_64K)
    p = s.process("main")
    a = thp_region(p)
    F = [folio_at(p, a + i * 64 * KB)[0] for i in range(5)]
    assert p.mlock(a, 32 * KB) == 0
    assert not is_mlocked(s, F[0])
    assert p.mlock(a + 64 * KB, 64 * KB) == 0
    assert [is_mlocked(s, f) for f in F] == [False, True, False, False, False]
    assert p.mlock(a + 128 * KB, 160 * KB) == 0
    assert [is_mlocked(s, f) for f in F] == [False, True, True, True, False]
    assert vm_lck_kb(p) == 256
    assert p.munlock(a + 64 * KB, 32 * KB) == 0
    assert [is_mlocked(s, f) for f in F] == [False, False, True, True, False]
    assert vm_lck_kb(p) == 224
    assert [(lo // KB, hi // KB, sm.locked_kb) for lo, hi, sm in vma_list(p, a, PMD)] == [
        (0, 32, 32), (32, 96, 0), (96, 288, 192), (288, 2048, 0)]


def test_mlock_skips_large_folio_not_mapped_by_consecutive_ptes() -> None:
    """Rule 13: a large folio inside the range is mlocked only if all its pages are mapped by
    consecutive PTEs there (folio_mlock_step == nr); one zapped page prevents it."""
    s = make_system(sizes=MTHP_64K)
    p = s.process("main")
    a = thp_region(p)
    f0, _ = folio_at(p, a)
    assert p.madvise(a + PAGE, PAGE, "dontneed") == 0
    assert p.mlock(a, 64 * KB) == 0
    assert not is_mlocked(s, f0)


def test_mlock_twice_does_not_mlock_twice() -> None:
    """Section 5.3: an already VM_LOCKED VMA only gets its flags updated; mlock_count stays 1,
    so one munlock unlocks."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    f, _ = folio_at(p, a)
    assert p.mlock(a, PMD) == 0
    assert p.mlock(a, PMD) == 0
    assert int(s.folios.mlock_count[f]) == 1
    assert vm_lck_kb(p) == 2048
    assert p.munlock(a, PMD) == 0
    assert not is_mlocked(s, f)


def test_mlock_of_partly_mremapped_thp_mlocks_nothing() -> None:
    """Rule 13 and 22 (section 8.2): after a partial mremap the folio is no longer within either
    VMA (folio->index against vm_pgoff), so mlock ignores it."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    dst = p.mmap_region(512 * KB, "none")
    assert p.mremap(a + 512 * KB, 512 * KB, 512 * KB, dst) == 0
    f, _ = folio_at(p, a)
    assert p.mlock(a, 512 * KB) == 0
    assert p.mlock(a + MB, MB) == 0
    assert p.mlock(dst, 512 * KB) == 0
    assert not is_mlocked(s, f)


# -- rule 14: faults in a VM_LOCKED VMA ---------------------------------------------------------
def test_fault_in_locked_onfault_vma_mlocks_new_pmd_thp() -> None:
    """Rule 14: mlock2(ONFAULT) populates nothing (lo,lf; Locked 0; VmLck 2048); a write faults
    a PMD THP mlocked at once (S13a)."""
    s = make_system()
    p = s.process("main")
    a = region(p)
    assert p.mlock(a, PMD, onfault=True) == 0
    sm = smap_at(p, a)
    assert (sm.rss_kb, sm.locked_kb, sm.vmflags) == (0, 0, ["hg", "lf", "lo"])
    assert vm_lck_kb(p) == 2048
    assert p.write(a, PAGE, 1) == 0
    f, _ = folio_at(p, a)
    assert is_pmd_mapped(p, a)
    assert is_mlocked(s, f) and int(s.folios.mlock_count[f]) == 1
    assert {cmp_flags(x) for x in pages(p, a, PMD)} == {LOCKED_THP}
    assert smap_at(p, a).locked_kb == 2048


def test_fault_in_locked_vma_mlocks_new_mthp() -> None:
    """Rule 14: whatever its order, a folio faulted into a VM_LOCKED VMA is mlocked with
    mlock_count 1."""
    s = make_system(sizes=MTHP_64K)
    p = s.process("main")
    a = region(p)
    assert p.mlock(a, PMD, onfault=True) == 0
    assert p.write(a, PAGE, 1) == 0
    f, _ = folio_at(p, a)
    assert s.folios.order[f] == 4
    assert is_mlocked(s, f) and int(s.folios.mlock_count[f]) == 1


def test_onfault_mlock_of_first_half_leaves_4k_pages_only() -> None:
    """Rule 1 and 14: mlock2(ONFAULT) of the first 1 MiB splits the VMA before any fault, so
    neither half can hold a PMD: 4 KiB pages, the locked one mlocked (S13b)."""
    s = make_system()
    p = s.process("main")
    a = region(p)
    assert p.mlock(a, MB, onfault=True) == 0
    assert vm_lck_kb(p) == 1024
    assert p.write(a, PAGE, 1) == 0
    assert p.write(a + MB, PAGE, 1) == 0
    pg0, pg256 = pages(p, a, PAGE)[0], pages(p, a + MB, PAGE)[0]
    assert pg0.folio_order == 0 and cmp_flags(pg0) == {"anon", "anon_exclusive", "mlocked"}
    assert pg256.folio_order == 0 and cmp_flags(pg256) == {"anon", "anon_exclusive"}
    assert [(sm.rss_kb, sm.locked_kb) for _, _, sm in vma_list(p, a, PMD)] == [(4, 4), (4, 0)]


def test_mlock_populates_untouched_hugepage_vma_with_mlocked_thp() -> None:
    """Rule 14 (section 5.3, __mm_populate): plain mlock of an untouched MADV_HUGEPAGE VMA
    faults a THP and mlocks it (S13c)."""
    s = make_system()
    p = s.process("main")
    a = region(p)
    c = Counters(s)
    assert p.mlock(a, PMD) == 0
    assert c.thp() == {"thp_fault_alloc": 1, "nr_anon_transparent_hugepages": 1,
                       "2048kB/anon_fault_alloc": 1, "2048kB/nr_anon": 1}
    assert {cmp_flags(x) for x in pages(p, a, PMD)} == {LOCKED_THP}


def test_mlockall_future_populates_new_mapping_before_madvise_hugepage() -> None:
    """Rule 14 (section 5.3, mlockall): under MCL_FUTURE an mmap populates at once, before
    MADV_HUGEPAGE, so with enabled=madvise the region is 512 mlocked 4 KiB pages and never a
    THP (S14a)."""
    s = make_system()
    p = s.process("main")
    assert p.mlockall(current=True, future=True) == 0
    a = region(p)
    pg = pages(p, a, PMD)
    assert all(x.folio_order == 0 for x in pg)
    assert {cmp_flags(x) for x in pg} == {frozenset({"anon", "anon_exclusive", "mlocked"})}
    assert p.write(a, PMD, 1) == 0
    assert all(x.folio_order == 0 for x in pages(p, a, PMD))
    sm = smap_at(p, a)
    assert (sm.rss_kb, sm.anon_huge_pages_kb, sm.locked_kb, sm.vmflags) == (
        2048, 0, 2048, ["hg", "lo"])


def test_mlockall_onfault_mlocks_thp_at_first_write() -> None:
    """Rule 14: mlockall(CURRENT|FUTURE|ONFAULT) populates nothing at mmap; the first write
    faults an mlocked THP (S14c)."""
    s = make_system()
    p = s.process("main")
    assert p.mlockall(current=True, future=True, onfault=True) == 0
    a = region(p)
    sm = smap_at(p, a)
    assert (sm.rss_kb, sm.vmflags) == (0, ["hg", "lf", "lo"])
    assert p.write(a, PAGE, 1) == 0
    assert is_pmd_mapped(p, a)
    assert {cmp_flags(x) for x in pages(p, a, PMD)} == {LOCKED_THP}


def test_mlockall_current_and_munlockall_on_existing_thp() -> None:
    """Rule 13: mlockall(CURRENT) mlocks an existing PMD THP without split; munlockall
    reverses it (S14e)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    f, _ = folio_at(p, a)
    c = Counters(s)
    assert p.mlockall(current=True) == 0
    assert is_mlocked(s, f) and is_pmd_mapped(p, a)
    assert smap_at(p, a).locked_kb == 2048
    assert p.munlockall() == 0
    assert not is_mlocked(s, f)
    assert smap_at(p, a).vmflags == ["hg"]
    assert c.thp() == {}


# -- rule 15: rmap removal in a VM_LOCKED VMA ---------------------------------------------------
def test_partial_munmap_of_mlocked_thp_munlocks_whole_folio() -> None:
    """Rule 15: any rmap removal in a VM_LOCKED VMA munlocks; a partial munmap of an mlocked
    THP leaves it unmlocked although both remaining VMAs are VM_LOCKED (S19 row 2)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.mlock(a, PMD) == 0
    f, _ = folio_at(p, a)
    c = Counters(s)
    assert p.munmap(a + 768 * KB, 512 * KB) == 0
    assert not is_mlocked(s, f) and not is_unevictable(s, f)
    assert c["nr_mlock"] == -512
    assert {cmp_flags(x) for x in pages(p, a, 768 * KB)} == {THP_SPLIT_PMD}
    assert [(sm.locked_kb, sm.vmflags) for _, _, sm in vma_list(p, a, PMD)] == [
        (768, ["hg", "lo"]), (768, ["hg", "lo"])]
    assert vm_lck_kb(p) == 1536


def test_munmap_of_one_page_of_mlocked_mthp_munlocks_it() -> None:
    """Rule 15: even one PTE removed from an mlocked large folio munlocks the whole folio;
    its neighbours stay mlocked."""
    s = make_system(sizes=MTHP_64K)
    p = s.process("main")
    a = thp_region(p)
    assert p.mlock(a, PMD) == 0
    f0, _ = folio_at(p, a)
    f1, _ = folio_at(p, a + 64 * KB)
    assert is_mlocked(s, f0) and is_mlocked(s, f1)
    assert p.munmap(a + PAGE, PAGE) == 0
    assert not is_mlocked(s, f0)
    assert is_mlocked(s, f1)


# -- rule 16: the meanings of "locked" -----------------------------------------------------------
def test_smaps_locked_vmlck_and_mlocked_disagree_for_crossing_folio() -> None:
    """Rule 16: smaps Locked (VMA-based PSS) is 1024 and VmLck 1024 while no page is MLOCKED and
    NR_MLOCK did not move (S3 row 2: Locked=1024 while no page of THP 0 is MLOCKED)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    c = Counters(s)
    assert p.mlock(a, MB) == 0
    assert smap_at(p, a).locked_kb == 1024
    assert vm_lck_kb(p) == 1024
    assert not any("mlocked" in x.flags for x in pages(p, a, PMD))
    assert c["nr_mlock"] == 0


def test_onfault_mlock_mlocks_pages_already_present() -> None:
    """Rule 13 (section 5.3, MLOCK_ONFAULT): pages already present are mlocked by the walk; only
    populating is skipped."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    f, _ = folio_at(p, a)
    assert p.mlock(a, PMD, onfault=True) == 0
    assert is_mlocked(s, f)
    assert smap_at(p, a).vmflags == ["hg", "lf", "lo"]


def test_split_of_crossing_folio_mlocks_the_pieces_in_the_locked_vma() -> None:
    """Rule 11 and 13 (sections 3.2 step 11, 5.4): a THP crossing the mlock boundary is not
    mlocked; when MADV_PAGEOUT of the unlocked half splits it, the pieces remapped into the
    VM_LOCKED VMA are mlocked one by one, the others are not; the split is for the partial
    range, so no swpout_fallback."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.mlock(a, MB) == 0
    c = Counters(s)
    assert p.madvise(a + MB, MB, "pageout") == 0
    d = c.thp()
    assert d.get("thp_split_page") == 1 and "thp_swpout_fallback" not in d
    pg = pages(p, a, PMD)
    assert all(x.folio_order == 0 for x in pg)
    assert all("mlocked" in x.flags for x in pg[:256])
    assert not any("mlocked" in x.flags for x in pg[256:])
    assert c["nr_mlock"] == 256


def test_split_of_crossing_folio_swaps_only_the_unlocked_half() -> None:
    """Rule 23 and 13 (section 5.4): with a swap file the unlocked pieces are swapped out, the
    mlocked ones stay present."""
    s = make_system(swap="file")
    p = s.process("main")
    a = thp_region(p)
    assert p.mlock(a, MB) == 0
    c = Counters(s)
    assert p.madvise(a + MB, MB, "pageout") == 0
    assert c["pswpout"] == 256
    pg = pages(p, a, PMD)
    assert all(x.state == "present" and "mlocked" in x.flags for x in pg[:256])
    assert all(x.state == "swap" for x in pg[256:])


def test_mlock_populate_breaks_cow_of_shared_thp() -> None:
    """Rule 14, 15 and 20 (section 5.3: populate uses FOLL_WRITE on private writable VMAs,
    breaking COW): mlock of a THP shared with a child splits the parent's PMD and copies every
    page into an mlocked order-0 page; the THP, still PMD-mapped by the child, is munlocked by
    the parent's PTE removals and is not partially mapped."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    f, _ = folio_at(p, a)
    ch = p.fork("child")
    c = Counters(s)
    assert p.mlock(a, PMD) == 0
    pg = pages(p, a, PMD)
    assert all(x.folio_order == 0 and x.exclusive and "mlocked" in x.flags for x in pg)
    assert is_pmd_mapped(ch, a) and folio_at(ch, a)[0] == f
    assert not is_mlocked(s, f)
    d = c.thp()
    assert d.get("thp_split_pmd") == 1 and "thp_deferred_split_page" not in d
    assert smap_at(p, a).locked_kb == 2048


def test_pmd_split_of_mlocked_thp_keeps_it_mlocked() -> None:
    """Rule 12 (section 1.2, PMD -> PTE remap: mlock_count +1 then -1): mprotect of half of an
    mlocked THP splits the VMA and the PMD, but removes no mapping: the folio stays mlocked."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.mlock(a, PMD) == 0
    f, _ = folio_at(p, a)
    c = Counters(s)
    assert p.mprotect(a + MB, MB, "r") == 0
    assert c.thp() == {"thp_split_pmd": 1, "nr_anon_transparent_hugepages": -1}
    assert is_mlocked(s, f) and int(s.folios.mlock_count[f]) == 1
    assert {cmp_flags(x) for x in pages(p, a, PMD)} == {LOCKED_THP | {"dirty"}}


def test_partial_mremap_of_mlocked_thp_keeps_mlock_until_an_unmap() -> None:
    """Section 5.5 and 8.2: mremap moves PTEs without rmap changes, so a partly moved mlocked
    THP stays mlocked (the moved VMA keeps VM_LOCKED); the munmap of the moved part then
    removes mappings in a VM_LOCKED VMA and munlocks it (rule 15)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.mlock(a, PMD) == 0
    f, _ = folio_at(p, a)
    dst = p.mmap_region(512 * KB, "none")
    assert p.mremap(a + 512 * KB, 512 * KB, 512 * KB, dst) == 0
    assert is_mlocked(s, f)
    assert smap_at(p, dst).vmflags == ["hg", "lo"]
    assert [sm.locked_kb for _, _, sm in vma_list(p, a, PMD)] == [512, 1024]
    assert p.munmap(dst, 512 * KB) == 0
    assert not is_mlocked(s, f)
