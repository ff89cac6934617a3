"""``split-on-cut``: when a VMA operation leaves a boundary inside a large folio, try to split
the folio at once; if that fails, queue it for deferred split (the thread: "we can try to split
any THP that crosses VMA borders on VMA modifications ... What always works, is putting the THP
on the deferred split queue")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from foliosim.mm import huge_memory
from foliosim.policies.base import Policy
from foliosim.policies.mechanics import folios_across

if TYPE_CHECKING:
    from foliosim.mm.mm_types import VMA
    from foliosim.mm.system import System

__all__ = ["SplitOnCut"]


class SplitOnCut(Policy):
    """Split every large folio a new VMA boundary cuts; queue the ones that refuse."""

    name = "split-on-cut"
    summary = "split a folio a VMA operation cuts; queue it when the split fails"

    def vma_cut(self, s: System, lo: VMA, hi: VMA, addr: int, reason: str) -> None:
        """``__split_vma`` left a boundary at ``addr``: handle each folio it cuts."""
        for f in folios_across(s, lo, hi, addr):
            self.cut_folio(s, f, lo, hi, addr, reason)

    def cut_folio(self, s: System, f: int, lo: VMA, hi: VMA, addr: int, reason: str) -> None:
        """Try the split; on failure fall back (:meth:`split_failed`)."""
        name = s.fname(f)
        start, end = self.folio_extent(s, f, lo)
        if huge_memory.split_folio(s, f, f"{reason} cut it ({self.name})") == 0:
            self.record("split", lo.mm.name, start, end,
                        f"split {name} cut at {s.fmt_addr(lo.mm, addr)} by {reason}")
            return
        self.split_failed(s, f, lo, hi, addr, reason, name)

    def split_failed(self, s: System, f: int, lo: VMA, hi: VMA, addr: int, reason: str,
                     name: str) -> None:
        """Queue the folio as partially mapped, so the shrinker retries the split (and keeps
        retrying while it fails, as for any partially mapped folio)."""
        start, end = self.folio_extent(s, f, lo)
        huge_memory.deferred_split_folio(s, f, True)
        self.record("queue", lo.mm.name, start, end,
                    f"split of {name} cut by {reason} failed: queued for deferred split")
