"""The vectorised folio split and its buddy frees (foliosim/mm/huge_memory.py ``BULK`` paths,
page_alloc.py ``free_pages_of_block``) against the per-page reference paths.

Every expected value comes from the reference: the same operations run on the same state
with the bulk paths on and off (``huge_memory.BULK``), or the buddy allocator freeing page by
page with :meth:`BuddyAllocator.free_block`, and the two resulting states are compared whole:
folio columns (but PFNs) and per-page arrays, page tables, VMAs, counters, the contents of the
buddy free lists and the deferred queue. PFNs are left out: freeing many pages at once leaves
the same free blocks but may order the free lists' sets differently, so later allocations may
take other (equally valid) PFNs; the kernel's PFNs are only ever compared relatively.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from mmhelpers import MB, PAGE, PMD, make_system

from foliosim.bench.churn import ChurnConfig, run_churn
from foliosim.mm import huge_memory, mlock, rmap, vmscan
from foliosim.mm.folio import PG_FREE, PG_LRU, PG_MLOCKED, PG_MM_SHARED, PG_UNEVICTABLE
from foliosim.mm.invariants import check_invariants
from foliosim.mm.page_alloc import BuddyAllocator, OutOfMemory
from foliosim.mm.pgtable import PmdLeaf
from foliosim.mm.system import System
from foliosim.policies import make_policy


# -- whole-state snapshots ------------------------------------------------------------------------
def snapshot(s: System) -> dict[str, Any]:
    """Everything the model holds, as plain values (zero-valued counters left out): the
    columns of every live folio by id (a bulk path may skip making folios that would be
    freed at once, so which ids are free is left out)."""
    F = s.folios
    live = np.flatnonzero((F.flags[:F.next_id] & PG_FREE) == 0)
    out: dict[str, Any] = {name: getattr(F, name)[live].tolist()
                           for name in (*F._COLS, *F._LARGE) if name not in ("pfn", "lid")}
    out["ids"] = live.tolist()
    out["pages"] = {f: (pa.mapcount.tolist(), pa.pae.tolist(), pa.val.tolist())
                    for f, pa in sorted(F.pages.items())}
    out["swap"] = sorted(F.swap.d.items())
    out["val_hi"] = sorted(F.val.hi.items())
    out["live"] = F.live
    for name, p in sorted(s.processes.items()):
        mm = p.mm
        out[f"mm {name}"] = (mm.anon_pages, mm.swap_ents, mm.locked_vm, mm.pinned_vm,
                             [(v.start, v.end, v.flags, v.pgoff) for v in mm.vmas])
        tables = {}
        for slot, e in sorted(mm.pmd.items()):
            tables[slot] = (("pmd", e.fid, e.bits) if isinstance(e, PmdLeaf) else
                            (e.fid.tolist(), e.idx.tolist(), e.bits.tolist()))
        out[f"pt {name}"] = tables
    out["events"] = {k: v for k, v in sorted(s.vmstat.events.items()) if v}
    out["mthp"] = {o: {k: v for k, v in sorted(d.items()) if v} for o, d in s.vmstat.mthp.items()}
    b = s.buddy
    out["buddy"] = (b.nr_free,)  # contents: test_free_pages_of_block_is_free_block_page_by_page
    out["queue"] = list(s.deferred_queue)
    out["split_failures"] = sorted(s.stats_split_failures.items())
    out["last_split"] = list(s.last_split)
    return out


def both_ways(monkeypatch: pytest.MonkeyPatch, build: Callable[[], System],
              act: Callable[[System], Any], check: bool = True) -> tuple[dict, dict]:
    """Build the same state twice and apply ``act`` with the bulk paths off (the reference)
    and on; returns both snapshots (and checks the invariants of the bulk one)."""
    res = []
    for bulk in (False, True):
        monkeypatch.setattr(huge_memory, "BULK", bulk)
        s = build()
        act(s)
        if bulk and check:
            assert check_invariants(s) == []
        res.append(snapshot(s))
    return res[0], res[1]


def assert_same(ref: dict, got: dict) -> None:
    for key in ref:
        assert got[key] == ref[key], key
    assert got.keys() == ref.keys()


# -- the buddy allocator ---------------------------------------------------------------------
def _buddy_state(b: BuddyAllocator) -> tuple:
    return [sorted(st) for st in b.free], b.frontier, b.nr_free


@pytest.mark.parametrize("seed", range(40))
def test_free_pages_of_block_is_free_block_page_by_page(seed: int) -> None:
    """Freeing some pages of wholly allocated blocks at once leaves the same free blocks as
    freeing them one by one, also when they merge with blocks freed before."""
    rng = random.Random(seed)
    ref, bulk = BuddyAllocator(1 << 16), BuddyAllocator(1 << 16)
    held: list[tuple[int, int]] = []
    for _ in range(80):
        order = rng.choice([0, 2, 3, 4, 9, 9])
        pfn = ref.alloc(order)
        assert bulk.alloc(order) == pfn
        held.append((pfn, order))
    rng.shuffle(held)
    for pfn, order in held:
        if rng.random() < 0.3:
            ref.free_block(pfn, order)
            bulk.free_block(pfn, order)
            continue
        share = rng.choice([0.0, 0.2, 0.5, 0.9, 1.0, 1.0, 1.0])
        offs = [x for x in range(1 << order) if rng.random() < share]
        for x in rng.sample(offs, len(offs)):
            ref.free_block(pfn + x, 0)
        bulk.free_pages_of_block(pfn, order, np.array(offs, np.int64))
        assert _buddy_state(bulk) == _buddy_state(ref)
    assert bulk.alloc(9) >= 0 and ref.alloc(9) >= 0


def test_alloc_many_takes_all_or_nothing() -> None:
    """``alloc_many`` raises before taking a page when fewer pages are free than asked;
    ``alloc_upto`` takes blocks one by one as single allocations would, up to the first that
    fails."""
    b = BuddyAllocator(2 << 10)  # two order-10 blocks
    b.alloc(9)
    b.alloc(0)  # left free: one block of each order 0..8, and a whole order-10 block
    before = _buddy_state(b)
    assert b.nr_free == 2048 - 513
    with pytest.raises(OutOfMemory):
        b.alloc_many(b.nr_free + 1)
    assert _buddy_state(b) == before
    ref = copy.deepcopy(b)
    got = b.alloc_upto(9, 5)  # the order-10 block gives two, the third fails
    assert got == [ref.alloc(9), ref.alloc(9)]
    with pytest.raises(OutOfMemory):
        ref.alloc(9)
    assert _buddy_state(b) == _buddy_state(ref)
    assert len(set(b.alloc_many(511))) == 511 and b.nr_free == 0
    # fragmented: 512 free pages, no two of them buddies; alloc_many(512) still gets them
    f = BuddyAllocator(1 << 10)
    pages = f.alloc_many(1 << 10)
    for pfn in pages[::2]:
        f.free_block(pfn, 0)
    assert f.nr_free == 512 and not any(f.free[1:])
    assert sorted(f.alloc_many(512)) == sorted(pages[::2]) and f.nr_free == 0


@pytest.mark.parametrize("seed", range(20))
def test_alloc_upto_is_alloc_in_turn(seed: int) -> None:
    """``alloc_upto`` of many blocks takes the same blocks as single allocations one after
    the other and leaves the same free lists, from random states and until memory runs
    out."""
    rng = random.Random(seed)
    ref, got = BuddyAllocator(1 << 14), BuddyAllocator(1 << 14)
    for _ in range(12):
        held = []
        for _ in range(rng.randrange(4)):
            o = rng.choice([0, 3, 9])
            if ref.nr_free < 1 << 10:
                break
            pfn = ref.alloc(o)
            assert got.alloc(o) == pfn
            held.append((pfn, o))
        for pfn, o in held[: rng.randrange(len(held) + 1)]:
            ref.free_block(pfn, o)
            got.free_block(pfn, o)
        order, n = rng.choice([0, 2, 4, 9]), rng.choice([1, 3, 31, 64, 200])
        want = []
        for _ in range(n):
            try:
                want.append(ref.alloc(order))
            except OutOfMemory:
                break
        assert sorted(got.alloc_upto(order, n)) == sorted(want)
        assert _buddy_state(got) == _buddy_state(ref)


def test_free_many_is_free_block_in_turn() -> None:
    ref, bulk = BuddyAllocator(1 << 16), BuddyAllocator(1 << 16)
    pfns = [ref.alloc(9) for _ in range(12)]
    assert [bulk.alloc(9) for _ in range(12)] == pfns
    order = pfns[::2] + pfns[1::2]
    for p in order:
        ref.free_block(p, 9)
    bulk.free_many(order, 9)
    assert _buddy_state(bulk) == _buddy_state(ref)


@pytest.mark.parametrize("seed", range(60))
def test_free_many_level_by_level_is_free_block_in_turn(seed: int) -> None:
    """The vectorised :meth:`BuddyAllocator.free_many` (16 blocks or more) leaves the same
    free lists as freeing the blocks one by one in any order, from random states: blocks of
    every order allocated and freed, batches merging with each other, with blocks already
    free and up to the top order."""
    rng = random.Random(seed)
    a = BuddyAllocator(1 << 15)
    held: list[tuple[int, int]] = []
    for _ in range(30):
        if rng.random() < 0.6 or not held:
            order = rng.choice([0, 0, 0, 2, 4, 9])
            for _ in range(rng.randrange(1, 300)):
                try:
                    held.append((a.alloc(order), order))
                except OutOfMemory:  # too fragmented for this order
                    break
            continue
        rng.shuffle(held)
        k = rng.randrange(1, len(held) + 1)
        batch, held = held[:k], held[k:]
        b = copy.deepcopy(a)
        for order in sorted({o for _, o in batch}):
            pfns = [p for p, o in batch if o == order]
            for p in pfns:
                a.free_block(p, order)
            b.free_many(np.array(pfns), order)
        assert _buddy_state(b) == _buddy_state(a)


# -- the rmap helpers of the bulk unmap ----------------------------------------------------------
@pytest.mark.parametrize("seed", range(30))
def test_mm_sub_units_is_single_removals(seed: int) -> None:
    """``n`` removals at once from one mm's slot: the same slots, counts and shared bit as
    ``n`` single removals (the shared bit is re-examined after each of those)."""
    rng = random.Random(seed)
    for _ in range(50):
        ref, got = make_system(), make_system()
        f = ref.folios.new(1 << 20, 9)
        assert got.folios.new(1 << 20, 9) == f
        mm0, mm1 = rng.choice([(1, 2), (2, 1), (1, 0), (0, 1), (3, 2), (2, 3)])
        c0, c1 = (rng.randint(1, 20) if mm0 else 0), (rng.randint(1, 20) if mm1 else 0)
        extra = rng.randint(0, 20)  # mappings of mms without a slot
        shared = (mm0 and mm1) or extra > 0
        for s in (ref, got):
            F = s.folios
            F.mm0[f], F.mm1[f], F.mmc0[f], F.mmc1[f] = mm0, mm1, c0, c1
            F.large[f] = c0 + c1 + extra
            if shared:
                F.flags[f] |= PG_MM_SHARED
        mm_id = rng.choice([1, 2, 3])
        have = c0 if mm0 == mm_id else c1 if mm1 == mm_id else extra
        n = rng.randint(1, max(1, have))
        for _ in range(n):
            rmap._mm_sub(ref, f, mm_id, 1)
        huge_memory._mm_sub_units(got, f, mm_id, n)
        for col in ("mm0", "mm1", "mmc0", "mmc1", "large", "flags"):
            assert getattr(got.folios, col)[f] == getattr(ref.folios, col)[f], col


@pytest.mark.parametrize("lru", [True, False])
@pytest.mark.parametrize("unevictable", [True, False])
def test_munlock_folio_times_is_munlock_folio_repeated(lru: bool, unevictable: bool) -> None:
    for m in range(5):
        for n in range(1, 7):
            ref, got = make_system(), make_system()
            f = ref.folios.new(1 << 20, 4)
            assert got.folios.new(1 << 20, 4) == f
            for s in (ref, got):
                s.folios.flags[f] |= PG_MLOCKED | (PG_LRU if lru else 0) | (
                    PG_UNEVICTABLE if unevictable else 0)
                s.folios.mlock_count[f] = m
            for _ in range(n):
                mlock.munlock_folio(ref, f)
            huge_memory._munlock_folio_times(got, f, n)
            assert got.folios.flags[f] == ref.folios.flags[f]
            assert got.folios.mlock_count[f] == ref.folios.mlock_count[f]
            assert dict(got.vmstat.events) == dict(ref.vmstat.events)


# -- folio splits, bulk against per page ---------------------------------------------------------
def _thp_system(**kw: Any) -> tuple[System, Any, int]:
    s = make_system(max_ptes_none=kw.pop("max_ptes_none", 409), **kw)
    p = s.process("main")
    a = p.mmap_region(8 * MB)
    assert p.madvise(a, 8 * MB, "hugepage") == 0
    return s, p, a


def test_underused_split_remaps_zero_pages_like_per_page(monkeypatch) -> None:
    """The underused THP split: zero-filled pages to the zero page and freed, the others
    remapped, by PMD (frozen) and by PTEs (PMD split before)."""
    def build() -> System:
        s, p, a = _thp_system()
        p.write(a, 8 * MB, 0)
        p.write(a + 5 * PAGE, 3 * PAGE, 9)           # PMD-mapped, mostly zero
        p.write(a + PMD + 100 * PAGE, PAGE, 4)
        p.mprotect(a + PMD + PAGE, PAGE, "r")         # PTE-mapped, mostly zero
        p.mprotect(a + PMD + PAGE, PAGE, "rw")
        p.mprotect(a + 3 * PMD, PAGE, "r")            # PTE-mapped, all zero
        p.mprotect(a + 3 * PMD, PAGE, "rw")
        return s

    zero_splits = []
    whole = huge_memory._split_to_zero_pages
    monkeypatch.setattr(huge_memory, "_split_to_zero_pages",
                        lambda *a: (zero_splits.append(a[1]), whole(*a)))
    ref, got = both_ways(monkeypatch, build, lambda s: s.shrink())
    assert ref["events"].get("thp_underused_split_page")
    assert_same(ref, got)
    # the two all-zero THPs took the path that makes no order-0 folios, one PMD-mapped (a
    # frozen PMD: no slots listed) and one PTE-mapped by now
    assert len(zero_splits) == 2
    assert sorted(b[0][2] is None for b in zero_splits) == [False, True]


def test_partially_mapped_split_after_fork_like_per_page(monkeypatch) -> None:
    """Folios mapped by two mms (PMD in one, PTEs in the other), partially unmapped, split by
    the shrinker: mapcounts, MM-id slots, PAE and the freed pages as one by one."""
    def build() -> System:
        s, p, a = _thp_system(max_ptes_none=511)
        p.write(a, 8 * MB, 5)
        p.write(a + 3 * PAGE, 7 * PAGE, 0)
        for off in (0, PMD, 3 * PMD):                 # PTE-mapped in the parent
            p.mprotect(a + off + PAGE, PAGE, "r")
            p.mprotect(a + off + PAGE, PAGE, "rw")
        c = p.fork("child")
        c.munmap(a + 10 * PAGE, 30 * PAGE)            # pages unmapped by both: partially mapped
        p.munmap(a + 20 * PAGE, 40 * PAGE)
        c.munmap(a + PMD + MB, 100 * PAGE)
        p.madvise(a + PMD + MB + 50 * PAGE, 90 * PAGE, "dontneed")
        p.munmap(a + 2 * PMD + 17 * PAGE, 3 * PAGE)   # PMD-mapped in the child: not flagged
        c.write(a + 3 * PMD, 2 * PAGE, 6)             # COW in the child
        c.madvise(a + 3 * PMD + MB, MB, "dontneed")
        p.madvise(a + 3 * PMD + MB, 8 * PAGE, "dontneed")
        return s

    ref, got = both_ways(monkeypatch, build, lambda s: s.shrink())
    assert ref["events"].get("thp_split_page")
    assert_same(ref, got)


def test_split_in_vm_locked_vma_like_per_page(monkeypatch) -> None:
    """A split whose mappings lie partly in a VM_LOCKED VMA: the munlocks of the unmap (one
    per page) and the mlocks of the remap, and no zero-page remap there."""
    def build() -> System:
        s, p, a = _thp_system()
        p.write(a, 8 * MB, 0)
        p.write(a + 9 * PAGE, 2 * PAGE, 1)
        p.mlock(a, MB)                                # PMD split; folio not mlocked
        p.mlock(a + PMD, PMD)                         # PMD-mapped THP mlocked whole
        p.munmap(a + PMD + MB, PAGE)                  # ... then cut: partially mapped
        p.mlock(a + 2 * PMD + 64 * PAGE, 64 * PAGE)
        p.munmap(a + 2 * PMD + 200 * PAGE, 2 * PAGE)
        return s

    ref, got = both_ways(monkeypatch, build, lambda s: s.shrink())
    assert ref["events"].get("unevictable_pgs_munlocked") or ref["events"].get("nr_mlock")
    assert_same(ref, got)


def test_split_shared_with_a_locked_mapping_first_like_per_page(monkeypatch) -> None:
    """Underused THPs shared after fork, one side's VMA locked over part of them: a page the
    remap mlocked through a locked mapping keeps its real page in the later, unlocked
    mappings (no zero page for an mlocked folio), by PMD (frozen) and by PTEs."""
    def build() -> System:
        s, p, a = _thp_system(max_ptes_none=255)
        p.write(a, 8 * MB, 0)
        for off in (0, PMD, 2 * PMD):
            p.write(a + off, 16 * PAGE, 1)
        p.mlock(a, MB)                                # parent: PTE-mapped, half locked
        p.mlock(a + PMD, PMD)                         # parent: PMD-mapped, all locked
        c = p.fork("child")
        c.mprotect(a + 2 * PMD + PAGE, PAGE, "r")     # child: PTE-mapped ...
        c.mprotect(a + 2 * PMD + PAGE, PAGE, "rw")
        c.mlock(a + 2 * PMD + MB, MB)                 # ... and half locked
        return s

    ref, got = both_ways(monkeypatch, build, lambda s: s.shrink())
    assert ref["events"].get("thp_underused_split_page")
    assert_same(ref, got)


def test_split_of_a_still_mlocked_folio_like_per_page(monkeypatch) -> None:
    """The same with the queued folios still mlocked, with a higher mlock_count than their
    locked mappings (not a state the syscalls leave, hence no invariant check): the unmap's
    one munlock per page takes the count down exactly as far as one by one."""
    def build() -> System:
        s, p, a = _thp_system()
        p.write(a, 8 * MB, 3)
        for off in (0, PMD, 2 * PMD):
            p.mlock(a + off, PMD)
            p.munmap(a + off + 7 * PAGE, PAGE)
        F = s.folios
        for k, f in enumerate(s.deferred_queue):
            F.flags[f] |= PG_MLOCKED | PG_UNEVICTABLE | PG_LRU
            F.mlock_count[f] = (3, 511, 600)[k % 3]
        return s

    ref, got = both_ways(monkeypatch, build, lambda s: s.shrink(), check=False)
    assert ref["events"].get("unevictable_pgs_munlocked")
    assert_same(ref, got)


@pytest.mark.parametrize("sizes", [{"64K": "always", "2M": "never"},
                                   {"16K": "always", "256K": "always", "2M": "never"}])
def test_mthp_splits_like_per_page(monkeypatch, sizes: dict[str, str]) -> None:
    def build() -> System:
        s = make_system(sizes=sizes)
        p = s.process("main")
        a = p.mmap_region(4 * MB)
        p.write(a, 4 * MB, 3)
        p.write(a + 40 * PAGE, 20 * PAGE, 0)
        p.munmap(a + 70 * PAGE, 3 * PAGE)             # partially mapped before the fork
        c = p.fork("child")
        c.munmap(a + 5 * PAGE, 3 * PAGE)
        p.munmap(a + 6 * PAGE, 9 * PAGE)
        c.munmap(a + MB + 40 * PAGE, 50 * PAGE)
        p.munmap(a + MB + PAGE, 50 * PAGE)
        c.mprotect(a + 2 * MB, 7 * PAGE, "r")
        p.madvise(a + 3 * MB, 9 * PAGE, "dontneed")
        return s

    ref, got = both_ways(monkeypatch, build, lambda s: s.shrink())
    assert ref["mthp"] and any(d.get("split") for d in ref["mthp"].values())
    assert_same(ref, got)


@pytest.mark.parametrize("advice", ["cold", "pageout", "free"])
def test_madvise_splits_like_per_page(monkeypatch, advice: str) -> None:
    """The splits MADV_COLD, MADV_PAGEOUT (with a swap file) and MADV_FREE make of folios the
    range covers only in part."""
    def build() -> System:
        s, p, a = _thp_system(swap="file")
        p.write(a, 8 * MB, 2)
        p.write(a + PMD, 50 * PAGE, 0)
        p.mprotect(a + PAGE, PAGE, "r")
        p.mprotect(a + PAGE, PAGE, "rw")
        p.fork("child").munmap(a + PMD + 300 * PAGE, 4 * PAGE)
        return s

    def advise(s: System) -> None:
        p = s.process("main")
        base = min(v.start for v in p.mm.vmas if not v.guard)
        p.madvise(base + 7 * PAGE, PMD + 20 * PAGE, advice)
        p.madvise(base + 2 * PMD + 3 * PAGE, 8 * PAGE, advice)
        s.shrink()

    ref, got = both_ways(monkeypatch, build, advise)
    assert_same(ref, got)


@pytest.mark.parametrize("swap", ["none", "file"])
def test_reclaim_of_split_pieces_like_one_by_one(swap: str) -> None:
    """MADV_PAGEOUT splits large folios and reclaims the pieces; without a swap device the
    swap-backed pieces, which ``shrink_folio`` would keep as they are, are passed over at once
    (``vmscan._pieces``). The reference is the same MADV_PAGEOUT with tracing on, which takes
    every per-item path (split page by page, every live piece handed to ``shrink_folio``)."""
    def build() -> tuple[System, int]:
        s, p, a = _thp_system(swap=swap)
        p.write(a, 8 * MB, 4)
        p.munmap(a + 3 * PAGE, 2 * PAGE)
        p.munmap(a + PMD + 100 * PAGE, 30 * PAGE)
        p.madvise(a + 2 * PMD, 8 * PAGE, "free")
        p.write(a + 3 * PMD, 64 * PAGE, 0)
        return s, a

    handed: list[int] = []
    pieces = vmscan._pieces
    snaps = []
    for trace in (True, False):
        s, a = build()
        s.tracing = trace
        try:
            vmscan._pieces = lambda s, pfn, nr: handed.append(nr) or pieces(s, pfn, nr)
            s.process("main").madvise(a, 8 * MB, "pageout")  # -ENOMEM for the holes
        finally:
            vmscan._pieces = pieces
        s.tracing = False
        snaps.append(snapshot(s))
    assert handed
    assert snaps[0]["events"].get("thp_split_page")
    assert_same(snaps[0], snaps[1])


@pytest.mark.parametrize("policy", ["linux-6.11", "split-on-cut", "deferred-rmap-check"])
def test_splits_under_policies_like_per_page(monkeypatch, policy: str) -> None:
    """The policies' hooks (6.11 queues on every partial unmap, without the flag) see the same
    number of ``deferred_split_folio`` calls."""
    def build() -> System:
        s = System(make_system(max_ptes_none=409).settings, policy=make_policy(policy))
        p = s.process("main")
        a = p.mmap_region(8 * MB)
        p.madvise(a, 8 * MB, "hugepage")
        p.write(a, 8 * MB, 1)
        p.write(a + 3 * PMD, PMD, 0)
        c = p.fork("child")
        c.munmap(a + 12 * PAGE, 5 * PAGE)
        p.mprotect(a + PMD + 3 * PAGE, 9 * PAGE, "r")
        p.munmap(a + 2 * PMD + 100 * PAGE, 50 * PAGE)
        return s

    ref, got = both_ways(monkeypatch, build, lambda s: s.shrink())
    assert_same(ref, got)


def _random_ops(seed: int) -> Callable[[System], None]:
    """A seeded mix of the syscalls over a few regions and processes, with shrinks."""
    def run(s: System) -> None:
        rng = random.Random(seed)
        p = s.process("main")
        regions = []
        for _ in range(3):
            a = p.mmap_region(4 * MB)
            p.madvise(a, 4 * MB, rng.choice(["hugepage", "hugepage", "nohugepage"]))
            p.write(a, 4 * MB, rng.choice([0, 0, 1, 2]))
            regions.append(a)
        procs = [p]
        for step in range(60):
            q = rng.choice(procs)
            a = rng.choice(regions)
            off = rng.randrange(0, 4 * MB, PAGE)
            n = min(rng.choice([PAGE, 3 * PAGE, 64 * 1024, MB, PMD]), 4 * MB - off)
            op = rng.choice(["write", "write0", "munmap", "mprotect", "mlock", "munlock",
                             "dontneed", "cold", "pageout", "free", "fork", "exit", "shrink"])
            if op == "write":
                q.write(a + off, n, rng.randrange(1, 5))
            elif op == "write0":
                q.write(a + off, n, 0)
            elif op == "munmap":
                q.munmap(a + off, n)
                q.mmap(a + off, n, "rw")
            elif op == "mprotect":
                q.mprotect(a + off, n, "r")
                if rng.random() < 0.7:
                    q.mprotect(a + off, n, "rw")
            elif op == "mlock":
                q.mlock(a + off, n)
            elif op == "munlock":
                q.munlock(a + off, n)
            elif op in ("dontneed", "cold", "pageout", "free"):
                q.madvise(a + off, n, op)
            elif op == "fork" and len(procs) < 3:
                procs.append(q.fork(f"c{step}"))
            elif op == "exit" and q is not p:
                procs.remove(q)
                q.exit()
            elif op == "shrink":
                s.shrink()
        s.shrink()
    return run


@pytest.mark.parametrize("seed", range(12))
def test_random_ops_like_per_page(monkeypatch, seed: int) -> None:
    settings = dict(max_ptes_none=random.Random(seed).choice([0, 409, 511]), swap="file",
                    sizes={"64K": "always", "2M": "never"} if seed % 3 == 0 else {})
    ref, got = both_ways(monkeypatch, lambda: make_system(**settings), _random_ops(seed))
    assert_same(ref, got)


def test_tracing_keeps_the_per_page_path(monkeypatch) -> None:
    """With tracing on the split runs page by page whatever ``BULK`` says, with its
    explanations."""
    def build() -> System:
        s = make_system(max_ptes_none=409, swap="file")
        s.tracing = True
        return s

    def bulk_unmap(*args: Any) -> None:
        raise AssertionError("the bulk unmap ran with tracing on")

    monkeypatch.setattr(huge_memory, "_unmap_folio_bulk", bulk_unmap)
    events = []
    for bulk in (False, True):
        monkeypatch.setattr(huge_memory, "BULK", bulk)
        s = build()
        _random_ops(7)(s)
        events.append(s.events)
    assert any("(__folio_split)" in e for e in events[0])
    assert events[1] == events[0]


def test_churn_like_per_page(monkeypatch) -> None:
    """A small ``foliosim bench`` churn ends in the same state either way."""
    snaps = []
    for bulk in (False, True):
        monkeypatch.setattr(huge_memory, "BULK", bulk)
        box: dict[str, dict] = {}
        run_churn(ChurnConfig(256 * MB, seed=3, region_size=16 * MB),
                  inspect=lambda moment, s, box=box: box.__setitem__(moment, snapshot(s)))
        snaps.append(box["end"])
    assert snaps[1]["events"].get("thp_split_page")
    assert_same(snaps[0], snaps[1])
