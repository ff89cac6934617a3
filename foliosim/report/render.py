"""Writing a suite's report: DIR/report.md, DIR/report.html (the same content, with the
figures inline), DIR/summary.json and the PNG figures.

Both documents are rendered from one list of blocks (heading, paragraph, list, table, figure,
preformatted text), so they cannot disagree.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from foliosim import KERNEL_MODEL, __version__
from foliosim.experiments.suite import CONTROL, SuiteResult
from foliosim.policies import POLICIES
from foliosim.report.aggregate import TABLE_METRICS, metric_table, summary, verdicts
from foliosim.report.plots import write_figures

__all__ = ["write_report"]

Block = tuple[Any, ...]

_BYTES = ("bloat_peak_bytes", "rss_peak_bytes")


def _human_bytes(n: float) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if abs(n) >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n:.0f} B"


def _fmt(metric: str, v: float) -> str:
    if metric in _BYTES:
        return _human_bytes(v)
    if metric == "bloat_byte_seconds":
        return f"{v / (1 << 20):.1f} MiB·s"
    if metric.endswith("coverage"):
        return f"{v:.2f}"
    return f"{v:.1f}" if v != int(v) else f"{int(v)}"


def _blocks(suite: SuiteResult, figures: list[str]) -> list[Block]:
    pre = suite.preset
    b: list[Block] = [("h1", f"foliosim policy comparison: preset {pre.name}")]
    b.append(("p", f"{len(pre.policies)} policies x {len(pre.workloads)} workloads x "
                   f"{len(pre.seeds)} seeds (scale {pre.scale}), plus one THP-disabled control "
                   f"per workload and seed: {len(suite.runs) + len(suite.controls)} runs in "
                   f"{suite.seconds:.1f} s. Every split attempt meets a speculative reference "
                   f"with probability {pre.transient_p} (rule 2). Model: foliosim "
                   f"{__version__} ({KERNEL_MODEL}). One step is one simulated second."))

    vs = verdicts(suite)
    b.append(("h2", "Verdict"))
    b.append(("p", "Rule 1: THPs must never make a syscall fail (a step whose result differs "
                   "from the same run with THP disabled). Rule 2: a split can fail at any "
                   "time (pins, speculative references); a policy keeps it when it absorbs "
                   "every failure it meets without breaking rule 1 or 3. Rule 3: replacing an "
                   "exclusive anon page that may be pinned corrupts memory (the oracle's "
                   "corrupted pages that a policy action caused)."))
    head = ["policy", "rule 1", "rule 2", "rule 3", "pages copied", "splits (failed)",
            "bloat peak", "bloat", "rmap walks", "mlock gap pages", "THP coverage"]
    rows = []
    for v in vs:
        t = v.totals
        rows.append([v.policy, v.rule1, v.rule2, v.rule3, str(t["pages_copied"]),
                     f"{t['split_attempts']} ({t['split_failures']})",
                     _human_bytes(t["bloat_peak_bytes"]),
                     _fmt("bloat_byte_seconds", t["bloat_byte_seconds"]),
                     str(t["rmap_walks"]), str(t["mlock_gap_pages"]),
                     f"{t['thp_coverage']:.2f}"])
    b.append(("table", head, rows))
    keep = [v.policy for v in vs if v.keeps_all]
    b.append(("p", "Keep all three rules: " + (", ".join(keep) if keep else "none") + "."))
    if any(v.totals["corruptions_by_model"] for v in vs):
        b.append(("p", "Some pages were read wrong with no policy action on them: the model "
                       "itself corrupted them (also under linux-6.18, which the kernel does "
                       "not). That is a model bug to fix in foliosim/mm/, not a property of "
                       "any policy; the corruption list below names the steps."))

    b.append(("h2", "Policies"))
    b.append(("ul", [f"{name}: {POLICIES[name].summary}" for name in pre.policies]))

    b.append(("h2", "Figures"))
    for f in figures:
        b.append(("img", f, f.removesuffix(".png").replace("_", " ")))

    b.append(("h2", "Metrics per workload"))
    b.append(("p", "Each cell is the mean over seeds of a run's total; peaks are per run."))
    for metric, what in TABLE_METRICS.items():
        tab = metric_table(suite, metric)
        b.append(("h3", f"{metric}: {what}"))
        b.append(("table", ["policy", *pre.workloads],
                  [[p, *(_fmt(metric, tab[p][w]) for w in pre.workloads)]
                   for p in pre.policies]))

    causes = sorted({c for v in vs for c in v.totals["split_failures_by_cause"]})
    b.append(("h3", "split failures by cause"))
    b.append(("table", ["policy", *causes] if causes else ["policy", "(none)"],
              [[v.policy, *(str(v.totals["split_failures_by_cause"].get(c, 0))
                            for c in causes)] for v in vs]))

    b.append(("h2", "Corruptions"))
    lines = []
    for p in pre.policies:
        runs = [r for r in suite.by_policy(p) if r.corruptions]
        total = sum(r.totals["corruptions"] for r in suite.by_policy(p))
        if not total:
            continue
        model = sum(r.totals["corruptions_by_model"] for r in runs)
        lines.append(f"{p}: {total} pages in {len(runs)} runs ({total - model} caused by a "
                     f"policy action, {model} by the model alone); first ones:")
        # the policy's own first: they are what the verdict is about
        runs.sort(key=lambda r: not any(c.by_policy for c in r.corruptions))
        for r in runs[:3]:
            for c in sorted(r.corruptions, key=lambda c: not c.by_policy)[:2]:
                lines.append(f"  {r.workload} seed {r.seed}: {c}")
    b.append(("pre", "\n".join(lines)) if lines else ("p", "None found."))

    b.append(("h2", "Syscalls that failed because of THP"))
    lines = [f"{r.policy} {r.workload} seed {r.seed}: step {d.step} {d.op} returned "
             f"{d.result}, without THP {d.without_thp}"
             for r in suite.runs for d in r.thp_failures[:3]]
    b.append(("pre", "\n".join(lines[:40])) if lines else ("p", "None."))

    b.append(("h2", "Controls and errors"))
    ctl_bad = sum(r.totals.get("corruptions", 0) for r in suite.controls.values())
    ctl_fail = sum(1 for r in suite.controls.values() for x in r.results if x)
    b.append(("p", f"THP-disabled controls ({CONTROL}): {ctl_bad} corrupted pages found by the "
                   f"oracle, {ctl_fail} failing steps (both must be 0: the workloads are "
                   "built so that every step succeeds without THP)."))
    errs = [f"{r.policy} {r.workload} seed {r.seed}: {r.error.splitlines()[0]}"
            for r in [*suite.runs, *suite.controls.values()] if r.error]
    b.append(("pre", "\n".join(errs)) if errs else ("p", "No run stopped on an error."))
    b.append(("p", "Files: summary.json (totals per policy), report.md, report.html, "
                   + ", ".join(figures) + "."))
    return b


def _md(blocks: list[Block]) -> str:
    out = []
    for blk in blocks:
        kind = blk[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + blk[1])
        elif kind == "p":
            out.append(blk[1])
        elif kind == "ul":
            out.append("\n".join(f"- {x}" for x in blk[1]))
        elif kind == "table":
            head, rows = blk[1], blk[2]
            lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(r) + " |" for r in rows]
            out.append("\n".join(lines))
        elif kind == "img":
            out.append(f"![{blk[2]}]({blk[1]})")
        elif kind == "pre":
            out.append("```\n" + blk[1] + "\n```")
    return "\n\n".join(out) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222}table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
td,th{border:1px solid #ccc;padding:0.3em 0.6em;text-align:left}th{background:#f2f2f2}
img{max-width:100%;margin:1em 0}pre{background:#f7f7f7;padding:1em;overflow-x:auto;
font-size:0.85em}"""


def _html(blocks: list[Block]) -> str:
    e = html.escape
    out = ["<!doctype html>", "<html><head><meta charset='utf-8'>",
           f"<title>{e(blocks[0][1])}</title><style>{_CSS}</style></head><body>"]
    for blk in blocks:
        kind = blk[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{e(blk[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{e(blk[1])}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in blk[1]) + "</ul>")
        elif kind == "table":
            head, rows = blk[1], blk[2]
            out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>"
                                 for r in rows) + "</table>")
        elif kind == "img":
            out.append(f"<img src='{e(blk[1])}' alt='{e(blk[2])}'>")
        elif kind == "pre":
            out.append(f"<pre>{e(blk[1])}</pre>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(suite: SuiteResult, out: str | Path) -> dict[str, Path]:
    """Write report.md, report.html, summary.json and the figures into ``out`` (created if
    needed); returns the paths by file name."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    figures = write_figures(suite, d)
    blocks = _blocks(suite, figures)
    paths = {"report.md": d / "report.md", "report.html": d / "report.html",
             "summary.json": d / "summary.json"}
    paths["report.md"].write_text(_md(blocks))
    paths["report.html"].write_text(_html(blocks))
    paths["summary.json"].write_text(json.dumps(summary(suite), indent=1) + "\n")
    for f in figures:
        paths[f] = d / f
    return paths
