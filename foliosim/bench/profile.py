"""Hot spots of the churn: the model's functions ranked by their own time under cProfile,
each with the call path that brings it most of its time (heaviest caller, up to the
workload); where the model's memory goes; and how a VMA operation's cost grows with the number
of VMAs."""

from __future__ import annotations

import cProfile
import pstats
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from foliosim.bench.churn import ChurnConfig, run_churn
from foliosim.mm.pgtable import NO_IDX, PteTable
from foliosim.mm.system import System, ThpSettings

__all__ = ["HotSpot", "hot_spots", "hot_spots_markdown", "memory_breakdown", "profile_report",
           "vma_scaling"]

Func = tuple[str, int, str]


@dataclass
class HotSpot:
    """One model function: own time, time with callees, calls, and its heaviest call path."""

    name: str
    where: str
    self_seconds: float
    cum_seconds: float
    calls: int
    path: list[str]


def _label(f: Func) -> str:
    file, line, name = f
    if file == "~":
        return name
    short = file.split("foliosim/", 1)[-1]
    return f"{short.rsplit('/', 1)[-1].removesuffix('.py')}.{name}"


def _path(stats: dict, f: Func, limit: int = 12) -> list[str]:
    """The heaviest chain of callers of ``f``, outermost first, up to the workload."""
    out = [_label(f)]
    seen = {f}
    cur = f
    while len(out) < limit:
        callers = stats[cur][4]
        if not callers:
            break
        cur = max(callers, key=lambda c: callers[c][3])
        if cur in seen:
            break
        seen.add(cur)
        out.append(_label(cur))
        if "foliosim/bench/" in cur[0]:
            break
    return out[::-1]


def hot_spots(cfg: ChurnConfig, top: int = 12, memory: list[dict[str, Any]] | None = None
              ) -> tuple[list[HotSpot], float]:
    """Run the churn under cProfile; the ``top`` model functions (``foliosim/mm``) by own
    time (numpy calls they make directly are counted in), and the total profiled time. With
    ``memory``, the model's memory breakdown at each moment of the run is appended to it."""
    def inspect(moment: str, system: System) -> None:
        if memory is not None:
            memory.append({"moment": moment, **memory_breakdown(system)})

    pr = cProfile.Profile()
    pr.enable()
    run_churn(cfg, inspect=inspect)
    pr.disable()
    stats = pstats.Stats(pr).stats  # type: ignore[attr-defined]
    own: dict[Func, float] = {}
    for f, (_cc, _nc, tt, _ct, callers) in stats.items():
        if "foliosim/mm/" in f[0]:
            own[f] = own.get(f, 0.0) + tt
        elif f[0] == "~" or "numpy" in f[0]:  # C or numpy code: charge the model caller
            for c, (_a, _b, ctt, cct) in callers.items():
                if "foliosim/mm/" in c[0]:
                    own[c] = own.get(c, 0.0) + (cct if f[0] != "~" else ctt)
    total = sum(v[2] for v in stats.values())
    ranked = sorted(own.items(), key=lambda kv: -kv[1])[:top]
    spots = [HotSpot(_label(f), f"{f[0].split('foliosim/', 1)[-1]}:{f[1]}", t, stats[f][3],
                     stats[f][1], _path(stats, f)) for f, t in ranked]
    return spots, total


def hot_spots_markdown(spots: list[HotSpot], total: float, cfg: ChurnConfig) -> str:
    """The hot spots as a markdown table."""
    lines = [f"cProfile of the churn at {cfg.size >> 30} GiB (seed {cfg.seed}), "
             f"{total:.1f} s profiled. Own time includes the numpy/builtin calls a function makes "
             "directly; the path is the heaviest chain of callers.", "",
             "| # | function | own s | own % | cum s | calls | call path |",
             "|---:|---|---:|---:|---:|---:|---|"]
    for k, h in enumerate(spots, 1):
        lines.append(f"| {k} | `{h.name}` ({h.where}) | {h.self_seconds:.2f} | "
                     f"{100 * h.self_seconds / total:.0f}% | {h.cum_seconds:.2f} | "
                     f"{h.calls:,} | {' > '.join(h.path)} |")
    return "\n".join(lines)


_ARRAY = 112  # bytes of a small numpy array object besides its data


def memory_breakdown(system: System) -> dict[str, int]:
    """Approximate bytes of the model's big structures: the folio columns (the rows in use:
    capacity past them is reserved address space or zero pages never touched),
    per-page arrays of large folios, PTE tables and PMD leaves of every process, buddy free
    lists, and the counts behind them."""
    F = system.folios
    per_folio = sum(np.dtype(t).itemsize for t in F._COLS.values())
    per_large = sum(np.dtype(t).itemsize for t in F._LARGE.values())
    pages = sum(pa.mapcount.nbytes + pa.pae.nbytes + pa.val.nbytes + 3 * _ARRAY
                for pa in F.pages.values())
    tables = leaves = vmas = own_idx = 0
    for p in system.processes.values():
        vmas += len(p.mm.vmas)
        for e in p.mm.pmd.values():
            if isinstance(e, PteTable):
                tables += 1
                own_idx += e.idx is not NO_IDX
            else:
                leaves += 1
    table_bytes = tables * (512 * (4 + 1) + 2 * _ARRAY + 56) + own_idx * (512 * 2 + _ARRAY)
    free_blocks = sum(len(x) for x in system.buddy.free)
    return {"folios_live": F.live, "folio_rows": F.next_id, "folio_capacity": F.cap,
            "folio_bytes": F.next_id * per_folio + F.next_lid * per_large,
            "bytes_per_folio": per_folio, "large_folio_rows": F.next_lid,
            "bytes_per_large_folio_row": per_large,
            "page_arrays": len(F.pages), "page_array_bytes": pages,
            "pte_tables": tables, "pte_table_bytes": table_bytes, "pmd_leaves": leaves,
            "pmd_leaf_bytes": leaves * (56 + 100), "buddy_free_blocks": free_blocks,
            "buddy_bytes": free_blocks * 70, "vmas": vmas}


def vma_scaling(regions: tuple[int, ...] = (128, 2048, 8192), samples: int = 400
                ) -> list[tuple[int, float]]:
    """Microseconds of one mprotect that splits a VMA and merges it back (the pair halved),
    in a process of ``n`` 128 MiB regions (3 VMAs each), for each ``n``: the cost of a VMA
    operation as the VMA count grows (the churn has 3 VMAs per 128 MiB of memory)."""
    out = []
    for n in regions:
        system = System(ThpSettings())
        p = system.process("main")
        bases = [p.mmap_region(128 << 20) for _ in range(n)]
        pick = bases[:: max(1, n // samples)]
        t0 = time.perf_counter()
        for a in pick:
            p.mprotect(a + (1 << 20), 4096, "r")
            p.mprotect(a + (1 << 20), 4096, "rw")
        out.append((len(p.mm.vmas), (time.perf_counter() - t0) / (2 * len(pick)) * 1e6))
    return out


def profile_report(cfg: ChurnConfig, top: int = 12) -> tuple[str, list[HotSpot]]:
    """The hot-spot section of ``RESULTS.md``: time hot spots with call paths, the model's
    memory at the moments of the churn, and the VMA-count scaling of a VMA operation."""
    from foliosim.bench.results import human, machine

    memory: list[dict[str, Any]] = []
    spots, total = hot_spots(cfg, top, memory)
    m = machine()
    dirty = [f for f in m["uncommitted"] if f.startswith("foliosim/mm/")]
    lines = [f"Profiled at commit `{m['commit']}`"
             + (f" with uncommitted changes to {', '.join(dirty)}" if dirty else "")
             + f" on {m['date']} (the figures above may be of another commit).", "",
             hot_spots_markdown(spots, total, cfg), "",
             f"Model memory during the churn at {human(cfg.size)} (approximate; the folio "
             "columns' rows in use):", "",
             "| moment | folios live / rows | folio columns | PTE tables | PMD leaves | "
             "per-page arrays | buddy free blocks | VMAs |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in memory:
        lines.append(f"| {r['moment']} | {r['folios_live']:,} / {r['folio_rows']:,} "
                     f"({r['bytes_per_folio']} B each) | {human(r['folio_bytes'])} | "
                     f"{r['pte_tables']:,} = {human(r['pte_table_bytes'])} | "
                     f"{r['pmd_leaves']:,} = {human(r['pmd_leaf_bytes'])} | "
                     f"{r['page_arrays']:,} = {human(r['page_array_bytes'])} | "
                     f"{r['buddy_free_blocks']:,} | {r['vmas']:,} |")
    scale = (1 << 40) // cfg.size
    lines += ["", "Cost of one VMA operation (mprotect splitting a VMA, then merging it back) by "
              f"the number of VMAs in the process (at 1 TiB the churn has {scale}x the VMAs "
              "above):", "",
              "| VMAs | µs per mprotect |", "|---:|---:|"]
    lines += [f"| {n:,} | {us:,.0f} |" for n, us in vma_scaling()]
    return "\n".join(lines), spots
