"""A DMA device behind io_uring pins: at any step it may write a value into the pages a pin
holds, like an in-flight transfer into a registered buffer.

It writes exactly the pages of the pinned range, remembered as (folio, page) when the pin was
taken; a pinned folio can be neither split nor freed, so those stay valid while the pin lives
(as :meth:`foliosim.mm.system.Process.dma_write` does).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from foliosim.mm.gup import follow_page

if TYPE_CHECKING:
    from foliosim.mm.mm_types import MM
    from foliosim.mm.system import System

__all__ = ["Device"]


class Device:
    """The device of one :class:`System`."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.pages: dict[str, list[tuple[int, int]]] = {}

    def attach(self, pin_id: str, mm: MM, start: int, length: int) -> None:
        """Remember the physical pages a pin just taken on ``[start, start + length)`` holds."""
        pages = []
        for addr in range(start, start + length, 4096):
            f, k, _ = follow_page(self.system, mm, addr)
            if f >= 0:
                pages.append((f, k))
        self.pages[pin_id] = pages

    def write(self, pin_id: str, value: int) -> int:
        """The device writes ``value`` into every pinned page; -ENXIO if the pin is gone."""
        s = self.system
        if s.pins.get(pin_id) is None:
            return -errno.ENXIO
        for f, k in self.pages.get(pin_id, ()):
            if s.folio_alive(f):
                s.folios.set_value(f, k, 1, value)
        return 0
