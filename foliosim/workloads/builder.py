"""Building a workload's scenario step by step: regions with a page-state map (mapped,
writable, pinned), range pickers that only return ranges every step can act on, and unique
store values, so that every step of a generated scenario succeeds with THP disabled."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from foliosim.scenario.load import resolve
from foliosim.scenario.model import Scenario, Settings

__all__ = ["Builder", "KiB", "MiB", "Region"]

KiB, MiB = 1 << 10, 1 << 20
PAGE = 4096


@dataclass
class Region:
    """A region of one process with the state of each page."""

    name: str
    size: int
    mapped: np.ndarray = field(init=False)
    writable: np.ndarray = field(init=False)
    pinned: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n = self.size // PAGE
        self.mapped = np.ones(n, bool)
        self.writable = np.ones(n, bool)
        self.pinned = np.zeros(n, bool)

    def pages(self, off: int, length: int) -> slice:
        return slice(off // PAGE, (off + length) // PAGE)


class Builder:
    """Collects the steps of one scenario.

    :param name: the scenario name
    :param seed: seed of every random choice
    :param description: what the workload stands for
    :param settings: THP settings of the run
    """

    def __init__(self, name: str, seed: int, description: str,
                 settings: dict[str, Any] | None = None) -> None:
        self.name = name
        self.seed = seed
        self.rng = random.Random(seed)
        self.description = description
        self.settings = Settings(**(settings or {}))
        self.steps: list[dict[str, Any]] = []
        self.regions: dict[str, Region] = {}
        self._value = 0
        self._names: dict[str, int] = {}

    # -- values and names -------------------------------------------------------------------
    def value(self) -> int:
        """A store value no other step of this scenario uses (never zero)."""
        self._value += 1
        return ((self.seed & 0xFFFF) << 40) | (0xA5 << 32) | self._value

    def fresh(self, prefix: str) -> str:
        """``prefix0``, ``prefix1``, ...: a new region, pin or process name."""
        n = self._names.get(prefix, 0)
        self._names[prefix] = n + 1
        return f"{prefix}{n}"

    # -- steps --------------------------------------------------------------------------------
    def add(self, op: str, **kw: Any) -> None:
        self.steps.append({"op": op, **kw})

    def mmap(self, size: int, prefix: str = "heap", misalign: int = 0,
             hugepage: bool = True, fill: bool = True) -> Region:
        """A new region, MADV_HUGEPAGE'd and written whole unless told otherwise."""
        r = Region(self.fresh(prefix), size)
        self.regions[r.name] = r
        self.add("mmap", region=r.name, size=size, misalign=misalign)
        if hugepage:
            self.add("madvise", region=r.name, offset=0, length=size, advice="hugepage")
        if fill:
            self.add("write", region=r.name, offset=0, length=size, value=self.value())
        return r

    def write(self, r: Region, off: int, length: int, proc: str = "main") -> None:
        self.add("write", proc=proc, region=r.name, offset=off, length=length,
                 value=self.value())

    def range_op(self, op: str, r: Region, off: int, length: int, **kw: Any) -> None:
        """A step on ``[off, off + length)`` of ``r``, keeping the page-state map current."""
        pages = r.pages(off, length)
        if op == "munmap":
            r.mapped[pages] = False
        elif op == "mprotect":
            r.writable[pages] = kw["prot"] == "rw"
        self.add(op, region=r.name, offset=off, length=length, **kw)

    # -- picking ranges -----------------------------------------------------------------------
    def pick(self, r: Region, lengths: tuple[int, ...], *, writable: bool = False,
             unpinned: bool = False, tries: int = 12) -> tuple[int, int] | None:
        """A random page-aligned range of one of ``lengths`` whose pages are all mapped (and
        writable, and not pinned, if asked); None if none was found in ``tries`` draws."""
        for _ in range(tries):
            length = self.rng.choice(lengths)
            if length > r.size:
                continue
            off = self.rng.randrange(0, r.size - length + 1, PAGE)
            pages = r.pages(off, length)
            ok = r.mapped[pages].all()
            if writable:
                ok = ok and r.writable[pages].all()
            if unpinned:
                ok = ok and not r.pinned[pages].any()
            if ok:
                return off, length
        return None

    def any_region(self) -> Region:
        return self.rng.choice(list(self.regions.values()))

    # -- the result ---------------------------------------------------------------------------
    def scenario(self) -> Scenario:
        """The validated, resolved scenario."""
        sc = Scenario.model_validate({"name": self.name, "description": self.description,
                                      "settings": self.settings.model_dump(),
                                      "steps": self.steps})
        return resolve(sc, f"<workload {self.name}>")
