"""The user-facing API: a :class:`System` (physical memory, THP settings, global counters,
the deferred split queue) and its :class:`Process` objects, whose methods are the syscalls.

Example::

    system = System(ThpSettings(enabled="madvise"))
    p = system.process("main")
    a = p.mmap_region(2 << 20)
    p.madvise(a, 2 << 20, "hugepage")
    p.write(a, 2 << 20, 7)
    p.mlock(a, 1 << 20)
    system.shrink()
"""

from __future__ import annotations

import errno as _errno
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from foliosim.mm import gup, huge_memory, madvise, memory, mlock, mmap, mprotect, mremap
from foliosim.mm.folio import MAX_PROCESSES, PG_FREE, ZERO_FID, Folios
from foliosim.mm.mm_types import MM, VM_READ, VM_WRITE, AnonVma
from foliosim.mm.page_alloc import BuddyAllocator, OutOfMemory
from foliosim.mm.pgtable import P_DIRTY, P_SWAP, P_WRITE, PMD_SIZE, PmdLeaf
from foliosim.mm.policy import DEFAULT_POLICY
from foliosim.mm.swap import SwapFile
from foliosim.mm.vmstat import VmStat

__all__ = ["Process", "SyscallError", "System", "ThpSettings"]

SIZE_ORDERS = {"16K": 2, "32K": 3, "64K": 4, "128K": 5, "256K": 6, "512K": 7, "1M": 8, "2M": 9}
GUARD_GAP = PMD_SIZE
USER_BASE = 0x7F0000000000 >> 21 << 21


@dataclass
class ThpSettings:
    """The THP knobs: ``transparent_hugepage/enabled``, ``hugepages-<N>kB/enabled`` by size
    name, ``use_zero_page``, ``shrink_underused``, ``khugepaged/max_ptes_none``, swap."""

    enabled: str = "madvise"
    sizes: dict[str, str] = field(default_factory=dict)
    use_zero_page: bool = True
    shrink_underused: bool = True
    max_ptes_none: int = 511
    swap: str = "none"

    def order_mode(self, order: int) -> str:
        """The ``hugepages-<N>kB/enabled`` mode of a folio order."""
        for name, o in SIZE_ORDERS.items():
            if o == order:
                return self.sizes.get(name, "inherit" if order == 9 else "never")
        return "never"


class SyscallError(Exception):
    """Raised by :class:`Process` methods in ``strict`` mode; otherwise they return -errno."""


class System:
    """A simulated machine.

    :param settings: THP knobs in force
    :param ram_bytes: simulated physical memory (default 1 TiB)
    :param policy: the policy hooks (default Linux 6.18)
    :param trace: record explanation events (``events``) for every decision
    """

    def __init__(self, settings: ThpSettings | None = None, ram_bytes: int = 1 << 40,
                 policy: object | None = None, trace: bool = False) -> None:
        self.settings = settings or ThpSettings()
        self.folios = Folios(limit=(ram_bytes >> 12) + 1024)
        self.buddy = BuddyAllocator(ram_bytes >> 12)
        self.vmstat = VmStat()
        self.policy = policy if policy is not None else DEFAULT_POLICY()
        self.deferred_queue: dict[int, None] = {}
        self.anon_vmas: dict[int, AnonVma] = {}
        self._next_anon_vma = 1
        self._next_mm = 1
        self.processes: dict[str, Process] = {}
        self.swap = SwapFile() if self.settings.swap == "file" else None
        self.huge_zero_allocated = False
        self.tracing = trace
        self.events: list[str] = []
        self.listeners: list[Callable[[str], None]] = []
        self.stats_rmap_walks = 0
        self.stats_split_failures: Counter[str] = Counter()
        self.last_split: np.ndarray | list[int] = []  # the folio ids of the last split
        self.fail_orders: set[int] = set()
        self.pins: dict[str, gup.IoBuffer | None] = {}
        self._next_addr = USER_BASE
        self.region_names: dict[int, list[tuple[int, int, str]]] = {}
        self.allowable_cache: dict[tuple, tuple[int, ...]] = {}

    # -- explanations -----------------------------------------------------------------------
    def trace(self, msg: str) -> None:
        """Record an explanation event (cheap when nobody listens)."""
        if self.tracing:
            self.events.append(msg)
            for cb in self.listeners:
                cb(msg)

    def trace_free(self, f: int) -> None:
        if self.tracing:
            self.trace(f"{self.fname(f)} freed (__folio_put)")

    def trace_split(self, f: int) -> None:
        pass

    def fname(self, f: int) -> str:
        F = self.folios
        return f"order-{int(F.order[f])} folio @pfn {int(F.pfn[f]):#x}"

    def fmt_addr(self, mm: MM, addr: int) -> str:
        """An address as ``region+offset`` when a region name is known, else hex."""
        for start, size, name in self.region_names.get(mm.id, ()):
            if start <= addr <= start + size:
                return f"{name}+{_human(addr - start)}"
        return f"{addr:#x}"

    def name_region(self, mm: MM, start: int, size: int, name: str) -> None:
        """Let explanations call ``[start, start + size)`` of ``mm`` by ``name``."""
        self.region_names.setdefault(mm.id, []).append((start, size, name))

    # -- bookkeeping ------------------------------------------------------------------------
    def new_anon_vma(self, parent: AnonVma | None = None) -> AnonVma:
        av = AnonVma(self._next_anon_vma, parent)
        self.anon_vmas[av.id] = av
        self._next_anon_vma += 1
        return av

    def get_huge_zero_folio(self) -> bool:
        """``mm_get_huge_zero_folio``: allocated on first use (``thp_zero_page_alloc``);
        False when no order-9 block is free (``thp_zero_page_alloc_failed``)."""
        if not self.huge_zero_allocated:
            try:
                self.huge_zero_pfn = self.buddy.alloc(9)
            except OutOfMemory:
                self.vmstat.count("thp_zero_page_alloc_failed")
                return False
            self.huge_zero_allocated = True
            self.vmstat.count("thp_zero_page_alloc")
        return True

    def alloc_fails(self, order: int) -> bool:
        return order in self.fail_orders

    def process(self, name: str = "main") -> Process:
        """The process ``name``, created (with an empty mm) if it does not exist."""
        p = self.processes.get(name)
        if p is None:
            if len(self.processes) >= MAX_PROCESSES:
                raise RuntimeError(f"at most {MAX_PROCESSES} processes can be alive at once "
                                   "(per-page mapcounts are 16-bit)")
            p = Process(self, name, MM(self, self._next_mm, name))
            self._next_mm += 1
            self.processes[name] = p
        return p

    def shrink(self) -> int:
        """``echo 2 > /proc/sys/vm/drop_caches``: ``drop_slab`` runs the deferred split shrinker
        in passes until a pass frees nothing."""
        total = 0
        while True:
            n = huge_memory.deferred_split_scan(self)
            total += n
            if n == 0:
                return total

    def placement(self, size: int, misalign: int) -> tuple[int, int, int]:
        """Where a region goes, as the live runner places it: a 2 MiB-aligned address plus
        ``misalign`` inside a PROT_NONE guard reservation with 2 MiB free on each side."""
        span = ((misalign + size + PMD_SIZE - 1) // PMD_SIZE) * PMD_SIZE
        guard_start = self._next_addr
        guard_len = span + 2 * GUARD_GAP
        self._next_addr += guard_len + PMD_SIZE
        return guard_start, guard_len, guard_start + GUARD_GAP + misalign

    def folio_alive(self, f: int) -> bool:
        return not self.folios.flags[f] & PG_FREE


def _ret(r: int) -> int:
    return 0 if r >= 0 else r


class Process:
    """A process: its mm and the syscalls. Methods return 0 or ``-errno`` like the kernel."""

    def __init__(self, system: System, name: str, mm: MM) -> None:
        self.system = system
        self.name = name
        self.mm = mm

    @property
    def alive(self) -> bool:
        return self.mm.alive

    # -- mappings ---------------------------------------------------------------------------
    def mmap(self, addr: int, length: int, prot: str = "rw") -> int:
        """``mmap(addr, length, prot, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED)``."""
        if length <= 0 or addr % 4096 or length % 4096:
            return -_errno.EINVAL
        mmap.do_mmap(self.system, self.mm, addr, length, prot)
        return 0

    def mmap_region(self, size: int, prot: str = "rw", misalign: int = 0) -> int:
        """Map a region as the live runner does (guard reservation, then MAP_FIXED inside);
        returns its address."""
        addr = self.reserve_guard(size, misalign)
        mmap.do_mmap(self.system, self.mm, addr, size, prot)
        return addr

    def reserve_guard(self, size: int, misalign: int = 0) -> int:
        """The PROT_NONE MAP_NORESERVE guard reservation a region is placed in (spec 1.2);
        returns the region's address inside it, to be mapped with :meth:`mmap`."""
        gs, gl, addr = self.system.placement(size, misalign)
        mmap.do_mmap(self.system, self.mm, gs, gl, "none", guard=True)
        return addr

    def munmap(self, addr: int, length: int) -> int:
        if addr % 4096 or length == 0:
            return -_errno.EINVAL
        return _ret(mmap.do_munmap(self.system, self.mm, addr, _page_align(length)))

    def mprotect(self, addr: int, length: int, prot: str) -> int:
        return _ret(mprotect.do_mprotect(self.system, self.mm, addr, _page_align(length), prot))

    def madvise(self, addr: int, length: int, advice: str) -> int:
        return _ret(madvise.do_madvise(self.system, self.mm, addr, _page_align(length), advice))

    def mlock(self, addr: int, length: int, onfault: bool = False) -> int:
        from foliosim.mm.mm_types import VM_LOCKED, VM_LOCKONFAULT

        flags = VM_LOCKED | (VM_LOCKONFAULT if onfault else 0)
        return _ret(mlock.do_mlock(self.system, self.mm, addr, _page_align(length), flags))

    def munlock(self, addr: int, length: int) -> int:
        return _ret(mlock.do_munlock(self.system, self.mm, addr, _page_align(length)))

    def mlockall(self, current: bool = False, future: bool = False, onfault: bool = False) -> int:
        return _ret(mlock.sys_mlockall(self.system, self.mm, current, future, onfault))

    def munlockall(self) -> int:
        return mlock.sys_munlockall(self.system, self.mm)

    def mremap(self, src: int, old_len: int, new_len: int, dst: int) -> int:
        """``mremap(src, old_len, new_len, MREMAP_MAYMOVE|MREMAP_FIXED, dst)``; 0 on success."""
        return _ret(mremap.do_mremap(self.system, self.mm, src, old_len, new_len, dst))

    # -- memory access ----------------------------------------------------------------------
    def _accessible(self, addr: int, length: int, need: int) -> bool:
        a = addr
        for vma in self.mm.vmas_in(addr, addr + length):
            if vma.start > a or not vma.flags & need:
                return False
            a = vma.end
        return a >= addr + length

    def write(self, addr: int, length: int, value: int) -> int:
        """Store ``value`` at the start of every page of the range (write faults as needed);
        -EFAULT, touching nothing, unless the range is mapped writable."""
        if not self._accessible(addr, length, VM_WRITE):
            return -_errno.EFAULT
        s = self.system
        F = s.folios
        end = addr + length
        a = addr
        while a < end:
            vma = self.mm.vma_at(a)
            slot = a >> 21
            ent = self.mm.pmd.get(slot)
            nxt = min((slot + 1) << 21, end, vma.end)
            if isinstance(ent, PmdLeaf) and ent.fid >= 0 and ent.bits & P_WRITE:
                i = (a >> 12) & 511
                F.set_value(ent.fid, i, (nxt - a) >> 12, value)
                ent.bits |= P_DIRTY  # the CPU sets the dirty bit on a store
                a = nxt
                continue
            if ent is not None and not isinstance(ent, PmdLeaf):
                i = (a >> 12) & 511
                f, b = int(ent.fid[i]), int(ent.bits[i])
                if b & P_SWAP:
                    pass  # swap-in: one by one
                elif f >= 0 and b & P_WRITE:
                    a += self._store_present(ent, a, (nxt - a) >> 12, value) << 12
                    continue
                elif f != -1 and memory.do_wp_pages_bulk(s, vma, ent, a, nxt):
                    continue  # now writable: stored on the next turn
            if ent is None and nxt - a == PMD_SIZE:
                big = memory.do_huge_pmd_anonymous_pages_bulk(
                    s, vma, a, min(end, vma.end), value) if self._thp_here(vma, a) else 0
                if big:
                    a += big
                    continue
                n = memory.do_anonymous_slots_bulk(s, vma, a, end, value)
                if n:
                    a += n << 12
                    continue
            n = memory.bulk_fault(s, vma, a, nxt, value)
            if n:
                a += n << 12
                continue
            n = memory.do_anonymous_mthp_bulk(s, vma, a, nxt, value)
            if n < 0:  # mapped and stored
                a += -n << 12
                continue
            if n:
                continue  # mapped (reading zero): stored on the next turn
            r = memory.handle_mm_fault(s, vma, a, True)
            if r:
                return -_errno.ENOMEM
        return 0

    def _thp_here(self, vma, a: int) -> bool:
        """Would a write fault at ``a`` map a PMD THP (order 9 allowed and fitting)?"""
        s = self.system
        return (huge_memory.thp_vma_allowable_order(s, vma, 9, "pagefault")
                and huge_memory.thp_vma_suitable_order(vma, a, 9))

    def _store_present(self, pt, a: int, n: int, value: int) -> int:
        """Store into the run of present, writable pages from ``a`` (at most ``n``); returns
        how many pages it covered."""
        F = self.system.folios
        i = (a >> 12) & 511
        fids = pt.fid[i:i + n]
        bits = pt.bits[i:i + n]
        ok = (bits & (P_WRITE | P_SWAP)) == P_WRITE  # writable implies a present folio
        run = n if ok.all() else int(ok.argmin())
        if not run:
            return 0
        seg = fids[:run]
        if (F.order[seg] == 0).all():
            F.val[seg] = value
        else:
            # whole folios with uniform per-page state take the value in their column;
            # the rest batch by batch
            starts, f, lens = memory.whole_folio_runs(self.system, pt, i, i + run)
            uni = memory.uniform_mask(self.system, f)
            F.val[f[uni]] = value
            done = memory.run_mask(run, starts[uni] - i, lens[uni])
            left = np.flatnonzero(~done)  # the slots a batch at a time, skipping the rest
            k = 0
            while k < len(left):
                j = int(left[k])
                f1 = int(seg[j])
                m = memory.folio_pte_batch(self.system, pt, i + j, f1, run - j)
                F.set_value(f1, int(pt.idx[i + j]), m, value)
                k = int(np.searchsorted(left, j + m))
        pt.bits[i:i + run] |= P_DIRTY
        return run

    def read(self, addr: int, length: int) -> int:
        """Load one byte of every page (read faults as needed)."""
        if not self._accessible(addr, length, VM_READ):
            return -_errno.EFAULT
        s = self.system
        end = addr + length
        a = addr
        while a < end:
            vma = self.mm.vma_at(a)
            slot = a >> 21
            ent = self.mm.pmd.get(slot)
            nxt = min((slot + 1) << 21, end)
            if isinstance(ent, PmdLeaf):
                a = nxt
                continue
            if ent is not None:
                i = (a >> 12) & 511
                if s.tracing:  # page by page, the reference
                    if int(ent.fid[i]) != -1 and not ent.bits[i] & P_SWAP:
                        a += 4096
                        continue
                else:
                    # a run of present pages needs nothing; a run of empty PTEs takes the
                    # read faults of do_anonymous_page at once (the shared zero page); a run
                    # of swap entries takes do_swap_page entry by entry
                    n = (min(nxt, vma.end) - a) >> 12
                    fid = ent.fid[i:i + n]
                    swap = (ent.bits[i:i + n] & P_SWAP) != 0
                    present = (fid != -1) & ~swap
                    kind = present if present[0] else swap if swap[0] else (fid == -1)
                    run = n if kind.all() else int(kind.argmin())
                    if swap[0]:
                        for j in range(i, i + run):
                            if ent.bits[j] & P_SWAP:
                                memory.handle_pte_fault(s, vma, ent, a, False, False)
                            a += 4096
                        continue
                    if run:
                        if not present[0]:
                            ent.fid[i:i + run] = ZERO_FID
                            ent.clear_idx(slice(i, i + run))
                            ent.bits[i:i + run] = 0
                        a += run << 12
                        continue
            memory.handle_mm_fault(s, vma, a, False)
        return 0

    def value_at(self, addr: int) -> int | None:
        """The 64-bit word at ``addr``'s page start, if present."""
        f, k, _ = gup.follow_page(self.system, self.mm, addr)
        if f == -1:
            return None
        if f < 0:
            return 0
        return self.system.folios.value(f, k)

    # -- /proc views -------------------------------------------------------------------------
    def smaps(self) -> list[tuple[int, int, object]]:
        """``/proc/PID/smaps``: ``(start, end, Smaps)`` for every VMA but the guard
        reservations the runner places around regions."""
        from foliosim.proc.smaps import show_smap

        return [(v.start, v.end, show_smap(self.system, v)) for v in self.mm.vmas if not v.guard]

    def status(self) -> dict[str, int]:
        """``/proc/PID/status``: VmLck (``locked_vm``), VmPin (``pinned_vm``), VmSwap, in kB."""
        mm = self.mm
        return {"vm_lck_kb": mm.locked_vm * 4, "vm_pin_kb": mm.pinned_vm * 4,
                "vm_swap_kb": mm.swap_ents * 4}

    def pages(self, addr: int, length: int) -> list:
        """pagemap + kpageflags + kpagecount of every page of the range (``Page`` records)."""
        from foliosim.proc.page import range_pages

        return list(range_pages(self.system, self.mm, addr, addr + length))

    # -- processes --------------------------------------------------------------------------
    def fork(self, child: str) -> Process:
        """``fork``: a new process sharing every page copy-on-write; ``child`` names it and
        must not name a live process (ValueError)."""
        s = self.system
        if child in s.processes:
            raise ValueError(f"fork: a live process is named {child!r} already")
        c = s.process(child)
        s.region_names[c.mm.id] = list(s.region_names.get(self.mm.id, ()))
        mmap.dup_mmap(s, self.mm, c.mm)
        for _pid, buf in s.pins.items():
            if buf is not None and self.name in buf.sharers:
                buf.sharers.add(child)
        s.tracing and s.trace(f"fork {self.name} -> {child} (dup_mmap)")
        return c

    def exit(self) -> int:
        """The process exits: its mappings are torn down (``exit_mmap``) and pins it was the
        last to share are released."""
        s = self.system
        mmap.exit_mmap(s, self.mm)
        for pid, buf in list(s.pins.items()):
            if buf is not None and self.name in buf.sharers:
                buf.sharers.discard(self.name)
                if not buf.sharers:
                    gup.io_buffer_unmap(s, buf)
                    s.pins[pid] = None
        del s.processes[self.name]
        return 0

    # -- pins -------------------------------------------------------------------------------
    def pin(self, addr: int, length: int, pin_id: str) -> int:
        """A long-term write pin of the range as io_uring's IORING_REGISTER_BUFFERS takes it."""
        s = self.system
        buf = gup.io_sqe_buffer_register(s, self.mm, addr, length)
        if isinstance(buf, int):
            s.pins[pin_id] = None
            return buf
        buf.sharers.add(self.name)
        s.pins[pin_id] = buf
        return 0

    def unpin(self, pin_id: str) -> int:
        """IORING_UNREGISTER_BUFFERS: releases the pin for every process sharing it."""
        s = self.system
        buf = s.pins.get(pin_id)
        if buf is None:
            return -_errno.ENXIO
        gup.io_buffer_unmap(s, buf)
        s.pins[pin_id] = None
        return 0

    def dma_write(self, pin_id: str, value: int) -> int:
        """A device writes ``value`` into the pinned pages of the buffer, wherever they are now
        mapped, or no longer mapped (simulator only)."""
        s = self.system
        buf = s.pins.get(pin_id)
        if buf is None:
            return -_errno.ENXIO
        for f, k in buf.pages:
            s.folios.set_value(f, k, 1, value)
        return 0


def _human(n: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def _page_align(n: int) -> int:
    return (n + 4095) & ~4095

