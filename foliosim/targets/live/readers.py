"""Read-only views of the live kernel's memory state (spec section 2).

Interfaces: ``/proc/PID/maps`` and ``/proc/PID/smaps`` (VMAs), ``/proc/PID/status`` (VmPin,
VmSwap), ``/proc/PID/pagemap`` (present bit 63, swap bit 62, PM_MMAP_EXCLUSIVE bit 56, PFN bits
0-54), ``/proc/kpageflags`` and ``/proc/kpagecount`` (by PFN), ``/proc/PID/mem`` (page contents),
``/proc/vmstat`` and ``/sys/kernel/mm/transparent_hugepage/hugepages-<N>kB/stats/``.

Nothing here changes what it reads: pagemap, kpageflags and kpagecount are snapshots, smaps walks
the page tables without splitting anything, and ``/proc/PID/mem`` takes a temporary FOLL_GET
reference (not a FOLL_PIN, so no unshare fault) and is only read at present pages.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from foliosim.observation import NONE_PAGE, SWAP_PAGE, VMFLAGS, Page

PAGE = 4096
THP_DIR = Path("/sys/kernel/mm/transparent_hugepage")

PM_PFN_MASK = (1 << 55) - 1
PM_EXCLUSIVE = 56
PM_SWAP = 62
PM_PRESENT = 63

KPF_COMPOUND_HEAD = 15
KPF_COMPOUND_TAIL = 16
#: spec name -> /proc/kpageflags bit (include/uapi/linux/kernel-page-flags.h; 34 = KPF_OWNER_2,
#: which is PG_anon_exclusive for anon folios). KPF_SWAPCACHE is only reported by the kernel
#: when PG_swapbacked is set too (fs/proc/page.c:stable_page_flags).
KPF_BITS = {
    "dirty": 4, "lru": 5, "active": 6, "anon": 12, "swapcache": 13, "swapbacked": 14,
    "unevictable": 18, "thp": 22, "zero": 24, "mlocked": 33, "anon_exclusive": 34,
}
MAX_FOLIO_PAGES = 512  # anon folios are at most PMD sized (order 9)

VMSTAT_KEYS = ("nr_anon_transparent_hugepages", "pglazyfree", "pglazyfreed", "pswpin", "pswpout")


# --- VMAs -------------------------------------------------------------------------------------

@dataclass
class Vma:
    """One VMA as /proc/PID/maps (and, for smaps, its fields) shows it."""

    start: int
    end: int
    perms: str
    fields: dict[str, int] = field(default_factory=dict)
    vmflags: tuple[str, ...] = ()
    thp_eligible: bool = False


def read_maps(pid: int) -> list[Vma]:
    """The VMAs of a process from /proc/PID/maps, in address order."""
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            rng, perms = line.split(None, 2)[:2]
            lo, hi = rng.split("-")
            out.append(Vma(int(lo, 16), int(hi, 16), perms))
    return out


def read_smaps(pid: int) -> list[Vma]:
    """The VMAs of a process with their smaps fields (kB), VmFlags and THPeligible."""
    out: list[Vma] = []
    cur: Vma | None = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if line[0] in "0123456789abcdef":
                # "start-end perms offset dev inode path": a new VMA (field names are
                # capitalised, addresses are lower-case hex)
                rng, perms = line.split(None, 2)[:2]
                lo, hi = rng.split("-")
                cur = Vma(int(lo, 16), int(hi, 16), perms)
                out.append(cur)
                continue
            head, _, rest = line.partition(":")
            if cur is None:
                continue
            if head == "VmFlags":
                cur.vmflags = tuple(rest.split())
            elif head == "THPeligible":
                cur.thp_eligible = rest.strip() == "1"
            else:
                parts = rest.split()
                if parts and parts[0].isdigit():
                    cur.fields[head] = int(parts[0])
    return out


def range_accessible(vmas: list[Vma], start: int, length: int, need: str) -> bool:
    """Whether [start, start+length) is entirely covered by VMAs whose perms include ``need``."""
    pos, end = start, start + length
    for v in vmas:
        if pos >= end:
            break
        if v.end <= pos:
            continue
        if v.start > pos or need not in v.perms:
            return False
        pos = v.end
    return pos >= end


def region_vmas(vmas: list[Vma], addr: int, size: int) -> list[dict[str, Any]]:
    """The spec's ``vmas`` of one region: overlapping VMAs clipped to it, relative to its start."""
    out = []
    for v in vmas:
        if v.end <= addr or v.start >= addr + size:
            continue
        f = v.fields
        out.append({
            "start": max(v.start, addr) - addr,
            "end": min(v.end, addr + size) - addr,
            "perms": v.perms,
            "vmflags": sorted(x for x in v.vmflags if x in VMFLAGS),
            "rss_kb": f.get("Rss", 0),
            "anonymous_kb": f.get("Anonymous", 0),
            "anon_huge_pages_kb": f.get("AnonHugePages", 0),
            "locked_kb": f.get("Locked", 0),
            "swap_kb": f.get("Swap", 0),
            "lazyfree_kb": f.get("LazyFree", 0),
            "thp_eligible": v.thp_eligible,
        })
    return out


def locked_kb(vmas: list[Vma], regions: list[tuple[int, int]]) -> int:
    """Size in kB of the VM_LOCKED (smaps ``lo``) parts of VMAs inside the given regions."""
    total = 0
    for addr, size in regions:
        for v in vmas:
            if "lo" in v.vmflags and v.end > addr and v.start < addr + size:
                total += min(v.end, addr + size) - max(v.start, addr)
    return total // 1024


def read_status(pid: int) -> dict[str, int]:
    """VmPin and VmSwap (kB) from /proc/PID/status."""
    out = {"VmPin": 0, "VmSwap": 0}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in out:
                out[key] = int(rest.split()[0])
    return out


# --- pages ------------------------------------------------------------------------------------

class PageReader:
    """Reads pages of regions: pagemap, kpageflags, kpagecount and page contents.

    Open once per run (the /proc/kpage* files); :meth:`region_pages` for each region of each
    observation. Folios are reconstructed from COMPOUND_HEAD/COMPOUND_TAIL: a page's folio
    starts at the nearest page at or before it that is not a tail, and its size is one plus the
    number of tail pages that follow that head (order 0 for a non-compound page).
    """

    def __init__(self) -> None:
        self._flags_fd = os.open("/proc/kpageflags", os.O_RDONLY | os.O_CLOEXEC)
        self._count_fd = os.open("/proc/kpagecount", os.O_RDONLY | os.O_CLOEXEC)
        self._names: dict[int, tuple[str, ...]] = {}

    def close(self) -> None:
        for fd in (self._flags_fd, self._count_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    def _read_u64(self, fd: int, first: int, count: int) -> np.ndarray:
        data = os.pread(fd, count * 8, first * 8)
        arr = np.frombuffer(data, dtype="<u8")
        if len(arr) < count:  # beyond the last PFN
            arr = np.concatenate([arr, np.zeros(count - len(arr), dtype="<u8")])
        return arr

    def _flag_names(self, flags: int) -> tuple[str, ...]:
        names = self._names.get(flags)
        if names is None:
            names = tuple(sorted(n for n, b in KPF_BITS.items() if flags >> b & 1))
            self._names[flags] = names
        return names

    def region_pages(self, pid: int, addr: int, size: int) -> list[Page]:
        """One :class:`Page` per 4 KiB page of ``[addr, addr+size)`` of process ``pid``."""
        n = size // PAGE
        if n == 0:
            return []
        with open(f"/proc/{pid}/pagemap", "rb", buffering=0) as f:
            pm = np.frombuffer(os.pread(f.fileno(), n * 8, (addr // PAGE) * 8), dtype="<u8")
        if len(pm) < n:
            pm = np.concatenate([pm, np.zeros(n - len(pm), dtype="<u8")])
        present = (pm >> np.uint64(PM_PRESENT)) & np.uint64(1)
        swap = (pm >> np.uint64(PM_SWAP)) & np.uint64(1)
        excl = (pm >> np.uint64(PM_EXCLUSIVE)) & np.uint64(1)
        pfns = pm & np.uint64(PM_PFN_MASK)
        idx = np.nonzero(present)[0]
        info = self._folios(pfns[idx]) if len(idx) else {}
        values = self._values(pid, addr, idx)
        pages: list[Page] = [SWAP_PAGE if swap[i] else NONE_PAGE for i in range(n)]
        for k, i in enumerate(idx.tolist()):
            pfn = int(pfns[i])
            folio_pfn, order, flags, count = info[pfn]
            pages[i] = Page("present", pfn, folio_pfn, order, bool(excl[i]), count,
                            self._flag_names(flags), values[k])
        return pages

    def _folios(self, pfns: np.ndarray) -> dict[int, tuple[int, int, int, int]]:
        """pfn -> (folio pfn, folio order, kpageflags, kpagecount) for the given PFNs."""
        out: dict[int, tuple[int, int, int, int]] = {}
        uniq = np.unique(pfns)
        # clusters of PFNs close enough to share one read window
        cuts = np.nonzero(np.diff(uniq) > 2 * MAX_FOLIO_PAGES)[0] + 1
        tail_bit = np.uint64(1 << KPF_COMPOUND_TAIL)
        for cluster in np.split(uniq, cuts):
            lo = max(0, int(cluster[0]) - (MAX_FOLIO_PAGES - 1))
            hi = int(cluster[-1]) + MAX_FOLIO_PAGES
            flags = self._read_u64(self._flags_fd, lo, hi - lo)
            counts = self._read_u64(self._count_fd, lo, hi - lo)
            is_tail = (flags & tail_bit) != 0
            pos = np.arange(hi - lo)
            # start of the folio holding each page: last non-tail position at or before it
            start = np.maximum.accumulate(np.where(is_tail, 0, pos))
            # first non-tail position after each position (hi - lo when none)
            nxt = np.where(is_tail, hi - lo, pos)
            nxt = np.minimum.accumulate(nxt[::-1])[::-1]
            for pfn in cluster.tolist():
                p = pfn - lo
                s = int(start[p])
                end = int(nxt[s + 1]) if s + 1 < hi - lo else hi - lo
                size = end - s
                order = max(size.bit_length() - 1, 0)
                out[pfn] = (lo + s, order, int(flags[p]), int(counts[p]))
        return out

    @staticmethod
    def _values(pid: int, addr: int, idx: np.ndarray) -> list[int]:
        """The 64-bit little-endian word at the start of each listed page (/proc/PID/mem)."""
        if not len(idx):
            return []
        out = []
        fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        try:
            for i in idx.tolist():
                try:
                    data = os.pread(fd, 8, addr + i * PAGE)
                except OSError:
                    data = b""
                out.append(int.from_bytes(data, "little") if len(data) == 8 else 0)
        finally:
            os.close(fd)
        return out


# --- counters ---------------------------------------------------------------------------------

def read_counters() -> dict[str, dict[str, Any]]:
    """Raw values of the counters the spec compares: /proc/vmstat (``thp_*`` and
    :data:`VMSTAT_KEYS`) and every file of every ``hugepages-<N>kB/stats/`` directory."""
    vm: dict[str, int] = {}
    with open("/proc/vmstat") as f:
        for line in f:
            key, val = line.split()
            if key.startswith("thp_") or key in VMSTAT_KEYS:
                vm[key] = int(val)
    mthp: dict[str, dict[str, int]] = {}
    for d in sorted(THP_DIR.glob("hugepages-*kB")):
        stats = d / "stats"
        if not stats.is_dir():
            continue
        size = d.name.removeprefix("hugepages-")
        vals = {}
        for s in sorted(stats.iterdir()):
            try:
                vals[s.name] = int(s.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
        mthp[size] = vals
    return {"vmstat": vm, "mthp": mthp}


def counter_deltas(base: dict[str, dict[str, Any]],
                   now: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Non-zero deltas ``now - base``: ``{"vmstat": {...}, "mthp": {"2048kB": {...}}}``."""
    vm = {k: v - base["vmstat"].get(k, 0) for k, v in sorted(now["vmstat"].items())}
    mthp = {}
    for size, vals in now["mthp"].items():
        old = base["mthp"].get(size, {})
        d = {k: v - old.get(k, 0) for k, v in sorted(vals.items()) if v != old.get(k, 0)}
        if d:
            mthp[size] = d
    return {"vmstat": {k: v for k, v in vm.items() if v}, "mthp": mthp}
