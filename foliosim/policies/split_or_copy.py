"""``split-or-copy``: as ``split-on-cut``, but when the split fails replace the folio's pages
in the mapping being cut with fresh copies. Only pages that are not PageAnonExclusive may be
replaced; an exclusive page must first be marked maybe shared, which fails if the folio may be
pinned (the thread's rule 3, ``folio_try_share_anon_rmap_pte``); then the folio is queued."""

from __future__ import annotations

from typing import TYPE_CHECKING

from foliosim.mm.pgtable import PMD_SIZE
from foliosim.policies.mechanics import replace_with_copies
from foliosim.policies.split_on_cut import SplitOnCut

if TYPE_CHECKING:
    from foliosim.mm.mm_types import VMA
    from foliosim.mm.system import System

__all__ = ["SplitOrCopy"]


class SplitOrCopy(SplitOnCut):
    """Split a cut folio; if that fails, copy its pages out of the cut mapping when the
    PageAnonExclusive rule allows; otherwise queue it."""

    name = "split-or-copy"
    summary = "split a cut folio; else replace its pages with copies where PAE allows; else queue"
    respect_exclusive = True

    def split_failed(self, s: System, f: int, lo: VMA, hi: VMA, addr: int, reason: str,
                     name: str) -> None:
        pinned = s.folios.maybe_dma_pinned(f)
        start, end = self.folio_extent(s, f, lo)
        n = replace_with_copies(s, f, (lo, hi), addr - PMD_SIZE, addr + PMD_SIZE,
                                self.respect_exclusive)
        if n < 0:
            super().split_failed(s, f, lo, hi, addr, reason, name)
            return
        self.pages_copied += n
        self.record("copy", lo.mm.name, start, end,
                    f"split of {name} cut by {reason} failed: replaced {n} pages with copies"
                    f"{' (folio maybe pinned)' if pinned else ''}")
