"""The vectorised ("bulk") paths of the model against its per-item reference paths.

Every bulk path applies only when ``System.tracing`` is off (the per-item path explains each
step), so the same workload run with tracing on and off must leave the same state: every
mapped page with the same PTE/PMD bits and the same folio state, the same counters. PFNs may
differ (bulk allocation takes whole blocks), so folios are compared through the pages that
map them, not by PFN or id.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings
from mmhelpers import folio_at

from foliosim.mm import gup, vmscan
from foliosim.mm.folio import HUGE_ZERO_FID, PG_DIRTY, PG_FREE, PG_SWAPBACKED, ZERO_FID
from foliosim.mm.invariants import check_invariants
from foliosim.mm.pgtable import P_DIRTY, P_SWAP, PmdLeaf
from foliosim.mm.system import Process, System, ThpSettings
from foliosim.policies import POLICIES, make_policy

K, M = 1 << 10, 1 << 20


def _folio(F: Any, f: int) -> tuple:
    slots = sorted(((int(F.mm0[f]), int(F.mmc0[f])), (int(F.mm1[f]), int(F.mmc1[f]))))
    return (int(F.order[f]), int(F.ref[f]), int(F.pin[f]), int(F.entire[f]), int(F.large[f]),
            int(F.nr_mapped[f]), int(F.flags[f]), int(F.mlock_count[f]), int(F.index[f]),
            int(F.anon_vma[f]), tuple(slots))


def state(s: System) -> dict[str, Any]:
    """A canonical picture of the system: per process and mapped page, its entry bits and its
    folio's state as seen from that page; counters; live folio count."""
    F = s.folios
    out: dict[str, Any] = {"events": dict(s.vmstat.events), "live": F.live,
                           "free_pages": s.buddy.free_pages(),
                           "queued": len(s.deferred_queue)}
    for name, p in sorted(s.processes.items()):
        mm = p.mm
        pages = []
        for slot in sorted(mm.pmd):
            ent = mm.pmd[slot]
            if isinstance(ent, PmdLeaf):
                if ent.fid == HUGE_ZERO_FID:
                    pages.append((slot, "hzero", ent.bits))
                else:
                    assert not F.flags[ent.fid] & PG_FREE
                    pages.append((slot, "pmd", ent.bits, _folio(F, ent.fid),
                                  F.pae(ent.fid, 0), F.value(ent.fid, 0)))
                continue
            for i in range(512):
                f = int(ent.fid[i])
                if f == -1:
                    continue
                b = int(ent.bits[i])
                if b & P_SWAP:
                    pages.append((slot, i, "swap", b, f))  # f: the swap slot
                elif f == ZERO_FID:
                    pages.append((slot, i, "zero", b))
                else:
                    k = int(ent.idx[i])
                    assert not F.flags[f] & PG_FREE
                    pages.append((slot, i, b, k, _folio(F, f), F.pae(f, k),
                                  F.page_mapcount(f, k), F.value(f, k)))
        out[name] = (pages, mm.anon_pages, mm.pinned_vm,
                     [(v.start, v.end, v.flags) for v in mm.vmas])
    out["pins"] = {k: b and (len(b.pages), b.acct_pages, [n for _, n in b.pins])
                   for k, b in sorted(s.pins.items())}
    sw = s.swap
    if sw is not None:  # the slots handed out, in the same order, holding the same
        out["swap"] = (sw.next, list(sw.free), sorted(sw.count.items()), sorted(sw.cache),
                       sorted(sw.exclusive.items()), sorted(sw.data.items()))
    return out


def twin(work: Callable[[System, Process], Any], ram_bytes: int | None = None,
         fail_orders: tuple[int, ...] = (), **settings: Any) -> None:
    """Run ``work`` with tracing on (per-item paths) and off (bulk paths); same state, and the
    same result of ``work`` (its syscalls' return values, say). ``ram_bytes`` and
    ``fail_orders`` make allocations fail (memory runs out, or an order is refused)."""
    states = []
    for trace in (True, False):
        kw = {} if ram_bytes is None else {"ram_bytes": ram_bytes}
        s = System(ThpSettings(**settings), trace=trace, **kw)
        s.fail_orders = set(fail_orders)
        r = work(s, s.process("main"))
        assert not check_invariants(s), check_invariants(s)[:3]
        states.append((r, state(s)))
    (ref_r, ref), (bulk_r, bulk) = states
    assert ref_r == bulk_r
    assert ref.keys() == bulk.keys()
    for key in ref:
        assert ref[key] == bulk[key], key


MIX = {"enabled": "madvise", "sizes": {"64K": "madvise", "2M": "inherit"}}


def _populate(p: Process, size: int = 8 * M) -> list[int]:
    """A THP region, a 64K mTHP region, a small-page region."""
    thp = p.mmap_region(size)
    p.madvise(thp, size, "hugepage")
    p.write(thp, size, 1)
    mthp = p.mmap_region(size)
    for off in range(0, size, 2 * M):
        p.write(mthp + off, 4 * K, 2)
    p.madvise(mthp, size, "hugepage")
    p.write(mthp, size, 3)
    small = p.mmap_region(size)
    p.madvise(small, size, "nohugepage")
    p.write(small, size, 4)
    return [thp, mthp, small]


def test_fork_then_child_exit() -> None:
    def work(s: System, p: Process) -> None:
        regions = _populate(p)
        c = p.fork("child")
        for a in regions:
            c.write(a + 12 * K, 40 * K, 7)
        c.exit()
    twin(work, **MIX)


def test_fork_then_parent_writes_and_unmaps() -> None:
    def work(s: System, p: Process) -> None:
        regions = _populate(p)
        c = p.fork("child")
        for a in regions:
            p.write(a + 2 * M - 64 * K, 256 * K, 8)
            p.munmap(a + 3 * M + 4 * K, 1 * M)
            c.write(a, 64 * K, 9)
        s.shrink()
        p.fork("grandchild")
        c.exit()
        s.shrink()
    twin(work, **MIX)


def test_exit_of_the_only_mapper() -> None:
    def work(s: System, p: Process) -> None:
        _populate(p)
        c = p.fork("child")
        p.exit()
        c.munmap(c.mm.vmas[0].start, 1 * M)
    twin(work, **MIX)


@pytest.mark.parametrize("swap", ["file", "none"])
@pytest.mark.parametrize("advice", ["dontneed", "free", "cold", "pageout"])
def test_madvise_after_fork(advice: str, swap: str) -> None:
    def work(s: System, p: Process) -> None:
        regions = _populate(p)
        c = p.fork("child")
        for a in regions:
            p.madvise(a + 1 * M + 8 * K, 3 * M, advice)
        c.exit()
        s.shrink()
    twin(work, **MIX, swap=swap)


@pytest.mark.parametrize("swap", ["file", "none"])
@pytest.mark.parametrize("advice", ["cold", "pageout", "free"])
def test_madvise_of_parts_of_mthps(advice: str, swap: str) -> None:
    """Ranges that cut 64K mTHPs (and a PTE-mapped THP): each cut folio is split and its
    pieces inside the range are deactivated, reclaimed or made lazyfree at once, as one by
    one."""
    def work(s: System, p: Process) -> list[int]:
        thp, mthp, _ = _populate(p)
        p.mprotect(thp + 2 * M, 4 * K, "r")  # the second THP is PTE-mapped from here on
        got = [p.madvise(mthp + 12 * K + k * 200 * K, 100 * K, advice) for k in range(8)]
        got.append(p.madvise(thp + 2 * M + 36 * K, 1 * M, advice))
        # the kernel walks the pieces of a folio it split again: with MADV_FREE every page
        # of the ranges ends clean (PTE and folio) and lazyfree (not swap-backed); with
        # MADV_PAGEOUT and a swap device, swapped out
        F = s.folios
        ranges = [(mthp + 12 * K + k * 200 * K, 100 * K) for k in range(8)]
        for a, n in [*ranges, (thp + 2 * M + 36 * K, 1 * M)]:
            for page in range(a, a + n, 4 * K):
                ent = p.mm.pmd[page >> 21]
                f, b = int(ent.fid[(page >> 12) & 511]), int(ent.bits[(page >> 12) & 511])
                if advice == "free":
                    assert not b & P_DIRTY and not F.flags[f] & (PG_SWAPBACKED | PG_DIRTY)
                elif advice == "pageout" and swap == "file":
                    assert b & P_SWAP
        return got
    twin(work, **MIX, swap=swap)


def test_pageout_after_fork_and_after_the_child_exits() -> None:
    """MADV_PAGEOUT with a swap file while a child shares the regions (folios it still maps
    are skipped, the ones it unmapped are split and their pieces swapped out at once; a
    VM_LOCKED range stops the call with EINVAL), then after the child exits (pieces mapped
    once but not PageAnonExclusive since the fork: their swap entries are not exclusive):
    the same slots in the same order either way."""
    def work(s: System, p: Process) -> list[int]:
        regions = _populate(p)
        c = p.fork("child")
        for a in regions:
            for k in range(0, 8 * M, 1 * M):
                c.munmap(a + k + 64 * K, 200 * K)  # pieces the child no longer maps
            p.mlock(a + 5 * M, 24 * K)
        got = [p.madvise(a + 8 * K, 6 * M, "pageout") for a in regions]
        c.exit()
        got += [p.madvise(a, 8 * M, "pageout") for a in regions]
        return got
    twin(work, **MIX, swap="file")


def test_reclaim_of_pieces_taken_at_once_and_one_by_one() -> None:
    """``reclaim_pages`` of THPs and mTHPs (as any reclaim may hand them over, shared or not)
    whose pieces differ after the split: mapped in parent and child (swapped one by one, two
    swap entries of one slot), in a VM_LOCKED range (mlocked by the split's remap: kept),
    mapped once (swapped at once): the runs of the last and the others interleave in the
    list's order, and the slots go out in the same order on both paths."""
    def work(s: System, p: Process) -> list[int]:
        thp, mthp, _ = _populate(p)
        p.mlock(thp + 3 * M + 64 * K, 24 * K)  # the second THP: a locked piece in the middle
        c = p.fork("child")
        c.munmap(thp, 1 * M + 200 * K)  # the first THP: partly mapped by the child only
        c.munmap(mthp + 2 * M + 128 * K, 32 * K)  # an mTHP, half of it
        folios = [folio_at(p, a)[0] for a in (thp, thp + 2 * M, thp + 4 * M,
                                            mthp + 2 * M + 128 * K, mthp + 4 * M + 64 * K)]
        assert [int(s.folios.order[f]) for f in folios] == [9, 9, 9, 4, 4]
        vmscan.reclaim_pages(s, folios)
        swapped = [bool(p.mm.pmd[a >> 21].bits[(a >> 12) & 511] & P_SWAP)
                   for a in (thp, thp + 1 * M + 300 * K, thp + 3 * M + 64 * K, thp + 3 * M,
                             mthp + 2 * M + 128 * K, mthp + 2 * M + 176 * K)]
        # mapped once, shared, mlocked (kept), mapped once; the mTHP's pieces both ways
        assert swapped == [True, True, False, True, True, True]
        c.exit()
        return swapped
    twin(work, **MIX, swap="file")


def test_pageout_runs_out_of_swap_part_way() -> None:
    """132 MiB of THPs paged out to the 128 MiB swap file: the slots run out in the middle of
    a split folio's pieces; the rest stay mapped, on both paths."""
    def work(s: System, p: Process) -> int:
        a = p.mmap_region(132 * M)
        p.madvise(a, 132 * M, "hugepage")
        p.write(a, 132 * M, 5)
        return p.madvise(a, 132 * M, "pageout")
    twin(work, **MIX, swap="file")


def test_mlock_munlock_and_cow() -> None:
    def work(s: System, p: Process) -> None:
        regions = _populate(p)
        c = p.fork("child")
        for a in regions:
            p.mlock(a + 1 * M - 8 * K, 2 * M)
            p.write(a + 1 * M, 64 * K, 5)
            p.munlock(a + 1 * M - 8 * K, 2 * M)
        c.exit()
    twin(work, **MIX)


def test_underused_split_by_shrinker() -> None:
    def work(s: System, p: Process) -> None:
        a = p.mmap_region(8 * M)
        p.madvise(a, 8 * M, "hugepage")
        p.write(a, 8 * M, 0)
        p.write(a + 2 * M, 1 * M, 6)
        s.shrink()
        p.write(a, 8 * M, 3)
    twin(work, **MIX, max_ptes_none=409)


def test_writes_and_mlock_after_the_child_exits() -> None:
    """Write-protected pages of folios the parent alone maps again: reused in runs."""
    def work(s: System, p: Process) -> None:
        regions = _populate(p)
        c = p.fork("child")
        c.write(regions[1], 128 * K, 5)
        c.exit()
        for a in regions:
            p.write(a + 1 * M - 8 * K, 2 * M + 20 * K, 6)
            p.mlock(a + 4 * M, 1 * M)
        c2 = p.fork("child2")
        p.mlock(regions[0] + 6 * M, 1 * M)
        c2.mlock(regions[2] + 6 * M, 1 * M)
    twin(work, **MIX)


def test_unmap_and_exit_without_fork() -> None:
    """Exclusive folios of every order freed by munmap (whole and partial) and exit, some on
    the deferred split queue, zero-page COW after an underused split."""
    def work(s: System, p: Process) -> None:
        regions = _populate(p)
        for a in regions:
            p.munmap(a + 1 * M + 64 * K, 1 * M)
            p.madvise(a + 4 * M, 64 * K + 8 * K, "dontneed")
            p.madvise(a + 5 * M + 8 * K, 200 * K, "dontneed")
            p.write(a + 4 * M - 4 * K, 96 * K, 3)  # refaults: mTHP blocks only partly empty
            p.write(a + 5 * M, 256 * K, 4)
        p.munmap(regions[1] + 4 * M, 96 * K)
        z = p.mmap_region(4 * M)
        p.madvise(z, 4 * M, "hugepage")
        p.write(z, 4 * M, 0)
        p.write(z + 40 * K, 8 * K, 1)
        s.shrink()
        p.write(z, 4 * M, 2)
        p.mlock(z + 2 * M, 2 * M)
        p.exit()
    twin(work, **MIX, max_ptes_none=409)


def test_pins_and_reads_over_present_and_missing_pages() -> None:
    """Pins of ranges mapped present and writable (counted per folio at once) and of ranges
    that need faults or COW breaks (page by page); reads over mixed runs of present, empty
    and swapped-out PTEs."""
    def work(s: System, p: Process) -> None:
        regions = _populate(p)
        for a in regions:
            assert p.pin(a + 12 * K, 2 * M + 40 * K, f"whole{a}") == 0
        holes = p.mmap_region(4 * M)
        p.write(holes, 4 * K, 1)
        p.write(holes + 64 * K, 64 * K, 2)
        p.madvise(regions[2] + 1 * M, 64 * K, "pageout")
        p.read(holes, 4 * M)
        p.read(regions[2], 4 * M)
        c = p.fork("child")
        assert p.pin(regions[0] + 2 * M, 1 * M, "after_fork") == 0  # COW breaks: one by one
        c.read(regions[1], 8 * M)
        assert p.pin(holes, 256 * K, "holes") == 0
        edge = p.mmap_region(2 * M)
        p.madvise(edge, 2 * M, "hugepage")
        assert p.pin(edge + 1 * M, 2 * M, "past_the_end") < 0  # faults the prefix, then EFAULT
        assert p.pin(edge + 6 * M, 8 * K, "outside") < 0
        p.unpin(f"whole{regions[1]}")
        c.exit()
    twin(work, **MIX, swap="file")
    s = System(ThpSettings(**MIX))
    p = s.process("main")
    thp, mthp, small = _populate(p)
    assert gup._grab_present_range(s, p.mm, thp + 4 * K, mthp) is None  # a gap between
    got = gup._grab_present_range(s, p.mm, mthp + 60 * K, mthp + 2 * M + 8 * K)
    assert got is not None and len(got) == 2 + 512 - 15
    p.madvise(small, 4 * K, "dontneed")
    assert gup._grab_present_range(s, p.mm, small, small + 8 * K) is None  # needs a fault


# -- random workloads -----------------------------------------------------------------------
_OPS = ("write", "write0", "read", "munmap", "mmap", "mprotect_r", "mprotect_rw", "mlock",
        "munlock", "dontneed", "free", "cold", "pageout", "fork", "exit_child", "shrink",
        "child_write", "child_munmap", "pin", "unpin")
_op = st.tuples(st.sampled_from(_OPS), st.integers(0, 2), st.integers(0, 2047),
                st.integers(1, 1024))


def _run_ops(s: System, p: Process, ops: list[tuple[str, int, int, int]]) -> list[int]:
    """Three regions (THP, 64K mTHP, small), then the ops, each on a page range of one.
    Returns what the writes and reads returned."""
    regions = _populate(p)
    child: Process | None = None
    pins: list[str] = []
    rets: list[int] = []
    for k, (name, r, page, pages) in enumerate(ops):
        a = regions[r] + page * 4 * K
        n = min(pages, 2048 - page) * 4 * K
        if name == "write":
            rets.append(p.write(a, n, page + 7))
        elif name == "write0":
            rets.append(p.write(a, n, 0))
        elif name == "read":
            rets.append(p.read(a, n))
        elif name == "munmap":
            p.munmap(a, n)
        elif name == "mmap":
            p.mmap(a, n, "rw")
        elif name == "mprotect_r":
            p.mprotect(a, n, "r")
        elif name == "mprotect_rw":
            p.mprotect(a, n, "rw")
        elif name in ("mlock", "munlock"):
            getattr(p, name)(a, n)
        elif name in ("dontneed", "free", "cold", "pageout"):
            p.madvise(a, n, name)
        elif name == "fork" and child is None:
            child = p.fork("child")
        elif name == "exit_child" and child is not None:
            child.exit()
            child = None
        elif name == "shrink":
            s.shrink()
        elif name == "child_write" and child is not None:
            rets.append(child.write(a, n, page + 11))
        elif name == "child_munmap" and child is not None:
            child.munmap(a, n)
        elif name == "pin":
            pins.append(f"buf{k}")  # named by the op: never a live buffer's name
            rets.append(p.pin(a, n, pins[-1]))
        elif name == "unpin" and pins:
            p.unpin(pins.pop(0))
    return rets


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(_op, min_size=1, max_size=14), swap=st.sampled_from(["none", "file"]),
       mpn=st.sampled_from([511, 409]))
def test_random_workloads(ops: list[tuple[str, int, int, int]], swap: str, mpn: int) -> None:
    """Any sequence of the churn's operations leaves the same state on both paths."""
    twin(lambda s, p: _run_ops(s, p, ops), **MIX, swap=swap, max_ptes_none=mpn)


# Allocation failures: the bulk paths map only what the allocator can back, and the fault
# after it fails (or falls back to a smaller order) exactly as one by one.
_SMALL_RAM = [("write", 0, 1248, 970), ("write0", 1, 142, 627), ("pin", 1, 393, 255),
              ("pin", 2, 807, 647), ("mprotect_r", 2, 1469, 962), ("fork", 1, 775, 330),
              ("unpin", 1, 296, 145), ("pageout", 2, 284, 261), ("read", 0, 704, 159),
              ("pin", 0, 1737, 916), ("write0", 1, 1158, 347), ("write", 2, 0, 1024),
              ("child_write", 0, 0, 1024), ("child_write", 1, 0, 1024),
              ("child_write", 2, 0, 1024)]
_LARGE_COPY = [("pin", 1, 1861, 86), ("pin", 2, 1424, 511), ("fork", 0, 1549, 100),
               ("mmap", 0, 587, 619), ("dontneed", 2, 247, 1), ("read", 1, 488, 512),
               ("child_write", 2, 468, 511), ("dontneed", 2, 865, 1024), ("pin", 2, 19, 511),
               ("child_write", 0, 1802, 511), ("child_munmap", 2, 1301, 512),
               ("pageout", 1, 1496, 512), ("munmap", 1, 1582, 512)]


# at one point the free pages are enough for a COW run but only as small blocks (no order-4
# block left): the bulk copy must take them as they are
_FRAGMENTED = [("write0", 1, 507, 1), ("pin", 1, 535, 2), ("write0", 0, 469, 2),
               ("pin", 1, 279, 16), ("pageout", 0, 64, 511), ("unpin", 2, 868, 512),
               ("pin", 1, 197, 197), ("munmap", 1, 943, 16), ("free", 2, 1324, 1024),
               ("pin", 1, 983, 743), ("mlock", 1, 239, 2), ("pin", 2, 1322, 1024),
               ("read", 1, 863, 16), ("unpin", 2, 1718, 26), ("munmap", 1, 175, 100),
               ("unpin", 0, 1937, 511), ("fork", 2, 500, 16), ("shrink", 1, 697, 452),
               ("unpin", 1, 1593, 1024), ("dontneed", 2, 1688, 920), ("munmap", 2, 1970, 1024),
               ("mmap", 0, 534, 16), ("write", 2, 876, 580), ("cold", 0, 167, 100)]


@pytest.mark.parametrize("ops,ram,fail,mpn", [(_SMALL_RAM, 30 * M, (9,), 409),
                                              (_SMALL_RAM, 30 * M, (), 409),
                                              (_LARGE_COPY, 24 * M, (4,), 409),
                                              (_FRAGMENTED, 30 * M, (9,), 0)])
def test_memory_runs_out_mid_run(ops: list, ram: int, fail: tuple[int, ...], mpn: int) -> None:
    """With little RAM the stores and COW copies run out of pages part way: -ENOMEM on both
    paths, at the same page, with nothing allocated and left unmapped (also where the free
    pages are fragmented into small blocks before that)."""
    ran_out = []

    def work(s: System, p: Process) -> list[int]:
        rets = _run_ops(s, p, ops)
        ran_out.append(-12 in rets)
        return rets
    twin(work, ram_bytes=ram, fail_orders=fail, **MIX, max_ptes_none=mpn)
    assert ran_out == [True, True]


@settings(max_examples=30, deadline=None)
@given(ops=st.lists(_op, min_size=1, max_size=14), ram=st.sampled_from([24 * M, 30 * M, 40 * M]),
       fail=st.sampled_from([(), (9,), (4,)]), mpn=st.sampled_from([511, 409, 0]))
def test_random_workloads_small_ram(ops: list[tuple[str, int, int, int]], ram: int,
                                    fail: tuple[int, ...], mpn: int) -> None:
    """The churn's operations with memory running out: same state and results on both paths."""
    twin(lambda s, p: _run_ops(s, p, ops), ram_bytes=ram, fail_orders=fail, **MIX,
         max_ptes_none=mpn)


def _exact(s: System) -> dict[str, Any]:
    """Everything a write fault leaves, PFNs and folio ids included: the columns of every
    folio row, every process's tables and VMAs, the counters and the buddy free lists."""
    F = s.folios
    n = F.next_id
    out: dict[str, Any] = {name: getattr(F, name)[:n].tolist() for name in F._COLS}
    out["index"] = F.index[:n].tolist()
    out["free_ids"] = F.free_ids.tolist()
    for name, p in sorted(s.processes.items()):
        out[name] = (p.mm.anon_pages, [(v.start, v.end, v.flags) for v in p.mm.vmas],
                     {slot: (e.fid, e.bits) if isinstance(e, PmdLeaf) else
                      (e.fid.tolist(), e.idx.tolist(), e.bits.tolist())
                      for slot, e in sorted(p.mm.pmd.items())})
    out["events"] = dict(s.vmstat.events)
    out["mthp"] = {o: dict(d) for o, d in s.vmstat.mthp.items()}
    b = s.buddy
    out["buddy"] = ([sorted(x) for x in b.free], b.frontier, b.nr_free)
    return out


@pytest.mark.parametrize("case", ["never", "nohugepage", "table-inside", "mlocked", "low-ram"])
def test_write_over_empty_slots_is_slot_by_slot(monkeypatch: pytest.MonkeyPatch,
                                               case: str) -> None:
    """A write over many whole empty PMD slots where only order-0 folios can result maps them
    all in one step (``do_anonymous_slots_bulk``), leaving exactly what the same stores a
    slot at a time leave (each slot's own bulk fault): the same PFNs, folio ids, columns,
    tables, counters and free lists; and the same return value when memory runs out."""
    from foliosim.mm import memory

    size = 19 * M + 12 * K  # a partial slot at each end around whole ones

    def run(by_slot: bool) -> tuple[list[int], dict[str, Any], int]:
        s = System(ThpSettings(enabled="madvise" if case == "nohugepage" else "never"),
                   ram_bytes=12 * M if case == "low-ram" else 1 << 40)
        p = s.process("main")
        a = p.mmap_region(size, misalign=12 * K)
        if case == "nohugepage":
            p.madvise(a, size, "nohugepage")
        if case == "table-inside":  # slot 4 of the region already has a table
            p.write(a + 8 * M + 4 * K, 4 * K, 5)
        if case == "mlocked":
            assert p.mlock(a, size, onfault=True) == 0
        bounds = [a, *range(((a >> 21) + 1) << 21, a + size, 2 * M), a + size]
        pieces = list(zip(bounds[:-1], bounds[1:], strict=True)) if by_slot else [(a, a + size)]
        r = []
        for lo, hi in pieces:  # the slot-by-slot stores stop where one store would
            r.append(p.write(lo, hi - lo, 7))
            if r[-1]:
                break
        assert not check_invariants(s)
        return r, _exact(s), calls[0]

    calls = [0]
    real = memory.do_anonymous_slots_bulk

    def counted(*args: Any) -> int:
        n = real(*args)
        calls[0] += n > 0
        return n

    monkeypatch.setattr(memory, "do_anonymous_slots_bulk", counted)
    ref_r, ref, _ = run(by_slot=True)
    calls[0] = 0
    got_r, got, used = run(by_slot=False)
    assert used == (0 if case == "low-ram" else 2 if case == "table-inside" else 1)
    assert ref_r[-1] == got_r[-1] == (-12 if case == "low-ram" else 0)  # -ENOMEM: RAM ran out
    for key in ref:
        assert got[key] == ref[key], key


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("shrink_underused", [True, False])
def test_thp_write_over_empty_slots_queues_as_slot_by_slot(policy: str,
                                                           shrink_underused: bool) -> None:
    """Write faults over many empty PMD slots (``do_huge_pmd_anonymous_pages_bulk``) queue the
    new THPs as ``do_huge_pmd_anonymous_page`` one at a time does: through the policy's
    ``deferred_split_folio`` (linux-6.11 never queues a new THP), then as underused
    candidates only when the shrinker may split them; the shrink after leaves the same."""
    def run(by_slot: bool) -> dict[str, Any]:
        s = System(ThpSettings(enabled="always", shrink_underused=shrink_underused),
                   policy=make_policy(policy))
        p = s.process("main")
        a = p.mmap_region(8 * M)
        for lo in range(a, a + 8 * M, 2 * M if by_slot else 8 * M):
            assert p.write(lo, 2 * M if by_slot else 8 * M, 1) == 0
        out = {"queue": list(s.deferred_queue), **_exact(s)}
        assert p.write(a, 2 * M, 0) == 0  # the first THP now holds zeros: underused
        s.shrink()
        out["after shrink"] = _exact(s)
        return out

    ref, got = run(by_slot=True), run(by_slot=False)
    assert len(ref["queue"]) == (4 if shrink_underused and policy != "linux-6.11" else 0)
    for key in ref:
        assert got[key] == ref[key], key
