"""``linux-6.11``: the deferred split queue before v6.12's ``partially_mapped`` flag and the
underused shrinker ("mm: introduce a pageflag for partially mapped folios" and "mm: split
underused THPs", Usama Arif, v6.12). In 6.11:

- only a partial unmap queues a folio (``deferred_split_folio(folio)`` when its
  ``_deferred_list`` is empty); each time it is added ``thp_deferred_split_page`` (PMD size) and
  ``split_deferred`` count; new PMD THPs are not queued at fault;
- ``deferred_split_scan`` tries to split every queued folio and splices the ones whose split
  failed back onto the queue;
- a split remaps every page, zero-filled or not (no ``RMP_USE_SHARED_ZEROPAGE``, which came
  with the same v6.12 series as "mm: remap unused subpages to shared zeropage when splitting
  isolated thp").

Everything else (mlock, PMD split, COW) is the 6.18 model's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from foliosim.policies.base import Policy
from foliosim.policies.mechanics import queue_folio

if TYPE_CHECKING:
    from foliosim.mm.system import System

__all__ = ["Linux611"]


class Linux611(Policy):
    """The 6.11 deferred queue: no partially_mapped flag, no underused shrinker."""

    name = "linux-6.11"
    summary = "6.11's deferred queue: no partially_mapped flag, no underused shrinker"

    def deferred_split_folio(self, s: System, f: int, partially_mapped: bool) -> bool:
        """6.11's ``deferred_split_folio``: queue on a partial unmap, counting every add."""
        if not partially_mapped:
            return True  # no underused shrinker: a new THP is not queued
        if queue_folio(s, f):
            order = int(s.folios.order[f])
            if order == 9:
                s.vmstat.count("thp_deferred_split_page")
            s.vmstat.count_mthp(order, "split_deferred")
        return True

    def deferred_split_decision(self, s: System, f: int, partially_mapped: bool) -> str:
        """Every queued folio was queued by a partial unmap: split it, keep it on failure."""
        return "split"

    def split_remaps_zero_pages(self, s: System) -> bool:
        return False
