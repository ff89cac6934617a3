"""Random valid scenarios for differential fuzzing: small, seeded, and comparable.

A scenario is generated from ``(seed, index)`` alone, so ``--seed 1 --count 500`` starts with the
scenarios of ``--seed 1 --count 10``. Every scenario follows the contract
(``shared/spec/scenario-format.md``) and stays clear of what the spec calls timing dependent:
no ``enabled: always`` and no size set to ``always`` (other processes would move the global
counters), no swap file unless asked for, no ``dma_write`` (simulator only).

Scenarios are plain dicts (``name``, ``description``, ``settings``, ``steps``) with sizes in
bytes; :func:`scenario_yaml` writes them as a scenario file and :func:`load` validates them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import yaml

from foliosim.scenario import Scenario, load_scenario_text

__all__ = ["ADVICES", "MAX_OPS", "generate", "load", "scenario_yaml", "size_text"]

K, M = 1 << 10, 1 << 20
PAGE = 4 * K
ADVICES = ("hugepage", "nohugepage", "dontneed", "free", "cold", "pageout", "collapse",
           "dontfork", "dofork", "populate_read", "populate_write")
#: steps a scenario has at most, besides its 1-2 observes
MAX_OPS = 12
REGION_SIZES = (2 * M, 2 * M, 2 * M + 64 * K, 3 * M, 4 * M, 4 * M, 4 * M + 512 * K, 6 * M, 8 * M)
MISALIGNS = (0, 0, 0, 4 * K, 64 * K, 512 * K, 1 * M, 1 * M + 64 * K, 2 * M - 64 * K)
MTHP_SIZES = ("16K", "32K", "64K", "128K", "256K", "512K", "1M")
# cut points of ranges: pages, mTHP-sized folios, half and whole PMDs
GRAINS = (PAGE, 64 * K, 64 * K, 1 * M, 1 * M, 2 * M)
MAX_CHILDREN = 2
MAX_REGIONS = 4
# relative weights of the random operations (after the set-up steps)
OP_WEIGHTS = {
    "write": 20, "read": 6, "madvise": 14, "munmap": 4, "mprotect": 5, "mlock": 5,
    "munlock": 3, "mlockall": 2, "munlockall": 1, "mremap": 6, "fork": 6, "exit": 8,
    "pin": 5, "unpin": 10, "shrink": 6, "mmap": 2,
}


@dataclass
class _Region:
    size: int
    misalign: int
    reserve: bool


@dataclass
class _State:
    """What the generator knows while it draws steps: processes, their regions, pins."""

    rng: random.Random
    alive: list[str] = field(default_factory=lambda: ["main"])
    regions: dict[str, dict[str, _Region]] = field(default_factory=lambda: {"main": {}})
    children: int = 0
    pins: dict[str, set[str]] = field(default_factory=dict)  # held pin -> sharing processes
    next_pin: int = 1
    next_region: int = 0
    steps: list[dict[str, Any]] = field(default_factory=list)

    def add(self, op: str, proc: str, **args: Any) -> None:
        step: dict[str, Any] = {"op": op}
        if proc != "main":
            step["proc"] = proc
        step.update({k: v for k, v in args.items() if v is not None})
        self.steps.append(step)

    def region_name(self) -> str:
        name = "abcdefghijklmnopqrstuvwxyz"[self.next_region % 26]
        self.next_region += 1
        return name


def generate(seed: int, index: int, *, swap: bool = False) -> dict[str, Any]:
    """The ``index``-th random scenario of ``seed`` (a plain dict; see :func:`scenario_yaml`).

    :param swap: allow ``swap: file`` in the settings (a swap file is slow to set up)
    """
    rng = random.Random(f"foliosim-fuzz/{seed}/{index}")
    st = _State(rng)
    settings = _settings(rng, swap)
    _setup(st)
    n_ops = rng.randint(3, max(3, MAX_OPS - len(st.steps)))
    for _ in range(n_ops):
        _random_op(st)
    _observes(st)
    return {"name": f"fuzz-s{seed}-{index:04d}",
            "description": f"random scenario {index} of foliosim fuzz --seed {seed}",
            "settings": settings, "steps": st.steps}


def _settings(rng: random.Random, swap: bool) -> dict[str, Any]:
    """THP knobs, only those that differ from the defaults: mTHP sizes in madvise mode, 2M
    inherit or never, sometimes no zero page, no underused shrinking, max_ptes_none < 511."""
    out: dict[str, Any] = {}
    if rng.random() < 0.1:
        out["enabled"] = "never"
    sizes: dict[str, str] = {}
    if rng.random() < 0.65:
        for name in rng.sample(MTHP_SIZES, rng.randint(1, 3)):
            sizes[name] = "madvise"
        if rng.random() < 0.15:
            sizes[rng.choice(MTHP_SIZES)] = "never"
    if rng.random() < 0.25:
        sizes["2M"] = "never"
    if sizes:
        out["sizes"] = dict(sorted(sizes.items(), key=lambda kv: _size_bytes(kv[0])))
    if rng.random() < 0.25:
        out["use_zero_page"] = False
    if rng.random() < 0.2:
        out["shrink_underused"] = False
    if rng.random() < 0.25:
        out["max_ptes_none"] = rng.choice([0, 64, 255, 256, 510])
    if swap and rng.random() < 0.5:
        out["swap"] = "file"
    return out


def _size_bytes(name: str) -> int:
    return int(name[:-1]) * (M if name.endswith("M") else K)


def _setup(st: _State) -> None:
    """1-3 regions of 2-8 MiB, most with MADV_HUGEPAGE, often the first one filled, and
    sometimes a reservation that ``mremap`` can move ranges into."""
    rng = st.rng
    for _ in range(rng.choice((1, 1, 2, 2, 3))):
        _mmap(st, "main")
    if rng.random() < 0.5:
        st.add("write", "main", region="a")
    if rng.random() < 0.45:
        name = st.region_name()
        size, misalign = rng.choice(REGION_SIZES), rng.choice(MISALIGNS)
        st.regions["main"][name] = _Region(size, misalign, True)
        st.add("reserve", "main", region=name, size=size, misalign=misalign)


def _mmap(st: _State, proc: str) -> None:
    rng = st.rng
    name = st.region_name()
    size, misalign = rng.choice(REGION_SIZES), rng.choice(MISALIGNS)
    prot = rng.choices(("rw", "r", "none"), (18, 1, 1))[0]
    st.regions[proc][name] = _Region(size, misalign, False)
    st.add("mmap", proc, region=name, size=size, prot=None if prot == "rw" else prot,
           misalign=misalign)
    if rng.random() < 0.8:
        st.add("madvise", proc, region=name, advice="hugepage")


def _random_op(st: _State) -> None:
    """Append one random operation that the loader accepts."""
    rng = st.rng
    ops, weights = zip(*OP_WEIGHTS.items(), strict=True)
    for _ in range(50):
        if _try_op(st, rng.choices(ops, weights)[0]):
            return
    _try_op(st, "shrink")


def _try_op(st: _State, op: str) -> bool:
    """Append ``op`` if it can be drawn in the current state; returns whether it was."""
    rng = st.rng
    proc = rng.choice(st.alive)
    regs = st.regions[proc]
    if op == "shrink":
        st.add("shrink", proc)
    elif op == "fork":
        if st.children >= MAX_CHILDREN:
            return False
        st.children += 1
        child = f"c{st.children}"
        st.add("fork", proc, child=child)
        st.alive.append(child)
        st.regions[child] = dict(regs)
        for sharers in st.pins.values():
            if proc in sharers:
                sharers.add(child)
    elif op == "exit":
        if len(st.alive) < 2:  # the last process stays: later steps need one to run in
            return False
        st.add("exit", proc)
        st.alive.remove(proc)
        for pin_id, sharers in list(st.pins.items()):
            sharers.discard(proc)
            if not sharers:
                del st.pins[pin_id]
    elif op == "mlockall":
        st.add("mlockall", proc, current=rng.random() < 0.7 or None,
               future=rng.random() < 0.4 or None, onfault=rng.random() < 0.3 or None)
    elif op == "munlockall":
        st.add("munlockall", proc)
    elif op == "unpin":
        held = sorted(p for p, sharers in st.pins.items() if sharers)
        if not held:
            return False
        pin_id = rng.choice(held)
        st.add("unpin", rng.choice(sorted(st.pins.pop(pin_id))), id=pin_id)
    elif op == "mmap":
        if len(regs) >= MAX_REGIONS:
            return False
        _mmap(st, proc)
    elif op == "mremap":
        return _mremap(st, proc)
    else:
        names = [n for n, r in regs.items() if not r.reserve]
        names += [n for n, r in regs.items() if r.reserve and rng.random() < 0.15]
        if not names:
            return False
        name = rng.choice(sorted(names))
        offset, length = _range(rng, regs[name])
        args: dict[str, Any] = {}
        if op == "write":
            args["value"] = rng.choices(
                (None, 0, rng.randint(1, 9), rng.getrandbits(64)), (4, 2, 2, 2))[0]
        elif op == "madvise":
            args["advice"] = rng.choice(ADVICES)
        elif op == "mprotect":
            args["prot"] = rng.choices(("rw", "r", "none"), (3, 3, 2))[0]
        elif op == "mlock":
            args["onfault"] = rng.random() < 0.3 or None
        elif op == "pin":
            pin_id = f"p{st.next_pin}"
            st.next_pin += 1
            st.pins[pin_id] = {proc}
            args["id"] = pin_id
        st.add(op, proc, region=name, offset=offset, length=length, **args)
    return True


def _mremap(st: _State, proc: str) -> bool:
    """Move (and maybe resize) a range of a mapped region into a reservation."""
    rng = st.rng
    regs = st.regions[proc]
    sources = sorted(n for n, r in regs.items() if not r.reserve)
    targets = sorted(n for n, r in regs.items() if r.reserve)
    if not sources or not targets:
        return False
    src, to = rng.choice(sources), rng.choice(targets)
    dest = regs[to]
    to_offset = _point(rng, dest, rng.choice(GRAINS), 0, dest.size - PAGE)
    room = dest.size - to_offset
    offset, length = _range(rng, regs[src])
    length = min(length, room)
    new_length = rng.choices(
        (length, max(PAGE, length // 2 // PAGE * PAGE), min(room, 2 * length)), (7, 2, 1))[0]
    st.add("mremap", proc, region=src, offset=offset, length=length, to=to,
           to_offset=to_offset, new_length=new_length if new_length != length else None)
    return True


def _range(rng: random.Random, region: _Region) -> tuple[int, int]:
    """A 4 KiB-aligned (offset, length) inside the region, often cutting folios at 64K, 1M or
    2M boundaries (of the region or of the address space, which differ when misaligned)."""
    size = region.size
    r = rng.random()
    if r < 0.15:
        return 0, size
    grain = rng.choice(GRAINS)
    start = _point(rng, region, grain, 0, size - PAGE)
    if r < 0.45:
        length = min(size - start, rng.choice((PAGE, 16 * K, 64 * K, 64 * K, 1 * M, 2 * M)))
        return start, length
    end = _point(rng, region, grain, start + PAGE, size)
    return start, end - start


def _point(rng: random.Random, region: _Region, grain: int, lo: int, hi: int) -> int:
    """A region offset in ``[lo, hi]`` on a ``grain`` boundary, of the region itself or (more
    often) of the address space; a random page when no boundary falls in the interval."""
    base = (-region.misalign) % grain if rng.random() < 0.6 else 0
    first = base + max(0, -(-(lo - base) // grain)) * grain
    if first > hi:
        return lo + rng.randint(0, (hi - lo) // PAGE) * PAGE
    return first + rng.randint(0, (hi - first) // grain) * grain


def _observes(st: _State) -> None:
    """1 or 2 observations among the random steps, the last one often after everything."""
    rng = st.rng
    n = len(st.steps)
    count = rng.choice((1, 1, 2))
    spots = sorted(rng.sample(range(1, n + 1), min(count, n)))
    if rng.random() < 0.6:
        spots[-1] = n
    spots = sorted(set(spots))
    for k, at in enumerate(reversed(spots)):
        label = f"o{len(spots) - k}"
        proc = _alive_at(st.steps[:at])
        step = {"op": "observe", "label": label}
        if proc != "main":
            step["proc"] = proc
        st.steps.insert(at, step)


def _alive_at(steps: list[dict[str, Any]]) -> str:
    """A process alive after ``steps`` (main when it still is)."""
    alive = ["main"]
    for s in steps:
        if s["op"] == "fork":
            alive.append(s["child"])
        elif s["op"] == "exit":
            alive.remove(s.get("proc", "main"))
    return alive[0]


def size_text(n: int) -> str | int:
    """``2M``, ``64K`` or ``0`` for a size in bytes, as a scenario file writes it."""
    if n and n % M == 0:
        return f"{n // M}M"
    if n and n % K == 0:
        return f"{n // K}K"
    return n


_SIZE_FIELDS = ("size", "misalign", "offset", "length", "to_offset", "new_length")


def scenario_yaml(doc: dict[str, Any], *, comments: list[str] | None = None) -> str:
    """The scenario file of a generated scenario: one flow mapping per step, sizes with a
    binary suffix, ``comments`` as ``#`` lines at the top."""
    head = "".join(f"# {c}\n" for c in comments or [])
    meta = {"name": doc["name"], "description": doc.get("description", "")}
    out = head + yaml.safe_dump(meta, sort_keys=False, width=100, allow_unicode=True)
    if doc.get("settings"):
        out += "settings: " + _flow(doc["settings"]) + "\n"
    out += "steps:\n"
    for step in doc["steps"]:
        shown = {k: size_text(v) if k in _SIZE_FIELDS and isinstance(v, int) else v
                 for k, v in step.items()}
        out += "  - " + _flow(shown) + "\n"
    return out


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000).strip()


def load(doc: dict[str, Any], file: str = "<fuzz>") -> Scenario:
    """Validate a generated scenario exactly as its file would be (raises ScenarioError)."""
    return load_scenario_text(scenario_yaml(doc), file)
