"""``deferred-rmap-check``: the optimized deferred split from the thread. A folio a VMA
operation cuts is put on the deferred split queue (no split attempt at the cut); at shrink time
the rmap of each queued folio is walked and the split is skipped when every page is still mapped
and the folio does not cross a VMA boundary ("do an rmap walk and detect if (a) each page of the
folio is still mapped (b) the folio does not cross a VMA"); it is split otherwise, and stays
queued while the split fails."""

from __future__ import annotations

from typing import TYPE_CHECKING

from foliosim.mm import huge_memory
from foliosim.policies.base import Policy
from foliosim.policies.mechanics import folios_across, queue_folio, rmap_folio_walk

if TYPE_CHECKING:
    from foliosim.mm.mm_types import VMA
    from foliosim.mm.system import System

__all__ = ["DeferredRmapCheck"]


class DeferredRmapCheck(Policy):
    """Queue cut folios; decide at shrink time with an rmap walk."""

    name = "deferred-rmap-check"
    summary = "queue cut folios; at shrink time split only those an rmap walk finds cut or partial"

    def vma_cut(self, s: System, lo: VMA, hi: VMA, addr: int, reason: str) -> None:
        for f in folios_across(s, lo, hi, addr):
            if queue_folio(s, f):
                start, end = self.folio_extent(s, f, lo)
                self.record("queue", lo.mm.name, start, end,
                            f"{s.fname(f)} cut by {reason}: queued for an rmap check")

    def deferred_split_decision(self, s: System, f: int, partially_mapped: bool) -> str:
        """Walk the rmap: a wholly mapped folio inside one VMA is not split for its mapping
        (an unflagged one still gets 6.18's underused check); any other is split."""
        walk = rmap_folio_walk(s, f)
        self.pages_scanned += walk.pages_scanned
        if walk.mapped == s.folios.nr(f) and not walk.crosses_vma:
            if not partially_mapped:
                return "default"  # mapped whole in one VMA: only the underused check remains
            huge_memory.folio_unqueue_deferred_split(s, f)
            return "skip"  # flagged, but every page is mapped again and nothing cuts it
        why = "crosses a VMA boundary" if walk.crosses_vma else \
            f"{s.folios.nr(f) - walk.mapped} pages unmapped"
        for process, start, end in walk.extents:
            self.record("deferred-split", process, start, end,
                        f"rmap check of {s.fname(f)}: {why}, split by the shrinker")
        return "split"
