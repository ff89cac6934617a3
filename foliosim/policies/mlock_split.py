"""``mlock-split``: mlock of a range that cuts a large folio tries to split it, so that the
pages inside the locked range become small folios that can be mlocked; when the split fails it
behaves as Linux 6.18 (the folio stays unlocked and evictable)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from foliosim.mm import huge_memory
from foliosim.mm.mlock import folio_within_range
from foliosim.policies.base import Policy

if TYPE_CHECKING:
    from foliosim.mm.mm_types import VMA
    from foliosim.mm.system import System

__all__ = ["MlockSplit"]


class MlockSplit(Policy):
    """Split a large folio the mlock range cuts; the split's remap mlocks the locked part."""

    name = "mlock-split"
    summary = "mlock of a range that cuts a folio splits it so the locked part is mlocked"

    def mlock_allow_large(self, s: System, f: int, vma: VMA, start: int, end: int,
                          step: int) -> bool:
        """6.18's rule; for a folio the range cuts, a split first. The split's remap maps each
        page inside the VM_LOCKED VMA as an order-0 folio and mlocks it
        (``folio_add_anon_rmap_pte`` -> ``mlock_vma_folio``), so the walk must then skip the
        pages (False): mlocking them again would count two mlocks."""
        if super().mlock_allow_large(s, f, vma, start, end, step):
            return True
        if folio_within_range(s, f, vma, start, end):
            return False  # inside the range but not fully mapped: not cut, 6.18 skips it
        lo, hi = self.folio_extent(s, f, vma)
        inside = (min(hi, end, vma.end) - max(lo, start, vma.start)) >> 12
        if step != inside:
            return False  # the part in the range has holes: the walk would see it again
        name = s.fname(f)
        if huge_memory.split_folio(s, f, f"mlock of a range that cuts it ({self.name})") == 0:
            self.record("split", vma.mm.name, lo, hi, f"split {name} that the mlock range cuts")
        else:
            self.record("split-failed", vma.mm.name, lo, hi,
                        f"split of {name} for mlock failed: left unlocked as in 6.18")
        return False
