"""What every experimental policy adds to the model's hook interface: seeded speculative
references (the thread's rule 2), a log of the actions the policy took (for the oracle's
corruption reports), and the costs the model does not count itself (pages copied, page-table
entries scanned by the policy's own rmap walks)."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, NamedTuple

from foliosim.mm.policy import Linux618

if TYPE_CHECKING:
    from foliosim.mm.mm_types import VMA
    from foliosim.mm.system import System

__all__ = ["Action", "Policy"]


class Action(NamedTuple):
    """One thing a policy did to the memory of a process.

    :ivar step: index of the scenario step during which it happened
    :ivar kind: ``split``, ``split-failed``, ``copy``, ``queue``, ``skip``, ...
    :ivar process: the process (mm) whose mapping it touched
    :ivar start: first address it touched in that process
    :ivar end: end of the touched range
    :ivar detail: one line for a report
    """

    step: int
    kind: str
    process: str
    start: int
    end: int
    detail: str

    def covers(self, process: str, addr: int) -> bool:
        return self.process == process and self.start <= addr < self.end


class Policy(Linux618):
    """Linux 6.18's hooks plus fault injection and bookkeeping; the policies subclass this.

    :param transient_p: probability that a split attempt meets a transient extra reference
        (a speculative ``folio_try_get`` or GUP-fast reference) and fails with -EAGAIN
    :param seed: seed of the generator behind those failures
    """

    name = "linux-6.18"
    summary = "the kernel as it is"

    def __init__(self, transient_p: float = 0.0, seed: int = 0) -> None:
        self.transient_p = transient_p
        self.rng = random.Random(seed)
        self.step = -1
        self.actions: list[Action] = []
        self.pages_copied = 0
        self.pages_scanned = 0

    def split_meets_transient_ref(self, s: System, f: int) -> bool:
        """A speculative reference appears with probability ``transient_p``."""
        return self.transient_p > 0 and self.rng.random() < self.transient_p

    # -- bookkeeping ------------------------------------------------------------------------
    def record(self, kind: str, process: str, start: int, end: int, detail: str) -> None:
        """Log an action on ``[start, end)`` of ``process``."""
        self.actions.append(Action(self.step, kind, process, start, end, detail))

    @staticmethod
    def folio_extent(s: System, f: int, vma: VMA) -> tuple[int, int]:
        """The virtual range folio ``f`` covers in ``vma`` (``vma_address`` of its index)."""
        start = vma.address_of(int(s.folios.index[f]))
        return start, start + s.folios.nr(f) * 4096

    def __repr__(self) -> str:
        return f"{type(self).__name__}(transient_p={self.transient_p})"
