"""struct mm_struct, struct vm_area_struct and struct anon_vma (include/linux/mm_types.h,
include/linux/rmap.h): the address-space objects of the model."""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from foliosim.mm.pgtable import PmdLeaf, PteTable

if TYPE_CHECKING:
    from foliosim.mm.system import System

# vm_flags (names from include/linux/mm.h; the values are the model's own)
VM_READ = 1 << 0
VM_WRITE = 1 << 1
VM_LOCKED = 1 << 2
VM_LOCKONFAULT = 1 << 3
VM_HUGEPAGE = 1 << 4
VM_NOHUGEPAGE = 1 << 5
VM_DONTCOPY = 1 << 6
VM_ACCOUNT = 1 << 7
VM_NORESERVE = 1 << 8
VM_IO = 1 << 9
VM_LOCKED_MASK = VM_LOCKED | VM_LOCKONFAULT
VM_ACCESS_FLAGS = VM_READ | VM_WRITE


class AnonVma:
    """An anon_vma: the rmap root that folios point to. ``vmas`` are the VMAs chained to it
    (through anon_vma_chain), which an rmap walk visits."""

    __slots__ = ("id", "vmas", "parent")

    def __init__(self, id: int, parent: AnonVma | None = None) -> None:
        self.id = id
        self.vmas: set[VMA] = set()
        self.parent = parent


class VMA:
    """A vm_area_struct: ``[start, end)`` with flags, ``pgoff`` (anon linear page index of
    ``start``), its own ``anon_vma`` and the chain of anon_vmas it is linked to."""

    __slots__ = ("mm", "start", "end", "flags", "pgoff", "anon_vma", "chain", "guard")

    def __init__(self, mm: MM, start: int, end: int, flags: int, pgoff: int,
                 guard: bool = False) -> None:
        self.mm = mm
        self.start = start
        self.end = end
        self.flags = flags
        self.pgoff = pgoff
        self.anon_vma: AnonVma | None = None
        self.chain: list[AnonVma] = []
        self.guard = guard

    def __repr__(self) -> str:
        return f"VMA({self.start:#x}-{self.end:#x} flags={self.flags:#x})"

    def linear_page_index(self, addr: int) -> int:
        """``linear_page_index``: the folio->index a page at ``addr`` has."""
        return ((addr - self.start) >> 12) + self.pgoff

    def address_of(self, index: int) -> int:
        """``vma_address`` of a page index (may lie outside the VMA)."""
        return self.start + ((index - self.pgoff) << 12)

    @property
    def locked(self) -> bool:
        return bool(self.flags & VM_LOCKED)

    def link(self, av: AnonVma) -> None:
        self.chain.append(av)
        av.vmas.add(self)

    def unlink_all(self) -> None:
        for av in self.chain:
            av.vmas.discard(self)
        self.chain = []


class MM:
    """An mm_struct: VMAs sorted by address, page tables per 2 MiB slot, and counters."""

    def __init__(self, sys: System, mm_id: int, name: str) -> None:
        self.sys = sys
        self.id = mm_id
        self.name = name
        self.vmas: list[VMA] = []
        self._starts: list[int] = []
        self.pmd: dict[int, PmdLeaf | PteTable] = {}
        self.def_flags = 0
        self.has_pinned = False      # MMF_HAS_PINNED
        self.locked_vm = 0           # pages
        self.pinned_vm = 0           # pages
        self.anon_pages = 0          # MM_ANONPAGES
        self.swap_ents = 0           # MM_SWAPENTS
        self.alive = True

    # -- the VMA tree ---------------------------------------------------------------------
    def _reindex(self) -> None:
        self._starts = [v.start for v in self.vmas]

    def insert(self, vma: VMA) -> None:
        i = bisect.bisect_left(self._starts, vma.start)
        self.vmas.insert(i, vma)
        self._starts.insert(i, vma.start)

    def _index(self, vma: VMA) -> int:
        """Position of ``vma`` in the tree (by its start; VMAs never overlap)."""
        i = bisect.bisect_left(self._starts, vma.start)
        if i < len(self.vmas) and self.vmas[i] is vma:
            return i
        return self.vmas.index(vma)  # a start being changed right now: fall back

    def remove(self, vma: VMA) -> None:
        i = self._index(vma)
        del self.vmas[i]
        del self._starts[i]

    def find_vma(self, addr: int) -> VMA | None:
        """``find_vma``: the first VMA with ``end > addr``."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and self.vmas[i].end > addr:
            return self.vmas[i]
        if i + 1 < len(self.vmas):
            return self.vmas[i + 1]
        return None

    def vma_at(self, addr: int) -> VMA | None:
        """The VMA containing ``addr``, or None (``vma_lookup``)."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and self.vmas[i].end > addr:
            return self.vmas[i]
        return None

    def vmas_in(self, start: int, end: int) -> list[VMA]:
        """VMAs overlapping ``[start, end)`` in address order."""
        i = max(bisect.bisect_right(self._starts, start) - 1, 0)
        out = []
        while i < len(self.vmas) and self.vmas[i].start < end:
            if self.vmas[i].end > start:
                out.append(self.vmas[i])
            i += 1
        return out

    def neighbours(self, vma: VMA) -> tuple[VMA | None, VMA | None]:
        i = self._index(vma)
        prev = self.vmas[i - 1] if i > 0 else None
        nxt = self.vmas[i + 1] if i + 1 < len(self.vmas) else None
        return prev, nxt
