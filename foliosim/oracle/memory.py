"""What a process must read at every address, from the syscalls alone: the expected content of
each mapped page, kept per 2 MiB slot in 512-entry arrays (value, page identity, whether
MADV_FREE allows it to read as zero, whether fork skips it).

A page's *identity* stands for the memory behind the address as the program sees it: it is
created by mmap (or by MADV_DONTNEED, which replaces the page by a fresh zero page), moves with
mremap, is not inherited by a fork child (the child gets a copy with a new identity), and is
what a pin holds: a device writing through a pin changes every page with the pinned identities.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ExpectedMemory", "PageRun"]

NPTE = 512


@dataclass
class _Slot:
    val: np.ndarray = field(default_factory=lambda: np.zeros(NPTE, np.uint64))
    ident: np.ndarray = field(default_factory=lambda: np.zeros(NPTE, np.int64))  # 0: unmapped
    lazy: np.ndarray = field(default_factory=lambda: np.zeros(NPTE, bool))
    nofork: np.ndarray = field(default_factory=lambda: np.zeros(NPTE, bool))

    def copy(self) -> _Slot:
        return _Slot(self.val.copy(), self.ident.copy(), self.lazy.copy(), self.nofork.copy())


@dataclass
class PageRun:
    """The expected state of consecutive pages, as :meth:`ExpectedMemory.take` returns it."""

    val: np.ndarray
    ident: np.ndarray
    lazy: np.ndarray
    nofork: np.ndarray


class ExpectedMemory:
    """The expected memory of one process.

    :param new_idents: hands out fresh page identities (shared by all processes of a run)
    """

    def __init__(self, new_idents: _IdentSource) -> None:
        self.slots: dict[int, _Slot] = {}
        self._ids = new_idents

    # -- iteration ------------------------------------------------------------------------
    def _segments(self, start: int, end: int, create: bool
                  ) -> Iterator[tuple[_Slot, int, int, int]]:
        """``(slot state, first index, end index, offset of the segment in the range in
        pages)`` over ``[start, end)``; slots never mapped are skipped unless ``create``."""
        addr = start
        while addr < end:
            slot = addr >> 21
            nxt = min((slot + 1) << 21, end)
            st = self.slots.get(slot)
            if st is None and create:
                st = self.slots[slot] = _Slot()
            if st is not None:
                i0 = (addr >> 12) & (NPTE - 1)
                yield st, i0, i0 + ((nxt - addr) >> 12), (addr - start) >> 12
            addr = nxt

    def items(self) -> Iterator[tuple[int, _Slot]]:
        return iter(self.slots.items())

    # -- the syscalls' effects --------------------------------------------------------------
    def map_fresh(self, start: int, end: int) -> None:
        """mmap: new zero-filled pages."""
        for st, i0, i1, _ in self._segments(start, end, True):
            st.val[i0:i1] = 0
            st.ident[i0:i1] = self._ids(i1 - i0)
            st.lazy[i0:i1] = False
            st.nofork[i0:i1] = False

    def unmap(self, start: int, end: int) -> None:
        """munmap (or the source of mremap)."""
        for st, i0, i1, _ in self._segments(start, end, False):
            st.ident[i0:i1] = 0

    def write(self, start: int, end: int, value: int) -> None:
        """A store to every page of the range."""
        for st, i0, i1, _ in self._segments(start, end, False):
            m = st.ident[i0:i1] != 0
            st.val[i0:i1][m] = value
            st.lazy[i0:i1][m] = False

    def discard(self, start: int, end: int) -> None:
        """MADV_DONTNEED: mapped pages become fresh zero pages."""
        for st, i0, i1, _ in self._segments(start, end, False):
            m = st.ident[i0:i1] != 0
            st.val[i0:i1][m] = 0
            st.ident[i0:i1][m] = self._ids(int(m.sum()))
            st.lazy[i0:i1][m] = False

    def lazyfree(self, start: int, end: int) -> None:
        """MADV_FREE: until the next store a page may read as its value or as zero."""
        for st, i0, i1, _ in self._segments(start, end, False):
            st.lazy[i0:i1] |= st.ident[i0:i1] != 0

    def set_nofork(self, start: int, end: int, on: bool) -> None:
        """MADV_DONTFORK / MADV_DOFORK."""
        for st, i0, i1, _ in self._segments(start, end, False):
            st.nofork[i0:i1] = on & (st.ident[i0:i1] != 0)

    def take(self, start: int, end: int) -> PageRun:
        """The expected state of ``[start, end)`` (unmapped pages have identity 0)."""
        n = (end - start) >> 12
        run = PageRun(np.zeros(n, np.uint64), np.zeros(n, np.int64), np.zeros(n, bool),
                      np.zeros(n, bool))
        for st, i0, i1, off in self._segments(start, end, False):
            k = off + i1 - i0
            run.val[off:k] = st.val[i0:i1]
            run.ident[off:k] = st.ident[i0:i1]
            run.lazy[off:k] = st.lazy[i0:i1]
            run.nofork[off:k] = st.nofork[i0:i1]
        return run

    def put(self, start: int, run: PageRun) -> None:
        """Place ``run`` at ``start`` (the destination of mremap)."""
        end = start + (len(run.val) << 12)
        for st, i0, i1, off in self._segments(start, end, True):
            k = off + i1 - i0
            st.val[i0:i1] = run.val[off:k]
            st.ident[i0:i1] = run.ident[off:k]
            st.lazy[i0:i1] = run.lazy[off:k]
            st.nofork[i0:i1] = run.nofork[off:k]

    def fork(self) -> ExpectedMemory:
        """The child's memory: a copy of every page fork does not skip, with new identities."""
        child = ExpectedMemory(self._ids)
        for slot, st in self.slots.items():
            c = st.copy()
            keep = (c.ident != 0) & ~c.nofork
            c.ident[:] = 0
            c.ident[keep] = self._ids(int(keep.sum()))
            child.slots[slot] = c
        return child

    def idents(self, start: int, end: int) -> np.ndarray:
        """Identities of the mapped pages of ``[start, end)``."""
        ids = self.take(start, end).ident
        return ids[ids != 0]

    def device_write(self, idents: np.ndarray, value: int) -> None:
        """A device wrote ``value`` into the pages with these identities."""
        for st in self.slots.values():
            m = np.isin(st.ident, idents)
            if m.any():
                st.val[m] = value


class _IdentSource:
    """Hands out page identities ``1, 2, ...``."""

    def __init__(self) -> None:
        self.next = 1

    def __call__(self, n: int) -> np.ndarray:
        out = np.arange(self.next, self.next + n, dtype=np.int64)
        self.next += n
        return out
