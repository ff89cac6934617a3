"""The /proc views computed from the model: smaps (foliosim/proc/smaps.py) and pagemap,
kpageflags, kpagecount (foliosim/proc/page.py).

Expected values come from shared/reference/linux-6.18-anon-large-folios.md (section 10 and
rules 16, 24, 25 of 12.2) and the live-kernel ground truth (quirks Q1-Q4, the THPeligible
and DIRTY notes, S8a, S10, S11b, S18, S20, S21).
"""

from __future__ import annotations

from mmhelpers import (
    KB,
    MB,
    PAGE,
    PMD,
    THP_FRESH,
    Counters,
    cmp_flags,
    folio_at,
    make_system,
    page_at,
    pages,
    pte_mapped_thp,
    region,
    smap_at,
    thp_region,
    vma_list,
)

MTHP_64K = {"64K": "madvise", "2M": "never"}


# -- rule 24: pagemap bit 56, kpageflags, kpagecount --------------------------------------------
def test_pagemap_exclusive_bit_of_pmd_mapping_follows_head_page() -> None:
    """Rule 24 and Q1: for a PMD mapping bit 56 is the head page's mapcount == 1 copied to all
    512 entries: after the child unmaps the first half of a shared THP, the parent sees c1 on
    0-255 and c2 on 256-511 but x1 everywhere (S20 row 2)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    ch = p.fork("child")
    assert ch.munmap(a, MB) == 0
    pg = pages(p, a, PMD)
    assert [x.mapcount for x in pg] == [1] * 256 + [2] * 256
    assert all(x.exclusive for x in pg)


def test_pagemap_exclusive_bit_of_pmd_mapping_clear_when_head_shared() -> None:
    """Q1 converse: in S8a the parent's page 5 has kpagecount 1 but bit 56 = 0 because page 0
    is shared (S8a row 4)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    ch = p.fork("child")
    assert ch.write(a + 20 * KB, PAGE, 1) == 0
    pg = pages(p, a, 8 * PAGE)
    assert pg[5].mapcount == 1 and not pg[5].exclusive
    assert pg[0].mapcount == 2 and not pg[0].exclusive


def test_pagemap_exclusive_bit_of_pte_mapping_is_exact_per_page() -> None:
    """Q1: for PTE mappings bit 56 is exact per page (S8a row 2: the child's COW page 5 is x1,
    its shared pages x0)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    ch = p.fork("child")
    assert ch.write(a + 20 * KB, PAGE, 1) == 0
    pg = pages(ch, a, 8 * PAGE)
    assert [x.exclusive for x in pg] == [False] * 5 + [True] + [False] * 2


def test_pagemap_exclusive_bit_is_mapcount_not_pae() -> None:
    """Rule 24: bit 56 means "this page's mapcount == 1", not PageAnonExclusive: after fork and
    child exit the parent's pages are x1 while no page is PAE (S8c row 3: x1 c1 TAB)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    f, _ = folio_at(p, a)
    p.fork("child").exit()
    pg = pages(p, a, PMD)
    assert all(x.exclusive for x in pg)
    assert not s.folios.pae(f, 0)
    assert not any("anon_exclusive" in x.flags for x in pg)


def test_kpageflags_report_head_flags_on_every_page() -> None:
    """Rule 24 and Q2: kpageflags of tail pages are the head's: PAE of page 5 regained by a
    write reuse does not show until page 0 is written, then all 512 pages show it (S21)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    pte_mapped_thp(p, a)
    p.fork("child").exit()
    assert p.write(a + 20 * KB, PAGE, 1) == 0
    assert not any("anon_exclusive" in x.flags for x in pages(p, a, PMD))
    assert p.write(a, PAGE, 1) == 0
    assert all("anon_exclusive" in x.flags for x in pages(p, a, PMD))


def test_kpageflags_thp_is_set_for_mthp() -> None:
    """Rule 24: KPF_THP marks any anon large folio, 64 KiB ones included (S10_fault: TAXB)."""
    s = make_system(sizes=MTHP_64K)
    p = s.process("main")
    a = region(p)
    assert p.write(a, PAGE, 1) == 0
    assert {cmp_flags(x) for x in pages(p, a, 16 * PAGE)} == {THP_FRESH}


def test_kpageflags_of_order0_page_have_no_thp() -> None:
    """Rule 24: an order-0 anon page is ANON|OWNER_2 without THP (S0d: AXB)."""
    s = make_system()
    p = s.process("main")
    a = region(p, advice="nohugepage")
    assert p.write(a, PAGE, 1) == 0
    pg = page_at(p, a)
    assert "thp" not in pg.flags and cmp_flags(pg) == {"anon", "anon_exclusive"}


def test_kpagecount_is_pte_mapcount_plus_entire_mapcount() -> None:
    """Q3: kpagecount = the page's own PTE mapcount + the folio's entire (PMD) mapcount: a PMD
    THP shared by two processes shows 2 everywhere; after the child PTE-maps it and copies page
    5: 2 where both map, 1 where only the parent's PMD remains (S8a rows 1-2)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    ch = p.fork("child")
    assert {x.mapcount for x in pages(p, a, PMD)} == {2}
    assert ch.write(a + 20 * KB, PAGE, 1) == 0
    pg = pages(p, a, PMD)
    assert [x.mapcount for x in pg[:8]] == [2, 2, 2, 2, 2, 1, 2, 2]


def test_zero_pages_have_kpagecount_zero() -> None:
    """Q3 and Q4: the small zero page and the huge zero page have kpagecount 0, bit 56 clear,
    ZERO flag; the huge zero page also THP (S0b row 0, S15a row 3)."""
    s = make_system()
    p = s.process("main")
    a = region(p)
    b = region(p, advice="nohugepage")
    assert p.read(a, PAGE) == 0
    assert p.read(b, PAGE) == 0
    huge, small = page_at(p, a), page_at(p, b)
    assert (huge.mapcount, huge.exclusive, cmp_flags(huge)) == (0, False, {"thp", "zero"})
    assert (small.mapcount, small.exclusive, cmp_flags(small)) == (0, False, {"zero"})


def test_pins_are_invisible_in_page_views() -> None:
    """Q3 and finding 6: pins do not show in pagemap, kpageflags or kpagecount."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    before = pages(p, a, PMD)
    assert p.pin(a, PMD, "buf") == 0
    assert pages(p, a, PMD) == before


def test_fresh_thp_is_not_dirty_but_pmd_split_makes_it_dirty() -> None:
    """DIRTY note: a freshly faulted THP is not PG_dirty (the bit is in the PMD); a PMD split
    transfers it, so PTE-mapped THPs show DIRTY; fresh 4 KiB faults show no DIRTY."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert not any("dirty" in x.flags for x in pages(p, a, PMD))
    pte_mapped_thp(p, a)
    assert all("dirty" in x.flags for x in pages(p, a, PMD))
    b = region(p, advice="nohugepage")
    assert p.write(b, PAGE, 1) == 0
    assert "dirty" not in page_at(p, b).flags


# -- rule 25: AnonHugePages ---------------------------------------------------------------------
def test_anon_huge_pages_counts_only_pmd_mapped_thp() -> None:
    """Rule 25: AnonHugePages is 2048 kB per PMD mapping; a PTE-mapped THP and mTHPs are not
    included (S5 row 3, S10_fault row 1)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p, 4 * MB)
    assert smap_at(p, a).anon_huge_pages_kb == 4096
    pte_mapped_thp(p, a)
    assert smap_at(p, a).anon_huge_pages_kb == 2048
    s2 = make_system(sizes=MTHP_64K)
    q = s2.process("main")
    b = thp_region(q)
    sm = smap_at(q, b)
    assert (sm.rss_kb, sm.anon_huge_pages_kb) == (2048, 0)


def test_nr_anon_thp_counts_pmd_mappings_and_nr_anon_counts_folios() -> None:
    """Rule 25 and finding 1: vmstat nr_anon_transparent_hugepages drops on a PMD split although
    the folio is intact; hugepages-2048kB/stats/nr_anon drops only when the folio goes."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    c = Counters(s)
    pte_mapped_thp(p, a)
    assert c["nr_anon_transparent_hugepages"] == -1 and c["2048kB/nr_anon"] == 0
    assert p.munmap(a, PMD) == 0
    assert c["2048kB/nr_anon"] == -1


# -- rule 16: smaps Locked ----------------------------------------------------------------------
def test_smaps_locked_is_pss_of_pages_in_locked_vma() -> None:
    """Rule 16: Locked is the PSS of the present pages of a VM_LOCKED VMA: an mlocked THP also
    mapped by a child counts half (spec section 2: a locked page shared by two processes counts
    half)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.mlock(a, PMD) == 0
    assert smap_at(p, a).locked_kb == 2048
    ch = p.fork("child")
    assert smap_at(p, a).locked_kb == 1024
    assert smap_at(ch, a).locked_kb == 0


def test_smaps_locked_counts_present_pages_only() -> None:
    """Rule 16: Locked counts present pages, not the VMA size: an ONFAULT-locked VMA shows
    Locked 0 until faulted (S13a row 0)."""
    s = make_system()
    p = s.process("main")
    a = region(p)
    assert p.mlock(a, PMD, onfault=True) == 0
    assert smap_at(p, a).locked_kb == 0
    assert p.mm.locked_vm * 4 == 2048


# -- THPeligible and VmFlags --------------------------------------------------------------------
def test_thp_eligible_says_what_the_vma_could_get() -> None:
    """THPeligible note: 1 for a 2 MiB VMA with only 64K enabled (S10), 0 for VMAs smaller than
    2 MiB after splits (S1), 0 after MADV_NOHUGEPAGE while AnonHugePages is 2048 (S18), 0 for a
    VMA without VM_HUGEPAGE that holds a collapsed THP (S11b)."""
    s = make_system(sizes=MTHP_64K)
    p = s.process("main")
    a = region(p)
    assert smap_at(p, a).thp_eligible

    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.mlock(a, MB) == 0
    assert [sm.thp_eligible for _, _, sm in vma_list(p, a, PMD)] == [False, False]

    b = thp_region(p)
    assert p.madvise(b, PMD, "nohugepage") == 0
    sm = smap_at(p, b)
    assert (sm.thp_eligible, sm.anon_huge_pages_kb) == (False, 2048)

    c = region(p, advice=None)
    assert p.write(c, PAGE, 1) == 0
    assert p.madvise(c, PMD, "collapse") == 0
    sm = smap_at(p, c)
    assert (sm.thp_eligible, sm.anon_huge_pages_kb) == (False, 2048)


def test_vmflags_mnemonics() -> None:
    """Section 10.1: lo (VM_LOCKED), lf (VM_LOCKONFAULT), hg, nh; dc for VM_DONTCOPY (spec)."""
    s = make_system()
    p = s.process("main")
    a = region(p)
    assert smap_at(p, a).vmflags == ["hg"]
    assert p.mlock(a, PMD, onfault=True) == 0
    assert smap_at(p, a).vmflags == ["hg", "lf", "lo"]
    assert p.madvise(a, PMD, "dontfork") == 0
    assert smap_at(p, a).vmflags == ["dc", "hg", "lf", "lo"]
    b = region(p, advice="nohugepage")
    assert smap_at(p, b).vmflags == ["nh"]


def test_swap_entries_show_as_swap_and_in_smaps_swap() -> None:
    """Section 10.1/10.2: swap PTEs are excluded from Rss and counted in Swap; pagemap marks
    them as swap (S12a row 1)."""
    s = make_system(swap="file")
    p = s.process("main")
    a = thp_region(p)
    assert p.madvise(a, MB, "pageout") == 0
    pg = pages(p, a, PMD)
    assert {x.state for x in pg[:256]} == {"swap"}
    sm = smap_at(p, a)
    assert (sm.rss_kb, sm.swap_kb, sm.anonymous_kb) == (1024, 1024, 1024)


def test_thp_eligible_for_small_vma_where_an_mthp_order_fits() -> None:
    """THPeligible is thp_vma_allowable_orders(TVA_SMAPS) != 0: a 128 KiB VMA is eligible with
    64K enabled (a 64 KiB block fits) and not with only 2M enabled."""
    s = make_system(sizes=MTHP_64K)
    p = s.process("main")
    a = region(p, 128 * KB)
    assert smap_at(p, a).thp_eligible
    s = make_system()
    p = s.process("main")
    a = region(p, 128 * KB)
    assert not smap_at(p, a).thp_eligible
