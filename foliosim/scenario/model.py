"""Pydantic models of a scenario file (spec section 1), one class per step op.

Sizes and offsets are bytes; strings with a binary suffix (``4K``, ``2M``, ``1G``) are accepted.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

PAGE_SIZE = 4096
SIZE_NAMES = ("16K", "32K", "64K", "128K", "256K", "512K", "1M", "2M")
_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)


def parse_size(value: object) -> int:
    """Bytes from an int or a string such as ``512K``; must be a multiple of 4 KiB, not negative."""
    if isinstance(value, bool):
        raise ValueError("expected a size in bytes or a string like '2M'")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        m = _SIZE_RE.match(value)
        if not m:
            raise ValueError(f"expected a size like 4096, '4K', '2M' or '1G', got {value!r}")
        n = int(m.group(1)) * _SUFFIX[m.group(2).upper()]
    else:
        raise ValueError(f"expected a size in bytes or a string like '2M', got {value!r}")
    if n < 0:
        raise ValueError(f"expected a size that is not negative, got {n}")
    if n % PAGE_SIZE:
        raise ValueError(f"expected a multiple of 4 KiB (4096 bytes), got {n}")
    return n


Size = Annotated[int, BeforeValidator(parse_size)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")]
Prot = Literal["rw", "r", "none"]
Advice = Literal[
    "hugepage", "nohugepage", "dontneed", "free", "cold", "pageout", "collapse",
    "dontfork", "dofork", "populate_read", "populate_write",
]
SizeMode = Literal["always", "inherit", "madvise", "never"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Settings(_Strict):
    """THP knobs in force for the whole run; defaults are the reference machine's."""

    enabled: Literal["always", "madvise", "never"] = "madvise"
    sizes: dict[Literal[SIZE_NAMES], SizeMode] = Field(default_factory=dict)  # type: ignore[valid-type]
    use_zero_page: bool = True
    shrink_underused: bool = True
    max_ptes_none: Annotated[int, Field(ge=0, le=511)] = 511
    swap: Literal["none", "file"] = "none"

    def size_mode(self, name: str) -> SizeMode:
        """The ``hugepages-<N>kB/enabled`` value for a size name such as ``64K``."""
        return self.sizes.get(name, "inherit" if name == "2M" else "never")  # type: ignore[arg-type]

    def order_mode(self, order: int) -> SizeMode:
        """The per-size mode of a folio order (2..9)."""
        return self.size_mode(order_size_name(order))


def order_size_name(order: int) -> str:
    """``64K`` for order 4, ``2M`` for order 9."""
    kb = 4 << order
    return f"{kb // 1024}M" if kb >= 1024 else f"{kb}K"


class _Step(_Strict):
    proc: Name = "main"


class _Range(_Step):
    region: Name
    offset: Size = 0
    length: Size | None = None


class Mmap(_Step):
    op: Literal["mmap"]
    region: Name
    size: Size
    prot: Prot = "rw"
    misalign: Size = 0


class Reserve(_Step):
    op: Literal["reserve"]
    region: Name
    size: Size
    misalign: Size = 0


class Munmap(_Range):
    op: Literal["munmap"]


class Mprotect(_Range):
    op: Literal["mprotect"]
    prot: Prot


class Madvise(_Range):
    op: Literal["madvise"]
    advice: Advice


class Mlock(_Range):
    op: Literal["mlock"]
    onfault: bool = False


class Munlock(_Range):
    op: Literal["munlock"]


class Mlockall(_Step):
    op: Literal["mlockall"]
    current: bool = False
    future: bool = False
    onfault: bool = False


class Munlockall(_Step):
    op: Literal["munlockall"]


class Mremap(_Range):
    op: Literal["mremap"]
    to: Name
    to_offset: Size = 0
    new_length: Size | None = None


class Write(_Range):
    op: Literal["write"]
    value: Annotated[int, Field(ge=0, lt=1 << 64)] | None = None


class Read(_Range):
    op: Literal["read"]


class Fork(_Step):
    op: Literal["fork"]
    child: Name


class Exit(_Step):
    op: Literal["exit"]


class Pin(_Range):
    op: Literal["pin"]
    id: Name


class Unpin(_Step):
    op: Literal["unpin"]
    id: Name


class Shrink(_Step):
    op: Literal["shrink"]


class Observe(_Step):
    op: Literal["observe"]
    label: Annotated[str, Field(min_length=1)]


class DmaWrite(_Step):
    """Simulator-only: a device writes ``value`` through pin ``id`` into the pinned pages."""

    op: Literal["dma_write"]
    id: Name
    value: Annotated[int, Field(ge=0, lt=1 << 64)] | None = None


Step = Annotated[
    Mmap | Reserve | Munmap | Mprotect | Madvise | Mlock | Munlock | Mlockall | Munlockall
    | Mremap | Write | Read | Fork | Exit | Pin | Unpin | Shrink | Observe | DmaWrite,
    Field(discriminator="op"),
]
OPS = (
    "mmap", "reserve", "munmap", "mprotect", "madvise", "mlock", "munlock", "mlockall",
    "munlockall", "mremap", "write", "read", "fork", "exit", "pin", "unpin", "shrink",
    "observe", "dma_write",
)
RANGE_OPS = ("munmap", "mprotect", "madvise", "mlock", "munlock", "mremap", "write", "read", "pin")


class Scenario(_Strict):
    """A validated scenario. After :func:`foliosim.scenario.load.resolve` every range step has
    its ``length`` (and ``mremap`` its ``new_length``, ``write`` its ``value``) filled in."""

    format: Literal["foliosim.scenario/1"] = "foliosim.scenario/1"
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")]
    description: str = ""
    settings: Settings = Field(default_factory=Settings)
    steps: list[Step]
