"""Runs one resolved scenario on the live kernel (spec 1.2) and observes it (spec 2).

Order of a run: lock, recover from a crashed run, signal handlers, pin the runner to the
scenario CPU, push the THP settings (1 s pause when a mode changed), park khugepaged, swap file,
memory cgroup, first agent, THP off for the runner itself, drain + counter baseline, the steps,
exit of every remaining process youngest first (drain after each), the ``end`` observation. The
teardown undoes all of it in reverse on every exit path.
"""

from __future__ import annotations

import errno as errno_mod
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foliosim.observation import document, encode_runs
from foliosim.scenario.model import Scenario
from foliosim.targets.live import agent as ag
from foliosim.targets.live import readers, session, swap
from foliosim.targets.live.cgroup import DEFAULT_MEMORY_LIMIT, MemoryCgroup, MemoryLimitExceeded
from foliosim.targets.live.khugepaged import Helper, park
from foliosim.targets.live.sysfs import SettingsStack

PROT = {"none": 0, "r": 1, "rw": 3}
MADV = {
    "dontneed": 4, "free": 8, "dontfork": 10, "dofork": 11, "hugepage": 14, "nohugepage": 15,
    "cold": 20, "pageout": 21, "populate_read": 22, "populate_write": 23, "collapse": 25,
}
MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4
DROP_CACHES = "/proc/sys/vm/drop_caches"


class LiveError(RuntimeError):
    """A live run failed (dead agent, the kernel refused a setup step, restore errors)."""


def before_step(index: int, step: Any, run: LiveRun) -> None:
    """Called before every step; a no-op (tests replace it to interrupt a run mid-way)."""


@dataclass
class _Proc:
    name: str
    agent: ag.Agent
    regions: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (addr, size)


@dataclass
class _Pin:
    slot: int
    state: str  # held | failed | released
    sharers: set[str] = field(default_factory=set)


def errno_name(n: int) -> str | None:
    """``EINVAL`` for 22; None for 0."""
    return errno_mod.errorcode.get(n, str(n)) if n else None


def scenario_cpu() -> int:
    """The CPU every scenario process (and the runner, while it runs one) is pinned to."""
    return max(os.sched_getaffinity(0))


class LiveRun:
    """One run of one scenario; :meth:`execute` inside :meth:`setup`/:meth:`teardown`."""

    def __init__(self, scenario: Scenario, *, progress: Callable[[int, int], None] | None,
                 memory_limit: int = DEFAULT_MEMORY_LIMIT, binary: Path) -> None:
        self.scenario = scenario
        self.progress = progress
        self.memory_limit = memory_limit
        self.binary = binary
        self.td = session.Teardown()
        self.journal = session.Journal()
        self.procs: dict[str, _Proc] = {}  # alive processes in creation order
        self.pins: dict[str, _Pin] = {}
        self.cgroup: MemoryCgroup | None = None
        self.data_limit = 0
        self.cpu = scenario_cpu()
        self.listener: ag.Listener | None = None
        self.reader: readers.PageReader | None = None
        self.drainer: session.Drainer | None = None
        self.baseline: dict[str, Any] = {}

    # --- setup and teardown --------------------------------------------------------------

    def setup(self) -> None:
        """Bring the machine into the state the run needs; every change registers its undo."""
        td = self.td
        lock = session.machine_lock()
        lock.__enter__()
        td.add("release the lock", lambda: lock.__exit__(None, None, None))
        errors = session.recover(self.journal.path)
        if errors:
            raise LiveError("cannot undo a previous crashed run: " + "; ".join(errors))
        self.journal.save()
        # kept when a restore failed, so that the next run tries again
        td.add("remove the journal", lambda: None if td.errors else self.journal.remove())
        session.install_signal_handlers(td)

        old_affinity = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {self.cpu})
        td.add("restore the runner's CPU affinity", lambda: os.sched_setaffinity(0, old_affinity))
        old_np = session.numpy_madvise_hugepage(False)
        td.add("restore numpy's hugepage madvise", lambda: session.numpy_madvise_hugepage(old_np))
        old_thp = session.get_thp_disable()
        if old_thp:  # the helper would inherit the flag (MMF_INIT_MASK) and get no THP
            session.set_thp_disable(0)
        td.add("restore the runner's PR_SET_THP_DISABLE", lambda: session.set_thp_disable(old_thp))

        stack = SettingsStack(journal=lambda knobs: self.journal.set("knobs", knobs))
        td.add("restore the THP knobs", stack.restore)
        stack.push_settings(self.scenario.settings)

        helper = Helper(self.binary)  # without PR_SET_THP_DISABLE: it must get its THP
        self.journal.add_pid(helper.pid)
        td.add("end the khugepaged helper", helper.kill)
        park(stack, helper)
        # the runner's own memory never gets THPs from now on; agents start with the flag
        # inherited and clear it themselves once their own memory is set up (agent.c)
        session.set_thp_disable(1)

        # made before the swap file, removed after it: swapoff frees the swap cache that
        # is still charged to the cgroup
        self.cgroup = MemoryCgroup.create(self.memory_limit)
        if self.cgroup is not None:
            self.journal.set("cgroup", str(self.cgroup.path))
            td.add("remove the memory cgroup", self.cgroup.remove)
        else:
            self.data_limit = self.memory_limit

        if self.scenario.settings.swap == "file":
            path = swap.swap_path()
            self.journal.set("swapfile", str(path))
            td.add("remove the swap file", lambda: swap.disable(path))
            try:
                swap.enable(path)
            except OSError as e:
                raise LiveError(f"cannot enable a swap file at {path}: {e}") from None

        self.reader = readers.PageReader()
        td.add("close /proc/kpage*", self.reader.close)
        self.drainer = session.Drainer([ag.cache_dir(), Path("/var/tmp")])
        td.add("close the drain file", self.drainer.close)
        self.listener = ag.Listener()
        td.add("close the agents' socket", self.listener.close)
        td.add("end the scenario processes", self._kill_all)
        main = ag.spawn(self.binary, self.listener, "main", cpu=self.cpu,
                        cgroup_procs=self.cgroup.procs if self.cgroup else None,
                        data_limit=self.data_limit)
        self.journal.add_pid(main.pid)
        self.procs["main"] = _Proc("main", main)

    def teardown(self) -> list[str]:
        """Undo everything :meth:`setup` did; returns error messages."""
        return self.td.run()

    def _kill_all(self) -> None:
        for p in reversed(list(self.procs.values())):
            p.agent.kill()
            p.agent.close()
        self.procs.clear()

    # --- the run -------------------------------------------------------------------------

    def execute(self) -> dict[str, Any]:
        """Run the steps, end the processes, and return the observation document."""
        steps = self.scenario.steps
        self._drain()
        self.baseline = readers.read_counters()
        records: list[dict[str, Any]] = []
        observations: list[dict[str, Any]] = []
        for i, step in enumerate(steps):
            before_step(i, step, self)
            try:
                self._check_alive()
                rec = self._step(i, step, observations)
            except ag.AgentDied as e:
                self._agent_died(e)
            records.append(rec)
            if self.progress:
                self.progress(i + 1, len(steps))
        for p in reversed(list(self.procs.values())):
            try:
                self._check_alive()
                self._exit(p)
            except ag.AgentDied as e:
                self._agent_died(e)
        self._drain()
        observations.append({"label": "end", "step": len(steps), "processes": {},
                             "counters": readers.counter_deltas(self.baseline,
                                                                readers.read_counters())})
        system = {"kernel": os.uname().release, "model": "live"}
        return document(self.scenario.name, "live", system, records, observations)

    def _check_alive(self) -> None:
        """Every scenario process that has not exited is still there (else AgentDied)."""
        for p in self.procs.values():
            if p.agent.died():
                raise ag.AgentDied(f"agent of process {p.name!r} (pid {p.agent.pid}) died")

    def _agent_died(self, e: ag.AgentDied) -> None:
        if self.cgroup is not None and self.cgroup.oom_kills():
            raise MemoryLimitExceeded(
                f"the scenario exceeded the live runner's memory limit of {self.memory_limit} "
                f"bytes (the memcg OOM killer ended a scenario process; cgroup "
                f"{self.cgroup.path})") from e
        raise LiveError(str(e)) from e

    def _drain(self) -> None:
        assert self.drainer is not None
        self.drainer.drain()

    def _record(self, i: int, step: Any, result: int, err: int, ns: int) -> dict[str, Any]:
        return {"index": i, "op": step.op, "proc": step.proc, "result": result,
                "errno": errno_name(err) if result else None, "ns": ns}

    def _step(self, i: int, step: Any, observations: list[dict[str, Any]]) -> dict[str, Any]:
        op = step.op
        if op == "observe":
            t0 = time.perf_counter_ns()
            observations.append(self.observe(step.label, i))
            return self._record(i, step, 0, 0, time.perf_counter_ns() - t0)
        if op == "shrink":
            with open(DROP_CACHES, "w") as f:
                t0 = time.perf_counter_ns()
                f.write("2")
                f.flush()
                ns = time.perf_counter_ns() - t0
            return self._record(i, step, 0, 0, ns)
        proc = self.procs.get(step.proc)
        if proc is None:  # the scenario was resolved assuming the fork that made it worked
            raise LiveError(f"step {i}: process {step.proc!r} does not exist (its fork failed)")
        a = proc.agent
        if op == "exit":
            ns = self._exit(proc)
            return self._record(i, step, 0, 0, ns)
        if op == "fork":
            r = a.call(ag.OP_FORK)
            if r.result == 0:
                sock, pid = self.listener.accept() if self.listener else (None, 0)
                if pid != r.extra:
                    raise LiveError(f"forked agent said pid {pid}, fork returned {r.extra}")
                assert sock is not None
                child = _Proc(step.child, ag.Agent(step.child, sock, pid), dict(proc.regions))
                self.journal.add_pid(pid)
                self.procs[step.child] = child
                for pin in self.pins.values():
                    if pin.state == "held" and proc.name in pin.sharers:
                        pin.sharers.add(step.child)
            return self._record(i, step, r.result, r.errno, r.ns)
        if op == "mlockall":
            flags = ((MCL_CURRENT if step.current else 0) | (MCL_FUTURE if step.future else 0)
                     | (MCL_ONFAULT if step.onfault else 0))
            r = a.call(ag.OP_MLOCKALL, flags)
            return self._record(i, step, r.result, r.errno, r.ns)
        if op == "munlockall":
            r = a.call(ag.OP_MUNLOCKALL)
            return self._record(i, step, r.result, r.errno, r.ns)
        if op in ("mmap", "reserve"):
            prot = PROT[step.prot] if op == "mmap" else 0
            r = a.call(ag.OP_MMAP, step.size, prot, step.misalign, int(op == "reserve"))
            proc.regions[step.region] = (r.extra, step.size)
            self._check_data_limit(proc, r, step.size)
            return self._record(i, step, r.result, r.errno, r.ns)
        if op == "unpin":
            pin = self.pins[step.id]
            if pin.state == "failed":
                return self._record(i, step, -1, errno_mod.ENXIO, 0)
            r = a.call(ag.OP_UNPIN, pin.slot)
            if r.result == 0:
                pin.state = "released"
                pin.sharers.clear()
            return self._record(i, step, r.result, r.errno, r.ns)
        if op == "dma_write":
            raise LiveError("dma_write is simulator-only")
        # range operations
        base, _size = proc.regions[step.region]
        addr, length = base + step.offset, step.length
        if op == "munmap":
            r = a.call(ag.OP_MUNMAP, addr, length)
        elif op == "mprotect":
            r = a.call(ag.OP_MPROTECT, addr, length, PROT[step.prot])
            self._check_data_limit(proc, r, length)
        elif op == "madvise":
            r = a.call(ag.OP_MADVISE, addr, length, MADV[step.advice])
        elif op == "mlock":
            r = a.call(ag.OP_MLOCK, addr, length, int(step.onfault))
        elif op == "munlock":
            r = a.call(ag.OP_MUNLOCK, addr, length)
        elif op == "mremap":
            dst = proc.regions[step.to][0] + step.to_offset
            r = a.call(ag.OP_MREMAP, addr, length, step.new_length, dst)
            self._check_data_limit(proc, r, step.new_length)
        elif op in ("write", "read"):
            need = "w" if op == "write" else "r"
            if not readers.range_accessible(readers.read_maps(a.pid), addr, length, need):
                return self._record(i, step, -1, errno_mod.EFAULT, 0)
            if op == "write":
                r = a.call(ag.OP_WRITE, addr, length, step.value)
            else:
                r = a.call(ag.OP_READ, addr, length)
        elif op == "pin":
            slot = len(self.pins)
            r = a.call(ag.OP_PIN, slot, addr, length)
            self.pins[step.id] = _Pin(slot, "held" if r.result == 0 else "failed",
                                      {proc.name} if r.result == 0 else set())
        else:
            raise LiveError(f"unknown op {op!r}")
        return self._record(i, step, r.result, r.errno, r.ns)

    def _check_data_limit(self, proc: _Proc, r: ag.Reply, size: int) -> None:
        """With the RLIMIT_DATA fallback, an ENOMEM beyond the limit is the limit's doing."""
        if not self.data_limit or r.result == 0 or r.errno != errno_mod.ENOMEM:
            return
        with open(f"/proc/{proc.agent.pid}/status") as f:
            vmdata = next((int(line.split()[1]) * 1024 for line in f
                           if line.startswith("VmData:")), 0)
        if vmdata + size > self.data_limit:
            raise MemoryLimitExceeded(
                f"the scenario exceeded the live runner's memory limit of {self.data_limit} "
                f"bytes (RLIMIT_DATA of process {proc.name!r})")

    def _exit(self, proc: _Proc) -> int:
        """End one process: release the pins it is the last to share (as closing the last
        io_uring file would, but synchronously), exit, wait until it is gone, drain."""
        for pin in self.pins.values():
            if pin.state == "held" and proc.name in pin.sharers:
                pin.sharers.discard(proc.name)
                if not pin.sharers:
                    proc.agent.call(ag.OP_UNPIN, pin.slot)
                    pin.state = "released"
        t0 = time.perf_counter_ns()
        proc.agent.call(ag.OP_EXIT)
        if not proc.agent.wait_gone():
            raise LiveError(f"process {proc.name!r} (pid {proc.agent.pid}) did not exit")
        ns = time.perf_counter_ns() - t0
        proc.agent.close()
        del self.procs[proc.name]
        self._drain()
        return ns

    # --- observation ---------------------------------------------------------------------

    def observe(self, label: str, index: int) -> dict[str, Any]:
        """One observation (spec 2) of every alive process, after a drain."""
        assert self.reader is not None
        self._drain()
        processes: dict[str, Any] = {}
        for name, p in self.procs.items():
            pid = p.agent.pid
            try:
                vmas = readers.read_smaps(pid)
                status = readers.read_status(pid)
                regions = {}
                for rname, (addr, size) in p.regions.items():
                    regions[rname] = {
                        "vmas": readers.region_vmas(vmas, addr, size),
                        "pages": encode_runs(self.reader.region_pages(pid, addr, size)),
                    }
            except OSError:
                self._check_alive()
                raise
            processes[name] = {
                "status": {"vm_lck_kb": readers.locked_kb(vmas, list(p.regions.values())),
                           "vm_pin_kb": status["VmPin"], "vm_swap_kb": status["VmSwap"]},
                "regions": regions,
            }
        counters = readers.counter_deltas(self.baseline, readers.read_counters())
        return {"label": label, "step": index, "processes": processes, "counters": counters}
