"""Creating and destroying mappings, fork and exit (follows mm/mmap.c, mm/vma.c:
do_vmi_munmap, and dup_mmap / exit_mmap)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from foliosim.mm import memory
from foliosim.mm.mm_types import (
    MM,
    VM_ACCOUNT,
    VM_DONTCOPY,
    VM_LOCKED,
    VM_LOCKED_MASK,
    VM_LOCKONFAULT,
    VM_NORESERVE,
    VM_WRITE,
    VMA,
)
from foliosim.mm.mprotect import PROT_FLAGS
from foliosim.mm.vma import split_vma, try_merge_around

if TYPE_CHECKING:
    from foliosim.mm.system import System

EINVAL = -22


def do_mmap(s: System, mm: MM, addr: int, length: int, prot: str, guard: bool = False) -> VMA:
    """``do_mmap`` of private anonymous memory at a fixed address (MAP_FIXED unmaps what was
    there); mlockall(MCL_FUTURE) def_flags apply and lock-populate the new VMA."""
    flags = PROT_FLAGS[prot] | mm.def_flags
    if guard:
        flags |= VM_NORESERVE
    elif flags & VM_WRITE:
        flags |= VM_ACCOUNT
    vma = _replace_empty(s, mm, addr, length)
    if vma is not None:
        # the range was one never-faulted, unlocked VMA's with no page table: the piece cut
        # out of it becomes the new VMA (what munmap + a fresh VMA would leave)
        vma.flags, vma.pgoff, vma.guard = flags, addr >> 12, guard
    else:
        do_munmap(s, mm, addr, length)
        vma = VMA(mm, addr, addr + length, flags, addr >> 12, guard)
        mm.insert(vma)
    vma = try_merge_around(vma)
    if flags & VM_LOCKED:
        mm.locked_vm += length >> 12
        if not flags & VM_LOCKONFAULT:
            from foliosim.mm.gup import mm_populate

            mm_populate(s, mm, addr, addr + length, ignore_errors=True)
    return vma


def _replace_empty(s: System, mm: MM, addr: int, length: int) -> VMA | None:
    """The MAP_FIXED fast path of :func:`do_mmap`: when ``[addr, addr + length)`` lies in one
    VMA without anon_vma, VM_LOCKED or page tables there, unmapping it zaps nothing, so the
    piece is split out (the same VMA boundaries as munmap's) and returned for reuse; else
    None."""
    end = addr + length
    old = mm.vma_at(addr)
    if old is None or old.end < end or old.anon_vma is not None or old.flags & VM_LOCKED \
            or old.chain:
        return None
    for slot in range(addr >> 21, ((end - 1) >> 21) + 1):
        if slot in mm.pmd:
            return None
    if old.start < addr:
        old = split_vma(old, addr, "VMA boundary from munmap")
    if end < old.end:
        split_vma(old, end, "VMA boundary from munmap")
    return old


def do_munmap(s: System, mm: MM, start: int, length: int) -> int:
    """``do_vmi_munmap``: split the VMAs at the range ends, zap and remove what lies inside,
    free page tables no VMA uses any more."""
    end = start + length
    if length == 0 or start % 4096:
        return EINVAL
    vmas = mm.vmas_in(start, end)
    if not vmas:
        return 0
    if vmas[0].start < start:
        vmas[0] = split_vma(vmas[0], start, "VMA boundary from munmap")
    if vmas[-1].end > end:
        split_vma(vmas[-1], end, "VMA boundary from munmap")
    batch = memory.ZapBatch(s)
    for vma in vmas:
        memory.zap_page_range_single(s, vma, vma.start, vma.end, batch=batch)
    batch.flush()
    for vma in vmas:
        if vma.flags & VM_LOCKED:
            mm.locked_vm -= (vma.end - vma.start) >> 12
        vma.unlink_all()
        mm.remove(vma)
    memory.free_pgtables(mm, start, end)
    return 0


def exit_mmap(s: System, mm: MM) -> None:
    """``exit_mmap``: zap every VMA in address order (a folio spanning two VMAs is unmapped
    piecewise, so it can be counted as partially mapped on the way), then drop them."""
    batch = memory.ZapBatch(s)
    for vma in list(mm.vmas):
        memory.zap_page_range_single(s, vma, vma.start, vma.end, batch=batch)
    batch.flush()
    for vma in list(mm.vmas):
        vma.unlink_all()
    mm.vmas.clear()
    mm._reindex()
    mm.pmd.clear()
    mm.alive = False


def dup_mmap(s: System, parent: MM, child: MM) -> None:
    """``dup_mmap``: copy every VMA but VM_DONTCOPY ones, without VM_LOCKED/VM_LOCKONFAULT;
    each child VMA gets its own anon_vma chained to the parent's (``anon_vma_fork``); pages
    are shared by ``copy_page_range`` (gathered over all VMAs, done at once where it can)."""
    batch = memory.CopyBatch(s)
    for vma in parent.vmas:
        if vma.flags & VM_DONTCOPY:
            continue
        new = VMA(child, vma.start, vma.end, vma.flags & ~VM_LOCKED_MASK, vma.pgoff, vma.guard)
        if vma.anon_vma is not None:
            for av in vma.chain:
                new.link(av)
            own = s.new_anon_vma(parent=vma.anon_vma)
            new.anon_vma = own
            new.link(own)
        child.insert(new)
        if vma.anon_vma is not None:
            memory.copy_page_range(s, new, vma, batch)
    batch.flush()
