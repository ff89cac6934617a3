"""The simulator target: runs a resolved scenario on the model and records observations in
the contract's format (spec sections 1 and 2)."""

from __future__ import annotations

import errno as _errno
import time
from typing import Any

from foliosim import KERNEL_MODEL, __version__
from foliosim.mm.system import Process, System, ThpSettings
from foliosim.mm.vmstat import delta
from foliosim.observation import document, encode_runs
from foliosim.proc.page import range_pages
from foliosim.proc.smaps import show_smap
from foliosim.scenario.model import Scenario, Settings

__all__ = ["run", "settings_of", "SimRun"]


def settings_of(st: Settings) -> ThpSettings:
    """The model's THP settings for a scenario's ``settings``."""
    return ThpSettings(enabled=st.enabled, sizes=dict(st.sizes), use_zero_page=st.use_zero_page,
                       shrink_underused=st.shrink_underused, max_ptes_none=st.max_ptes_none,
                       swap=st.swap)


class SimRun:
    """One scenario on one :class:`System`: regions by process, pins, the counter baseline."""

    def __init__(self, scenario: Scenario, explain: bool = False, policy: object | None = None,
                 ram_bytes: int = 1 << 40) -> None:
        self.scenario = scenario
        self.system = System(settings_of(scenario.settings), ram_bytes=ram_bytes, policy=policy,
                             trace=explain)
        self.system.process("main")
        self.regions: dict[str, dict[str, tuple[int, int]]] = {"main": {}}
        self.order: list[str] = ["main"]
        self.guards: dict[int, int] = {}
        self.baseline = self.system.vmstat.snapshot()

    def prepare(self, index: int, st: Any) -> None:
        """Set-up that is not the step's call (untimed, as on the live target): the guard
        reservation a region is placed in."""
        if st.op in ("mmap", "reserve"):
            p = self.system.processes[st.proc]
            self.guards[index] = p.reserve_guard(st.size, st.misalign)

    def step(self, index: int, st: Any) -> int:
        """Run one step; returns 0 or -errno."""
        s = self.system
        op = st.op
        if op == "shrink":
            s.shrink()
            return 0
        p = s.processes[st.proc]
        regs = self.regions[st.proc]
        if op in ("mmap", "reserve"):
            prot = st.prot if op == "mmap" else "none"
            addr = self.guards.pop(index, None)
            if addr is None:  # a caller that did not prepare the step
                addr = p.reserve_guard(st.size, st.misalign)
            p.mmap(addr, st.size, prot)
            regs[st.region] = (addr, st.size)
            s.name_region(p.mm, addr, st.size, st.region)
            return 0
        if op == "fork":
            p.fork(st.child)
            self.regions[st.child] = dict(regs)
            self.order.append(st.child)
            return 0
        if op == "exit":
            p.exit()
            return 0
        if op == "mlockall":
            return p.mlockall(st.current, st.future, st.onfault)
        if op == "munlockall":
            return p.munlockall()
        if op == "unpin":
            return p.unpin(st.id)
        if op == "dma_write":
            return p.dma_write(st.id, st.value)
        if op == "observe":
            return 0
        base = regs[st.region][0]
        addr, length = base + st.offset, st.length
        if op == "munmap":
            return p.munmap(addr, length)
        if op == "mprotect":
            return p.mprotect(addr, length, st.prot)
        if op == "madvise":
            return p.madvise(addr, length, st.advice)
        if op == "mlock":
            return p.mlock(addr, length, st.onfault)
        if op == "munlock":
            return p.munlock(addr, length)
        if op == "mremap":
            dst = regs[st.to][0] + st.to_offset
            return p.mremap(addr, length, st.new_length, dst)
        if op == "write":
            return p.write(addr, length, st.value)
        if op == "read":
            return p.read(addr, length)
        if op == "pin":
            return p.pin(addr, length, st.id)
        raise ValueError(f"unknown op {op!r}")

    def observe(self, label: str, index: int) -> dict[str, Any]:
        """An observation of every live process (spec section 2)."""
        s = self.system
        procs: dict[str, Any] = {}
        for name in sorted(n for n in self.order if n in s.processes):
            p = s.processes[name]
            procs[name] = self._observe_process(p)
        return {"label": label, "step": index, "processes": procs,
                "counters": delta(s.vmstat.snapshot(), self.baseline)}

    def _observe_process(self, p: Process) -> dict[str, Any]:
        s = self.system
        mm = p.mm
        regions = {}
        locked_kb = 0
        for rname, (addr, size) in sorted(self.regions[p.name].items()):
            vmas = []
            for vma in mm.vmas_in(addr, addr + size):
                sm = show_smap(s, vma)
                lo, hi = max(vma.start, addr), min(vma.end, addr + size)
                if "lo" in sm.vmflags:
                    locked_kb += (hi - lo) >> 10
                vmas.append({"start": lo - addr, "end": hi - addr, "perms": sm.perms,
                             "vmflags": sm.vmflags, "rss_kb": sm.rss_kb,
                             "anonymous_kb": sm.anonymous_kb,
                             "anon_huge_pages_kb": sm.anon_huge_pages_kb,
                             "locked_kb": sm.locked_kb, "swap_kb": sm.swap_kb,
                             "lazyfree_kb": sm.lazyfree_kb, "thp_eligible": sm.thp_eligible})
            regions[rname] = {"vmas": vmas,
                              "pages": encode_runs(range_pages(s, mm, addr, addr + size))}
        status = {"vm_lck_kb": locked_kb, "vm_pin_kb": mm.pinned_vm * 4,
                  "vm_swap_kb": mm.swap_ents * 4}
        return {"status": status, "regions": regions}

    def finish(self) -> dict[str, Any]:
        """Every live process exits, youngest first; the ``end`` observation holds counters."""
        s = self.system
        for name in reversed(self.order):
            if name in s.processes:
                s.processes[name].exit()
        return {"label": "end", "step": len(self.scenario.steps), "processes": {},
                "counters": delta(s.vmstat.snapshot(), self.baseline)}


def run(scenario: Scenario, *, explain: bool = False, policy: object | None = None
        ) -> dict[str, Any]:
    """Run a resolved scenario on the model; returns the observation document. With
    ``explain`` every step carries the model's ``events``."""
    r = SimRun(scenario, explain=explain, policy=policy)
    steps, observations = [], []
    for i, st in enumerate(scenario.steps):
        r.system.events = []
        r.prepare(i, st)
        t0 = time.perf_counter_ns()
        ret = r.step(i, st)
        ns = time.perf_counter_ns() - t0
        rec: dict[str, Any] = {"index": i, "op": st.op, "proc": st.proc,
                               "result": 0 if ret >= 0 else -1,
                               "errno": None if ret >= 0 else _errno.errorcode[-ret], "ns": ns}
        if explain:
            rec["events"] = list(r.system.events)
        steps.append(rec)
        if st.op == "observe":
            observations.append(r.observe(st.label, i))
    observations.append(r.finish())
    return document(scenario.name, "sim", {"kernel": "6.18", "model":
                    f"foliosim {__version__} {KERNEL_MODEL}"}, steps, observations)
