"""What a process actually reads in the model: the 64-bit word at the start of each page of a
2 MiB slot, through its page tables (PMD, PTEs, the zero pages, swap entries)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from foliosim.mm.mm_types import MM
from foliosim.mm.pgtable import P_SWAP, PmdLeaf

if TYPE_CHECKING:
    from foliosim.mm.system import System

__all__ = ["read_slot"]


def read_slot(s: System, mm: MM, slot: int) -> tuple[np.ndarray, np.ndarray]:
    """The values a load from each page of ``slot`` returns, and which of them are known.

    Nothing mapped reads as zero (the next fault maps a zero page or a new zeroed folio); a
    swap entry reads from its swap-cache folio, else from the swap device (unknown without
    one).
    """
    F = s.folios
    out = np.zeros(512, np.uint64)
    known = np.ones(512, bool)
    ent = mm.pmd.get(slot)
    if ent is None:
        return out, known
    if isinstance(ent, PmdLeaf):
        if ent.fid >= 0:
            out[:] = F.values(ent.fid)
        return out, known
    swap = (ent.bits & P_SWAP) != 0
    present = (ent.fid >= 0) & ~swap
    if present.any():
        pos = np.flatnonzero(present)
        fids = ent.fid[pos]
        out[pos] = F.val[fids]
        large = F.order[fids] > 0
        if large.any():
            for f in np.unique(fids[large]):
                pa = F.pages.get(int(f))
                if pa is not None:
                    sel = pos[fids == f]
                    out[sel] = pa.val[ent.idx[sel]]
    for i in np.flatnonzero(swap):
        if s.swap is None:
            known[i] = False
            continue
        slot = int(ent.fid[i])
        g = s.swap.cache.get(slot)
        out[i] = F.value(g, 0) if g is not None else s.swap.data.get(slot, 0)
    return out, known
