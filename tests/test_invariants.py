"""The invariant checker (foliosim/mm/invariants.py): each rule reports a deliberately broken
state, naming the folio and the rule; a consistent model passes; every scenario of the corpus
passes the check after every step; and the model bugs the checker found (fixed now), kept as
regression tests. A model bug found from here on gets a strict xfail reproducer below until it
is fixed.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from foliosim.mm import memory
from foliosim.mm.folio import (
    PG_ANON_EXCLUSIVE,
    PG_MLOCKED,
    PG_MM_SHARED,
    PG_PARTIALLY_MAPPED,
    PG_QUEUED,
    PG_UNEVICTABLE,
)
from foliosim.mm.invariants import (
    InvariantError,
    Violation,
    assert_invariants,
    check_invariants,
)
from foliosim.mm.pgtable import P_WRITE, PmdLeaf, PteTable
from foliosim.mm.system import Process, System, ThpSettings
from foliosim.scenario import load_scenario
from foliosim.targets.sim import SimRun

K, M = 1 << 10, 1 << 20
PAGE, PMD = 4 * K, 2 * M
SCENARIOS = sorted((Path(__file__).resolve().parent.parent / "scenarios").glob("*.yaml"))

# Scenarios whose run breaks an invariant because of a known model bug: name -> reason.
# (Empty: the swap-exclusive-at-fork bug that broke the three cow-*-swapout-* scenarios is
# fixed.) A scenario listed here runs as a strict xfail.
KNOWN_FAILING_SCENARIOS: dict[str, str] = {}


# -- building blocks ----------------------------------------------------------------------------
def pmd_folio(p: Process, a: int) -> int:
    ent = p.mm.pmd[a >> 21]
    assert isinstance(ent, PmdLeaf)
    return ent.fid


def pte_folio(p: Process, a: int) -> tuple[int, int]:
    ent = p.mm.pmd[a >> 21]
    assert isinstance(ent, PteTable)
    i = (a >> 12) & 511
    return int(ent.fid[i]), int(ent.idx[i])


def rules(s: System) -> list[str]:
    return [v.rule for v in check_invariants(s)]


def only(s: System, fragment: str, folio: int | None = None) -> Violation:
    """The violations name ``fragment`` in their rule (and ``folio`` if given); return one."""
    vs = check_invariants(s)
    assert vs, "expected a violation"
    hits = [v for v in vs if fragment in v.rule and (folio is None or v.folio == folio)]
    assert hits, f"no {fragment!r} among {[v.describe() for v in vs]}"
    return hits[0]


@pytest.fixture
def thp() -> tuple[System, Process, int, int]:
    """A PMD-mapped THP written uniformly, then one page written apart (per-page arrays)."""
    s = System(ThpSettings(enabled="always"))
    p = s.process("main")
    a = p.mmap_region(PMD)
    assert p.write(a, PMD, 7) == 0
    assert p.write(a + PAGE, PAGE, 8) == 0
    f = pmd_folio(p, a)
    assert check_invariants(s) == []
    return s, p, a, f


@pytest.fixture
def mthp() -> tuple[System, Process, int, int]:
    """A PTE-mapped 64K mTHP shared with a child, and a pinned order-0 page beside it."""
    s = System(ThpSettings(enabled="never", sizes={"64K": "always"}))
    p = s.process("main")
    a = p.mmap_region(128 * K)
    assert p.write(a, 64 * K, 1) == 0
    p.fork("child")
    assert check_invariants(s) == []
    f, _ = pte_folio(p, a)
    assert s.folios.order[f] == 4
    return s, p, a, f


# -- a consistent model passes ------------------------------------------------------------------
def test_consistent_states_have_no_violation() -> None:
    s = System(ThpSettings(enabled="always", sizes={"16K": "always", "64K": "madvise"},
                           swap="file"))
    p = s.process("main")
    a = p.mmap_region(4 * M, misalign=64 * K)
    assert p.write(a, 4 * M, 3) == 0
    assert p.madvise(a, 64 * K, "pageout") == 0
    c = p.fork("child")
    assert c.write(a + M, 8 * PAGE, 9) == 0
    assert p.mlock(a + 2 * M, M) == 0
    assert p.pin(a + 3 * M, 16 * PAGE, "buf") == 0
    assert p.munmap(a + 100 * PAGE, 3 * PAGE) == 0
    s.shrink()
    assert check_invariants(s) == []
    c.exit()
    p.unpin("buf")
    p.exit()
    assert check_invariants(s) == []
    assert s.folios.live == 0


# -- each rule reports a broken state -----------------------------------------------------------
def test_refcount(thp) -> None:
    s, _, _, f = thp
    s.folios.ref[f] += 1
    v = only(s, "_refcount", f)
    assert (v.expected, v.found) == (1, 2)
    assert v.pfn == int(s.folios.pfn[f]) and v.order == 9


def test_refcount_zero_of_a_live_folio(thp) -> None:
    s, _, _, f = thp
    s.folios.ref[f] = 0
    assert only(s, "_refcount", f).found == 0


def test_leak_of_an_unreferenced_live_folio() -> None:
    s = System()
    g = memory.folio_alloc(s, 0)   # allocated, never mapped nor put
    v = only(s, "leak", g)
    assert v.found == 1


def test_large_and_entire_mapcount(thp) -> None:
    s, _, _, f = thp
    s.folios.large[f] += 1
    s.folios.entire[f] += 1
    assert only(s, "_large_mapcount", f).found == 2
    assert only(s, "_entire_mapcount", f).expected == 1


@pytest.fixture
def small() -> tuple[System, Process, int, int]:
    """One order-0 page."""
    s = System(ThpSettings(enabled="never"))
    p = s.process("main")
    a = p.mmap_region(64 * K)
    assert p.write(a, PAGE, 5) == 0
    g, _ = pte_folio(p, a)
    assert s.folios.order[g] == 0 and check_invariants(s) == []
    return s, p, a, g


def test_small_folio_mapcount(small) -> None:
    s, p, a, g = small
    s.folios.large[g] = 2
    assert only(s, "_mapcount (small folio)", g).expected == 1


def test_per_page_mapcount_and_nr_pages_mapped(mthp) -> None:
    s, _, _, f = mthp
    s.folios.arrays(f).mapcount[3] += 1
    v = only(s, "page->_mapcount", f)
    assert (v.expected, v.found) == (2, 3) and "page 3" in v.where
    s.folios.arrays(f).mapcount[3] -= 1
    s.folios.nr_mapped[f] -= 1
    assert only(s, "_nr_pages_mapped", f).expected == 16


def test_large_only_fields_side_table(small, mthp) -> None:
    """Order-0 folios share side-table row 0 of the large-only fields (Folios.lid): a write
    through an order-0 folio id lands there and is reported; a large folio without its own
    row, or two folios sharing one, too."""
    s, _, _, g = small
    assert s.folios.lid[g] == 0 and check_invariants(s) == []
    s.folios.umc[g] = 1  # an order-0 folio has no uniform PTE mapcount
    assert only(s, "umc of order-0 folios").found == 1
    s2, _, _, f = mthp
    lid = int(s2.folios.lid[f])
    assert lid > 0
    s2.folios.lid[f] = 0
    assert only(s2, "lid (a side-table row exactly for large folios)", f).found == 0


def test_released_large_folio_gives_back_its_side_table_row() -> None:
    """Freeing a large folio returns its row; the next large folio reuses it, zeroed."""
    s = System(ThpSettings(enabled="always"))
    p = s.process("main")
    a = p.mmap_region(PMD)
    assert p.write(a, PMD, 7) == 0
    f = pmd_folio(p, a)
    lid = int(s.folios.lid[f])
    assert s.folios.entire[f] == 1
    assert p.munmap(a, PMD) == 0
    assert s.folios.lid[f] == 0 and s.folios.free_lids.tolist() == [lid]
    # a free row keeps no side-table row (new folios take free rows without resetting it)
    s.folios.lid[f] = lid
    assert only(s, "lid of free folio rows").found == lid
    s.folios.lid[f] = 0
    b = p.mmap_region(PMD)
    assert p.write(b, PMD, 8) == 0
    g = pmd_folio(p, b)
    assert s.folios.lid[g] == lid and s.folios.entire[g] == 1 and s.folios.pin[g] == 0
    assert check_invariants(s) == []


def test_index_and_swap_columns_read_back_what_was_written() -> None:
    """folio->index is kept in five bytes and read back whole up to 2**40; swap slots live
    in a dict: -1 reads back for every folio without one, setting -1 drops the entry, and a
    released folio forgets its slot; a value keeps its high 32 bits in a dict the same way."""
    from foliosim.mm.folio import Folios

    F = Folios()
    f, g = F.new(100, 0), F.new(101, 0)
    F.index[f] = (1 << 39) + (1 << 32) + 12345
    assert int(F.index[f]) == (1 << 39) + (1 << 32) + 12345 and int(F.index[g]) == 0
    ids = F.new_many([200, 201, 202])
    F.index[ids] = (7 << 32) + np.arange(3)
    assert F.index[ids].tolist() == [(7 << 32) + k for k in range(3)]
    for start in ((5 << 32) + 9, (6 << 32) - 2):  # a run inside one 2**32 block, one across
        F.index.set_run(ids, start, 3)
        assert F.index[ids].tolist() == [start + k for k in range(3)]
    assert F.swap[f] == -1 and F.swap[ids].tolist() == [-1, -1, -1]
    F.swap[ids] = 40 + np.arange(3)
    F.swap[f] = 9
    assert F.swap[ids].tolist() == [40, 41, 42] and F.swap[f] == 9
    F.swap[f] = -1
    assert f not in F.swap.d
    F.release_many(ids[:2])
    assert sorted(F.swap.d) == [int(ids[2])]
    # values: the low 32 bits in a column, any high bits in a dict
    F.val[f] = (1 << 63) + 5
    F.val[g] = 7
    assert (F.val[f], F.val[g]) == ((1 << 63) + 5, 7) and list(F.val.hi) == [f]
    F.val[ids[2:]] = np.array([(3 << 40) + 1], np.uint64)
    assert F.val[np.array([f, g, ids[2]])].tolist() == [(1 << 63) + 5, 7, (3 << 40) + 1]
    F.val[f] = 0
    assert f not in F.val.hi and F.val[f] == 0
    F.release(int(ids[2]))
    assert F.val.hi == {}


@pytest.mark.parametrize("can_reserve", [True, False])
def test_columns_move_once_into_reserved_address_space(monkeypatch, can_reserve: bool) -> None:
    """Past RESERVE_FROM rows the folio columns move, once, into uncommitted address space
    for ``limit`` rows, keeping every row; where that can't be had they keep growing by half
    (plain arrays); ids past ``limit`` still get room."""
    from foliosim.mm import folio
    from foliosim.mm.folio import Folios

    monkeypatch.setattr(folio, "RESERVE_FROM", 4096)
    tries = []
    if not can_reserve:
        monkeypatch.setattr(folio, "reserved", lambda n, dtype, huge=False: tries.append(n))
    F = Folios(limit=50_000)
    a = F.new_many(np.arange(3000) + 7, 0)
    F.index[a] = np.arange(3000) + (1 << 33)
    b = F.new_many(np.arange(3000) + 9000, 2)  # past 4096 rows
    assert F.cap == (50_000 if can_reserve else 1024 * 9 // 2 * 3 // 2)
    assert isinstance(F.flags.base, memoryview) == can_reserve
    assert F.pfn[a].tolist() == list(range(7, 3007)) and F.order[b].tolist() == [2] * 3000
    assert F.index[a].tolist() == [(1 << 33) + k for k in range(3000)]
    c = F.new_many(np.arange(60_000), 0)  # past the limit: by half again
    assert F.cap >= 66_000 and F.ref[c].tolist() == [1] * 60_000
    assert len(tries) == (0 if can_reserve else len(F._COLS))  # refused once: not asked again
    assert F.pfn[a[-1]] == 3006 and F.order[b[0]] == 2


def _thp_eligible(addr: int) -> bool:
    """The THPeligible line of /proc/self/smaps for the mapping holding ``addr``."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= addr < hi
            elif inside and head == "THPeligible:":
                return line.split()[1] == "1"
    raise AssertionError(f"no mapping holds {addr:#x}")


def test_reserved_columns_take_huge_pages_unless_sparse(monkeypatch) -> None:
    """Once reserved, the columns every folio writes are madvised for transparent huge pages
    (the kernel reports their mappings THPeligible); ``lid`` and ``mlock_count``, which most
    folios never write, stay in small pages so that their untouched rows cost nothing."""
    from foliosim.mm import folio
    from foliosim.mm.folio import Folios

    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            mode = f.read()
    except OSError:
        pytest.skip("no /sys/kernel/mm/transparent_hugepage/enabled: kernel without THP")
    if "[never]" in mode:
        pytest.skip("THP disabled on this machine ([never]): nothing is THP-eligible")
    monkeypatch.setattr(folio, "RESERVE_FROM", 4096)
    F = Folios(limit=1 << 23)  # 8 MiB and more a column: room for aligned 2 MiB ranges
    F.new_many(np.arange(5000), 0)
    assert F.cap == 1 << 23 and isinstance(F.pfn.base, memoryview)
    for name in Folios._COLS:
        assert _thp_eligible(getattr(F, name).ctypes.data) == (name not in Folios._SPARSE), name


def test_pincount() -> None:
    s = System(ThpSettings(enabled="always"))
    p = s.process("main")
    a = p.mmap_region(PMD)
    assert p.pin(a, PMD, "buf") == 0
    f = pmd_folio(p, a)
    assert (s.folios.pin[f], s.folios.ref[f]) == (1, 2)  # coalesced: one pin per folio
    assert check_invariants(s) == []
    s.folios.pin[f] = 0
    assert only(s, "_pincount", f).expected == 1


def test_small_folio_pin_counts_1024(small) -> None:
    s, p, a, g = small
    assert p.pin(a, PAGE, "buf") == 0
    assert s.folios.ref[g] == 1 + 1024 and check_invariants(s) == []
    s.folios.ref[g] -= 1024
    assert only(s, "_refcount", g).expected == 1025
    s.folios.ref[g] += 1024
    s.folios.flags[g] &= ~PG_ANON_EXCLUSIVE
    assert only(s, "pinned page not exclusive", g)


def test_mm_slots_and_shared_bit(mthp) -> None:
    s, _, _, f = mthp
    F = s.folios
    assert F.flags[f] & PG_MM_SHARED and F.mm0[f] and F.mm1[f]
    F.flags[f] &= ~PG_MM_SHARED
    assert only(s, "FOLIO_MM_IDS_SHARED_BIT", f)
    F.flags[f] |= PG_MM_SHARED
    F.mmc1[f] += 1
    assert only(s, "_mm_id_mapcount[1]", f).found == 17
    F.mmc1[f] -= 1
    F.mm1[f] = F.mm0[f]
    assert only(s, "_mm_id (one mm in both slots)", f)


def test_exclusive_folio_has_one_owning_slot(thp) -> None:
    s, _, _, f = thp
    s.folios.mmc0[f] = 0
    assert only(s, "_mm_id_mapcount[0] (used slot)", f)


def test_page_anon_exclusive_of_a_shared_page(mthp) -> None:
    s, _, _, f = mthp
    s.folios.set_pae(f, 5, 1, True)
    v = only(s, "PG_anon_exclusive (page mapped more than once)", f)
    assert "page 5" in v.where


def test_writable_pte_of_a_non_exclusive_page(mthp) -> None:
    s, p, a, f = mthp
    pt = p.mm.pmd[a >> 21]
    pt.bits[(a >> 12) & 511] |= P_WRITE
    assert only(s, "pte_write of a non-exclusive page", f)


def test_head_page_exclusive_under_two_pmds(thp) -> None:
    s, p, a, f = thp
    p.fork("child")
    assert check_invariants(s) == []
    s.folios.set_pae(f, 0, 1, True)
    assert only(s, "PG_anon_exclusive (page mapped more than once)", f)


def test_deferred_queue_membership_and_flag(thp) -> None:
    s, p, a, f = thp
    assert p.munmap(a, PAGE) == 0      # PMD split, then a partial unmap: queued, flagged
    F = s.folios
    assert F.flags[f] & PG_QUEUED and F.flags[f] & PG_PARTIALLY_MAPPED
    assert check_invariants(s) == []
    del s.deferred_queue[f]
    assert only(s, "PG_QUEUED but not on the queue", f)
    s.deferred_queue[f] = None
    F.flags[f] &= ~PG_QUEUED
    assert only(s, "on the queue without PG_QUEUED", f)
    assert only(s, "PG_partially_mapped (set on an unqueued folio)", f)


def test_partially_mapped_folio_must_be_flagged(thp) -> None:
    s, p, a, f = thp
    assert p.munmap(a, PAGE) == 0
    s.folios.flags[f] &= ~PG_PARTIALLY_MAPPED
    s.vmstat.count_mthp(9, "nr_anon_partially_mapped", -1)
    assert only(s, "partially mapped folio not flagged", f)


def test_gauges(thp) -> None:
    s, p, a, f = thp
    s.vmstat.count_mthp(9, "nr_anon", 1)
    v = only(s, "nr_anon")
    assert (v.expected, v.found, v.where) == (1, 2, "order 9")
    s.vmstat.count_mthp(9, "nr_anon", -1)
    s.vmstat.count_mthp(4, "nr_anon_partially_mapped", 1)
    assert only(s, "nr_anon_partially_mapped").where == "order 4"
    s.vmstat.count_mthp(4, "nr_anon_partially_mapped", -1)
    s.vmstat.count("nr_anon_transparent_hugepages", 1)
    assert only(s, "nr_anon_transparent_hugepages").expected == 1


def test_mlock_rules(thp) -> None:
    s, p, a, f = thp
    assert p.mlock(a, PMD) == 0
    F = s.folios
    assert F.flags[f] & PG_MLOCKED and check_invariants(s) == []
    F.flags[f] &= ~PG_UNEVICTABLE
    assert only(s, "PG_mlocked folio on an evictable LRU", f)
    F.flags[f] |= PG_UNEVICTABLE
    F.mlock_count[f] = -1
    assert only(s, "mlock_count", f).found == -1
    F.mlock_count[f] = 1
    s.vmstat.count("nr_mlock", 1)
    assert only(s, "nr_mlock").expected == 512


def test_mlocked_folio_needs_a_locked_mapping(thp) -> None:
    s, p, a, f = thp
    assert p.mlock(a, PMD) == 0
    s.folios.mlock_count[f] += 1          # one mlock too many: munlock leaves it mlocked
    assert p.munlock(a, PMD) == 0
    v = only(s, "PG_mlocked (no mapping in a VM_LOCKED VMA)", f)
    assert v.where == "mlock_count 1"


def test_mm_counters(thp) -> None:
    s, p, _, _ = thp
    p.mm.anon_pages += 1
    assert only(s, "MM_ANONPAGES").where == "mm main"
    p.mm.anon_pages -= 1
    p.mm.swap_ents += 1
    assert only(s, "MM_SWAPENTS")
    p.mm.swap_ents -= 1
    p.mm.locked_vm += 1
    assert only(s, "locked_vm")


def test_pmd_leaf_must_lie_in_one_vma(thp) -> None:
    s, p, a, f = thp
    vma = p.mm.vma_at(a)
    vma.end -= PAGE   # shrink the VMA behind the model's back: the PMD now sticks out
    assert only(s, "pmd leaf in one VMA")


def test_pte_the_rmap_cannot_find(mthp) -> None:
    """A PTE in the guard VMA past the region maps the mTHP's first page: the guard VMA has
    no anon_vma, and the address does not match folio->index."""
    s, p, a, f = mthp
    pt = p.mm.pmd[a >> 21]
    i = ((a + 128 * K) >> 12) & 511
    pt.fid[i] = f
    pt.clear_idx(i)
    assert only(s, "folio->mapping (rmap", f)
    assert only(s, "folio->index (rmap", f)


def test_pte_outside_any_vma(mthp) -> None:
    s, p, a, f = mthp
    guard = p.mm.vma_at(a + 128 * K)
    assert guard is not None and guard.guard
    p.mm.remove(guard)  # drop the guard VMA behind the model's back
    pt = p.mm.pmd[a >> 21]
    i = ((a + 128 * K) >> 12) & 511
    pt.fid[i] = -2  # the zero page
    v = only(s, "pte outside any VMA")
    assert "mm main" in v.where


def test_use_after_free(mthp) -> None:
    s, p, a, f = mthp
    g, _ = pte_folio(p, a)
    s.folios.release(g)   # freed while still mapped
    v = only(s, "use after free", g)
    assert v.found == "PG_FREE"


def test_rmap_index(thp) -> None:
    s, _, _, f = thp
    s.folios.index[f] += 1
    assert only(s, "folio->index (rmap", f)


def test_swap_count() -> None:
    s = System(ThpSettings(enabled="never", swap="file"))
    p = s.process("main")
    a = p.mmap_region(64 * K)
    assert p.write(a, 64 * K, 1) == 0
    assert p.madvise(a, 64 * K, "pageout") == 0
    assert p.mm.swap_ents == 16 and check_invariants(s) == []
    slot = next(iter(s.swap.count))
    s.swap.count[slot] += 1
    assert only(s, "swap_map").where == f"slot {slot}"


def test_buddy_accounting() -> None:
    s = System()
    s.buddy.nr_free -= 1
    assert only(s, "nr_free_pages")


# -- the assertion and its message --------------------------------------------------------------
def test_assert_invariants_names_step_folio_and_rule(thp) -> None:
    s, _, _, f = thp
    assert_invariants(s, "fine")
    s.folios.ref[f] += 3
    with pytest.raises(InvariantError) as e:
        assert_invariants(s, "step 4 (write)")
    msg = str(e.value)
    assert "after step step 4 (write)" in msg
    assert f"folio {f} (pfn {int(s.folios.pfn[f]):#x}, order 9)" in msg
    assert "_refcount: expected 1, found 4" in msg
    assert e.value.step == "step 4 (write)" and e.value.violations[0].rule == "_refcount"


def test_violation_is_a_named_tuple() -> None:
    v = Violation(3, 0x40000, 9, "_refcount", 512, 513, "mm main")
    assert v.folio == 3 and v.rule == "_refcount" and v._fields[:6] == (
        "folio", "pfn", "order", "rule", "expected", "found")
    assert v.describe() == ("folio 3 (pfn 0x40000, order 9): _refcount: expected 512, "
                            "found 513 [mm main]")
    assert Violation(None, None, None, "nr_mlock (NR_MLOCK)", 0, 1).describe() == \
        "system: nr_mlock (NR_MLOCK): expected 0, found 1"


def test_checker_only_reads(thp) -> None:
    s, _, _, f = thp
    p2 = s.process("other")
    b = p2.mmap_region(PMD)
    assert p2.write(b, PMD, 1) == 0
    g = pmd_folio(p2, b)
    assert g not in s.folios.pages
    check_invariants(s)
    assert g not in s.folios.pages   # no per-page arrays materialised


def test_fast_enough_for_every_step() -> None:
    """64 MiB of THPs, mTHPs and small pages over two processes: a check stays cheap."""
    s = System(ThpSettings(enabled="madvise", sizes={"64K": "always"}))
    p = s.process("main")
    a = p.mmap_region(32 * M)
    assert p.madvise(a, 32 * M, "hugepage") == 0
    assert p.write(a, 32 * M, 1) == 0                # 16 PMD THPs
    b = p.mmap_region(32 * M)
    assert p.write(b, 32 * M, 2) == 0                # 512 64K mTHPs
    assert p.munmap(b + 4 * K, 4 * M) == 0
    c = p.fork("child")
    assert c.write(a, M, 3) == 0                     # 256 order-0 COW copies
    t = time.perf_counter()
    assert check_invariants(s) == []
    assert time.perf_counter() - t < 1.0


# -- the corpus: every scenario passes after every step -----------------------------------------
def _scenario_param(path: Path):
    reason = KNOWN_FAILING_SCENARIOS.get(path.stem)
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(path, id=path.stem, marks=marks)


@pytest.mark.parametrize("path", [_scenario_param(p) for p in SCENARIOS])
def test_scenario_keeps_invariants_after_every_step(path: Path) -> None:
    sc = load_scenario(path)
    run = SimRun(sc)
    for i, st in enumerate(sc.steps):
        run.step(i, st)
        assert_invariants(run.system, f"{i} ({st.op} in {st.proc}) of {path.name}")
    run.finish()
    assert_invariants(run.system, f"end (every process exited) of {path.name}")


# -- model bugs found by the checker, now fixed: kept as regression tests ----------------------
def test_mremap_grow_of_locked_vma_charges_locked_vm() -> None:
    s = System()
    p = s.process("main")
    a = p.mmap_region(16 * K)
    b = p.mmap_region(64 * K)
    assert p.mlock(a, 16 * K) == 0
    assert p.mm.locked_vm == 4
    assert p.mremap(a, 16 * K, 20 * K, b) == 0
    assert p.mm.vma_at(b).locked and p.mm.vma_at(b).end - b == 20 * K
    assert_invariants(s, "mremap grow")
    assert p.mm.locked_vm == 5


def test_swap_entry_loses_exclusivity_at_fork() -> None:
    """copy_nonpresent_pte clears the swap PTE's exclusive bit: once the page is shared
    through fork, neither swap-in maps it exclusive, and the child's write does not show in
    the parent (found as a PG_anon_exclusive violation in the cow-*-swapout-* scenarios)."""
    s = System(ThpSettings(swap="file"))
    p = s.process("main")
    a = p.mmap_region(PAGE)
    assert p.write(a, PAGE, 1) == 0
    assert p.madvise(a, PAGE, "pageout") == 0
    c = p.fork("child")
    assert c.write(a, PAGE, 2) == 0
    assert_invariants(s, "child write")
    assert p.read(a, PAGE) == 0
    assert_invariants(s, "parent swap-in")
    assert (p.value_at(a), c.value_at(a)) == (1, 2)


def test_pmd_split_after_fork_clears_tail_pae() -> None:
    """A PMD THP whose pages differ (per-page arrays) is shared by fork; the parent's COW
    splits its PMD: the tails must not stay PageAnonExclusive, or the parent's next write
    reuses a page the child still maps (found by the data-integrity property)."""
    s = System(ThpSettings(enabled="always"))
    p = s.process("main")
    a = p.mmap_region(PMD)
    assert p.write(a, PMD, 1) == 0
    assert p.write(a + PAGE, PAGE, 2) == 0
    c = p.fork("child")
    assert p.write(a, PAGE, 3) == 0
    assert_invariants(s, "parent COW of page 0")
    assert p.write(a + PAGE, PAGE, 4) == 0
    assert (p.value_at(a + PAGE), c.value_at(a + PAGE)) == (4, 2)


def test_collapse_of_a_never_faulted_vma_leaves_no_folio_the_rmap_cannot_find() -> None:
    """Reads map only zero pages and give the VMA no anon_vma; MADV_COLLAPSE must not create
    a THP there (the kernel fails the range: no anon_vma, no writable PTE), or the new folio
    points at no anon_vma and a later split cannot find its mapping (found by the ``long``
    profile of tests/test_properties.py)."""
    s = System(ThpSettings(enabled="madvise"))
    p = s.process("main")
    a = p.mmap_region(PMD)
    assert p.read(a, PMD) == 0
    assert p.madvise(a, PMD, "collapse") == -22
    assert_invariants(s, "collapse")
