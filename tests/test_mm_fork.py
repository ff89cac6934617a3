"""fork and copy-on-write (foliosim/mm/memory.py copy_page_range / do_wp_page and
huge_memory.py copy_huge_pmd / do_huge_pmd_wp_page).

Expected values come from shared/reference/linux-6.18-anon-large-folios.md (section 6 and
rules 18-20 of 12.2) and the live-kernel ground truth (S8a-c, S10_8, S20, S21).
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
    has_pte_table,
    is_mlocked,
    is_partially_mapped,
    is_pmd_mapped,
    make_system,
    mapcount,
    page_at,
    pages,
    pte_mapped_thp,
    pte_writable,
    region,
    smap_at,
    thp_region,
)

MTHP_64K = {"64K": "madvise", "2M": "never"}
SHARED_THP = frozenset({"anon", "swapbacked", "thp"})             # TAB
SHARED_THP_D = frozenset({"anon", "dirty", "swapbacked", "thp"})  # TADB
NEW_4K = frozenset({"anon", "anon_exclusive"})                    # AX(B), order 0


# -- rule 18: fork ------------------------------------------------------------------------------
def test_fork_shares_pmd_thp_write_protected_and_not_exclusive() -> None:
    """Rule 18: after fork both mms map the THP by a write-protected PMD; PAE is cleared, the
    mapcount is 2 and the folio is maybe-mapped-shared; pages x0 c2 TAB (S8a row 1)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    f, _ = folio_at(p, a)
    c = Counters(s)
    ch = p.fork("child")
    assert folio_at(ch, a)[0] == f
    assert is_pmd_mapped(p, a) and is_pmd_mapped(ch, a)
    assert not pte_writable(p, a) and not pte_writable(ch, a)
    F = s.folios
    assert not F.pae(f, 0)
    assert int(F.ref[f]) == 2 and mapcount(s, f) == 2 and int(F.entire[f]) == 2
    assert F.maybe_mapped_shared(f)
    for proc in (p, ch):
        pg = pages(proc, a, PMD)
        assert all(x.mapcount == 2 and not x.exclusive for x in pg)
        assert {cmp_flags(x) for x in pg} == {SHARED_THP}
        sm = smap_at(proc, a)
        assert (sm.rss_kb, sm.anon_huge_pages_kb) == (2048, 2048)
    assert c.thp() == {}


def test_fork_shares_mthp_ptes_and_clears_pae() -> None:
    """Rule 18: PTE-mapped large folios are shared batch-wise; every page loses PAE, mapcount 2
    per page (S10_8: F0 x0 c2 TAB in the child)."""
    s = make_system(sizes=MTHP_64K)
    p = s.process("main")
    a = thp_region(p)
    f, _ = folio_at(p, a)
    ch = p.fork("child")
    F = s.folios
    assert not any(F.pae(f, k) for k in range(16))
    assert int(F.ref[f]) == 32 and mapcount(s, f) == 32
    assert F.maybe_mapped_shared(f)
    pg = pages(ch, a, 32 * PAGE)
    assert all(x.mapcount == 2 and not x.exclusive and x.folio_order == 4 for x in pg)
    assert {cmp_flags(x) for x in pg} == {SHARED_THP}
    assert not pte_writable(p, a) and not pte_writable(ch, a)


def test_fork_child_vma_loses_vm_locked() -> None:
    """Rule 18 (section 5.5): the child VMA loses VM_LOCKED; the folio stays mlocked by the
    parent."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.mlock(a, PMD) == 0
    f, _ = folio_at(p, a)
    ch = p.fork("child")
    assert smap_at(ch, a).vmflags == ["hg"]
    assert ch.mm.locked_vm == 0
    assert smap_at(p, a).vmflags == ["hg", "lo"]
    assert is_mlocked(s, f)


def test_fork_skips_dontfork_vma() -> None:
    """Rule 18 (section 6.1): VMAs with VM_DONTCOPY are not copied."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.madvise(a, PMD, "dontfork") == 0
    f, _ = folio_at(p, a)
    ch = p.fork("child")
    assert ch.mm.vma_at(a) is None
    assert s.folios.pae(f, 0) and mapcount(s, f) == 1


def test_fork_of_pinned_thp_copies_every_exclusive_page_for_child() -> None:
    """Rule 18: with MMF_HAS_PINNED and a maybe-pinned folio the PMD is split in the parent and
    every exclusive page (not only the pinned ones) is copied into an order-0 page for the
    child; the parent keeps its pages exclusive and writable (section 6.1)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p, value=5)
    f, _ = folio_at(p, a)
    assert p.pin(a + MB, 64 * KB, "buf") == 0
    c = Counters(s)
    ch = p.fork("child")
    assert c["thp_split_pmd"] == 1
    assert has_pte_table(p, a)
    pp = pages(p, a, PMD)
    assert all(x.folio_order == 9 and x.exclusive and x.mapcount == 1 for x in pp)
    assert all(s.folios.pae(f, k) for k in range(512))
    assert pte_writable(p, a) and pte_writable(p, a + PMD - PAGE)
    cp = pages(ch, a, PMD)
    assert all(x.folio_order == 0 and x.exclusive and x.mapcount == 1 for x in cp)
    assert {cmp_flags(x) for x in cp} == {NEW_4K}
    assert {x.value for x in cp} == {5}
    assert not any(x.folio_pfn == pp[0].folio_pfn for x in cp)


def test_fork_of_pinned_mthp_copies_exclusive_pages_and_shares_the_others() -> None:
    """Rule 18: for a maybe-pinned folio only the exclusive pages are copied for the child; its
    non-exclusive pages, and every page of an unpinned folio, are shared (section 6.1)."""
    s = make_system(sizes=MTHP_64K)
    p = s.process("main")
    a = thp_region(p)
    p.fork("first").exit()  # every page of the parent is now non-exclusive
    assert p.pin(a + 64 * KB, PAGE, "buf") == 0  # FOLL_WRITE reuses page 16 (PAE), pins it
    f0, _ = folio_at(p, a)
    f1, k = folio_at(p, a + 64 * KB)
    assert k == 0 and s.folios.pae(f1, 0) and not s.folios.pae(f1, 1)
    ch = p.fork("child")
    assert folio_at(ch, a)[0] == f0                 # unpinned folio: shared
    copy, _ = folio_at(ch, a + 64 * KB)
    assert copy != f1 and s.folios.order[copy] == 0  # exclusive page of the pinned folio
    assert folio_at(ch, a + 68 * KB)[0] == f1       # non-exclusive page: shared


# -- rule 19: write fault on a read-only PTE ----------------------------------------------------
def test_child_cow_write_on_shared_mthp_copies_one_4k_page() -> None:
    """Rule 19: a write to a shared, non-PAE page of a large folio that is mapped by two mms
    copies into an order-0 page; no split, no deferred split (S10_8 rows 1-2)."""
    s = make_system(sizes=MTHP_64K)
    p = s.process("main")
    a = thp_region(p)
    ch = p.fork("child")
    c = Counters(s)
    assert ch.write(a + PAGE, PAGE, 9) == 0
    assert c.thp() == {}
    cp = pages(ch, a, 32 * PAGE)
    assert cp[1].folio_order == 0 and cp[1].exclusive and cp[1].mapcount == 1
    assert cmp_flags(cp[1]) == NEW_4K
    assert all(x.folio_order == 4 and not x.exclusive and x.mapcount == 2
               for x in cp[:1] + cp[2:])
    pp = pages(p, a, 32 * PAGE)
    assert pp[1].folio_order == 4 and pp[1].exclusive and pp[1].mapcount == 1
    assert cmp_flags(pp[1]) == SHARED_THP  # Q2: the head page's PAE is reported
    ch.exit()
    pp = pages(p, a, 32 * PAGE)
    assert all(x.exclusive and x.mapcount == 1 for x in pp)
    assert {cmp_flags(x) for x in pp} == {SHARED_THP}  # S10_8 row 3: TAB
    assert c.thp() == {}


def test_pte_mapped_thp_is_reused_in_place_after_child_exit() -> None:
    """Rule 19: with all mappings in one mm again, a write to a non-PAE page of a PTE-mapped
    THP reuses it (same PFN, no copy, no split) and sets PAE on that page only; kpageflags show
    anon_exclusive only after page 0 is written (S21, Q2)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    pte_mapped_thp(p, a)
    f, _ = folio_at(p, a)
    ch = p.fork("child")
    ch.exit()
    c = Counters(s)
    before = page_at(p, a + 20 * KB)
    assert p.write(a + 20 * KB, PAGE, 9) == 0
    after = page_at(p, a + 20 * KB)
    assert (after.pfn, after.folio_order) == (before.pfn, 9)
    assert s.folios.pae(f, 5) and not s.folios.pae(f, 0)
    assert {cmp_flags(x) for x in pages(p, a, PMD)} == {SHARED_THP_D}  # S21 row 2: TADB
    assert p.write(a, PAGE, 9) == 0
    assert {cmp_flags(x) for x in pages(p, a, PMD)} == {SHARED_THP_D | {"anon_exclusive"}}
    assert c.thp() == {}


def test_large_folio_write_copies_while_another_mm_maps_it() -> None:
    """Rule 19: the shared bit set (a child maps it too) forbids reuse: the parent's write to a
    page of a PTE-mapped THP copies into an order-0 page."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    pte_mapped_thp(p, a)
    f, _ = folio_at(p, a)
    p.fork("child")
    assert p.write(a + 20 * KB, PAGE, 9) == 0
    g, _ = folio_at(p, a + 20 * KB)
    assert g != f and s.folios.order[g] == 0


def test_large_folio_with_one_mapped_page_is_not_reused() -> None:
    """Rule 19: a large folio mapped by a single entry is deliberately not reused (copy, so the
    folio can be freed)."""
    s = make_system(sizes=MTHP_64K)
    p = s.process("main")
    a = thp_region(p)
    f, _ = folio_at(p, a)
    assert p.munmap(a + PAGE, 15 * PAGE) == 0
    p.fork("child")
    s.processes["child"].exit()
    assert mapcount(s, f) == 1 and not s.folios.pae(f, 0)
    assert p.write(a, PAGE, 9) == 0
    g, _ = folio_at(p, a)
    assert g != f and s.folios.order[g] == 0


def test_large_folio_with_extra_reference_is_not_reused() -> None:
    """Rule 19 and 21: reuse needs refcount == large mapcount; a pin on another page of the
    folio blocks it, so the write copies."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    pte_mapped_thp(p, a)
    f, _ = folio_at(p, a)
    p.fork("child")
    s.processes["child"].exit()
    assert p.pin(a + 40 * KB, PAGE, "buf") == 0  # FOLL_WRITE: reuses page 10, then pins it
    assert folio_at(p, a + 40 * KB)[0] == f
    assert p.write(a + 20 * KB, PAGE, 9) == 0
    g, _ = folio_at(p, a + 20 * KB)
    assert g != f and s.folios.order[g] == 0


def test_parent_cow_then_child_exit_leaves_folio_partially_mapped() -> None:
    """Rule 19 and 8: the parent's copy of page 5 removes its PTE of the old folio; when the
    child exits the folio is mapped only 511 times in the parent with no PMD: partially mapped
    (S8b row 5)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    f, _ = folio_at(p, a)
    ch = p.fork("child")
    c = Counters(s)
    assert p.write(a + 20 * KB, PAGE, 9) == 0
    assert c.thp() == {"thp_split_pmd": 1}  # S8b row 3
    assert is_pmd_mapped(ch, a)
    ch.exit()
    # S8b rows 3-5
    assert c.thp() == {"thp_split_pmd": 1, "nr_anon_transparent_hugepages": -1,
                       "thp_deferred_split_page": 1, "2048kB/split_deferred": 1,
                       "2048kB/nr_anon_partially_mapped": 1}
    assert is_partially_mapped(s, f)
    pp = pages(p, a, PMD)
    assert all(x.exclusive and x.mapcount == 1 for x in pp)
    assert {cmp_flags(x) for i, x in enumerate(pp) if i != 5} == {SHARED_THP_D}
    assert pp[5].folio_order == 0 and cmp_flags(pp[5]) == NEW_4K


def test_split_keeps_pae_per_page_after_partial_reuse() -> None:
    """Rule 11 and 19: in S8b the parent's write @1M after child exit reuses page 256 (PAE on
    that page only); the shrinker split then shows AXDB for page 256 and ADB for the other
    pieces (S8b rows 6-7)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    ch = p.fork("child")
    assert p.write(a + 20 * KB, PAGE, 9) == 0
    ch.exit()
    before = page_at(p, a + MB)
    assert p.write(a + MB, PAGE, 9) == 0
    assert page_at(p, a + MB).pfn == before.pfn
    s.shrink()
    pp = pages(p, a, PMD)
    assert all(x.folio_order == 0 for x in pp)
    assert cmp_flags(pp[256]) == {"anon", "anon_exclusive", "dirty"}
    assert {cmp_flags(x) for i, x in enumerate(pp) if i not in (5, 256)} == {
        frozenset({"anon", "dirty"})}


# -- rule 20: write fault on a read-only PMD ----------------------------------------------------
def test_child_cow_write_on_shared_pmd_thp_splits_only_childs_pmd() -> None:
    """Rule 20: the child's write splits the child's PMD and copies one 4 KiB page; the parent
    keeps its PMD; the folio is not split nor queued (S8a row 2; Q1, Q3 for the parent)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    ch = p.fork("child")
    c = Counters(s)
    assert ch.write(a + 20 * KB, PAGE, 9) == 0
    assert c.thp() == {"thp_split_pmd": 1}
    assert has_pte_table(ch, a) and is_pmd_mapped(p, a)
    cp = pages(ch, a, PMD)
    assert cp[5].folio_order == 0 and cp[5].exclusive and cp[5].mapcount == 1
    assert cmp_flags(cp[5]) == NEW_4K
    assert all(x.folio_order == 9 and not x.exclusive and x.mapcount == 2
               for i, x in enumerate(cp) if i != 5)
    assert {cmp_flags(x) for i, x in enumerate(cp) if i != 5} == {SHARED_THP_D}
    pp = pages(p, a, PMD)
    assert pp[5].mapcount == 1 and not pp[5].exclusive   # Q1: bit 56 from the head page
    assert all(x.mapcount == 2 for i, x in enumerate(pp) if i != 5)
    # S8a row 3: a second child write copies another page, no other counter
    assert ch.write(a + MB, PAGE, 9) == 0
    assert c.thp() == {"thp_split_pmd": 1}
    assert page_at(ch, a + MB).folio_order == 0


def test_parent_reuses_pmd_thp_after_child_exit() -> None:
    """Rule 20: after the child exits the parent's folio has refcount 1; its write reuses the
    whole PMD (PAE set again, no copy, no split) (S8a rows 5-6, S8c)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    f, _ = folio_at(p, a)
    ch = p.fork("child")
    c = Counters(s)
    ch.exit()
    pp = pages(p, a, PMD)
    assert all(x.exclusive and x.mapcount == 1 for x in pp)       # S8c row 3: x1 c1 TAB
    assert {cmp_flags(x) for x in pp} == {SHARED_THP}
    assert p.write(a + MB, PAGE, 9) == 0
    assert is_pmd_mapped(p, a) and pte_writable(p, a)
    assert folio_at(p, a)[0] == f and s.folios.pae(f, 0)
    assert {cmp_flags(x) for x in pages(p, a, PMD)} == {
        frozenset({"anon", "anon_exclusive", "swapbacked", "thp"})}  # S8c row 4: TAXB
    assert c.thp() == {}


def test_child_munmap_of_half_shared_thp_splits_child_pmd_only() -> None:
    """Rule 8 and 18: the child's munmap of the first half splits its PMD; the parent maps the
    folio whole by PMD, so it is not partially mapped; Q1: parent x1 everywhere, c1 on 0-255
    and c2 on 256-511 (S20)."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    ch = p.fork("child")
    c = Counters(s)
    assert ch.munmap(a, MB) == 0
    s.shrink()
    assert c.thp() == {"thp_split_pmd": 1}
    cp = pages(ch, a + MB, MB)
    assert all(not x.exclusive and x.mapcount == 2 for x in cp)
    assert {cmp_flags(x) for x in cp} == {SHARED_THP_D}
    pp = pages(p, a, PMD)
    assert all(x.exclusive for x in pp)
    assert [x.mapcount for x in pp] == [1] * 256 + [2] * 256
    assert {cmp_flags(x) for x in pp} == {SHARED_THP_D}
    ch.exit()
    assert all(x.exclusive and x.mapcount == 1 for x in pages(p, a, PMD))
    assert c.thp() == {"thp_split_pmd": 1}


def test_fork_copies_untouched_vma_without_pages() -> None:
    """Section 6.1: a VMA without anon_vma (never faulted) is copied without pages."""
    s = make_system()
    p = s.process("main")
    a = region(p)
    ch = p.fork("child")
    assert ch.mm.vma_at(a) is not None
    assert all(x.state == "none" for x in pages(ch, a, PMD))


def test_small_folio_is_reused_only_with_refcount_one() -> None:
    """Rule 19 (section 6.2, small-folio rule): a shared order-0 page is copied while the child
    maps it, reused in place once the child is gone."""
    s = make_system()
    p = s.process("main")
    a = region(p, advice="nohugepage")
    assert p.write(a, 2 * PAGE, 1) == 0
    f0, _ = folio_at(p, a)
    f1, _ = folio_at(p, a + PAGE)
    ch = p.fork("child")
    assert p.write(a, PAGE, 2) == 0
    assert folio_at(p, a)[0] != f0
    ch.exit()
    assert p.write(a + PAGE, PAGE, 2) == 0
    assert folio_at(p, a + PAGE)[0] == f1


def test_fork_after_unpin_shares_the_folio() -> None:
    """Rule 18: MMF_HAS_PINNED stays set after unpin, but the folio is no longer maybe-pinned,
    so fork shares its PMD as usual."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    f, _ = folio_at(p, a)
    assert p.pin(a, 64 * KB, "buf") == 0
    assert p.unpin("buf") == 0
    assert p.mm.has_pinned
    c = Counters(s)
    ch = p.fork("child")
    assert is_pmd_mapped(p, a) and folio_at(ch, a)[0] == f
    assert c.thp() == {}


def test_fork_shares_huge_zero_pmd_and_child_write_allocates_its_own_thp() -> None:
    """Rule 3 and 18 (section 6.1): a huge zero PMD is shared at fork; the child's write
    allocates a THP for the child only."""
    s = make_system()
    p = s.process("main")
    a = region(p)
    assert p.read(a, PAGE) == 0
    ch = p.fork("child")
    assert "zero" in page_at(ch, a).flags
    c = Counters(s)
    assert ch.write(a, PAGE, 1) == 0
    assert is_pmd_mapped(ch, a)
    assert "zero" in page_at(p, a).flags and page_at(p, a).folio_order == 9
    assert c.thp() == {"thp_fault_alloc": 1, "nr_anon_transparent_hugepages": 1,
                       "2048kB/anon_fault_alloc": 1, "2048kB/nr_anon": 1}


def test_cow_that_removes_the_last_mapping_of_a_page_makes_mthp_partially_mapped() -> None:
    """Rule 8 and 19 (section 4.1): after the child copied page 1 of a shared 64 KiB folio, the
    parent's own copy of page 1 unmaps that page's last mapping: the folio is partially mapped
    and queued (64kB/split_deferred); one side's copy alone does not (S10_8)."""
    s = make_system(sizes=MTHP_64K)
    p = s.process("main")
    a = thp_region(p)
    f, _ = folio_at(p, a)
    ch = p.fork("child")
    c = Counters(s)
    assert ch.write(a + PAGE, PAGE, 2) == 0
    assert c.thp() == {}
    assert p.write(a + PAGE, PAGE, 3) == 0
    assert c.thp() == {"64kB/split_deferred": 1, "64kB/nr_anon_partially_mapped": 1}
    assert is_partially_mapped(s, f)


def test_shared_bit_clears_only_when_one_mm_owns_every_mapping() -> None:
    """Rule 19 (section 1.2, per-mm bookkeeping): with three mms (two slots and the overflow)
    the folio stays maybe-shared until the last other mm unmaps it; then the parent's write
    reuses the PTE-mapped THP in place."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    pte_mapped_thp(p, a)
    f, _ = folio_at(p, a)
    first = p.fork("first")
    second = p.fork("second")
    assert s.folios.maybe_mapped_shared(f)
    second.exit()
    assert s.folios.maybe_mapped_shared(f)
    first.exit()
    assert not s.folios.maybe_mapped_shared(f)
    assert p.write(a + 20 * KB, PAGE, 9) == 0
    assert folio_at(p, a + 20 * KB)[0] == f


def test_child_exit_does_not_munlock_parents_mlocked_thp() -> None:
    """Rule 15 and 18: the child's mapping lives in a VMA without VM_LOCKED, so its removal at
    exit does not munlock the parent's mlocked THP."""
    s = make_system()
    p = s.process("main")
    a = thp_region(p)
    assert p.mlock(a, PMD) == 0
    f, _ = folio_at(p, a)
    p.fork("child").exit()
    assert is_mlocked(s, f) and int(s.folios.mlock_count[f]) == 1


def test_processes_alive_at_once_are_bounded_by_the_16_bit_page_mapcount(monkeypatch) -> None:
    """Per-page PTE mapcounts are 16-bit (a page is mapped at most once per mm): creating a
    process beyond MAX_PROCESSES alive fails loudly instead of overflowing; an exit frees a
    place."""
    import pytest

    import foliosim.mm.system as system_mod
    from foliosim.mm.folio import MAX_PROCESSES

    assert MAX_PROCESSES == (1 << 15) - 1
    monkeypatch.setattr(system_mod, "MAX_PROCESSES", 3)
    s = make_system(enabled="always")
    p = s.process("main")
    a = region(p, PMD)
    assert p.write(a, PMD, 1) == 0
    c1 = p.fork("c1")
    p.fork("c2")
    with pytest.raises(RuntimeError, match="at most 3 processes"):
        p.fork("c3")
    c1.exit()
    assert p.fork("c3").name == "c3"


def test_fork_to_the_name_of_a_live_process_is_refused() -> None:
    """A child name already in use by a live process is a caller's mistake: a clear error,
    nothing changed; once that process has exited the name is free again."""
    import pytest

    s = make_system()
    p = s.process("main")
    a = region(p, PMD, advice=None)
    assert p.write(a, PMD, 1) == 0
    c = p.fork("c")
    with pytest.raises(ValueError, match="'c' already"):
        p.fork("c")
    with pytest.raises(ValueError, match="'main' already"):
        c.fork("main")
    assert sorted(s.processes) == ["c", "main"] and mapcount(s, folio_at(p, a)[0]) == 2
    c.exit()
    assert p.fork("c").alive
