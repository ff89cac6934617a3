"""mprotect(2) (follows mm/mprotect.c: mprotect_fixup, change_protection)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from foliosim.mm import huge_memory
from foliosim.mm.mm_types import MM, VM_ACCOUNT, VM_LOCKED, VM_NORESERVE, VM_READ, VM_WRITE, VMA
from foliosim.mm.pgtable import P_SWAP, P_WRITE, PMD_SIZE, PmdLeaf, PteTable
from foliosim.mm.vma import vma_modify_flags

if TYPE_CHECKING:
    from foliosim.mm.system import System

PROT_FLAGS = {"rw": VM_READ | VM_WRITE, "r": VM_READ, "none": 0}


def do_mprotect(s: System, mm: MM, start: int, length: int, prot: str) -> int:
    """``do_mprotect_pkey``: -ENOMEM when the range has a hole (after the VMAs before it
    were changed)."""
    end = start + length
    if length == 0:
        return 0
    addr = start
    for vma in list(mm.vmas_in(start, end)):
        if vma.start > addr:
            return -12
        lo, hi = max(addr, vma.start), min(end, vma.end)
        mprotect_fixup(s, vma, lo, hi, (vma.flags & ~(VM_READ | VM_WRITE)) | PROT_FLAGS[prot])
        addr = hi
    return 0 if addr >= end else -12


def mprotect_fixup(s: System, vma: VMA, start: int, end: int, newflags: int) -> None:
    """``mprotect_fixup``: a private mapping made writable is charged (VM_ACCOUNT); one made
    unwritable gives the charge back (loses VM_ACCOUNT) only while it has no anon_vma yet, so
    a never-faulted PROT_NONE'd VMA has the flags of a PROT_NONE mapping and can merge with
    one. The VMA is split or merged, then the page tables follow (``change_protection``); a
    private VM_LOCKED VMA becoming writable is populated (``populate_vma_page_range``, which
    does nothing for VM_LOCKONFAULT)."""
    if newflags & VM_WRITE:
        if not vma.flags & (VM_ACCOUNT | VM_WRITE | VM_NORESERVE):
            newflags |= VM_ACCOUNT
    elif vma.flags & VM_ACCOUNT and vma.anon_vma is None:
        newflags &= ~VM_ACCOUNT
    if newflags == vma.flags:
        return
    oldflags = vma.flags
    vma = vma_modify_flags(vma, start, end, newflags, "VMA boundary from mprotect")
    change_protection(s, vma, start, end)
    if (oldflags & (VM_WRITE | VM_LOCKED)) == VM_LOCKED and newflags & VM_WRITE:
        # private VM_LOCKED VMA becoming writable: populate to avoid a fault on access
        from foliosim.mm.gup import populate_vma_page_range

        populate_vma_page_range(s, vma, start, end)


def change_protection(s: System, vma: VMA, start: int, end: int) -> None:
    """``change_pmd_range`` / ``change_pte_range``: a whole PMD keeps its mapping, a partial
    one is split; write permission is restored only on exclusive anon pages
    (``can_change_pte_writable``)."""
    mm = vma.mm
    F = s.folios
    writable = bool(vma.flags & VM_WRITE)
    addr = start
    while addr < end:
        slot = addr >> 21
        nxt = min((slot + 1) << 21, end)
        ent = mm.pmd.get(slot)
        if isinstance(ent, PmdLeaf):
            if nxt - addr == PMD_SIZE:
                huge_memory.change_huge_pmd(s, vma, ent, writable)
                addr = nxt
                continue
            huge_memory.split_huge_pmd(s, vma, slot, "partial mprotect (change_pmd_range)")
            ent = mm.pmd[slot]
        if isinstance(ent, PteTable):
            i0 = (addr >> 12) & 511
            i1 = i0 + ((nxt - addr) >> 12)
            fid, bits = ent.fid[i0:i1], ent.bits[i0:i1]
            present = (fid >= 0) & ((bits & P_SWAP) == 0)
            if not writable:
                bits[present] &= 0xFF ^ P_WRITE
            else:
                pos = np.flatnonzero(present)
                pae = F.pae_many(fid[pos], ent.idx[i0:i1][pos])
                bits[pos[pae]] |= P_WRITE
        addr = nxt
