"""The seeded churn workload of ``foliosim bench``: one simulated process with ``size`` bytes
of anonymous memory (PMD THPs, 64K mTHPs and small pages mixed) doing partial munmaps and
re-mmaps, mprotects, mlocks, madvises, forks with copy-on-write writes, and shrinks.

The memory is cut into regions of :data:`REGION_SIZE`, so the number of operations grows with
the memory (work), not just the address space. Settings: ``enabled=madvise``, ``64K=madvise``,
``2M=inherit``, ``max_ptes_none=409`` (the shrinker splits THPs over 80% zero). Region kinds
(by share of the regions, seeded):

- ``thp``: MADV_HUGEPAGE, 2 MiB-aligned, written whole: PMD-mapped THPs;
- ``mthp``: the first page of every 2 MiB was touched before MADV_HUGEPAGE (so every PMD slot
  already has a page table), then written whole: 64K mTHPs (16 small pages per slot);
- ``small``: MADV_NOHUGEPAGE, written whole: order-0 pages;
- ``zero``: MADV_HUGEPAGE, written with zeros: THPs the deferred split shrinker finds
  underused, splits and frees; later writes fault small pages there.

Then ``rounds`` rounds visit every region in a seeded order, each op on its own zone of the
region at a random page-aligned (so mostly not 2 MiB-aligned) sub-range: munmap and MAP_FIXED
re-mmap + write (the new VMA lacks VM_HUGEPAGE: small pages), mprotect r / rw, mlock / munlock,
madvise dontneed, free, cold, pageout, and a write. A shrink follows every
:data:`SHRINK_EVERY` regions. ``forks`` times per run the process forks; parent and child write
into an eighth of the regions (copy-on-write) and the child exits.

Run it in a subprocess to measure its peak RSS: ``python -m foliosim.bench.churn --size 1T``
prints one JSON object (:func:`run_in_subprocess` does that; with ``--progress`` it also
writes ``progress DONE TOTAL`` lines to stderr, a unit being a region populated or visited).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from foliosim.mm.folio import PG_ANON, PG_FREE
from foliosim.mm.system import Process, System, ThpSettings

__all__ = ["ChurnConfig", "ChurnResult", "REGION_SIZE", "run_churn", "run_in_subprocess",
           "SETTINGS"]

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
PAGE = 4 * KiB
SLOT = 2 * MiB
REGION_SIZE = 128 * MiB
ZONES = 8
SHRINK_EVERY = 64
KINDS = (("thp", 0.60), ("mthp", 0.10), ("small", 0.10), ("zero", 0.20))
SETTINGS: dict[str, Any] = {"enabled": "madvise", "sizes": {"64K": "madvise", "2M": "inherit"},
                            "max_ptes_none": 409}
MADVICES = ("dontneed", "free", "cold", "pageout")


@dataclass(frozen=True)
class ChurnConfig:
    """What to run: ``size`` bytes of anonymous memory, the seed, rounds and forks."""

    size: int
    seed: int = 1
    rounds: int = 2
    forks: int = 2
    region_size: int = REGION_SIZE

    @property
    def regions(self) -> int:
        return max(1, self.size // min(self.region_size, self.size))

    @property
    def region_bytes(self) -> int:
        return min(self.region_size, self.size) // SLOT * SLOT


@dataclass
class ChurnResult:
    """What a churn run did and cost (time and memory are of this process);
    ``seconds_by_kind`` is the wall time spent in each operation kind of ``ops_by_kind``."""

    size: int
    seed: int
    regions: int
    ops: int
    ops_by_kind: dict[str, int]
    errors: int
    seconds: float
    phase_seconds: dict[str, float]
    ops_per_second: float
    resident_bytes_by_order: dict[str, int]
    small_page_fraction: float
    counters: dict[str, int]
    peak_rss_bytes: int = 0
    baseline_rss_bytes: int = 0
    bytes_per_gib: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    seconds_by_kind: dict[str, float] = field(default_factory=dict)


class _Counted:
    """A :class:`Process` whose syscalls are counted and timed by kind (``ops`` and
    ``secs`` are shared with the child of a fork)."""

    def __init__(self, p: Process, ops: Counter[str], secs: Counter[str]) -> None:
        self.p = p
        self.ops = ops
        self.secs = secs
        self.errors = 0

    def call(self, kind: str, *args: Any) -> Any:
        """The syscall ``kind`` names up to a ``:`` (``madvise:cold`` calls ``madvise``)."""
        return self.run(kind, getattr(self.p, kind.split(":")[0]), *args)

    def run(self, kind: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` counted and timed as one operation of ``kind``; a negative int
        returned is an error."""
        self.ops[kind] += 1
        t = time.perf_counter()
        r = fn(*args)
        self.secs[kind] += time.perf_counter() - t
        if isinstance(r, int) and r < 0:
            self.errors += 1
        return r


def _kinds(n: int, rng: random.Random) -> list[str]:
    """``n`` region kinds in the shares of :data:`KINDS` (every kind at least once when there
    are enough regions; the first kind takes the rounding), shuffled."""
    counts = [round(share * n) for _, share in KINDS]
    if n >= len(KINDS):
        counts = [max(1, c) for c in counts]
    counts[0] += n - sum(counts)
    out = [kind for (kind, _), c in zip(KINDS, counts, strict=True) for _ in range(c)]
    rng.shuffle(out)
    return out


def _sub_range(rng: random.Random, lo: int, hi: int, min_len: int, max_len: int
               ) -> tuple[int, int]:
    """A random page-aligned ``(addr, length)`` inside ``[lo, hi)``."""
    span = hi - lo
    length = rng.randrange(min_len, min(max_len, span) + 1, PAGE)
    off = rng.randrange(0, span - length + 1, PAGE)
    return lo + off, length


def _resident(system: System) -> tuple[dict[str, int], float]:
    """Bytes of live anonymous folios by order class, and the share in order-0 folios."""
    F = system.folios
    pages = np.zeros(10, np.int64)
    step = 1 << 20  # a million folios at a time: no temporary as big as a column
    for lo in range(0, F.next_id, step):
        flags = F.flags[lo:lo + step]
        live = ((flags & PG_FREE) == 0) & ((flags & PG_ANON) != 0)
        pages += np.bincount(F.order[lo:lo + step][live], minlength=10)
    by = {"order0": int(pages[0]) * PAGE,
          "mthp": int(sum(int(pages[o]) << o for o in range(1, 9))) * PAGE,
          "pmd": int(pages[9]) * (PAGE << 9)}
    total = sum(by.values())
    return by, (by["order0"] / total if total else 0.0)


Progress = Callable[[int, int], None]


def run_churn(cfg: ChurnConfig, inspect: Callable[[str, System], None] | None = None,
              progress: Progress | None = None) -> ChurnResult:
    """Run the churn workload in this process; returns counts, timings and the memory mix.
    ``inspect(moment, system)`` is called after populating, with the child of every fork
    alive, and at the end (to look at the model's memory, say); ``progress(done, total)``
    now and then, counting regions populated and region visits."""
    rng = random.Random(cfg.seed)
    system = System(ThpSettings(enabled=SETTINGS["enabled"], sizes=dict(SETTINGS["sizes"]),
                                max_ptes_none=SETTINGS["max_ptes_none"]),
                    ram_bytes=max(1 << 40, 2 * cfg.size))
    ops: Counter[str] = Counter()
    secs: Counter[str] = Counter()
    p = _Counted(system.process("main"), ops, secs)
    rb = cfg.region_bytes
    nreg = cfg.regions
    kinds = _kinds(nreg, rng)
    phases: dict[str, float] = {}
    total = nreg * (1 + cfg.rounds)
    every = max(1, total // 200)

    def tick(done: int) -> None:
        if progress and (done % every == 0 or done == total):
            progress(done, total)

    t_start = time.perf_counter()

    # populate
    t0 = time.perf_counter()
    bases: list[int] = []
    for done, kind in enumerate(kinds, 1):
        a = p.run("mmap", p.p.mmap_region, rb)
        bases.append(a)
        if kind == "small":
            p.call("madvise:nohugepage", a, rb, "nohugepage")
            p.call("write", a, rb, 1)
        elif kind == "thp":
            p.call("madvise:hugepage", a, rb, "hugepage")
            p.call("write", a, rb, 1)
        elif kind == "zero":
            p.call("madvise:hugepage", a, rb, "hugepage")
            p.call("write", a, rb, 0)
        else:  # mthp
            for off in range(0, rb, SLOT):
                p.call("write:first-touch", a + off, PAGE, 1)
            p.call("madvise:hugepage", a, rb, "hugepage")
            p.call("write", a, rb, 1)
        tick(done)
    phases["populate"] = time.perf_counter() - t0
    if inspect:
        inspect("populated", system)

    # rounds of churn
    zone = rb // ZONES
    fork_at = sorted(rng.sample(range(cfg.rounds * nreg), min(cfg.forks, cfg.rounds * nreg)))
    t_fork = 0.0
    t0 = time.perf_counter()
    visit = 0
    for rnd in range(cfg.rounds):
        order = list(range(nreg))
        rng.shuffle(order)
        for r in order:
            if fork_at and visit == fork_at[0]:
                fork_at.pop(0)
                tf = time.perf_counter()
                _fork_cow(p, system, bases, rb, rng, f"child{rnd}-{visit}", inspect)
                t_fork += time.perf_counter() - tf
            visit += 1
            _churn_region(p, bases[r], zone, rng, rnd)
            if visit % SHRINK_EVERY == 0:
                p.run("shrink", system.shrink)
            tick(nreg + visit)
    p.run("shrink", system.shrink)
    phases["churn"] = time.perf_counter() - t0 - t_fork
    phases["fork+cow+exit"] = t_fork
    seconds = time.perf_counter() - t_start

    if inspect:
        inspect("end", system)
    by_order, small = _resident(system)
    ev = system.vmstat.events
    counters = {k: int(ev.get(k, 0)) for k in (
        "thp_fault_alloc", "thp_split_pmd", "thp_split_page", "thp_deferred_split_page",
        "thp_underused_split_page", "pglazyfree")}
    counters["mthp_64k_fault_alloc"] = int(system.vmstat.mthp[4].get("anon_fault_alloc", 0))
    counters["mthp_64k_split"] = int(system.vmstat.mthp[4].get("split", 0))
    nops = sum(ops.values())
    return ChurnResult(size=cfg.size, seed=cfg.seed, regions=nreg, ops=nops,
                       ops_by_kind=dict(sorted(ops.items())), errors=p.errors,
                       seconds=seconds, phase_seconds=phases,
                       ops_per_second=nops / seconds if seconds else 0.0,
                       resident_bytes_by_order=by_order, small_page_fraction=small,
                       counters=counters, extra={"kinds": dict(Counter(kinds))},
                       seconds_by_kind={k: secs[k] for k in sorted(secs)})


def _churn_region(p: _Counted, base: int, zone: int, rng: random.Random, rnd: int) -> None:
    """One visit of a region: one operation per zone, zones in a seeded order."""
    zones = list(range(ZONES))
    rng.shuffle(zones)
    lo = [base + z * zone for z in zones]
    hi = [x + zone for x in lo]
    small, big = 16 * KiB, min(zone, 4 * MiB)
    # munmap a piece, map it again (MAP_FIXED, no VM_HUGEPAGE) and write part of it
    a, n = _sub_range(rng, lo[0], hi[0], 64 * KiB, big)
    p.call("munmap", a, n)
    p.call("mmap", a, n, "rw")
    b, m = _sub_range(rng, a, a + n, PAGE, n)
    p.call("write", b, m, rnd + 2)
    # mprotect read-only and back
    a, n = _sub_range(rng, lo[1], hi[1], small, big)
    p.call("mprotect", a, n, "r")
    p.call("mprotect", a, n, "rw")
    # mlock, write into it, munlock
    a, n = _sub_range(rng, lo[2], hi[2], small, big)
    p.call("mlock", a, n)
    p.call("write", a, min(n, 64 * KiB), rnd + 3)
    p.call("munlock", a, n)
    # the madvises
    for k, advice in enumerate(MADVICES):
        a, n = _sub_range(rng, lo[3 + k], hi[3 + k], small, big)
        p.call(f"madvise:{advice}", a, n, advice)
    # a write somewhere
    a, n = _sub_range(rng, lo[7], hi[7], PAGE, big)
    p.call("write", a, n, rnd + 4)


def _fork_cow(p: _Counted, system: System, bases: list[int], rb: int, rng: random.Random,
              name: str, inspect: Callable[[str, System], None] | None = None) -> None:
    """Fork; parent and child each write into an eighth of the regions (COW); the child
    exits."""
    child = _Counted(p.run("fork", p.p.fork, name), p.ops, p.secs)
    for a in bases:
        if rng.random() < 1 / 8:
            b, n = _sub_range(rng, a, a + rb, PAGE, 4 * MiB)
            p.call("write:cow-parent", b, n, 9)
            b, n = _sub_range(rng, a, a + rb, PAGE, 4 * MiB)
            child.call("write:cow-child", b, n, 10)
    p.errors += child.errors
    if inspect:
        inspect("forked", system)
    p.run("exit", child.p.exit)


def _rss_now() -> int:
    """VmRSS of this process in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def run_in_subprocess(cfg: ChurnConfig, progress: Progress | None = None) -> ChurnResult:
    """Run the churn in a fresh Python process and read back its result with its peak RSS
    (``ru_maxrss``) and the RSS it had before the workload started; ``progress`` is called
    with the child's progress lines as they come."""
    cmd = [sys.executable, "-m", "foliosim.bench.churn", "--size", str(cfg.size),
           "--seed", str(cfg.seed), "--rounds", str(cfg.rounds), "--forks", str(cfg.forks),
           "--region-size", str(cfg.region_size), "--progress"]
    errors: list[str] = []
    with tempfile.TemporaryFile("w+") as result, subprocess.Popen(
            cmd, stdout=result, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONHASHSEED": "0"}) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            word = line.split()
            if len(word) == 3 and word[0] == "progress" and progress:
                progress(int(word[1]), int(word[2]))
            elif word and word[0] != "progress":
                errors.append(line)
        proc.wait()
        if proc.returncode != 0:
            tail = "".join(errors)[-2000:]
            raise RuntimeError(f"churn subprocess failed ({proc.returncode}): {tail}")
        result.seek(0)
        return ChurnResult(**json.loads(result.read().strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> None:
    """``python -m foliosim.bench.churn``: run one churn here and print its JSON result."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=TiB)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--forks", type=int, default=2)
    ap.add_argument("--region-size", type=int, default=REGION_SIZE)
    ap.add_argument("--progress", action="store_true",
                    help="write 'progress DONE TOTAL' lines to stderr")
    a = ap.parse_args(argv)

    def report(done: int, total: int) -> None:
        print(f"progress {done} {total}", file=sys.stderr, flush=True)

    baseline = _rss_now()
    res = run_churn(ChurnConfig(a.size, a.seed, a.rounds, a.forks, a.region_size),
                    progress=report if a.progress else None)
    res.peak_rss_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    res.baseline_rss_bytes = baseline
    res.bytes_per_gib = (res.peak_rss_bytes - baseline) / (res.size / GiB)
    print(json.dumps(asdict(res)))


if __name__ == "__main__":
    main()
