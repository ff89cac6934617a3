"""The rules behind the fuzz findings that now agree with the live kernel (scenarios/fuzz-*.yaml
moved in from fuzz-findings/): MADV_COLLAPSE (madvise.py), mremap (mremap.py), mprotect
(mprotect.py) and the FOLL_TOUCH part of populating (gup.py).

Every expected value comes from the Linux 6.18.2 source named in the test, or from what the
live kernel of the reference machine returned for the same steps (the finding's scenario, or a
scenario written for the test and run with ``foliosim diff``, as the docstring says).
"""

from __future__ import annotations

from mmhelpers import (
    KB,
    MB,
    PMD,
    Counters,
    cmp_flags,
    is_pmd_mapped,
    make_system,
    pages,
    region,
    smap_at,
    vma_list,
)

from foliosim.mm.folio import HUGE_ZERO_FID
from foliosim.mm.mm_types import VM_ACCOUNT
from foliosim.mm.pgtable import PmdLeaf

EINVAL, ENOMEM, EFAULT, EAGAIN = -22, -12, -14, -11


def vmas(p, a: int, length: int) -> list[tuple[int, int, str]]:
    """(start, end) in KiB relative to ``a`` and perms of the VMAs overlapping the range."""
    return [(lo // KB, hi // KB, sm.perms) for lo, hi, sm in vma_list(p, a, length)]


# -- MADV_COLLAPSE: mm/khugepaged.c madvise_collapse, driven by mm/madvise.c madvise_walk_vmas --
def test_collapse_counts_huge_zero_pmds_as_collapsed() -> None:
    """``check_pmd_state``: a huge zero PMD is ``pmd_trans_huge``, so SCAN_PMD_MAPPED, which
    ``madvise_collapse`` counts as done: 0, nothing allocated (live: 0; finding
    fuzz-collapse-huge-zero-pmds)."""
    s = make_system()
    p = s.process("main")
    a = region(p, 6 * MB, misalign=1984 * KB)
    assert p.madvise(a, 6 * MB, "populate_read") == 0
    c = Counters(s)
    assert p.madvise(a + 64 * KB, 6 * MB - 64 * KB, "collapse") == 0
    assert "thp_collapse_alloc" not in c.thp()
    for off in (64 * KB, 64 * KB + PMD):  # the two aligned 2 MiB blocks of the range
        ent = p.mm.pmd[(a + off) >> 21]
        assert isinstance(ent, PmdLeaf) and ent.fid == HUGE_ZERO_FID


def test_collapse_of_a_vma_then_a_hole_collapses_and_returns_enomem() -> None:
    """``madvise_walk_vmas``: the VMA's part collapses (its aligned 2 MiB inside it), the hole
    after it only sets -ENOMEM (live: ENOMEM, one thp_collapse_alloc; finding
    fuzz-collapse-then-hole-enomem)."""
    s = make_system()
    p = s.process("main")
    a = region(p, 8 * MB, advice=None)
    assert p.write(a, 8 * MB, 1) == 0
    assert p.munmap(a + 5664 * KB, 8 * MB - 5664 * KB) == 0
    c = Counters(s)
    assert p.madvise(a + 2 * MB, 6 * MB, "collapse") == ENOMEM
    assert c["thp_collapse_alloc"] == 1
    assert is_pmd_mapped(p, a + 2 * MB)


def test_collapse_of_a_hole_then_a_never_faulted_vma_is_einval() -> None:
    """``madvise_walk_vmas`` returns the first VMA error at once, over the hole's -ENOMEM; the
    VMA without an anon_vma fails ``thp_vma_allowable_order(TVA_FORCED_COLLAPSE)`` (live:
    EINVAL; finding fuzz-collapse-hole-then-unfaulted-einval)."""
    s = make_system()
    p = s.process("main")
    a = region(p, 2 * MB, advice=None)
    d = region(p, 2 * MB, advice=None, prot="none")
    assert p.mremap(a, 1088 * KB, 1088 * KB, d) == 0
    assert p.madvise(a, 2 * MB, "collapse") == EINVAL


def test_collapse_goes_on_past_a_leading_hole() -> None:
    """``madvise_walk_vmas`` carries on after a hole at the start of the range: both aligned
    2 MiB blocks of the VMA are collapsed, and the result is -ENOMEM (live: ENOMEM,
    thp_collapse_alloc 2; finding fuzz-collapse-after-leading-hole)."""
    s = make_system()
    p = s.process("main")
    a = region(p, 6 * MB, advice=None, misalign=MB)
    assert p.write(a, 6 * MB, 1) == 0
    assert p.munmap(a, 64 * KB) == 0
    c = Counters(s)
    assert p.madvise(a, 6 * MB, "collapse") == ENOMEM
    assert c["thp_collapse_alloc"] == 2


def test_collapse_stops_at_a_block_without_page_table() -> None:
    """``check_pmd_state``: an empty PMD is SCAN_PMD_NONE, not on ``madvise_collapse``'s list
    of results to go on after, so the loop ends there and the written block after it is left
    alone: -EINVAL, nothing allocated (live, scenario collapse-none-then-written)."""
    s = make_system()
    p = s.process("main")
    a = region(p, 4 * MB, advice=None)
    assert p.write(a + PMD, PMD, 1) == 0
    c = Counters(s)
    assert p.madvise(a, 4 * MB, "collapse") == EINVAL
    assert "thp_collapse_alloc" not in c.thp()
    assert not is_pmd_mapped(p, a + PMD)


def test_collapse_goes_on_after_a_pinned_block() -> None:
    """SCAN_PAGE_COUNT (a pinned page) is on the list to go on after: the next block is
    collapsed, and the last failure gives -EAGAIN (``madvise_collapse_errno``; live,
    scenario collapse-pin-then-written)."""
    s = make_system()
    p = s.process("main")
    a = region(p, 4 * MB, advice=None)
    assert p.write(a, 4 * MB, 1) == 0
    assert p.pin(a, 64 * KB, "p") == 0
    c = Counters(s)
    assert p.madvise(a, 4 * MB, "collapse") == EAGAIN
    assert c["thp_collapse_alloc"] == 1
    assert not is_pmd_mapped(p, a) and is_pmd_mapped(p, a + PMD)


def test_collapse_inside_one_pmd_block_is_einval() -> None:
    """A range inside one 2 MiB block has hend < hstart: the kernel's unsigned block count
    never equals thps, so the initial SCAN_FAIL gives -EINVAL (live, scenario
    collapse-inside-one-block); a range that only reaches a boundary (hend == hstart) is 0."""
    s = make_system()
    p = s.process("main")
    a = region(p, 4 * MB, advice=None)
    assert p.write(a, 4 * MB, 1) == 0
    assert p.madvise(a + 512 * KB, MB, "collapse") == EINVAL
    assert p.madvise(a + MB, MB, "collapse") == 0


# -- mremap: mm/mremap.c do_mremap, remap_move, check_prep_vma, mremap_to, shrink_vma ------------
def test_mremap_shrink_across_two_vmas_unmaps_the_tail_first() -> None:
    """``check_prep_vma`` checks only the kept ``new_len`` against the first VMA when
    shrinking; ``shrink_vma`` unmaps the tail across VMAs, then one VMA moves (live: 0;
    finding fuzz-mremap-shrink-across-two-vmas)."""
    s = make_system()
    p = s.process("main")
    c_ = region(p, 2 * MB, advice=None)
    d = region(p, 2 * MB, advice=None, prot="none")
    assert p.madvise(c_ + 480 * KB, 1492 * KB, "dontfork") == 0
    assert p.mremap(c_, 2 * MB, 480 * KB, d) == 0
    assert vmas(p, c_, 2 * MB) == []
    assert vmas(p, d, 2 * MB) == [(0, 480, "rw-p"), (480, 2048, "---p")]


def test_mremap_shrink_across_a_hole() -> None:
    """As above with a hole in the unmapped tail (live: 0; finding
    fuzz-mremap-shrink-across-hole). Both pieces at the destination are never faulted, so
    each took the pgoff of its new place (``copy_vma``) and they merge (live, scenario
    mremap-shrink-across-hole-observed)."""
    s = make_system()
    p = s.process("main")
    a = region(p, 2 * MB, advice=None)
    b = region(p, 2 * MB, advice=None, prot="none")
    assert p.mremap(a + 896 * KB, 1088 * KB, 1088 * KB, b) == 0
    assert p.mremap(a, 2 * MB, 512 * KB, b) == 0
    assert vmas(p, a, 2 * MB) == []
    assert vmas(p, b, 2 * MB) == [(0, 1088, "rw-p"), (1088, 2048, "---p")]


def test_mremap_shrink_or_grow_beyond_the_first_vma_is_efault() -> None:
    """``check_prep_vma``: "We can't remap across the end of VMAs": a shrink keeping more
    than the first VMA, or a grow of a range over two VMAs, is -EFAULT and changes nothing
    (live, scenario mremap-shrink-beyond-first-vma)."""
    s = make_system()
    p = s.process("main")
    a = region(p, 2 * MB, advice=None)
    d = region(p, 4 * MB, advice=None, prot="none")
    assert p.mprotect(a + MB, MB, "r") == 0
    assert p.mremap(a, 2 * MB, 1536 * KB, d) == EFAULT
    assert p.mremap(a, 2 * MB, 3 * MB, d) == EFAULT
    assert vmas(p, a, 2 * MB) == [(0, 1024, "rw-p"), (1024, 2048, "r--p")]
    assert vmas(p, d, 4 * MB) == [(0, 4096, "---p")]


def test_mremap_move_of_a_vma_and_a_hole_moves_the_vma() -> None:
    """``remap_move``: only a hole at the start of the range is -EFAULT; the VMA moves and the
    destination after it keeps what was mapped there (live: 0; finding
    fuzz-mremap-move-across-vma-and-hole)."""
    s = make_system()
    p = s.process("main")
    a = region(p, 8 * MB, advice=None)
    d = region(p, 4608 * KB, advice=None, prot="none")
    assert p.mremap(a + 4 * MB, 4 * MB, 4 * MB, d) == 0
    assert p.mremap(a + 2 * MB, 3888 * KB, 3888 * KB, d) == 0
    assert vmas(p, a, 8 * MB) == [(0, 2048, "rw-p")]
    assert vmas(p, d, 4608 * KB) == [(0, 4096, "rw-p"), (4096, 4608, "---p")]


def test_mremap_move_keeps_the_gaps_between_vmas() -> None:
    """``remap_move`` maps each VMA at the offset it had from the start, and unmaps only
    those pieces at the destination: the hole's place keeps the reservation (live, scenario
    mremap-move-vma-hole-vma)."""
    s = make_system()
    p = s.process("main")
    a = region(p, 6 * MB, advice=None)
    assert p.write(a, 6 * MB, 1) == 0
    assert p.munmap(a + 2 * MB, MB) == 0
    d = region(p, 6 * MB, advice=None, prot="none")
    assert p.mremap(a, 6 * MB, 6 * MB, d) == 0
    assert vmas(p, a, 6 * MB) == []
    assert vmas(p, d, 6 * MB) == [(0, 2048, "rw-p"), (2048, 3072, "---p"),
                                  (3072, 6144, "rw-p")]
    pg = pages(p, d, 6 * MB)
    assert [x.state for x in pg[512:768]] == ["none"] * 256
    assert all(x.state == "present" and x.value == 1 for x in pg[:512] + pg[768:])


def test_mprotect_none_of_a_never_faulted_vma_drops_vm_account() -> None:
    """``mprotect_fixup``: made unwritable while it has no anon_vma, a private VMA gives its
    charge back (VM_ACCOUNT cleared); one with an anon_vma keeps it."""
    s = make_system()
    p = s.process("main")
    a = region(p, 2 * MB, advice=None)
    b = region(p, 2 * MB, advice=None)
    assert p.write(b, 4 * KB, 1) == 0
    assert p.mprotect(a, 2 * MB, "none") == 0
    assert p.mprotect(b, 2 * MB, "none") == 0
    assert not p.mm.vma_at(a).flags & VM_ACCOUNT
    assert p.mm.vma_at(b).flags & VM_ACCOUNT
    assert p.mprotect(a, 2 * MB, "rw") == 0
    assert p.mm.vma_at(a).flags & VM_ACCOUNT  # charged again when made writable


def test_mremap_of_a_protnone_never_faulted_range_merges_with_the_reservation() -> None:
    """Without VM_ACCOUNT (above) the moved piece has a PROT_NONE reservation's flags; as it
    has no anon_vma, ``copy_vma`` gives it the pgoff of its new place, so it merges with the
    rest of the reservation (live: one VMA; finding fuzz-mremap-protnone-merges-with-reserve)."""
    s = make_system()
    p = s.process("main")
    a = region(p, 2 * MB, advice=None)
    b = region(p, 2 * MB, advice=None, prot="none")
    assert p.mprotect(a, 2 * MB, "none") == 0
    assert p.mremap(a, 64 * KB, 64 * KB, b) == 0
    assert vmas(p, b, 2 * MB) == [(0, 2048, "---p")]


# -- mprotect of a VM_LOCKONFAULT range: mm/mprotect.c mprotect_fixup, mm/gup.c -------------------
def test_mprotect_rw_of_lockonfault_prot_none_range_populates_nothing() -> None:
    """``mprotect_fixup`` calls ``populate_vma_page_range`` for a VM_LOCKED VMA becoming
    writable, which returns at once for VM_LOCKONFAULT (live: nothing present; finding
    fuzz-mprotect-lockonfault-no-populate)."""
    s = make_system()
    p = s.process("main")
    a = region(p, 6 * MB, advice=None, prot="none")
    assert p.mlock(a + 3740 * KB, 6 * MB - 3740 * KB, onfault=True) == 0
    assert p.mprotect(a + 3092 * KB, 6 * MB - 3092 * KB, "rw") == 0
    assert all(x.state == "none" for x in pages(p, a, 6 * MB))
    sm = smap_at(p, a + 4 * MB)
    assert (sm.rss_kb, sm.locked_kb, sorted(sm.vmflags)) == (0, 0, ["lf", "lo"])


# -- populate with FOLL_TOUCH: mm/gup.c follow_page_pte, follow_huge_pmd -> touch_pmd -----------
def _freed_small(p) -> int:
    a = region(p, 2 * MB, advice=None)
    assert p.write(a, 2 * MB, 1) == 0
    assert p.madvise(a, 2 * MB, "free") == 0
    assert smap_at(p, a).lazyfree_kb == 2048
    return a


def test_mlock_redirties_madv_freed_pages() -> None:
    """``populate_vma_page_range`` follows with FOLL_TOUCH | FOLL_WRITE; ``follow_page_pte``
    marks the folio of a clean writable PTE dirty, so LazyFree drops to 0 (live: ``dirty``,
    LazyFree 0; finding fuzz-free-thp-mlock-redirties)."""
    s = make_system()
    p = s.process("main")
    a = _freed_small(p)
    assert p.mlock(a, 2 * MB) == 0
    assert smap_at(p, a).lazyfree_kb == 0
    assert {cmp_flags(x) for x in pages(p, a, 2 * MB)} == {
        frozenset({"anon", "anon_exclusive", "dirty", "mlocked"})}


def test_mlockall_current_redirties_madv_freed_pages() -> None:
    """The same through ``mlockall(MCL_CURRENT)`` -> ``__mm_populate`` (live; finding
    fuzz-free-thp-mlockall-redirties)."""
    s = make_system()
    p = s.process("main")
    a = _freed_small(p)
    assert p.mlockall(current=True) == 0
    assert smap_at(p, a).lazyfree_kb == 0
    assert all("dirty" in x.flags for x in pages(p, a, 2 * MB))


def test_populate_write_redirties_but_populate_read_does_not() -> None:
    """MADV_POPULATE_WRITE goes through ``faultin_page_range`` with FOLL_TOUCH | FOLL_WRITE and
    re-dirties; MADV_POPULATE_READ (no FOLL_WRITE) only marks accessed (live, scenario
    free-small-populate-write: LazyFree 1024 kB, the read half still clean)."""
    s = make_system()
    p = s.process("main")
    a = _freed_small(p)
    assert p.madvise(a, MB, "populate_write") == 0
    assert p.madvise(a + MB, MB, "populate_read") == 0
    assert smap_at(p, a).lazyfree_kb == 1024
    pg = pages(p, a, 2 * MB)
    assert all("dirty" in x.flags for x in pg[:256])
    assert not any("dirty" in x.flags for x in pg[256:])


def test_mlock_of_read_only_freed_pages_keeps_them_lazyfree() -> None:
    """A read-only VMA is populated without FOLL_WRITE (``populate_vma_page_range``), so
    nothing is re-dirtied (live, scenario free-small-mlock-readonly)."""
    s = make_system()
    p = s.process("main")
    a = _freed_small(p)
    assert p.mprotect(a, 2 * MB, "r") == 0
    assert p.mlock(a, 2 * MB) == 0
    assert smap_at(p, a).lazyfree_kb == 2048
    assert not any("dirty" in x.flags for x in pages(p, a, 2 * MB))


def test_mlock_dirties_the_pmd_of_a_freed_thp_not_the_folio() -> None:
    """A PMD-mapped THP is followed by ``follow_huge_pmd``, whose ``touch_pmd`` only sets the
    PMD's dirty bit: smaps LazyFree (which also looks at the PMD) drops to 0, the folio's
    PG_dirty stays clear (live, scenario free-pmd-thp-mlock)."""
    s = make_system()
    p = s.process("main")
    a = region(p, 2 * MB)
    assert p.write(a, 2 * MB, 1) == 0
    assert p.madvise(a, 2 * MB, "free") == 0
    assert smap_at(p, a).lazyfree_kb == 2048
    assert p.mlock(a, 2 * MB) == 0
    assert smap_at(p, a).lazyfree_kb == 0
    assert not any("dirty" in x.flags for x in pages(p, a, 2 * MB))


def test_populate_of_freed_thps_read_keeps_write_dirties_the_pmd() -> None:
    """``touch_pmd(write=false)`` only makes the PMD young; with FOLL_WRITE it makes it dirty
    (live, scenario free-pmd-thp-populate: LazyFree 2048 kB of 4096)."""
    s = make_system()
    p = s.process("main")
    a = region(p, 4 * MB)
    assert p.write(a, 4 * MB, 1) == 0
    assert p.madvise(a, 4 * MB, "free") == 0
    assert p.madvise(a, 2 * MB, "populate_read") == 0
    assert p.madvise(a + 2 * MB, 2 * MB, "populate_write") == 0
    assert smap_at(p, a).lazyfree_kb == 2048
