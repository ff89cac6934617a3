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
        """Return the first PFN of a free, naturally aligned block of ``1 << order`` pages
        (one :meth:`alloc_upto`)."""
        got = self.alloc_upto(order, 1)
        if not got:
            raise OutOfMemory(order)
        return got[0]

    def alloc_many(self, n: int) -> np.ndarray:
        """``n`` order-0 pages at once (``alloc_pages_bulk``): whole blocks are taken and
        broken up, so the PFNs are mostly contiguous (an int64 array). All or nothing: raises
        :class:`OutOfMemory`, taking no page, when fewer than ``n`` pages are free (any free
        block yields order-0 pages, so ``nr_free >= n`` is enough)."""
        if n > self.nr_free:
            raise OutOfMemory(0)
        runs: list[np.ndarray] = []
        got = 0
        while got < n:
            order = min((n - got).bit_length() - 1, MAX_PAGE_ORDER)
            while True:
                try:
                    pfn = self.alloc(order)
                    break
                except OutOfMemory:  # fragmented: smaller blocks (order 0 always succeeds)
                    order -= 1
            runs.append(np.arange(pfn, pfn + (1 << order), dtype=np.int64))
            got += 1 << order
        if len(runs) == 1:
            return runs[0]
        return np.concatenate(runs) if runs else np.zeros(0, np.int64)

    def alloc_upto(self, order: int, n: int) -> list[int]:
        """Up to ``n`` blocks of ``order``, one after the other, stopping at the first that
        cannot be had (which changes nothing): each from the smallest free block of ``order``
        or above, else from the untouched frontier, split down keeping the lower half
        (``__rmqueue_smallest`` / ``expand``)."""
        out: list[int] = []
        free, top = self.free, MAX_PAGE_ORDER
        for _ in range(n):
            o = order
            while o <= top and not free[o]:
                o += 1
            if o <= top:
                pfn = free[o].pop()
            elif self.frontier < self.end:
                pfn, o = self.frontier, top
                self.frontier += 1 << top
            else:
                break
            while o > order:  # split, keep the lower half (expand())
                o -= 1
                free[o].add(pfn + (1 << o))
            out.append(pfn)
        self.nr_free -= len(out) << order
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

    def free_many(self, pfns: list[int] | np.ndarray, order: int) -> None:
        """:meth:`free_block` of each block of ``pfns`` (``free_pages_bulk``-like). Buddy
        merging is confluent, so the free lists end the same whatever the order of the
        frees: a level at a time, the blocks whose buddy is freed too or already free merge
        one order up, the others join the free list of their order. (As with
        :meth:`free_pages_of_block`, the sets' iteration order may differ from freeing one
        by one.)"""
        n = len(pfns)
        if n < 16:
            self.nr_free += n << order
            for pfn in pfns.tolist() if isinstance(pfns, np.ndarray) else pfns:
                self._merge(pfn, order)
            return
        cur = np.sort(np.asarray(pfns, np.int64), kind="stable")  # mostly in order already
        assert (np.diff(cur) > 0).all(), "a block freed twice"
        self.nr_free += n << order
        base = self.base_pfn
        for k in range(order, MAX_PAGE_ORDER):
            if not len(cur):
                return
            size = 1 << k
            rel = cur - base
            buddy = base + (rel ^ size)
            lower = (rel & size) == 0
            # in sorted order a block's buddy, if freed too, is its neighbour
            paired = np.zeros(len(cur), bool)
            paired[:-1] = lower[:-1] & (cur[1:] == buddy[:-1])
            paired[1:] |= ~lower[1:] & (cur[:-1] == buddy[1:])
            lone = np.flatnonzero(~paired)
            up = cur[paired & lower]  # the lower half of each freed pair
            if len(lone):
                fk = self.free[k]
                lb = buddy[lone].tolist()
                hit = np.fromiter((b in fk for b in lb), bool, len(lb))
                if hit.any():
                    fk.difference_update(buddy[lone[hit]].tolist())
                    up = np.union1d(up, np.minimum(cur[lone[hit]], buddy[lone[hit]]))
                fk.update(cur[lone[~hit]].tolist())
            cur = up
        self.free[MAX_PAGE_ORDER].update(cur.tolist())

    def free_pages_of_block(self, head: int, order: int, offsets: np.ndarray) -> None:
        """Free the order-0 pages ``head + offsets`` (increasing) of the block of
        ``1 << order`` pages at ``head``, every page of which is allocated (the pages of a folio
        just split, ``__split_unmapped_folio`` then ``free_folio_and_swap_cache`` of the unused
        ones).

        Freeing them one by one (:meth:`free_block`) merges each with its free buddies; the
        free lists it leaves are the freed pages cut into maximal aligned blocks, whatever
        the order of the frees (buddy merging is confluent), and nothing else in the block is
        free. So those blocks are added at once; only a wholly freed block merges on above
        ``order``. (The sets' iteration order, hence which PFN a later allocation takes, may
        differ from one-by-one freeing; PFNs are only ever compared relatively.)"""
        nr = 1 << order
        m = len(offsets)
        if not m:
            return
        assert (head - self.base_pfn) % nr == 0
        self.nr_free += m
        if m == nr:
            self._merge(head, order)
            return
        # the runs of consecutive freed pages, each cut greedily into aligned blocks: a block
        # the greedy cut leaves has its buddy partly outside the run, so it is maximal
        offs = np.asarray(offsets, np.int64)
        d = np.diff(offs)
        assert (d > 0).all(), "offsets must increase"
        brk = np.flatnonzero(d != 1)
        if len(brk) < 32:
            starts = [int(offs[0]), *(offs[brk + 1]).tolist()]
            ends = [*(offs[brk] + 1).tolist(), int(offs[-1]) + 1]
            add: list[list[int]] = [[] for _ in range(order)]
            for a, b in zip(starts, ends, strict=True):
                while a < b:
                    k = min((a & -a).bit_length() - 1 if a else order, (b - a).bit_length() - 1)
                    add[k].append(head + a)
                    a += 1 << k
            for k, pfns in enumerate(add):
                if pfns:
                    self.free[k].update(pfns)
            return
        full = np.zeros(nr, bool)
        full[offs] = True
        for k in range(order):
            pairs = full.reshape(-1, 2)
            up = pairs[:, 0] & pairs[:, 1]  # the wholly freed blocks one level up
            top = np.flatnonzero((pairs & ~up[:, None]).ravel())
            if len(top):
                self.free[k].update((head + (top << k)).tolist())
            if not up.any():
                break
            full = up

    def free_pages(self) -> int:
        return self.nr_free
