"""madvise(2) for anonymous memory (follows mm/madvise.c, with mm/khugepaged.c for
MADV_HUGEPAGE/NOHUGEPAGE/COLLAPSE)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from foliosim.mm import huge_memory, memory, rmap, swap, vmscan
from foliosim.mm.folio import (
    HUGE_ZERO_FID,
    PG_ACTIVE,
    PG_DIRTY,
    PG_SWAPBACKED,
    PG_SWAPCACHE,
    PG_UNEVICTABLE,
    ZERO_FID,
)
from foliosim.mm.mm_types import (
    MM,
    VM_DONTCOPY,
    VM_HUGEPAGE,
    VM_LOCKED,
    VM_NOHUGEPAGE,
    VM_READ,
    VM_WRITE,
    VMA,
)
from foliosim.mm.pgtable import NONE, P_DIRTY, P_SWAP, P_WRITE, PMD_SIZE, PmdLeaf, PteTable

if TYPE_CHECKING:
    from foliosim.mm.system import System

EINVAL, ENOMEM, EFAULT, EAGAIN = -22, -12, -14, -11
FLAG_ADVICE = {
    "hugepage": (VM_HUGEPAGE, VM_NOHUGEPAGE),
    "nohugepage": (VM_NOHUGEPAGE, VM_HUGEPAGE),
    "dontfork": (VM_DONTCOPY, 0),
    "dofork": (0, VM_DONTCOPY),
}


def do_madvise(s: System, mm: MM, start: int, length: int, advice: str) -> int:
    """``do_madvise``: apply the advice to every VMA of the range (``madvise_walk_vmas``);
    a hole gives -ENOMEM after the mapped parts were handled."""
    end = start + length
    if length == 0:
        return 0
    if advice == "populate_read" or advice == "populate_write":
        return madvise_populate(s, mm, start, end, advice == "populate_write")
    if advice == "collapse":
        return madvise_collapse_range(s, mm, start, end)
    unmapped = 0
    addr = start
    for vma in list(mm.vmas_in(start, end)):
        if vma.start > addr:
            unmapped = ENOMEM
        lo, hi = max(addr, vma.start), min(end, vma.end)
        r = madvise_vma_behavior(s, vma, lo, hi, advice)
        if r:
            return r
        addr = hi
    if addr < end:
        unmapped = ENOMEM
    return unmapped


def madvise_vma_behavior(s: System, vma: VMA, start: int, end: int, advice: str) -> int:
    if advice in FLAG_ADVICE:
        add, remove = FLAG_ADVICE[advice]
        newflags = (vma.flags & ~remove) | add
        if newflags != vma.flags:
            from foliosim.mm.vma import vma_modify_flags

            vma_modify_flags(vma, start, end, newflags, f"VMA boundary from MADV_{advice.upper()}")
        return 0
    if advice == "dontneed":
        if vma.flags & VM_LOCKED:
            return EINVAL
        memory.zap_page_range_single(s, vma, start, end, reclaim_pt=True)
        return 0
    if advice == "free":
        if vma.flags & VM_LOCKED:
            return EINVAL
        madvise_free_range(s, vma, start, end)
        return 0
    if advice in ("cold", "pageout"):
        if vma.flags & VM_LOCKED:
            return EINVAL
        madvise_cold_or_pageout_range(s, vma, start, end, advice == "pageout")
        return 0
    return EINVAL


def _normal_folio(fid: int) -> bool:
    return fid >= 0


def madvise_cold_or_pageout_range(s: System, vma: VMA, start: int, end: int,
                                  pageout: bool) -> None:
    """``madvise_cold_or_pageout_pte_range``: a large folio only partly in the range is split
    (skipped if maybe mapped shared, left alone if the split fails); the rest is deactivated
    (COLD) or reclaimed (PAGEOUT). Order-0 folios of a page table are done at once."""
    F = s.folios
    mm = vma.mm
    isolated: dict[int, None] = {}
    addr = start
    while addr < end:
        slot = addr >> 21
        nxt = min((slot + 1) << 21, end)
        ent = mm.pmd.get(slot)
        if isinstance(ent, PmdLeaf):
            f = ent.fid
            if f == HUGE_ZERO_FID or F.maybe_mapped_shared(f):
                addr = nxt
                continue
            if nxt - addr != PMD_SIZE:
                if huge_memory.split_folio(s, f, "MADV_COLD/PAGEOUT of part of a THP"):
                    addr = nxt
                    continue
                ent = mm.pmd.get(slot)
            else:
                _cold_or_isolate(s, f, pageout, isolated)
                addr = nxt
                continue
        if isinstance(ent, PteTable):
            i = (addr >> 12) & 511
            iend = i + ((nxt - addr) >> 12)
            found: list[tuple[int, int]] = []
            todo = _cold_small_bulk(s, ent, i, iend, pageout, found)
            i = _next(todo, i, iend)
            while i < iend:
                f = int(ent.fid[i])
                if f < 0 or ent.bits[i] & P_SWAP:
                    i = _next(todo, i + 1, iend)
                    continue
                n = 1
                if F.order[f] > 0:
                    n = memory.folio_pte_batch(s, ent, i, f, iend - i)
                    if n < F.nr(f):
                        if F.maybe_mapped_shared(f):
                            i = _next(todo, i + n, iend)
                            continue
                        if huge_memory.split_folio(s, f, "MADV_COLD/PAGEOUT of part of a "
                                                   "large folio") == 0:
                            # re-process the now small pages (those of the batch at once)
                            todo, i = _rewalk(todo, _cold_small_bulk(s, ent, i, i + n, pageout,
                                                                     found), i, n, iend)
                            continue
                        i = _next(todo, i + n, iend)
                        continue
                if not F.maybe_mapped_shared(f):
                    if not pageout:
                        _cold_or_isolate(s, f, pageout, isolated)
                    elif not F.flags[f] & PG_UNEVICTABLE:
                        found.append((i, f))
                i = _next(todo, i + n, iend)
            found.sort()
            isolated.update(dict.fromkeys(f for _, f in found))
        addr = nxt
    if pageout and isolated:
        vmscan.reclaim_pages(s, list(isolated))


def _rewalk(todo: np.ndarray, left: np.ndarray, i: int, n: int, iend: int
            ) -> tuple[np.ndarray, int]:
    """After the batch ``[i, i + n)`` was split and its now small pages done at once but for
    ``left``: the slots still to walk one by one, and the first of them."""
    todo = np.concatenate((left, todo[np.searchsorted(todo, i + n):]))
    return todo, _next(todo, i, iend)


def _next(todo: np.ndarray, i: int, iend: int) -> int:
    """The first slot at or after ``i`` still to be looked at one by one."""
    k = int(np.searchsorted(todo, i))
    return int(todo[k]) if k < len(todo) and todo[k] < iend else iend


def _cold_small_bulk(s: System, pt: PteTable, i: int, iend: int, pageout: bool,
                     found: list[tuple[int, int]]) -> np.ndarray:
    """The order-0 folios of ``[i, iend)`` at once: those mapped once are deactivated (COLD)
    or, unless unevictable, gathered with their slot for reclaim (PAGEOUT); those mapped
    more than once are skipped. Returns the slots left for the one-by-one walk (sorted)."""
    F = s.folios
    fids = pt.fid[i:iend]
    present = (fids >= 0) & ((pt.bits[i:iend] & P_SWAP) == 0)
    if s.tracing:  # the one-by-one reference path
        return np.flatnonzero(present) + i
    safe = np.where(present, fids, 0)
    small = present & (F.order[safe] == 0)
    rest = np.flatnonzero(present & ~small) + i
    g = fids[small & (F.large[safe] <= 1)]
    if pageout:
        pos = np.flatnonzero(small & (F.large[safe] <= 1)) + i
        keep = (F.flags[g] & PG_UNEVICTABLE) == 0
        found.extend(zip(pos[keep].tolist(), g[keep].tolist(), strict=True))
    else:
        F.flags[g] &= ~PG_ACTIVE
    return rest


def _cold_or_isolate(s: System, f: int, pageout: bool, isolated: dict[int, None]) -> None:
    F = s.folios
    if pageout:
        if not F.flags[f] & PG_UNEVICTABLE:
            isolated.setdefault(f, None)
    else:
        F.flags[f] &= ~PG_ACTIVE  # folio_deactivate


def madvise_free_range(s: System, vma: VMA, start: int, end: int) -> None:
    """``madvise_free_pte_range`` / ``madvise_free_huge_pmd``: a whole exclusive folio is made
    clean and lazyfree, a swap-cached one only once its swap copy can be dropped
    (``folio_free_swap``: no swap entry refers to it any more); a large folio only partly in
    the range is split first. Order-0 folios of a page table are done at once."""
    F = s.folios
    mm = vma.mm
    addr = start
    while addr < end:
        slot = addr >> 21
        nxt = min((slot + 1) << 21, end)
        ent = mm.pmd.get(slot)
        if isinstance(ent, PmdLeaf):
            f = ent.fid
            if f == HUGE_ZERO_FID or F.maybe_mapped_shared(f):
                addr = nxt
                continue
            if nxt - addr != PMD_SIZE:
                huge_memory.split_folio(s, f, "MADV_FREE of part of a THP")
                ent = mm.pmd.get(slot)
            else:
                F.flags[f] &= ~PG_DIRTY
                ent.bits &= 0xFF ^ P_DIRTY
                folio_mark_lazyfree(s, f)
                addr = nxt
                continue
        if isinstance(ent, PteTable):
            i = (addr >> 12) & 511
            iend = i + ((nxt - addr) >> 12)
            todo = _free_small_bulk(s, ent, i, iend)
            i = _next(todo, i, iend)
            while i < iend:
                f = int(ent.fid[i])
                if f == NONE or f == ZERO_FID:
                    i = _next(todo, i + 1, iend)
                    continue
                if ent.bits[i] & P_SWAP:
                    swap.free_swap_entry(s, f)
                    mm.swap_ents -= 1
                    ent.fid[i] = NONE
                    ent.bits[i] = 0
                    i = _next(todo, i + 1, iend)
                    continue
                n = 1
                if F.order[f] > 0:
                    n = memory.folio_pte_batch(s, ent, i, f, iend - i)
                    if n < F.nr(f):
                        if F.maybe_mapped_shared(f):
                            i = _next(todo, i + n, iend)
                            continue
                        if huge_memory.split_folio(s, f, "MADV_FREE of part of a large "
                                                   "folio") == 0:
                            # re-process the now small pages (those of the batch at once)
                            todo, i = _rewalk(todo, _free_small_bulk(s, ent, i, i + n), i, n,
                                              iend)
                            continue
                        i = _next(todo, i + n, iend)
                        continue
                if F.flags[f] & (PG_SWAPCACHE | PG_DIRTY):
                    if F.maybe_mapped_shared(f) or rmap.folio_mapcount(s, f) != F.nr(f) or (
                            F.flags[f] & PG_SWAPCACHE and not swap.folio_free_swap(s, f)):
                        i = _next(todo, i + n, iend)
                        continue
                    F.flags[f] &= ~PG_DIRTY
                ent.bits[i:i + n] &= 0xFF ^ P_DIRTY
                folio_mark_lazyfree(s, f)
                i = _next(todo, i + n, iend)
        addr = nxt


def _free_small_bulk(s: System, pt: PteTable, i: int, iend: int) -> np.ndarray:
    """``madvise_free_pte_range`` for the order-0 folios of ``[i, iend)`` outside the swap
    cache at once: a dirty folio mapped more than once is left alone; the others are cleaned
    (PTE and folio) and made lazyfree. Returns the slots left for the one-by-one walk (large
    folios, swap-cached folios, swap entries; sorted)."""
    F = s.folios
    fids = pt.fid[i:iend]
    bits = pt.bits[i:iend]
    swap = (bits & P_SWAP) != 0
    present = (fids >= 0) & ~swap
    if s.tracing:  # the one-by-one reference path
        return np.flatnonzero(present | swap) + i
    safe = np.where(present, fids, 0)
    fl = F.flags[safe]
    small = present & (F.order[safe] == 0) & ((fl & PG_SWAPCACHE) == 0)
    rest = np.flatnonzero((present & ~small) | swap) + i
    busy = (fl & (PG_SWAPCACHE | PG_DIRTY)) != 0
    go = small & ~(busy & (F.large[safe] != 1))
    g = fids[go]
    F.flags[g[busy[go]]] &= ~PG_DIRTY
    pt.bits[np.flatnonzero(go) + i] &= 0xFF ^ P_DIRTY
    fl = F.flags[g]
    lazy = g[((fl & PG_SWAPBACKED) != 0) & ((fl & (PG_SWAPCACHE | PG_UNEVICTABLE)) == 0)]
    F.flags[lazy] &= ~(PG_SWAPBACKED | PG_ACTIVE)
    s.vmstat.count("pglazyfree", len(lazy))
    return rest


def folio_mark_lazyfree(s: System, f: int) -> None:
    """``folio_mark_lazyfree``: an anon swapbacked folio loses PG_swapbacked (``pglazyfree``)."""
    F = s.folios
    if F.flags[f] & PG_SWAPBACKED and not F.flags[f] & (PG_SWAPCACHE | PG_UNEVICTABLE):
        F.flags[f] &= ~(PG_SWAPBACKED | PG_ACTIVE)
        s.vmstat.count("pglazyfree", F.nr(f))


def madvise_populate(s: System, mm: MM, start: int, end: int, write: bool) -> int:
    """``madvise_populate`` -> ``faultin_page_range``: fault the range in (write faults for
    POPULATE_WRITE), following every page with FOLL_TOUCH (a write populate re-dirties what is
    mapped writable, :func:`~foliosim.mm.gup.follow_touch`)."""
    from foliosim.mm.gup import faultin_page, follow_touch

    addr = start
    while addr < end:
        vma = mm.vma_at(addr)
        if vma is None:
            return ENOMEM
        if not vma.flags & (VM_READ | VM_WRITE) or (write and not vma.flags & VM_WRITE):
            return EINVAL  # incompatible permissions (madvise_populate)
        hi = min(vma.end, end)
        for a in range(addr, hi, 4096):
            r = faultin_page(s, vma, a, write)
            if r:
                return ENOMEM
            follow_touch(s, mm, a, write)
        addr = hi
    return 0


# hpage_collapse_scan_pmd / collapse_huge_page results (enum scan_result in mm/khugepaged.c)
SCAN_FAIL = "SCAN_FAIL"
SCAN_SUCCEED = "SCAN_SUCCEED"
SCAN_PMD_NONE = "SCAN_PMD_NONE"
SCAN_PMD_MAPPED = "SCAN_PMD_MAPPED"
SCAN_PAGE_COUNT = "SCAN_PAGE_COUNT"
SCAN_PAGE_LOCK = "SCAN_PAGE_LOCK"
SCAN_ALLOC_HUGE_PAGE_FAIL = "SCAN_ALLOC_HUGE_PAGE_FAIL"
# results after which madvise_collapse goes on with the next PMD (its "whitelist"); any other
# failure ends the VMA's loop
COLLAPSE_CONTINUE = frozenset({SCAN_PAGE_COUNT, SCAN_PAGE_LOCK})


def madvise_collapse_errno(result: str) -> int:
    """``madvise_collapse_errno``: the errno MADV_COLLAPSE reports for the last failure."""
    if result == SCAN_ALLOC_HUGE_PAGE_FAIL:
        return ENOMEM
    if result in (SCAN_PAGE_COUNT, SCAN_PAGE_LOCK):
        return EAGAIN
    return EINVAL


def madvise_collapse_range(s: System, mm: MM, start: int, end: int) -> int:
    """MADV_COLLAPSE through ``madvise_walk_vmas``: ``madvise_collapse`` runs on each VMA's
    part of the range in address order; the first VMA that fails ends the walk with its errno,
    a hole only makes the final result -ENOMEM (the walk goes on past it)."""
    unmapped = 0
    addr = start
    while True:
        vma = mm.find_vma(addr)
        if vma is None:
            return ENOMEM
        if addr < vma.start:
            unmapped = ENOMEM  # a gap in the range: carry on
            addr = vma.start
            if addr >= end:
                break
        hi = min(vma.end, end)
        r = madvise_collapse(s, vma, addr, hi)
        if r:
            return r
        if hi >= end:
            break
        addr = hi
    return unmapped


def madvise_collapse(s: System, vma: VMA, start: int, end: int) -> int:
    """``madvise_collapse`` on ``[start, end)`` inside one VMA: -EINVAL unless the VMA allows a
    forced collapse (``thp_vma_allowable_order(TVA_FORCED_COLLAPSE)``: not VM_NOHUGEPAGE, has an
    anon_vma, holds an aligned 2 MiB); then every aligned 2 MiB block is scanned and collapsed
    (sysfs ``enabled`` and ``max_ptes_*`` ignored). A block already mapped by a PMD (a THP or
    the huge zero folio) counts as done; a block some page of which has extra references (a pin)
    fails with SCAN_PAGE_COUNT and the loop goes on; any other failure (no page table at all:
    SCAN_PMD_NONE) ends the loop. 0 if every block is done (also when the range holds no
    aligned block but touches one boundary), else the errno of the last failure
    (``madvise_collapse_errno``)."""
    if not huge_memory.thp_vma_allowable_order(s, vma, 9, "collapse"):
        return EINVAL
    hstart = (start + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
    hend = end & ~(PMD_SIZE - 1)
    thps = 0
    last_fail = SCAN_FAIL
    # the mmap_lock is dropped after a collapse and the VMA revalidated; nothing changes the
    # VMA meanwhile here, so the revalidation always passes
    for a in range(hstart, hend, PMD_SIZE):
        result = hpage_collapse_scan_pmd(s, vma, a)
        if result in (SCAN_SUCCEED, SCAN_PMD_MAPPED):
            thps += 1
            continue
        last_fail = result
        if result not in COLLAPSE_CONTINUE:
            break
    if hend >= hstart and thps == (hend - hstart) // PMD_SIZE:
        return 0
    # hend < hstart (the range lies inside one 2 MiB block): the kernel's unsigned count of
    # blocks never matches, so it fails with the initial SCAN_FAIL
    return madvise_collapse_errno(last_fail)


def hpage_collapse_scan_pmd(s: System, vma: VMA, haddr: int) -> str:
    """``hpage_collapse_scan_pmd`` for MADV_COLLAPSE, then ``collapse_huge_page``:
    ``find_pmd_or_thp_or_none`` (a PMD leaf: SCAN_PMD_MAPPED, the huge zero PMD included as
    ``pmd_trans_huge``; no page table: SCAN_PMD_NONE), then every mapped folio must have no
    references beyond its mappings (SCAN_PAGE_COUNT); none and zero-page PTEs do not count."""
    F = s.folios
    ent = vma.mm.pmd.get(haddr >> 21)
    if isinstance(ent, PmdLeaf):
        return SCAN_PMD_MAPPED
    if ent is None:
        return SCAN_PMD_NONE
    seen: set[int] = set()
    for i in range(512):
        f = int(ent.fid[i])
        if f >= 0 and not ent.bits[i] & P_SWAP and f not in seen:
            seen.add(f)
            if int(F.ref[f]) != rmap.folio_expected_ref_count(s, f):
                return SCAN_PAGE_COUNT
    return collapse_huge_page(s, vma, haddr)


def collapse_huge_page(s: System, vma: VMA, haddr: int) -> str:
    """``collapse_huge_page``: allocate the new THP (``alloc_charge_folio``:
    ``thp_collapse_alloc`` or ``_failed``), swap in what is swapped out (from the swap cache;
    a page that must be read from the device ends the collapse with SCAN_PAGE_LOCK), copy the
    PTE-mapped pages into it and map it by one PMD; the old folios lose these mappings."""
    F = s.folios
    mm = vma.mm
    slot = haddr >> 21
    ent = mm.pmd[slot]
    new = memory.folio_alloc(s, 9)
    if new is None:
        s.vmstat.count("thp_collapse_alloc_failed")
        return SCAN_ALLOC_HUGE_PAGE_FAIL
    s.vmstat.count("thp_collapse_alloc")
    for i in range(512):  # __collapse_huge_page_swapin
        if ent.bits[i] & P_SWAP:
            if int(ent.fid[i]) not in s.swap.cache:
                # a read from the device: do_swap_page finds the new folio locked for the
                # I/O and returns VM_FAULT_RETRY (FAULT_FLAG_ALLOW_RETRY); the collapse gives
                # up, the page stays in the swap cache
                swap.swap_read_folio(s, int(ent.fid[i]))
                memory.folio_put(s, new)
                return SCAN_PAGE_LOCK
            swap.do_swap_page(s, vma, ent, haddr + (i << 12), False)
    vals = []
    for i in range(512):
        f = int(ent.fid[i])
        vals.append(F.value(f, int(ent.idx[i])) if f >= 0 else 0)
    import numpy as np

    arr = np.array(vals, np.uint64)
    if (arr == arr[0]).all():
        F.val[new] = arr[0]
    else:
        F.arrays(new).val[:] = arr
    # __collapse_huge_page_copy_succeeded: drop the old mappings, batched per folio
    i = 0
    while i < 512:
        f = int(ent.fid[i])
        if f < 0:
            ent.fid[i] = NONE
            i += 1
            continue
        n = memory.folio_pte_batch(s, ent, i, f, 512 - i)
        k = int(ent.idx[i])
        ent.fid[i:i + n] = NONE
        ent.bits[i:i + n] = 0
        mm.anon_pages -= n
        rmap.folio_remove_rmap_ptes(s, f, k, n, vma)
        swap.free_swap_cache(s, f)
        memory.folio_put(s, f, n)
        i += n
    del mm.pmd[slot]
    # always dirty, writable with VM_WRITE (maybe_pmd_mkwrite(pmd_mkdirty(...)))
    mm.pmd[slot] = PmdLeaf(new, P_DIRTY | (P_WRITE if vma.flags & VM_WRITE else 0))
    rmap.folio_add_new_anon_rmap(s, new, vma, haddr, pmd=True)
    memory.folio_add_lru_vma(s, new, vma)
    mm.anon_pages += 512
    huge_memory.deferred_split_folio(s, new, False)
    s.tracing and s.trace(f"collapsed {s.fmt_addr(mm, haddr)} into new THP {s.fname(new)} "
            "(collapse_huge_page)")
    return SCAN_SUCCEED
