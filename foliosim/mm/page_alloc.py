"""A buddy allocator over simulated physical memory (follows mm/page_alloc.c in spirit:
free lists per order, split on allocation, merge with the buddy on free)."""

from __future__ import annotations

import operator

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
        self._whole_ops: dict[int, tuple] = {}
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
        if m == nr:  # the whole block: the same operations every time, kept
            ops = self._whole_ops.get(order)
            if ops is None:
                ops = self._whole_ops[order] = _block_ops(order, np.arange(nr, dtype=np.int64))
        else:
            ops = _block_ops(order, np.asarray(offsets, dtype=np.int64))
        pick, rel, whole = ops
        if pick is not None:
            table = []
            for st in self.free[:order]:
                table += (st.discard, st.add)
            for meth, key in zip(pick(table), (head + rel).tolist(), strict=True):
                meth(key)
        if whole:  # the last page completed the whole block: merge on up
            self._merge(head, order)

    def free_pages(self) -> int:
        return self.nr_free


def _block_ops(order: int, x: np.ndarray) -> tuple:
    """The free-list operations of freeing pages ``x`` (ascending offsets) of a wholly
    allocated block of ``1 << order`` pages one by one, below level ``order``: a picker of the
    set methods (``discard``/``add`` of free list ``k`` at ``2k``/``2k+1`` of a table), the
    keys relative to the block, and whether the last page completes the block."""
    m = len(x)
    full = np.zeros(1 << order, bool)
    full[x] = True
    j = np.zeros(m, np.int64)
    going = np.ones(m, bool)
    for k in range(order):
        blk = x >> k
        going &= (blk & 1).astype(bool) & full[np.maximum(blk - 1, 0)]
        if not going.any():
            break
        j += going
        full = full.reshape(-1, 2).all(axis=1)  # the wholly freed blocks of level k + 1
    codes, rel = [], []
    for k in range(min(order, int(j.max()) + 1)):
        sel = j >= k
        xs = x[sel] >> k
        add = j[sel] == k
        codes.append(2 * k + add)
        rel.append(np.where(add, xs, xs - 1) << k)
    whole = int(j[-1]) == order
    if not codes:
        return None, None, whole
    c = np.concatenate(codes).tolist()
    pick = operator.itemgetter(*c) if len(c) > 1 else (lambda t, i=c[0]: (t[i],))
    return pick, np.concatenate(rel), whole
