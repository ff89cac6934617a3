"""Shared helpers of the tests of the model (tests/test_mm_*.py): building systems and regions,
reading folios, pages, smaps and counters the way the rule tests need them.

Expected values never come from here: these helpers only read the model's state.
"""

from __future__ import annotations

from foliosim.mm import gup, rmap
from foliosim.mm.folio import PG_MLOCKED, PG_PARTIALLY_MAPPED, PG_UNEVICTABLE
from foliosim.mm.pgtable import PmdLeaf, PteTable
from foliosim.mm.system import Process, System, ThpSettings
from foliosim.observation import Page
from foliosim.proc.page import range_pages
from foliosim.proc.smaps import Smaps, show_smap

__all__ = [
    "KB", "MB", "PAGE", "PMD", "THP_FRESH", "THP_SPLIT_PMD", "Counters",
    "cmp_flags", "folio_at", "has_pte_table", "is_mlocked", "is_partially_mapped",
    "is_pmd_mapped", "is_unevictable", "make_system", "mapcount", "page_at", "pages",
    "pte_mapped_thp", "pte_writable", "region", "smap_at", "thp_region", "vma_list",
]

KB = 1 << 10
MB = 1 << 20
PAGE = 4 << 10
PMD = 2 << 20

# kpageflags the spec (section 3) never compares, and those it skips on order-0 folios
VOLATILE_FLAGS = frozenset({"lru", "active"})
ORDER0_BATCH_FLAGS = frozenset({"unevictable", "swapbacked"})

THP_FRESH = frozenset({"anon", "anon_exclusive", "swapbacked", "thp"})           # TAXB
THP_SPLIT_PMD = frozenset({"anon", "anon_exclusive", "dirty", "swapbacked", "thp"})  # TAXDB


def make_system(enabled: str = "madvise", sizes: dict[str, str] | None = None,
                **kw: object) -> System:
    """A system with the reference machine's defaults unless told otherwise."""
    return System(ThpSettings(enabled=enabled, sizes=dict(sizes or {}), **kw))


def region(p: Process, size: int = PMD, *, advice: str | None = "hugepage", misalign: int = 0,
           prot: str = "rw") -> int:
    """A region placed as the live runner places it (2 MiB aligned plus ``misalign``), with
    ``advice`` applied to all of it; returns its address."""
    a = p.mmap_region(size, prot, misalign)
    if advice is not None:
        assert p.madvise(a, size, advice) == 0
    return a


def thp_region(p: Process, size: int = PMD, value: int = 7, **kw: object) -> int:
    """A MADV_HUGEPAGE region written in full with ``value`` (PMD THPs where they fit)."""
    a = region(p, size, **kw)
    assert p.write(a, size, value) == 0
    return a


def pte_mapped_thp(p: Process, a: int) -> None:
    """Make the PMD-mapped THP at ``a`` PTE-mapped but intact, as cow.c does: mprotect one page
    read-only and back (scenarios/README.md)."""
    assert p.mprotect(a + PAGE, PAGE, "r") == 0
    assert p.mprotect(a + PAGE, PAGE, "rw") == 0


# -- reading the model ---------------------------------------------------------------------------
def folio_at(p: Process, addr: int) -> tuple[int, int]:
    """The folio id and page index mapped at ``addr`` (id -1 if nothing is mapped)."""
    f, k, _ = gup.follow_page(p.system, p.mm, addr)
    return f, k


def is_pmd_mapped(p: Process, addr: int) -> bool:
    ent = p.mm.pmd.get(addr >> 21)
    return isinstance(ent, PmdLeaf) and ent.fid >= 0


def has_pte_table(p: Process, addr: int) -> bool:
    return isinstance(p.mm.pmd.get(addr >> 21), PteTable)


def pte_writable(p: Process, addr: int) -> bool:
    """Whether the PTE or PMD mapping ``addr`` has the write bit."""
    return gup.follow_page(p.system, p.mm, addr)[2]


def is_mlocked(s: System, f: int) -> bool:
    return bool(s.folios.flags[f] & PG_MLOCKED)


def is_unevictable(s: System, f: int) -> bool:
    return bool(s.folios.flags[f] & PG_UNEVICTABLE)


def is_partially_mapped(s: System, f: int) -> bool:
    return bool(s.folios.flags[f] & PG_PARTIALLY_MAPPED)


def mapcount(s: System, f: int) -> int:
    """``folio_mapcount``."""
    return rmap.folio_mapcount(s, f)


def pages(p: Process, addr: int, length: int) -> list[Page]:
    """kpageflags/kpagecount/pagemap of every page of ``[addr, addr + length)``."""
    return list(range_pages(p.system, p.mm, addr, addr + length))


def page_at(p: Process, addr: int) -> Page:
    return pages(p, addr, PAGE)[0]


def cmp_flags(pg: Page) -> frozenset[str]:
    """A page's flags as the spec compares them: no lru/active, and no unevictable/swapbacked
    on order-0 folios (per-CPU batching makes those timing dependent)."""
    out = frozenset(pg.flags) - VOLATILE_FLAGS
    if pg.folio_order == 0:
        out -= ORDER0_BATCH_FLAGS
    return out


def smap_at(p: Process, addr: int) -> Smaps:
    """smaps of the VMA containing ``addr``."""
    vma = p.mm.vma_at(addr)
    assert vma is not None, f"no VMA at {addr:#x}"
    return show_smap(p.system, vma)


def vma_list(p: Process, addr: int, length: int) -> list[tuple[int, int, Smaps]]:
    """(start, end) relative to ``addr`` (clipped to the range) and smaps of every VMA
    overlapping ``[addr, addr + length)``."""
    out = []
    for vma in p.mm.vmas_in(addr, addr + length):
        lo, hi = max(vma.start, addr), min(vma.end, addr + length)
        out.append((lo - addr, hi - addr, show_smap(p.system, vma)))
    return out


class Counters:
    """Counter deltas since construction, flattened: vmstat items by name, per-size stats as
    ``"<N>kB/<stat>"`` (``"2048kB/nr_anon"``)."""

    def __init__(self, s: System) -> None:
        self.s = s
        self.base = self._flat()

    def _flat(self) -> dict[str, int]:
        vm = self.s.vmstat
        out = {k: v for k, v in vm.events.items()}
        for order, stats in vm.mthp.items():
            for k, v in stats.items():
                out[f"{4 << order}kB/{k}"] = v
        return out

    def delta(self) -> dict[str, int]:
        now = self._flat()
        d = {k: now.get(k, 0) - self.base.get(k, 0) for k in set(now) | set(self.base)}
        return {k: v for k, v in d.items() if v}

    def __getitem__(self, key: str) -> int:
        return self.delta().get(key, 0)

    def thp(self) -> dict[str, int]:
        """The deltas the ground truth tables record: ``thp_*`` events, the THP gauge, and the
        per-size stats (the volatile nr_mlock/unevictable_pgs_* are left out)."""
        keep = ("thp_", "nr_anon_transparent_hugepages", "pglazyfree", "pswp")
        return {k: v for k, v in self.delta().items()
                if k.startswith(keep) or "kB/" in k}
