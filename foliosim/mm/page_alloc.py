"""A buddy allocator over simulated physical memory (follows mm/page_alloc.c in spirit:
free lists per order, split on allocation, merge with the buddy on free)."""

from __future__ import annotations

import numpy as np

MAX_PAGE_ORDER = 10


class OutOfMemory(Exception):
    """No free block of the requested order or above (``__alloc_pages`` returned NULL)."""


class BuddyAllocator:
    """Free lists of PFNs per order over ``[base_pfn, base_pfn + nr_pages)``.

    :param nr_pages: simulated RAM in 4 KiB pages (1 TiB = 2**28 pages)
    :param base_pfn: the first PFN handed out (the live kernel's PFNs start well above 0)
    """

    def __init__(self, nr_pages: int, base_pfn: int = 1 << 18) -> None:
        self.free: list[set[int]] = [set() for _ in range(MAX_PAGE_ORDER + 1)]
        self.base_pfn = base_pfn
        self.nr_pages = nr_pages
        self.nr_free = 0
        block = 1 << MAX_PAGE_ORDER
        top = nr_pages - nr_pages % block
        # Keep the free lists lazy for huge memories: untouched memory is one "frontier".
        self.frontier = base_pfn
        self.end = base_pfn + top
        self.nr_free = top
        # Small pieces beyond the last whole block are not used.

    def alloc(self, order: int) -> int:
        """Return the first PFN of a free, naturally aligned block of ``1 << order`` pages."""
        for o in range(order, MAX_PAGE_ORDER + 1):
            if self.free[o]:
                pfn = self.free[o].pop()
                break
        else:
            if self.frontier >= self.end:
                raise OutOfMemory(order)
            pfn = self.frontier
            self.frontier += 1 << MAX_PAGE_ORDER
            o = MAX_PAGE_ORDER
        while o > order:  # split, keep the lower half (expand())
            o -= 1
            self.free[o].add(pfn + (1 << o))
        self.nr_free -= 1 << order
        return pfn

    def alloc_many(self, n: int) -> list[int]:
        """``n`` order-0 pages at once (``alloc_pages_bulk``): whole blocks are taken and
        broken up, so the PFNs are mostly contiguous."""
        out: list[int] = []
        while len(out) < n:
            need = n - len(out)
            order = min(need.bit_length() - 1, MAX_PAGE_ORDER)
            pfn = self.alloc(order)
            out.extend(range(pfn, pfn + (1 << order)))
        return out

    def free_block(self, pfn: int, order: int) -> None:
        """Return a block and merge it with its free buddies (``__free_one_page``)."""
        self.nr_free += 1 << order
        self._merge(pfn, order)

    def _merge(self, pfn: int, order: int) -> None:
        """The merge loop of ``__free_one_page`` from ``order`` up, then the free-list add."""
        while order < MAX_PAGE_ORDER:
            buddy = self.base_pfn + ((pfn - self.base_pfn) ^ (1 << order))
            if buddy not in self.free[order]:
                break
            self.free[order].discard(buddy)
            pfn = min(pfn, buddy)
            order += 1
        self.free[order].add(pfn)

    def free_many(self, pfns: list[int], order: int) -> None:
        """:meth:`free_block` of each block of ``pfns`` in turn (``free_pages_bulk``-like)."""
        self.nr_free += len(pfns) << order
        merge = self._merge
        for pfn in pfns:
            merge(pfn, order)

    def free_pages_of_block(self, head: int, order: int, offsets: np.ndarray) -> None:
        """Free the order-0 pages ``head + offsets`` (ascending) of the block of ``1 << order``
        pages at ``head``, every page of which is allocated (the pages of a folio just split,
        ``__split_unmapped_folio`` then ``free_folio_and_swap_cache`` of the unused ones):
        exactly :meth:`free_block` ``(head + x, 0)`` for each ``x`` in turn, the same set
        operations on each free list in the same order (so later allocations return the same
        PFNs), computed at once.

        Inside the block a page's merge chain is known without looking at the free lists: at
        level ``k`` its block merges only when it is the upper half and the lower half is
        already wholly freed by this batch (nothing else inside the block is free), so the
        page discards the lower buddies of levels ``0 .. j-1`` and adds its level-``j`` block.
        Only the page that completes the whole block looks further, at the real free lists.
        """
        nr = 1 << order
        m = len(offsets)
        if not m:
            return
        assert (head - self.base_pfn) % nr == 0
        self.nr_free += m
        if m == nr:  # every page: the same operations for every block, kept
            plan = _WHOLE.get(order)
            if plan is None:
                plan = _WHOLE[order] = _free_plan(order, np.arange(nr, dtype=np.int64))
        else:
            plan = _free_plan(order, np.asarray(offsets, dtype=np.int64))
        counts, rel, paired, whole = plan
        keys = (head + rel).tolist()
        pos = 0
        for k, c in enumerate(counts):
            if not c:
                continue
            add, discard = self.free[k].add, self.free[k].discard
            if paired is None:  # every block added is taken off again at once
                for key in keys[pos:pos + c]:
                    add(key)
                    discard(key)
            else:
                for key, taken in zip(keys[pos:pos + c], paired[pos:pos + c], strict=True):
                    add(key)
                    if taken:
                        discard(key)
            pos += c
        if whole:  # the last page completed the whole block: merge on up
            self._merge(head, order)

    def free_pages(self) -> int:
        return self.nr_free


_WHOLE: dict[int, tuple] = {}  # the plan of freeing every page of a block, per order
_TABLES: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _tables(order: int) -> tuple[np.ndarray, np.ndarray]:
    """For offsets inside a block of ``1 << order`` pages: the number of trailing one bits
    of each offset, and floor(log2(n)) for run lengths n (index 0 unused)."""
    t = _TABLES.get(order)
    if t is None:
        nr = 1 << order
        x = np.arange(nr, dtype=np.int64)
        low = (x + 1) & -(x + 1)  # the lowest zero bit of x, as a power of two
        trail = np.zeros(nr, np.int64)
        flog = np.zeros(nr + 1, np.int64)
        for k in range(1, order + 1):
            trail[low >= (1 << k)] = k
            flog[1 << k:] = k
        t = _TABLES[order] = (trail, flog)
    return t


def _chains(order: int, x: np.ndarray) -> np.ndarray:
    """How far each page's merge goes when pages ``x`` (ascending offsets) of a wholly
    allocated block are freed in turn: page ``x`` merges up to level ``j``, the largest with
    the aligned block of ``2**j`` pages ending at ``x`` wholly freed by then (``x``'s low
    ``j`` bits all ones, the run of freed pages ending at ``x`` at least ``2**j`` long)."""
    trail, flog = _tables(order)
    m = len(x)
    idx = np.arange(m, dtype=np.int64)
    start = np.zeros(m, np.int64)
    brk = np.flatnonzero(np.diff(x) != 1) + 1  # where a run of consecutive offsets begins
    start[brk] = brk
    np.maximum.accumulate(start, out=start)
    return np.minimum(trail[x], flog[idx - start + 1])


def _free_plan(order: int, x: np.ndarray) -> tuple:
    """The free-list operations below level ``order`` of freeing pages ``x`` (ascending
    offsets) of a wholly allocated block one by one.

    Page ``x`` merging up to level ``j < order`` discards its lower buddies at levels
    ``0 .. j-1`` (blocks it added itself earlier, see below) and adds its block ``b`` (the
    ``2**j`` pages ending at ``x``) to free list ``j``. If ``b`` is a lower half and its upper
    half gets wholly freed later in the batch, the upper half's last page takes ``b`` off
    list ``j`` again, and nothing else happens on list ``j`` in between (only smaller blocks
    of the upper half complete meanwhile). So list ``k`` sees, in page order, "add ``b``"
    units, each followed at once by "discard ``b``" when ``b`` is taken.

    :returns: the number of units per list ``0 .. order-1``, their keys (relative to the
        block) grouped by list in page order, whether each is taken (None: all are), and
        whether the last page completes the whole block (its merge goes on above ``order``)
    """
    j = _chains(order, x)
    m = len(x)
    brk = np.flatnonzero(np.diff(x) != 1)  # the last index of each run but the final one
    end = np.full(m, m - 1, np.int64)
    end[brk] = brk
    run_end = x[np.minimum.accumulate(end[::-1])[::-1]]  # the last offset of x's run
    whole = int(j[-1]) == order
    if whole:
        x, j, run_end = x[:-1], j[:-1], run_end[:-1]
    size = np.left_shift(1, j)
    b = x - size + 1
    taken = ((b & size) == 0) & (run_end >= b + 2 * size - 1)
    by = np.argsort(j, kind="stable")
    counts = np.bincount(j, minlength=order).tolist()
    paired = None if taken.all() else taken[by].tolist()
    return counts, b[by], paired, whole
