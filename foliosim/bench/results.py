"""The figures of ``foliosim bench``: the machine, the growth series, the JSON object, the
markdown of ``benchmarks/RESULTS.md`` and the growth plot."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

from foliosim.bench.churn import ChurnResult, GiB, TiB
from foliosim.bench.corpus import LIVE_RUNS, SIM_RUNS, CorpusResult
from foliosim.bench.faultunmap import FaultUnmapResult

__all__ = ["HISTORY", "TARGETS", "growth_row", "kept_history", "machine", "plot_growth",
           "render_markdown", "summary"]

TARGETS = {"ratio_overall": 1.0, "ratio_op_max": 10.0, "tib_churn_seconds": 60.0,
           "tib_churn_peak_rss_bytes": 4 * GiB, "fault_unmap_per_second": 200_000.0}


def machine() -> dict[str, Any]:
    """nproc, memory, kernel, CPU, load averages, date and git commit of this run."""
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(next(line for line in f if line.startswith("MemTotal:")).split()[1]) * 1024
    except (OSError, StopIteration):
        pass
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    root = Path(__file__).resolve().parents[2]
    commit = _git(root, "rev-parse", "--short", "HEAD")
    dirty = _git(root, "status", "--porcelain", "--untracked-files=no", "--", "foliosim")
    return {"nproc": os.cpu_count(), "memory_bytes": mem, "kernel": platform.release(),
            "cpu": cpu, "python": platform.python_version(),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
            "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": commit,
            "uncommitted": sorted(line.split()[-1] for line in (dirty or "").splitlines())}


def _git(root: Path, *args: str) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                           timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None if r.returncode == 0 else None


def growth_row(r: ChurnResult) -> dict[str, Any]:
    """One size of the growth series."""
    return {"size_bytes": r.size, "size": human(r.size), "regions": r.regions, "ops": r.ops,
            "seconds": round(r.seconds, 3), "ops_per_second": round(r.ops_per_second, 1),
            "peak_rss_bytes": r.peak_rss_bytes, "baseline_rss_bytes": r.baseline_rss_bytes,
            "bytes_per_simulated_gib": round(r.bytes_per_gib),
            "small_page_fraction": round(r.small_page_fraction, 4),
            "phase_seconds": {k: round(v, 3) for k, v in r.phase_seconds.items()},
            "errors": r.errors}


def summary(corpus: CorpusResult | None, growth: list[ChurnResult],
            fu: FaultUnmapResult | None, mach: dict[str, Any]) -> dict[str, Any]:
    """The JSON object of ``foliosim bench --json``. Figures not measured are null."""
    tib = next((g for g in growth if g.size == TiB), None)
    ratio_by_op = corpus.ratio_by_op if corpus and not corpus.unavailable else {}
    out: dict[str, Any] = {
        "ratio_overall": corpus.ratio_overall if corpus and not corpus.unavailable else None,
        "ratio_by_op": {k: round(v, 4) for k, v in ratio_by_op.items()},
        "tib_churn_seconds": round(tib.seconds, 3) if tib else None,
        "tib_churn_peak_rss_bytes": tib.peak_rss_bytes if tib else None,
        "ops_per_second": round(tib.ops_per_second, 1) if tib else None,
        "growth": [growth_row(g) for g in growth],
        "fault_unmap_per_second": round(fu.per_second, 1) if fu else None,
        "fault_unmap_single_per_second": round(fu.single_per_second, 1) if fu else None,
        "machine": mach,
    }
    if out["ratio_overall"] is not None:
        out["ratio_overall"] = round(out["ratio_overall"], 4)
    if corpus is not None:
        out["corpus"] = {"scenarios": corpus.scenarios, "steps": corpus.steps,
                         "steps_by_op": corpus.count,
                         "sim_ns_by_op": corpus.sim_ns, "native_ns_by_op": corpus.native_ns,
                         "skipped": corpus.skipped, "unavailable": corpus.unavailable}
    if tib is not None:
        d = asdict(tib)
        out["tib_churn"] = {k: d[k] for k in (
            "ops", "ops_by_kind", "seconds_by_kind", "errors", "phase_seconds",
            "resident_bytes_by_order", "small_page_fraction", "counters", "bytes_per_gib",
            "baseline_rss_bytes", "extra")}
    if fu is not None:
        out["fault_unmap"] = asdict(fu)
    out["targets"] = TARGETS
    return out


def human(n: float) -> str:
    """Bytes as ``1 GiB`` / ``1 TiB`` / ``342 MiB``."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            v = n / (1 << shift)
            return f"{v:.0f} {unit}" if v == int(v) or v >= 100 else f"{v:.1f} {unit}"
    return f"{n:.0f} B"


def _mark(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**missed**")


def _time_by_kind(tc: dict[str, Any]) -> list[str]:
    """The table of where the churn's time went, by operation kind (costliest first)."""
    secs = tc.get("seconds_by_kind") or {}
    if not secs:
        return []
    total = sum(secs.values())
    lines = ["Time by operation kind (a split, the shrinker's or a reclaim's, counts in the "
             "operation that made it):", "",
             "| operation | count | time | share | per operation |", "|---|---:|---:|---:|---:|"]
    for k, v in sorted(secs.items(), key=lambda kv: -kv[1]):
        n = tc["ops_by_kind"].get(k, 0)
        lines.append(f"| {k} | {n:,} | {v:,.2f} s | {v / total:.0%} | "
                     f"{_duration(v / n if n else 0.0)} |")
    return lines + [""]


def _duration(sec: float) -> str:
    """``354 us``, ``45.3 ms`` or ``6.76 s``."""
    if sec < 1e-3:
        return f"{sec * 1e6:.0f} us"
    return f"{sec * 1e3:.1f} ms" if sec < 1 else f"{sec:.2f} s"


def render_markdown(s: dict[str, Any], plot: str | None = None,
                    hot_spots: str | None = None) -> str:
    """``benchmarks/RESULTS.md`` from the JSON object of a run."""
    m = s["machine"]
    t = TARGETS
    lines = ["# Benchmark results (`foliosim bench`)", "",
             f"- date: {m['date']}, commit `{m['commit']}`"
             + (f" with uncommitted changes to {', '.join(m['uncommitted'])}"
                if m.get("uncommitted") else ""),
             f"- machine: {m['nproc']} CPUs ({m['cpu']}), {human(m['memory_bytes'])} RAM, "
             f"Linux {m['kernel']}, Python {m['python']}",
             f"- load average at the end of the run: {m['loadavg']} (other developers run "
             "tests on this machine at the same time; times are wall clock)", ""]
    lines += ["## Targets", "", "| target | figure | |", "|---|---|---|"]
    ro = s["ratio_overall"]
    rmax = max(s["ratio_by_op"].values()) if s["ratio_by_op"] else None
    tib_s, tib_m = s["tib_churn_seconds"], s["tib_churn_peak_rss_bytes"]
    fu = s.get("fault_unmap_per_second")
    lines += [
        f"| sim/native overall <= {t['ratio_overall']} | "
        f"{'n/a' if ro is None else f'{ro:.2f}'} | {_mark(None if ro is None else ro <= 1.0)} |",
        f"| no op kind above {t['ratio_op_max']:.0f} | "
        f"{'n/a' if rmax is None else f'max {rmax:.2f}'} | "
        f"{_mark(None if rmax is None else rmax <= 10)} |",
        f"| 1 TiB churn <= 60 s wall | {'n/a' if tib_s is None else f'{tib_s:,.0f} s'} | "
        f"{_mark(None if tib_s is None else tib_s <= 60)} |",
        f"| 1 TiB churn <= 4 GiB peak RSS | {'n/a' if tib_m is None else human(tib_m)} | "
        f"{_mark(None if tib_m is None else tib_m <= 4 * GiB)} |",
        f"| >= 200,000 whole-folio fault+unmap/s | {'n/a' if fu is None else f'{fu:,.0f}/s'} | "
        f"{_mark(None if fu is None else fu >= 200_000)} |", ""]
    c = s.get("corpus")
    lines += ["## 1. Beside the kernel (scenario corpus, sim/native time per step)", ""]
    if c is None:
        lines += ["Not run.", ""]
    elif c.get("unavailable"):
        lines += [f"Skipped: the live kernel is unavailable here ({c['unavailable']}).", ""]
    else:
        lines += [f"{c['scenarios']} scenarios, {c['steps']} non-observe steps; the simulator "
                  f"timed warm (each step the median of {SIM_RUNS} runs after a warm-up), the "
                  "kernel by the live runner's `ns` around each syscall in its C agent (each "
                  f"step the median of {LIVE_RUNS} runs).", "",
                  "| op | steps | sim total | native total | sim/native |",
                  "|---|---:|---:|---:|---:|"]
        for op, r in sorted(s["ratio_by_op"].items(), key=lambda kv: -kv[1]):
            lines.append(f"| {op} | {c['steps_by_op'][op]} | {c['sim_ns_by_op'][op] / 1e6:.2f} ms"
                         f" | {c['native_ns_by_op'][op] / 1e6:.2f} ms | {r:.2f} |")
        tot_s, tot_n = sum(c["sim_ns_by_op"].values()), sum(c["native_ns_by_op"].values())
        lines += [f"| **all** | {c['steps']} | {tot_s / 1e6:.2f} ms | {tot_n / 1e6:.2f} ms | "
                  f"**{ro:.2f}** |", ""]
        if c["skipped"]:
            lines += ["Not compared: " + "; ".join(c["skipped"]), ""]
    lines += ["## 2. Scale: the churn at 1 TiB", ""]
    tc = s.get("tib_churn")
    if tc is None:
        lines += ["Not run (`--quick` or `--sizes` without 1T).", ""]
    else:
        res = tc["resident_bytes_by_order"]
        phases = ", ".join(f"{k} {v:,.1f} s" for k, v in tc["phase_seconds"].items())
        lines += [
            f"- wall time {tib_s:,.1f} s ({phases})",
            f"- {tc['ops']:,} simulated operations, {s['ops_per_second']:,.0f} ops/s "
            f"({tc['errors']} returned an error)",
            f"- simulator peak RSS {human(tib_m)} (baseline {human(tc['baseline_rss_bytes'])}); "
            f"{human(tc['bytes_per_gib'])} per simulated GiB",
            f"- resident at the end: PMD THPs {human(res['pmd'])}, mTHPs {human(res['mthp'])}, "
            f"small pages {human(res['order0'])} ({tc['small_page_fraction']:.0%} small)",
            "- operations: " + ", ".join(f"{k} {v:,}" for k, v in tc["ops_by_kind"].items()),
            "- counters: " + ", ".join(f"{k} {v:,}" for k, v in tc["counters"].items()), ""]
        lines += _time_by_kind(tc)
    lines += ["## 3. Growth", "",
              "| size | regions | ops | wall | ops/s | peak RSS | per simulated GiB | small |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for g in s["growth"]:
        lines.append(f"| {g['size']} | {g['regions']:,} | {g['ops']:,} | {g['seconds']:,.1f} s "
                     f"| {g['ops_per_second']:,.0f} | {human(g['peak_rss_bytes'])} | "
                     f"{human(g['bytes_per_simulated_gib'])} | {g['small_page_fraction']:.0%} |")
    lines.append("")
    if plot:
        lines += [f"![growth]({plot})", ""]
    lines += ["## 4. Whole-folio fault+unmap", ""]
    f4 = s.get("fault_unmap")
    if f4 is None:
        lines += ["Not run.", ""]
    else:
        rates = f4.get("rates") or []
        spread = (f" (median of {len(rates)} batches of {f4['folios'] // len(rates):,}; "
                  f"{min(rates):,.0f} to {max(rates):,.0f})" if rates else "")
        lines += [f"{f4['folios']:,} PMD THPs write-faulted and unmapped in batches (write a "
                  f"region at once, munmap it at once): {f4['per_second']:,.0f} folios/s"
                  f"{spread}; one slot at a time (write 2 MiB, munmap 2 MiB): "
                  f"{f4['single_per_second']:,.0f} folios/s.", ""]
    if hot_spots:
        lines += ["## Hot spots (profile of the churn)", "", hot_spots.strip(), ""]
    lines += ["Reproduce: `foliosim bench --results benchmarks/RESULTS.md` (about ten minutes "
              "on this machine, most of it the live corpus and the 1 TiB churn; `--quick` for a "
              "subset in a minute or two).", ""]
    return "\n".join(lines)


HISTORY = "## History"


def kept_history(text: str) -> str:
    """The hand-written part of an existing RESULTS.md: from its :data:`HISTORY` heading (at
    the start of a line) to the end, with a blank line before it; empty if it has none."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith(HISTORY):
            return "\n" + "".join(lines[i:])
    return ""


def plot_growth(growth: list[dict[str, Any]], path: Path) -> Path:
    """Wall time and peak RSS against the simulated size (log-log), with the operations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gib = [g["size_bytes"] / GiB for g in growth]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.loglog(gib, [g["seconds"] for g in growth], "o-", label="wall time (s)")
    a1.loglog(gib, [g["ops"] / 1000 for g in growth], "s--", label="operations (thousands)")
    a1.axhline(60, color="red", lw=0.8, ls=":", label="60 s target (1 TiB)")
    a1.set_xlabel("simulated anonymous memory (GiB)")
    a1.set_title("time and work")
    a1.legend(fontsize=8)
    a2.loglog(gib, [g["peak_rss_bytes"] / (1 << 20) for g in growth], "o-",
              label="peak RSS (MiB)")
    a2.loglog(gib, [g["bytes_per_simulated_gib"] / (1 << 20) for g in growth], "s--",
              label="MiB per simulated GiB")
    a2.axhline(4096, color="red", lw=0.8, ls=":", label="4 GiB target (1 TiB)")
    a2.set_xlabel("simulated anonymous memory (GiB)")
    a2.set_title("simulator memory")
    a2.legend(fontsize=8)
    for a in (a1, a2):
        a.grid(True, which="both", lw=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
