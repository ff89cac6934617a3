"""Page tables of one mm: per 2 MiB slot nothing, a PMD leaf, or a PTE table of 512 entries
held in numpy arrays (follows the x86_64 pmd/pte layout of arch/x86 and include/linux/pgtable.h).
"""

from __future__ import annotations

import numpy as np

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PMD_SHIFT = 21
PMD_SIZE = 1 << PMD_SHIFT
PTRS_PER_PTE = 512
HPAGE_PMD_ORDER = 9
HPAGE_PMD_NR = 512

# PTE/PMD bits
P_WRITE = 1
P_DIRTY = 2
P_SWAP = 4       # a swap entry; ``fid`` holds the swap slot
P_YOUNG = 8

NONE = -1


# The page indexes of a table that has only mapped order-0 folios (or nothing): all zero,
# shared read-only by every such table (a write into it raises) until one gets a large folio.
NO_IDX = np.zeros(PTRS_PER_PTE, np.int16)
NO_IDX.flags.writeable = False


class PteTable:
    """One PTE page table: ``fid`` is the folio id (-1 none, ZERO_FID the zero page, or the swap
    slot when ``bits & P_SWAP``), ``idx`` the page within the folio, ``bits`` the PTE bits.

    ``idx`` is :data:`NO_IDX` until a page of a large folio is mapped here: write it with
    :meth:`set_idx` / :meth:`clear_idx` (saves 1 KiB a table of small pages)."""

    __slots__ = ("fid", "idx", "bits")

    def __init__(self) -> None:
        self.fid = np.full(PTRS_PER_PTE, NONE, np.int32)
        self.idx = NO_IDX
        self.bits = np.zeros(PTRS_PER_PTE, np.uint8)

    @classmethod
    def of(cls, fid: np.ndarray, idx: np.ndarray, bits: np.ndarray) -> PteTable:
        """A table holding copies of the given 512 entries."""
        t = cls.__new__(cls)
        t.fid = fid.astype(np.int32)
        t.idx = idx.astype(np.int16) if idx is not NO_IDX and idx.any() else NO_IDX
        t.bits = bits.astype(np.uint8)
        return t

    def set_idx(self, key: int | slice | np.ndarray, v: object) -> None:
        """``idx[key] = v``, giving the table its own page indexes on the first non-zero
        (``v`` may be :data:`NO_IDX`: all zero)."""
        if v is NO_IDX:
            self.clear_idx(key)
            return
        if self.idx is NO_IDX:
            if not np.any(v):
                return
            self.idx = np.zeros(PTRS_PER_PTE, np.int16)
        self.idx[key] = v

    def clear_idx(self, key: int | slice | np.ndarray) -> None:
        """``idx[key] = 0`` (an order-0 folio, the zero page, a swap entry or none)."""
        if self.idx is not NO_IDX:
            self.idx[key] = 0

    def empty(self) -> bool:
        return bool((self.fid == NONE).all())


class PmdLeaf:
    """A PMD mapping a whole order-9 folio (or the huge zero folio)."""

    __slots__ = ("fid", "bits")

    def __init__(self, fid: int, bits: int) -> None:
        self.fid = fid
        self.bits = bits


def pmd_index(addr: int) -> int:
    return addr >> PMD_SHIFT


def pte_index(addr: int) -> int:
    return (addr >> PAGE_SHIFT) & (PTRS_PER_PTE - 1)
