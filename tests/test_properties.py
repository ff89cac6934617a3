"""Property-based tests of the model: random sequences of every scenario operation across
several processes, under random THP settings, with the invariant checker
(``foliosim.mm.invariants``) run after every step and a data-integrity shadow of page contents.

The machine speaks the scenario format: every step it takes is a step of
``shared/spec/scenario-format.md``, run through ``foliosim.targets.sim.SimRun`` as a scenario
file would be. On failure the shrunk step sequence is printed (hypothesis ``note``) as a
scenario YAML file that ``foliosim run FILE --target sim`` reproduces, and written to
``$FOLIOSIM_REPRO_DIR`` (default: the system temp directory).

Profiles (tests/conftest.py): ``ci`` by default, ``--hypothesis-profile=long`` for a long hunt.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import numpy as np
import yaml
from hypothesis import given, note
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from pydantic import TypeAdapter

from foliosim.mm.invariants import assert_invariants, check_invariants
from foliosim.mm.mm_types import VM_LOCKED
from foliosim.mm.pgtable import NONE, P_SWAP, PmdLeaf
from foliosim.mm.system import System
from foliosim.scenario import Scenario, Settings, Step, load_scenario_text
from foliosim.scenario.model import SIZE_NAMES
from foliosim.targets.sim import SimRun, settings_of

K, M = 1 << 10, 1 << 20
PAGE = 4 * K
MAX_PROCS = 3
MAX_REGIONS = 4
REGION_SIZES = (16 * K, 64 * K, 1 * M, 2 * M, 2 * M, 2 * M + 64 * K, 4 * M)
MISALIGN = (0, 0, 64 * K, 1 * M)
ADVICES = ("hugepage", "nohugepage", "dontneed", "free", "cold", "pageout", "collapse",
           "dontfork", "dofork", "populate_read", "populate_write")
_STEP = TypeAdapter(Step)

# Rules whose violations are tolerated because a known, reported model bug breaks them and
# nothing else does (each such bug has a strict xfail reproducer in tests/test_invariants.py,
# so fixing it makes that test XPASS and points back here). None at the moment.
KNOWN_BUG_RULES: dict[str, str] = {}


# -- THP settings --------------------------------------------------------------------------
thp_settings = st.fixed_dictionaries({
    "enabled": st.sampled_from(["always", "always", "always", "madvise", "madvise", "never"]),
    "sizes": st.dictionaries(st.sampled_from(SIZE_NAMES),
                             st.sampled_from(["always", "always", "inherit", "madvise",
                                              "never"]),
                             max_size=3),
    "use_zero_page": st.booleans(),
    "shrink_underused": st.booleans(),
    "max_ptes_none": st.sampled_from([511, 0, 256]),
    "swap": st.sampled_from(["none", "file"]),
})


def scenario_yaml(name: str, settings_: dict[str, Any], steps: list[dict[str, Any]]) -> str:
    """A scenario file (spec section 1) for a sequence of resolved steps."""
    doc = {"format": "foliosim.scenario/1", "name": name,
           "description": "found by tests/test_properties.py (hypothesis)",
           "settings": settings_, "steps": steps}
    out = yaml.safe_dump({k: v for k, v in doc.items() if k != "steps"}, sort_keys=False)
    out += "steps:\n"
    for s in steps:
        out += "  - " + yaml.safe_dump(s, default_flow_style=True, sort_keys=False,
                                       width=1000).strip() + "\n"
    return out


def region_values(system: System, mm: Any, addr: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``Process.value_at`` of every page of ``[addr, addr + size)`` at once: which pages are
    present (zero pages included, swap entries not) and the word each holds."""
    F = system.folios
    n = size // PAGE
    present = np.zeros(n, bool)
    vals = np.zeros(n, np.uint64)
    a, end = addr, addr + size
    while a < end:
        slot = a >> 21
        nxt = min((slot + 1) << 21, end)
        j0, j1 = (a - addr) // PAGE, (nxt - addr) // PAGE
        i0 = (a >> 12) & 511
        i1 = i0 + j1 - j0
        ent = mm.pmd.get(slot)
        if isinstance(ent, PmdLeaf):
            present[j0:j1] = True
            if ent.fid >= 0:
                vals[j0:j1] = F.values(ent.fid)[i0:i1]
        elif ent is not None:
            fid = ent.fid[i0:i1]
            pres = (fid != NONE) & ((ent.bits[i0:i1] & P_SWAP) == 0)
            present[j0:j1] = pres
            real = pres & (fid >= 0)
            fr, kr = fid[real], ent.idx[i0:i1][real]
            v = F.val[fr].copy()
            for g in np.unique(fr) if F.pages else ():
                pa = F.pages.get(int(g))
                if pa is not None:
                    sel = fr == g
                    v[sel] = pa.val[kr[sel]]
            out = np.zeros(i1 - i0, np.uint64)
            out[real] = v
            vals[j0:j1] = out
        a = nxt
    return present, vals


class Shadow:
    """What each page of one process's regions may hold: ``exact``, or zero as well where a
    lazyfree page may have been discarded (``zero_ok``), or anything (``any_ok``) where a
    failed write may have stored part of its range."""

    def __init__(self) -> None:
        self.regions: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def add(self, region: str, size: int) -> None:
        n = size // PAGE
        self.regions[region] = (np.zeros(n, np.uint64), np.zeros(n, bool), np.zeros(n, bool))

    def copy(self) -> Shadow:
        sh = Shadow()
        sh.regions = {r: (e.copy(), z.copy(), x.copy()) for r, (e, z, x) in self.regions.items()}
        return sh

    def store(self, region: str, off: int, length: int, value: int) -> None:
        e, z, x = self.regions[region]
        sl = slice(off // PAGE, (off + length) // PAGE)
        e[sl], z[sl], x[sl] = value, False, False

    def clear(self, region: str, off: int, length: int) -> None:
        """Unmapped or zapped: the page reads zero once faulted again."""
        self.store(region, off, length, 0)

    def maybe_zero(self, region: str, off: int, length: int) -> None:
        self.regions[region][1][off // PAGE:(off + length) // PAGE] = True

    def maybe_anything(self, region: str, off: int, length: int) -> None:
        self.regions[region][2][off // PAGE:(off + length) // PAGE] = True

    def move(self, src: str, soff: int, dst: str, doff: int, length: int) -> None:
        n = length // PAGE
        a, b = soff // PAGE, doff // PAGE
        for s_arr, d_arr in zip(self.regions[src], self.regions[dst], strict=True):
            d_arr[b:b + n] = s_arr[a:a + n].copy()

    def mismatch(self, region: str, present: np.ndarray, vals: np.ndarray) -> np.ndarray:
        e, z, x = self.regions[region]
        return present & ~x & (vals != e) & ~(z & (vals == 0))


class ModelMachine(RuleBasedStateMachine):
    """Drives :class:`SimRun` with random scenario steps; checks the invariants after every
    step, and that every present page holds what its process last wrote there (or inherited
    at fork, or zero) - or zero as well after MADV_FREE."""

    # -- set-up and bookkeeping ---------------------------------------------------------------
    @initialize(thp=thp_settings, size=st.sampled_from([2 * M, 4 * M, 2 * M + 64 * K, 1 * M]),
                misalign=st.sampled_from(MISALIGN), hugepage=st.booleans(),
                fill=st.sampled_from([True, True, False]))
    def setup(self, thp: dict[str, Any], size: int, misalign: int, hugepage: bool,
              fill: bool) -> None:
        self.thp = thp
        self.run = SimRun(Scenario(name="hypothesis", settings=Settings(**thp), steps=[]))
        self.steps: list[dict[str, Any]] = []
        self.sizes: dict[str, dict[str, int]] = {"main": {}}   # proc -> region -> size
        self.alive: list[str] = ["main"]
        self.next_proc = 1
        self.next_region = 0
        self.next_pin = 0
        self.pin_sharers: dict[str, set[str]] = {}
        self.shadow: dict[str, Shadow] = {"main": Shadow()}
        # a first region, so that every example has memory to work on
        self.map_region("main", size, misalign, "rw", False)
        if hugepage:
            self.do({"op": "madvise", "proc": "main", "region": "r0", "offset": 0,
                     "length": size, "advice": "hugepage"})
        if fill:
            self.write_range("main", "r0", 0, size, 1 + len(self.steps))

    def yaml(self) -> str:
        return scenario_yaml("hypothesis-failure", self.thp, self.steps)

    def fail(self, why: str) -> None:
        text = self.yaml()
        note(f"reproducer ({why}):\n{text}")
        d = Path(os.environ.get("FOLIOSIM_REPRO_DIR", tempfile.gettempdir()))
        try:
            (d / "foliosim-hypothesis-failure.yaml").write_text(text)
        except OSError:
            pass

    def do(self, d: dict[str, Any]) -> int:
        """Validate, record and run one step; returns its result (0 or -errno)."""
        step = _STEP.validate_python(d)
        self.steps.append(d)
        try:
            return self.run.step(len(self.steps) - 1, step)
        except Exception as e:
            self.fail(f"step {len(self.steps) - 1} raised {type(e).__name__}: {e}")
            raise

    # -- drawing arguments --------------------------------------------------------------------
    def procs_with_regions(self) -> list[str]:
        return [p for p in self.alive if self.sizes[p]]

    def draw_range(self, data: st.DataObject, proc: str) -> tuple[str, int, int]:
        region = data.draw(st.sampled_from(sorted(self.sizes[proc])), label="region")
        pages = self.sizes[proc][region] // PAGE
        off = data.draw(st.one_of(st.just(0), st.sampled_from([pages // 2, pages // 4]),
                                  st.integers(0, pages - 1)), label="offset page")
        off = min(off, pages - 1)
        rest = pages - off
        n = data.draw(st.one_of(st.just(rest), st.just(1), st.sampled_from([16, 256, 512]),
                                st.integers(1, rest)), label="pages")
        return region, off * PAGE, min(n, rest) * PAGE

    def addr(self, proc: str, region: str, offset: int) -> int:
        return self.run.regions[proc][region][0] + offset

    def vma_parts(self, proc: str, start: int, end: int) -> list[tuple[int, int, bool]]:
        """The VMAs of ``[start, end)`` in order, as (lo, hi, VM_LOCKED), before a madvise."""
        mm = self.run.system.processes[proc].mm
        return [(max(v.start, start), min(v.end, end), bool(v.flags & VM_LOCKED))
                for v in mm.vmas_in(start, end)]

    # -- the rules ----------------------------------------------------------------------------
    def map_region(self, proc: str, size: int, misalign: int, prot: str, reserve: bool) -> None:
        name = f"r{self.next_region}"
        self.next_region += 1
        if reserve:
            self.do({"op": "reserve", "proc": proc, "region": name, "size": size,
                     "misalign": misalign})
        else:
            self.do({"op": "mmap", "proc": proc, "region": name, "size": size, "prot": prot,
                     "misalign": misalign})
        self.sizes[proc][name] = size
        self.shadow[proc].add(name, size)

    @precondition(lambda self: len(self.alive) > 0)
    @rule(data=st.data(), size=st.sampled_from(REGION_SIZES), misalign=st.sampled_from(MISALIGN),
          prot=st.sampled_from(["rw", "rw", "rw", "r", "none"]), reserve=st.booleans())
    def mmap(self, data, size, misalign, prot, reserve) -> None:
        proc = data.draw(st.sampled_from(self.alive), label="proc")
        if len(self.sizes[proc]) < MAX_REGIONS:
            self.map_region(proc, size, misalign, prot, reserve)

    @precondition(lambda self: self.procs_with_regions())
    @rule(data=st.data(), value=st.sampled_from([0, 1, 2, 0xDEAD, 1 << 63]))
    def write(self, data, value) -> None:
        proc = data.draw(st.sampled_from(self.procs_with_regions()), label="proc")
        region, off, length = self.draw_range(data, proc)
        value = data.draw(st.sampled_from([value, len(self.steps) + 1]), label="value")
        self.write_range(proc, region, off, length, value)

    def write_range(self, proc: str, region: str, off: int, length: int, value: int) -> None:
        r = self.do({"op": "write", "proc": proc, "region": region, "offset": off,
                     "length": length, "value": value})
        if r == 0:
            self.shadow[proc].store(region, off, length, value)
        elif r != -errno.EFAULT:  # EFAULT touches nothing; ENOMEM may have stored some pages
            self.shadow[proc].maybe_anything(region, off, length)

    @precondition(lambda self: self.procs_with_regions())
    @rule(data=st.data())
    def read(self, data) -> None:
        proc = data.draw(st.sampled_from(self.procs_with_regions()), label="proc")
        region, off, length = self.draw_range(data, proc)
        self.do({"op": "read", "proc": proc, "region": region, "offset": off, "length": length})

    @precondition(lambda self: self.procs_with_regions())
    @rule(data=st.data())
    def munmap(self, data) -> None:
        proc = data.draw(st.sampled_from(self.procs_with_regions()), label="proc")
        region, off, length = self.draw_range(data, proc)
        r = self.do({"op": "munmap", "proc": proc, "region": region, "offset": off,
                     "length": length})
        if r == 0:
            self.shadow[proc].clear(region, off, length)

    @precondition(lambda self: self.procs_with_regions())
    @rule(data=st.data(), prot=st.sampled_from(["rw", "r", "none"]))
    def mprotect(self, data, prot) -> None:
        proc = data.draw(st.sampled_from(self.procs_with_regions()), label="proc")
        region, off, length = self.draw_range(data, proc)
        self.do({"op": "mprotect", "proc": proc, "region": region, "offset": off,
                 "length": length, "prot": prot})

    @precondition(lambda self: self.procs_with_regions())
    @rule(data=st.data(), advice=st.sampled_from(ADVICES))
    def madvise(self, data, advice) -> None:
        proc = data.draw(st.sampled_from(self.procs_with_regions()), label="proc")
        region, off, length = self.draw_range(data, proc)
        base = self.addr(proc, region, 0)
        parts = self.vma_parts(proc, base + off, base + off + length)
        self.do({"op": "madvise", "proc": proc, "region": region, "offset": off,
                 "length": length, "advice": advice})
        if advice not in ("dontneed", "free"):
            return
        # madvise_walk_vmas: VMA by VMA until the first VM_LOCKED one (-EINVAL)
        for lo, hi, locked in parts:
            if locked:
                break
            if advice == "dontneed":
                self.shadow[proc].clear(region, lo - base, hi - lo)
            else:  # lazyfree: reclaim may discard the page, which then reads zero
                self.shadow[proc].maybe_zero(region, lo - base, hi - lo)

    @precondition(lambda self: self.procs_with_regions())
    @rule(data=st.data(), onfault=st.booleans(), unlock=st.booleans())
    def mlock(self, data, onfault, unlock) -> None:
        proc = data.draw(st.sampled_from(self.procs_with_regions()), label="proc")
        region, off, length = self.draw_range(data, proc)
        d = {"op": "munlock" if unlock else "mlock", "proc": proc, "region": region,
             "offset": off, "length": length}
        if not unlock:
            d["onfault"] = onfault
        self.do(d)

    @precondition(lambda self: len(self.alive) > 0)
    @rule(data=st.data(), current=st.booleans(), future=st.booleans(), onfault=st.booleans(),
          unlock=st.booleans())
    def mlockall(self, data, current, future, onfault, unlock) -> None:
        proc = data.draw(st.sampled_from(self.alive), label="proc")
        if unlock:
            self.do({"op": "munlockall", "proc": proc})
        else:
            self.do({"op": "mlockall", "proc": proc, "current": current, "future": future,
                     "onfault": onfault})

    @precondition(lambda self: self.procs_with_regions())
    @rule(data=st.data())
    def mremap(self, data) -> None:
        proc = data.draw(st.sampled_from(self.procs_with_regions()), label="proc")
        region, off, length = self.draw_range(data, proc)
        others = sorted(r for r in self.sizes[proc] if r != region)
        to = data.draw(st.sampled_from(others or [region]), label="to")
        to_pages = self.sizes[proc][to] // PAGE
        to_off = data.draw(st.one_of(st.just(0), st.integers(0, to_pages - 1)),
                           label="to_offset page") * PAGE
        room = to_pages - to_off // PAGE
        new_pages = data.draw(st.one_of(st.just(length // PAGE), st.integers(1, room)),
                              label="new_length pages")
        new_len = max(1, min(new_pages, room)) * PAGE
        base = self.addr(proc, region, 0)
        parts = self.vma_parts(proc, base + off, base + off + length)
        r = self.do({"op": "mremap", "proc": proc, "region": region, "offset": off,
                     "length": length, "to": to, "to_offset": to_off, "new_length": new_len})
        if r != 0:
            return
        sh = self.shadow[proc]
        kept = min(length, new_len)
        if new_len == length:
            # remap_move: each VMA piece moves to its own place at the destination; what a
            # hole in the source faces at the destination stays as it was
            for lo, hi, _ in parts:
                sh.move(region, lo - base, to, to_off + (lo - base - off), hi - lo)
        else:
            sh.move(region, off, to, to_off, kept)
        sh.clear(region, off, length)
        if new_len > kept:
            sh.clear(to, to_off + kept, new_len - kept)

    @precondition(lambda self: 0 < len(self.alive) < MAX_PROCS)
    @rule(data=st.data())
    def fork(self, data) -> None:
        proc = data.draw(st.sampled_from(self.alive), label="proc")
        child = f"c{self.next_proc}"
        self.next_proc += 1
        self.do({"op": "fork", "proc": proc, "child": child})
        self.alive.append(child)
        self.sizes[child] = dict(self.sizes[proc])
        self.shadow[child] = self.shadow[proc].copy()
        for sharers in self.pin_sharers.values():
            if proc in sharers:
                sharers.add(child)

    @precondition(lambda self: len(self.alive) > 1)
    @rule(data=st.data())
    def exit(self, data) -> None:
        proc = data.draw(st.sampled_from(self.alive), label="proc")
        self.do({"op": "exit", "proc": proc})
        self.alive.remove(proc)
        del self.shadow[proc]
        for sharers in self.pin_sharers.values():
            sharers.discard(proc)

    @precondition(lambda self: self.procs_with_regions())
    @rule(data=st.data())
    def pin(self, data) -> None:
        proc = data.draw(st.sampled_from(self.procs_with_regions()), label="proc")
        region, off, length = self.draw_range(data, proc)
        pid = f"p{self.next_pin}"
        self.next_pin += 1
        self.do({"op": "pin", "proc": proc, "region": region, "offset": off, "length": length,
                 "id": pid})
        self.pin_sharers[pid] = {proc}

    @precondition(lambda self: any(self.pin_sharers.values()))
    @rule(data=st.data())
    def unpin(self, data) -> None:
        pid = data.draw(st.sampled_from(sorted(p for p, s in self.pin_sharers.items() if s)),
                        label="pin")
        proc = data.draw(st.sampled_from(sorted(self.pin_sharers[pid])), label="proc")
        self.do({"op": "unpin", "proc": proc, "id": pid})
        self.pin_sharers[pid] = set()

    @rule()
    def shrink(self) -> None:
        self.do({"op": "shrink", "proc": self.alive[0]})

    @rule()
    def observe(self) -> None:
        """An observation exercises the /proc views (smaps, pagemap, kpageflags)."""
        label = f"o{len(self.steps)}"
        self.do({"op": "observe", "proc": self.alive[0], "label": label})
        try:
            self.run.observe(label, len(self.steps) - 1)
        except Exception as e:
            self.fail(f"observe raised {type(e).__name__}: {e}")
            raise

    # -- the checks ---------------------------------------------------------------------------
    @invariant()
    def invariants_hold(self) -> None:
        if not hasattr(self, "run"):
            return
        violations = [v for v in check_invariants(self.run.system)
                      if v.rule not in KNOWN_BUG_RULES]
        if violations:
            self.fail(f"invariant violation after step {len(self.steps) - 1}")
            msg = "\n  ".join(v.describe() for v in violations[:10])
            raise AssertionError(f"after step {len(self.steps) - 1} "
                                 f"({self.steps[-1] if self.steps else 'start'}):\n  {msg}")

    @invariant()
    def contents_hold(self) -> None:
        """Every present page holds its own last write, what it inherited at fork, or zero."""
        if not hasattr(self, "run"):
            return
        s = self.run.system
        for proc in self.alive:
            mm = s.processes[proc].mm
            for region, (addr, size) in self.run.regions[proc].items():
                present, vals = region_values(s, mm, addr, size)
                bad = np.flatnonzero(self.shadow[proc].mismatch(region, present, vals))
                if len(bad):
                    k = int(bad[0])
                    e, z, _ = self.shadow[proc].regions[region]
                    self.fail(f"contents of {proc} region {region} page {k} after step "
                              f"{len(self.steps) - 1}")
                    raise AssertionError(
                        f"{proc} region {region} page {k} (@{addr + k * PAGE:#x}): holds "
                        f"{int(vals[k]):#x}, expected {int(e[k]):#x}{' or 0' if z[k] else ''} "
                        f"({len(bad)} pages differ) after step {len(self.steps) - 1} "
                        f"({self.steps[-1]})")

    def teardown(self) -> None:
        """Every process exits, youngest first, as the runner ends a scenario; then nothing
        may be left (every folio freed unless a pin or the swap cache holds it)."""
        if not hasattr(self, "run"):
            return
        try:
            self.run.finish()
        except Exception as e:
            self.fail(f"finish raised {type(e).__name__}: {e}")
            raise
        violations = [v for v in check_invariants(self.run.system)
                      if v.rule not in KNOWN_BUG_RULES]
        if violations:
            self.fail("invariant violation after every process exited")
            raise AssertionError("at exit:\n  " + "\n  ".join(v.describe()
                                                              for v in violations[:10]))


TestModelMachine = ModelMachine.TestCase


def test_reproducer_yaml_round_trips() -> None:
    """The YAML a failure prints is a valid scenario that replays the same steps."""
    steps = [{"op": "mmap", "proc": "main", "region": "r0", "size": 2 * M, "prot": "rw",
              "misalign": 64 * K},
             {"op": "write", "proc": "main", "region": "r0", "offset": 0, "length": 4 * PAGE,
              "value": 1 << 63},
             {"op": "fork", "proc": "main", "child": "c1"},
             {"op": "pin", "proc": "c1", "region": "r0", "offset": 0, "length": PAGE,
              "id": "p0"},
             {"op": "unpin", "proc": "c1", "id": "p0"},
             {"op": "madvise", "proc": "main", "region": "r0", "offset": PAGE,
              "length": PAGE, "advice": "pageout"}]
    thp = {"enabled": "always", "sizes": {"64K": "always"}, "use_zero_page": False,
           "shrink_underused": True, "max_ptes_none": 0, "swap": "file"}
    sc = load_scenario_text(scenario_yaml("hypothesis-failure", thp, steps))
    assert [s.model_dump(exclude_defaults=True) for s in sc.steps] == \
        [_STEP.validate_python(d).model_dump(exclude_defaults=True) for d in steps]
    assert sc.settings == Settings(**thp)


# -- data integrity, stated directly ------------------------------------------------------------
@given(thp=thp_settings, size=st.sampled_from(REGION_SIZES), misalign=st.sampled_from(MISALIGN),
       hugepage=st.booleans(), before=st.integers(0, 3),
       writes=st.lists(st.tuples(st.sampled_from(["parent", "child"]), st.floats(0, 1),
                                 st.floats(0, 1), st.integers(1, 1 << 32)), max_size=8))
def test_own_last_write_or_value_inherited_at_fork(thp, size, misalign, hugepage, before,
                                                   writes) -> None:
    """After fork, each process reads what it last wrote to a page, or the value the page held
    at fork if it has not written it since; the other process's writes never show through."""
    s = System(settings_of(Settings(**thp)))
    parent = s.process("parent")
    a = parent.mmap_region(size, "rw", misalign)
    if hugepage:
        parent.madvise(a, size, "hugepage")
    pages = size // PAGE
    # distinct contents per 16 KiB before fork, so that folios differ page by page
    for j in range(before):
        lo = j * pages // max(before, 1)
        parent.write(a + lo * PAGE, (pages - lo) * PAGE, 100 + j)
    expect = {"parent": {}, "child": {}}
    for k in range(pages):
        v = parent.value_at(a + k * PAGE)
        expect["parent"][k] = expect["child"][k] = v or 0
    child = parent.fork("child")
    procs = {"parent": parent, "child": child}
    for who, f0, f1, v in writes:
        lo = int(f0 * (pages - 1))
        n = max(1, int(f1 * (pages - lo)))
        assert procs[who].write(a + lo * PAGE, n * PAGE, v) == 0
        for k in range(lo, lo + n):
            expect[who][k] = v
        assert_invariants(s, f"{who} write")
    for who, p in procs.items():
        got = {k: p.value_at(a + k * PAGE) or 0 for k in range(pages)}
        bad = {k: (got[k], expect[who][k]) for k in range(pages) if got[k] != expect[who][k]}
        assert not bad, f"{who}: page -> (found, expected): {dict(list(bad.items())[:8])}"
