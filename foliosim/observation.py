"""The observation format (spec section 2): page records, their run encoding, and the document.

Both targets build observations with these helpers, so the two can only differ in what they saw.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

FORMAT = "foliosim.observations/1"
VMA_FIELDS = (
    "start", "end", "perms", "vmflags", "rss_kb", "anonymous_kb", "anon_huge_pages_kb",
    "locked_kb", "swap_kb", "lazyfree_kb", "thp_eligible",
)
PAGE_FLAGS = (
    "active", "anon", "anon_exclusive", "dirty", "lru", "mlocked", "swapbacked", "swapcache",
    "thp", "unevictable", "zero",
)
VMFLAGS = ("dc", "hg", "lf", "lo", "nh")


class Page(NamedTuple):
    """One 4 KiB page of a region as pagemap, kpageflags and kpagecount show it.

    ``state`` is ``present``, ``swap`` or ``none``; the other fields are meaningful only for
    present pages.
    """

    state: str
    pfn: int = 0
    folio_pfn: int = 0
    folio_order: int = 0
    exclusive: bool = False
    mapcount: int = 0
    flags: tuple[str, ...] = ()
    value: int = 0


NONE_PAGE = Page("none")
SWAP_PAGE = Page("swap")


def encode_runs(pages: Iterable[Page]) -> list[dict[str, Any]]:
    """Encode a region's pages as runs (spec section 2, ``pages``)."""
    runs: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    prev: Page | None = None
    for i, p in enumerate(pages):
        if cur is not None and prev is not None and _continues(prev, p):
            cur["count"] += 1
        else:
            cur = _run_start(i, p)
            runs.append(cur)
        prev = p
    return runs


def _continues(prev: Page, p: Page) -> bool:
    if p.state != prev.state:
        return False
    if p.state != "present":
        return True
    return (p.pfn == prev.pfn + 1 and p.folio_pfn == prev.folio_pfn
            and p[3:] == prev[3:])


def _run_start(i: int, p: Page) -> dict[str, Any]:
    if p.state != "present":
        return {"index": i, "count": 1, "state": p.state}
    return {"index": i, "count": 1, "state": "present", "pfn": p.pfn, "folio_pfn": p.folio_pfn,
            "folio_order": p.folio_order, "exclusive": p.exclusive, "mapcount": p.mapcount,
            "flags": sorted(p.flags), "value": p.value}


def expand_runs(runs: Iterable[dict[str, Any]]) -> Iterator[tuple[int, Page]]:
    """Yield ``(page index, Page)`` for every page the runs cover."""
    for r in runs:
        for k in range(r["count"]):
            if r["state"] != "present":
                yield r["index"] + k, Page(r["state"])
            else:
                yield r["index"] + k, Page(
                    "present", r["pfn"] + k, r["folio_pfn"], r["folio_order"], r["exclusive"],
                    r["mapcount"], tuple(r["flags"]), r["value"])


def document(scenario: str, target: str, system: dict[str, str], steps: list[dict[str, Any]],
             observations: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole observation document of one run."""
    return {"format": FORMAT, "scenario": scenario, "target": target, "system": system,
            "steps": steps, "observations": observations}
