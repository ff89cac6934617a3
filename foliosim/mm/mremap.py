"""mremap(2) with MREMAP_MAYMOVE | MREMAP_FIXED (follows mm/mremap.c: mremap_to, move_vma,
move_page_tables)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from foliosim.mm import huge_memory
from foliosim.mm.mm_types import MM, VM_LOCKED, VMA
from foliosim.mm.pgtable import PMD_SIZE, PmdLeaf, PteTable
from foliosim.mm.vma import split_vma, try_merge_around

if TYPE_CHECKING:
    from foliosim.mm.system import System

EINVAL, EFAULT, ENOMEM = -22, -14, -12


def do_mremap(s: System, mm: MM, src: int, old_len: int, new_len: int, dst: int) -> int:
    """``do_mremap`` with MREMAP_MAYMOVE | MREMAP_FIXED. ``check_mremap_params``: a zero new
    length or overlapping ranges are -EINVAL. Same length (``vrm_move_only``):
    ``remap_move``. Otherwise the range must start in a VMA (``vma_lookup``) and
    ``check_prep_vma`` wants the part that is kept (``new_len`` when shrinking, the whole
    ``old_len`` when growing) inside that VMA, else -EFAULT; ``mremap_to`` then unmaps the
    destination, a shrink unmaps the source's tail first (``shrink_vma``, across any VMAs and
    holes) and the rest moves as one VMA (``move_vma``); growing an mlocked VMA populates the
    new tail (``populate_expand``)."""
    if new_len == 0:
        return EINVAL
    if dst < src + old_len and src < dst + new_len:
        return EINVAL  # vrm_overlaps
    if new_len == old_len:
        return remap_move(s, mm, src, old_len, dst)
    vma = mm.vma_at(src)
    if vma is None:
        return EFAULT
    if old_len == 0:
        return EINVAL  # duplicating a private mapping
    kept = min(old_len, new_len)
    if kept > vma.end - src:
        return EFAULT  # we can't remap across the end of VMAs
    from foliosim.mm.mmap import do_munmap

    do_munmap(s, mm, dst, new_len)
    if new_len < old_len:
        do_munmap(s, mm, src + new_len, old_len - new_len)  # shrink_vma
        old_len = new_len
    vma = mm.vma_at(src)  # unmapping the destination may have split the source's VMA
    if vma is None:
        return EFAULT
    new = move_vma(s, vma, src, src + old_len, dst, new_len - old_len)
    if new_len > old_len and new.flags & VM_LOCKED:
        from foliosim.mm.gup import mm_populate

        mm_populate(s, mm, dst + old_len, dst + new_len, ignore_errors=True)
    return 0


def remap_move(s: System, mm: MM, src: int, length: int, dst: int) -> int:
    """``remap_move``: move every VMA of ``[src, src + length)`` (split as needed), each to the
    same offset from ``dst`` as it had from ``src``; only a hole at the start of the range is
    -EFAULT (as is a range without any VMA): holes further on are skipped and their places at
    the destination keep what was mapped there, since only each moved VMA's own destination
    range is unmapped (``mremap_to`` per VMA)."""
    from foliosim.mm.mmap import do_munmap

    end = src + length
    pieces = mm.vmas_in(src, end)
    if not pieces or pieces[0].start > src:
        return EFAULT
    for vma in pieces:
        lo, hi = max(src, vma.start), min(end, vma.end)
        to = dst + (lo - src)
        do_munmap(s, mm, to, hi - lo)
        cur = mm.vma_at(lo)
        if cur is None:
            return EFAULT
        move_vma(s, cur, lo, hi, to, 0)
    return 0


def move_vma(s: System, vma: VMA, lo: int, hi: int, dst: int, extra: int) -> VMA:
    """``move_vma``: split off ``[lo, hi)``, give it a new VMA at ``dst`` (same flags, pgoff,
    anon_vma: ``copy_vma``), move the page tables, unmap the old range."""
    from foliosim.mm.mmap import do_munmap

    mm = vma.mm
    if vma.start < lo:
        vma = split_vma(vma, lo, "VMA boundary from mremap")
    if hi < vma.end:
        split_vma(vma, hi, "VMA boundary from mremap")
    # copy_vma: a never-faulted anonymous VMA takes the pgoff of its new place, so it can
    # merge there
    pgoff = vma.pgoff if vma.anon_vma is not None else dst >> 12
    new = VMA(mm, dst, dst + (hi - lo) + extra, vma.flags, pgoff, vma.guard)
    new.anon_vma = vma.anon_vma
    for av in vma.chain:
        new.link(av)
    mm.insert(new)
    move_page_tables(s, vma, new, lo, dst, hi - lo)
    if new.flags & VM_LOCKED:
        mm.locked_vm += (new.end - new.start) >> 12  # vrm_stat_account
    do_munmap(s, mm, lo, hi - lo)  # takes the old range's pages off locked_vm
    new = try_merge_around(new)
    s.tracing and s.trace(f"moved {s.fmt_addr(mm, lo)} to {s.fmt_addr(mm, dst)} (move_vma)")
    return new


def move_page_tables(s: System, old: VMA, new: VMA, src: int, dst: int, length: int) -> None:
    """``move_page_tables``: a PMD moves whole only for a full, aligned 2 MiB extent on both
    sides (``move_huge_pmd``); otherwise it is split and PTEs move one by one (no rmap change,
    so nothing is seen as partially mapped)."""
    mm = old.mm
    done = 0
    while done < length:
        a, b = src + done, dst + done
        extent = min(PMD_SIZE - (a % PMD_SIZE), PMD_SIZE - (b % PMD_SIZE), length - done)
        ent = mm.pmd.get(a >> 21)
        if isinstance(ent, PmdLeaf):
            if extent == PMD_SIZE:
                del mm.pmd[a >> 21]
                mm.pmd[b >> 21] = ent
                done += extent
                continue
            huge_memory.split_huge_pmd(s, old, a >> 21, "partial mremap (move_page_tables)")
            ent = mm.pmd[a >> 21]
        if isinstance(ent, PteTable):
            if extent == PMD_SIZE and b >> 21 not in mm.pmd:
                del mm.pmd[a >> 21]
                mm.pmd[b >> 21] = ent  # move_normal_pmd
                done += extent
                continue
            dpt = mm.pmd.get(b >> 21)
            if dpt is None or isinstance(dpt, PmdLeaf):
                dpt = PteTable()
                mm.pmd[b >> 21] = dpt
            i, j, n = (a >> 12) & 511, (b >> 12) & 511, extent >> 12
            dpt.fid[j:j + n] = ent.fid[i:i + n]
            dpt.set_idx(slice(j, j + n), ent.idx[i:i + n])
            dpt.bits[j:j + n] = ent.bits[i:i + n]
            ent.fid[i:i + n] = -1
            ent.bits[i:i + n] = 0
        done += extent
