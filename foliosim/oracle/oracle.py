"""The data-integrity oracle: it follows a scenario step by step, keeps what every process must
read at every address (:mod:`foliosim.oracle.memory`), and after each step compares that with
what the model's page tables actually hold (:mod:`foliosim.oracle.reader`).

A process must read its own last store, what it inherited at fork, or what a device wrote
through a pin into a page the process still maps; a device reading through a pin must see what
the processes that still map the pinned pages stored there. Anything else is a corruption; the
report names the process (or the pin), address, expected and found value, the step where it
showed, and the last policy action that touched that page. A MADV_FREE'd page may read as zero
until the next store, but not while a pin holds it (reclaim never discards a pinned folio).
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from foliosim.oracle.memory import ExpectedMemory, _IdentSource
from foliosim.oracle.reader import read_slot

if TYPE_CHECKING:
    from foliosim.mm.system import System
    from foliosim.targets.sim import SimRun

__all__ = ["NO_POLICY_ACTION", "Corruption", "Oracle"]

NO_POLICY_ACTION = "no policy action touched this page (the model's own behaviour)"
"""The cause of a corruption that no logged policy action explains."""

# advice that changes no content (populate and collapse copy or fault, they do not change data)
_CONTENT_NEUTRAL = ("hugepage", "nohugepage", "cold", "pageout", "collapse", "populate_read",
                    "populate_write")


class Corruption(NamedTuple):
    """A page whose content is not what the process must read.

    :ivar step: index of the step after which it was found
    :ivar op: that step's op
    :ivar process: the process reading it
    :ivar addr: the page's address in that process
    :ivar expected: the value the process must read
    :ivar found: the value the model holds
    :ivar cause: the last policy action that touched this page (step and what it did), or
        a note that none did
    :ivar where: the address as the model's explanations name it (``region+offset``)
    """

    step: int
    op: str
    process: str
    addr: int
    expected: int
    found: int
    cause: str
    where: str = ""

    @property
    def by_policy(self) -> bool:
        """Whether a policy action is named as the cause."""
        return self.cause != NO_POLICY_ACTION

    def __str__(self) -> str:
        return (f"step {self.step} ({self.op}): {self.process} reads {self.found:#x} at "
                f"{self.where or hex(self.addr)}, expected {self.expected:#x}; "
                f"cause: {self.cause}")


@dataclass
class _Pin:
    idents: np.ndarray
    sharers: set[str] = field(default_factory=set)
    active: bool = True


class Oracle:
    """Expected memory of every process of one run, updated after each step.

    Use :meth:`after_step` with the step's result, then :meth:`check` against the model.
    A failed step changes nothing, except MADV_DONTNEED/FREE over a hole (-ENOMEM), which the
    kernel applies to the mapped parts before it fails.
    """

    def __init__(self) -> None:
        self._ids = _IdentSource()
        self.procs: dict[str, ExpectedMemory] = {"main": ExpectedMemory(self._ids)}
        self.pins: dict[str, _Pin] = {}
        self.ops: list[str] = []

    # -- following the scenario -------------------------------------------------------------
    def after_step(self, index: int, st: Any, ret: int, run: SimRun) -> None:
        """Apply the effect step ``st`` (already run on ``run``, returning ``ret``) has on
        what the processes must read."""
        self.ops.append(st.op)
        op = st.op
        if op == "madvise" and ret == -errno.ENOMEM and st.advice in ("dontneed", "free"):
            ret = 0  # applied to the mapped parts of the range, then -ENOMEM for the hole
        if ret != 0:
            return
        if op in ("shrink", "observe", "mprotect", "mlock", "munlock", "mlockall",
                  "munlockall", "read"):
            return
        if op == "fork":
            self.procs[st.child] = self.procs[st.proc].fork()
            for pin in self.pins.values():
                if pin.active and st.proc in pin.sharers:
                    pin.sharers.add(st.child)
            return
        if op == "exit":
            del self.procs[st.proc]
            for pin in self.pins.values():
                pin.sharers.discard(st.proc)
                if not pin.sharers:
                    pin.active = False
            return
        if op == "unpin":
            self.pins[st.id].active = False
            return
        if op == "dma_write":
            pin = self.pins.get(st.id)
            if pin is not None and pin.active:
                for mem in self.procs.values():
                    mem.device_write(pin.idents, st.value)
            return
        mem = self.procs[st.proc]
        regs = run.regions[st.proc]
        if op in ("mmap", "reserve"):
            addr, size = regs[st.region]
            mem.map_fresh(addr, addr + size)
            return
        addr = regs[st.region][0] + st.offset
        end = addr + st.length
        if op == "write":
            mem.write(addr, end, st.value)
        elif op == "munmap":
            mem.unmap(addr, end)
        elif op == "pin":
            self.pins[st.id] = _Pin(mem.idents(addr, end), {st.proc})
        elif op == "mremap":
            dst = regs[st.to][0] + st.to_offset
            keep = min(st.length, st.new_length)
            moved = mem.take(addr, addr + keep)
            mem.unmap(addr, end)
            mem.unmap(dst, dst + st.new_length)
            mem.put(dst, moved)
            if st.new_length > st.length:
                mem.map_fresh(dst + st.length, dst + st.new_length)
        elif op == "madvise":
            if st.advice == "dontneed":
                mem.discard(addr, end)
            elif st.advice == "free":
                mem.lazyfree(addr, end)
            elif st.advice in ("dontfork", "dofork"):
                mem.set_nofork(addr, end, st.advice == "dontfork")
            elif st.advice not in _CONTENT_NEUTRAL:
                raise ValueError(f"the oracle does not know madvise {st.advice!r}")
        else:
            raise ValueError(f"the oracle does not know op {op!r}")

    # -- checking ---------------------------------------------------------------------------
    def check(self, index: int, system: System, actions: Iterable[Any] = ()) -> list[Corruption]:
        """Compare every mapped page of every live process with the model. A corruption is
        reported once: the expectation then follows what was found, so a later loss of the
        same page is a new report.

        :param actions: the policy's :class:`foliosim.policies.Action` log, to name causes
        """
        found_all: list[Corruption] = []
        pinned = self._pinned_idents()
        for name, mem in self.procs.items():
            p = system.processes.get(name)
            if p is None:
                continue
            for slot, st in mem.items():
                mapped = st.ident != 0
                if not mapped.any():
                    continue
                found, known = read_slot(system, p.mm, slot)
                may_be_zero = st.lazy & ~np.isin(st.ident, pinned)
                bad = mapped & known & (found != st.val) & ~(may_be_zero & (found == 0))
                if not bad.any():
                    continue
                op = self.ops[index] if index < len(self.ops) else "?"
                for i in np.flatnonzero(bad):
                    addr = (slot << 21) + (int(i) << 12)
                    found_all.append(Corruption(index, op, name, addr, int(st.val[i]),
                                                int(found[i]), self._cause(name, addr, actions),
                                                system.fmt_addr(p.mm, addr)))
                st.val[bad] = found[bad]
                st.lazy[bad] = False
                self._detach(st.ident[bad])
        found_all += self._check_pins(index, system, actions)
        return found_all

    def _detach(self, idents: np.ndarray) -> None:
        """Once a pinned page and the mapping of it have diverged (one corruption reported),
        the pin holds a page of its own: it gets new identities that no process maps, so the
        same divergence is not reported again from the other side."""
        for pin in self.pins.values():
            m = np.isin(pin.idents, idents)
            if m.any():
                pin.idents = pin.idents.copy()
                pin.idents[m] = self._ids(int(m.sum()))

    def _pinned_idents(self) -> np.ndarray:
        """The page identities some active pin holds."""
        ids = [pin.idents for pin in self.pins.values() if pin.active]
        return np.concatenate(ids) if ids else np.zeros(0, np.int64)

    def _check_pins(self, index: int, system: System, actions: Iterable[Any]
                    ) -> list[Corruption]:
        """What a device reads through each active pin against what the processes still
        mapping the pinned pages must read there (a process store the device does not see is
        as much a corruption as a device write the process does not see). Reported once per
        page: the pin is then detached from the mapping (:meth:`_detach`)."""
        out: list[Corruption] = []
        located = self._pinned_locations()
        for pid, pin in self.pins.items():
            buf = system.pins.get(pid) if pin.active else None
            if buf is None or len(buf.pages) != len(pin.idents):
                continue
            for j, (f, k) in enumerate(buf.pages):
                where = located.get(int(pin.idents[j]))
                if where is None:
                    continue  # no process maps the page any more: nothing to compare
                name, addr, st, i = where
                found = system.folios.value(f, k)
                if found == int(st.val[i]):
                    continue
                op = self.ops[index] if index < len(self.ops) else "?"
                p = system.processes.get(name)
                out.append(Corruption(index, op, f"device (pin {pid})", addr, int(st.val[i]),
                                      found, self._cause(name, addr, actions),
                                      system.fmt_addr(p.mm, addr) if p is not None else ""))
                self._detach(pin.idents[j:j + 1])
        return out

    def _pinned_locations(self) -> dict[int, tuple[str, int, Any, int]]:
        """For each page identity an active pin holds and some process maps: that process,
        the address, the slot state and the index (the first met)."""
        pinned = self._pinned_idents()
        out: dict[int, tuple[str, int, Any, int]] = {}
        if not len(pinned):
            return out
        for name, mem in self.procs.items():
            for slot, st in mem.items():
                for i in np.flatnonzero(np.isin(st.ident, pinned)).tolist():
                    out.setdefault(int(st.ident[i]), (name, (slot << 21) + (i << 12), st, i))
        return out

    def _cause(self, process: str, addr: int, actions: Iterable[Any]) -> str:
        last = None
        for a in actions:
            if a.covers(process, addr):
                last = a
        if last is None:
            return NO_POLICY_ACTION
        op = self.ops[last.step] if 0 <= last.step < len(self.ops) else "?"
        return f"step {last.step} ({op}): {last.kind}: {last.detail}"
