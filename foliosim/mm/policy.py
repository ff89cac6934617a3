"""The hooks where the 2023 thread's alternatives plug in, with Linux 6.18 as the default.

A policy is an object with these methods; the model calls them at the named points and does
nothing else differently. Later policies (split-on-cut, split-or-copy, deferred-rmap-check,
mlock-split, linux-6.11) subclass :class:`Linux618`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from foliosim.mm.mm_types import VMA
    from foliosim.mm.system import System


class Linux618:
    """Linux 6.18 as it is: PMD split only when a VMA operation cuts a folio; the deferred
    queue with partially_mapped and the underused check; mlock only of folios wholly inside
    the range."""

    name = "linux-6.18"

    def vma_cut(self, s: System, lo: VMA, hi: VMA, addr: int, reason: str) -> None:
        """A VMA boundary appeared at ``addr`` (``__split_vma``); 6.18 only split the PMD."""

    def split_meets_transient_ref(self, s: System, f: int) -> bool:
        """Whether a split attempt meets a speculative reference (``folio_ref_freeze`` fails).
        The kernel model has none; fault-injecting policies say yes at random."""
        return False

    def deferred_split_decision(self, s: System, f: int, partially_mapped: bool) -> str:
        """What ``deferred_split_scan`` does with a queued folio: ``"default"`` follows 6.18,
        ``"skip"`` drops it from the queue, ``"split"`` splits it regardless and, like a
        partially mapped folio, keeps it queued when the split fails."""
        return "default"

    def deferred_split_folio(self, s: System, f: int, partially_mapped: bool) -> bool:
        """Whether the policy queued ``f`` itself at ``deferred_split_folio``; when False the
        6.18 queueing runs (the partially_mapped flag on a partial unmap, underused candidates
        at PMD fault)."""
        return False

    def split_remaps_zero_pages(self, s: System) -> bool:
        """Whether a successful split maps zero-filled order-0 pages to the shared zero page
        (``remap_page`` with ``RMP_USE_SHARED_ZEROPAGE`` in ``__folio_split``, since v6.12)."""
        return True

    def mlock_allow_large(self, s: System, f: int, vma: VMA, start: int, end: int,
                          step: int) -> bool:
        """``allow_mlock_munlock`` for a large folio in a VM_LOCKED VMA: only if it lies wholly
        inside the range and is mapped by ``step`` == nr consecutive PTEs."""
        from foliosim.mm.mlock import folio_within_range

        if not folio_within_range(s, f, vma, start, end):
            return False  # folio not in range, skip mlock
        return step == s.folios.nr(f)  # folio not fully mapped, skip mlock


DEFAULT_POLICY = Linux618
