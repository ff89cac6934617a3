"""Hot spots of the churn: the model's functions ranked by their own time under cProfile,
each with the call path that brings it most of its time (heaviest caller, up to the
workload)."""

from __future__ import annotations

import cProfile
import pstats
from dataclasses import dataclass

from foliosim.bench.churn import ChurnConfig, run_churn

__all__ = ["HotSpot", "hot_spots", "hot_spots_markdown"]

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


def hot_spots(cfg: ChurnConfig, top: int = 12) -> tuple[list[HotSpot], float]:
    """Run the churn under cProfile; the ``top`` model functions (``foliosim/mm``) by own
    time (numpy calls they make directly are counted in), and the total profiled time."""
    pr = cProfile.Profile()
    pr.enable()
    run_churn(cfg)
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
