"""VMA split and merge (follows mm/vma.c: __split_vma, vma_modify_flags, the is_mergeable_*
predicates, and mm/rmap.c:anon_vma_prepare)."""

from __future__ import annotations

from foliosim.mm import huge_memory
from foliosim.mm.mm_types import VM_ACCESS_FLAGS, VMA, AnonVma
from foliosim.mm.pgtable import PMD_SIZE

# Flags ignored when deciding whether two VMAs may merge (VM_SOFTDIRTY in the kernel).
VM_IGNORE_MERGE = 0


def vma_adjust_trans_huge(vma: VMA, addr: int, reason: str) -> None:
    """``vma_adjust_trans_huge``: a new VMA boundary at an address that is not 2 MiB aligned
    splits the PMD mapping that straddles it (``split_huge_pmd_if_needed``)."""
    if addr % PMD_SIZE and (addr >> 21) in vma.mm.pmd:  # else nothing there to split
        s = vma.mm.sys
        if s.tracing:
            reason = (f"{reason} at {s.fmt_addr(vma.mm, addr)} "
                      "(split_huge_pmd via vma_adjust_trans_huge)")
        huge_memory.split_huge_pmd_address(vma, addr, reason)


def split_vma(vma: VMA, addr: int, reason: str) -> VMA:
    """``__split_vma``: cut ``vma`` at ``addr``; returns the new upper VMA ``[addr, end)``.

    The new VMA shares the anon_vma chain, so the rmap still finds folios on both sides.
    Then the policy's ``vma_cut`` hook runs (a VMA boundary appeared at ``addr``, after the
    PMD split).
    """
    mm = vma.mm
    assert vma.start < addr < vma.end
    vma_adjust_trans_huge(vma, addr, reason)
    new = VMA(mm, addr, vma.end, vma.flags, vma.pgoff + ((addr - vma.start) >> 12), vma.guard)
    new.anon_vma = vma.anon_vma
    for av in vma.chain:
        new.link(av)
    vma.end = addr
    mm.insert(new)
    s = mm.sys
    if s.tracing:
        s.trace(f"VMA split at {s.fmt_addr(mm, addr)}: {reason} (__split_vma)")
    s.policy.vma_cut(s, vma, new, addr, reason)
    return new


def _had_uncowed_parents(vma: VMA | None) -> bool:
    """``vma_had_uncowed_parents``: an anon_vma chain longer than one (inherited at fork)."""
    return vma is not None and vma.anon_vma is not None and len(vma.chain) != 1


def is_mergeable_anon_vma(src: VMA, tgt: VMA) -> bool:
    """``is_mergeable_anon_vma``: one side without an anon_vma may adopt the other's, unless it
    came from fork; otherwise both must already share one."""
    if tgt.anon_vma is None and src.anon_vma is not None:
        return not _had_uncowed_parents(src)
    if tgt.anon_vma is not None and src.anon_vma is None:
        return not _had_uncowed_parents(tgt)
    return src.anon_vma is tgt.anon_vma


def can_merge(prev: VMA, nxt: VMA) -> bool:
    """Adjacent, same flags, linear pgoff, compatible anon_vma (``can_vma_merge_after``)."""
    return (prev.end == nxt.start and prev.guard == nxt.guard
            and (prev.flags & ~VM_IGNORE_MERGE) == (nxt.flags & ~VM_IGNORE_MERGE)
            and prev.pgoff + ((prev.end - prev.start) >> 12) == nxt.pgoff
            and is_mergeable_anon_vma(nxt, prev))


def merge(prev: VMA, nxt: VMA) -> VMA:
    """Fold ``nxt`` into ``prev`` (``commit_merge``); the survivor adopts an anon_vma if needed."""
    mm = prev.mm
    if prev.anon_vma is None and nxt.anon_vma is not None:
        prev.anon_vma = nxt.anon_vma
        for av in nxt.chain:
            prev.link(av)
    prev.end = nxt.end
    nxt.unlink_all()
    mm.remove(nxt)
    if mm.sys.tracing:
        mm.sys.trace(f"VMAs merged at {mm.sys.fmt_addr(mm, nxt.start)} (commit_merge)")
    return prev


def try_merge_around(vma: VMA) -> VMA:
    """Merge ``vma`` with its neighbours where the kernel would (``vma_merge_existing_range``,
    ``vma_merge_new_range``): each side must be mergeable with ``vma``; when both are, the
    right one only if the two neighbours' anon_vmas are compatible with each other too
    (``can_vma_merge_right``), else ``vma`` joins the left one alone."""
    mm = vma.mm
    prev, nxt = mm.neighbours(vma)
    left = prev is not None and can_merge(prev, vma)
    right = nxt is not None and can_merge(vma, nxt)
    if left and right:
        right = prev.anon_vma is None or nxt.anon_vma is None or prev.anon_vma is nxt.anon_vma
    if right:
        vma = merge(vma, nxt)
    if left:
        vma = merge(prev, vma)
    return vma


def vma_modify_flags(vma: VMA, start: int, end: int, newflags: int, reason: str) -> VMA:
    """``vma_modify_flags``: give ``[start, end)`` of ``vma`` the flags ``newflags``, splitting
    the VMA at the range ends and merging with neighbours that then look the same."""
    if vma.start < start:
        vma = split_vma(vma, start, reason)
    if end < vma.end:
        split_vma(vma, end, reason)
    vma.flags = newflags
    return try_merge_around(vma)


def anon_vma_compatible(a: VMA, b: VMA) -> bool:
    """``anon_vma_compatible``: adjacent, linear pgoff, same flags apart from access bits."""
    return (a.end == b.start and a.guard == b.guard
            and (a.flags & ~VM_ACCESS_FLAGS) == (b.flags & ~VM_ACCESS_FLAGS)
            and b.pgoff == a.pgoff + ((a.end - a.start) >> 12))


def anon_vma_prepare(vma: VMA) -> AnonVma:
    """``anon_vma_prepare``: give the VMA an anon_vma at its first anonymous fault, reusing a
    neighbour's when ``find_mergeable_anon_vma`` allows (singular chain, compatible VMAs)."""
    if vma.anon_vma is not None:
        return vma.anon_vma
    mm = vma.mm
    prev, nxt = mm.neighbours(vma)
    av = None
    for near, (a, b) in ((nxt, (vma, nxt)), (prev, (prev, vma))):
        if near is not None and near.anon_vma is not None and len(near.chain) == 1 \
                and anon_vma_compatible(a, b):
            av = near.anon_vma
            break
    if av is None:
        av = mm.sys.new_anon_vma()
    vma.anon_vma = av
    vma.link(av)
    return av
