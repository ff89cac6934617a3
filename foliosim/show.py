"""Readable rich tables of an observation document and of the differences between two."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from foliosim.compare import (
    Difference,
    canonical_pages,
    canonical_runs,
    describe_folios,
    flatten_counters,
)

__all__ = ["render_differences", "render_document"]

_VMA_COLUMNS = (
    ("range", None), ("perms", "perms"), ("vmflags", "vmflags"), ("rss", "rss_kb"),
    ("anon", "anonymous_kb"), ("anon huge", "anon_huge_pages_kb"), ("locked", "locked_kb"),
    ("swap", "swap_kb"), ("lazyfree", "lazyfree_kb"), ("thp eligible", "thp_eligible"),
)


def render_document(doc: dict[str, Any], console: Console, *, explain: bool = False) -> None:
    """Print a document: each observation after the steps that led to it.

    :param explain: also print the ``events`` the simulator attached to each step
    """
    system = " ".join(f"{k}={v}" for k, v in (doc.get("system") or {}).items())
    console.print(f"[bold]{escape(str(doc.get('scenario')))}[/] on target "
                  f"[bold]{escape(str(doc.get('target')))}[/]"
                  + (f"  ({escape(system)})" if system else ""), highlight=False)
    steps = list(doc.get("steps") or [])
    for obs in doc.get("observations") or []:
        upto = obs.get("step", len(steps))
        shown = [s for s in steps if s.get("index", 0) <= upto]
        steps = steps[len(shown):]
        if shown:
            console.print(_steps_table(shown, explain=explain))
        _render_observation(obs, console)
    if steps:
        console.print(_steps_table(steps, explain=explain))


def _steps_table(steps: list[dict[str, Any]], *, explain: bool) -> Table:
    table = Table(title="steps", title_justify="left", box=None, pad_edge=False)
    for name in ("#", "proc", "op", "result", "errno"):
        table.add_column(name, justify="right" if name in ("#", "result") else "left")
    table.add_column("time", justify="right")
    for s in steps:
        ns = s.get("ns")
        table.add_row(str(s.get("index")), s.get("proc", ""), s.get("op", ""),
                      str(s.get("result")), s.get("errno") or "",
                      _duration(ns))
        if explain:
            for event in s.get("events") or []:
                table.add_row("", "", Text(f"- {event}", style="dim"), "", "", "")
    return table


def _duration(ns: Any) -> str:
    if not isinstance(ns, int):
        return ""
    return f"{ns} ns" if ns < 10_000 else f"{ns / 1000:.1f} us"


def _render_observation(obs: dict[str, Any], console: Console) -> None:
    console.rule(f"observation [bold]{escape(str(obs.get('label')))}[/] "
                 f"(after step {obs.get('step')})")
    processes = obs.get("processes") or {}
    canon = canonical_pages(obs)
    for pname in sorted(processes):
        proc = processes[pname]
        status = "  ".join(f"{k}={v}" for k, v in sorted((proc.get("status") or {}).items()))
        console.print(f"[bold]process {escape(pname)}[/]  {escape(status)}", highlight=False)
        regions = proc.get("regions") or {}
        for rname in sorted(regions):
            console.print(_vma_table(pname, rname, regions[rname].get("vmas") or []))
            console.print(_pages_table(pname, rname, canon[pname, rname]))
    counters = flatten_counters(obs.get("counters") or {})
    if counters:
        table = Table(title="counter deltas", title_justify="left", box=None, pad_edge=False)
        table.add_column("counter")
        table.add_column("delta", justify="right")
        for key in sorted(counters):
            table.add_row(key, f"{counters[key]:+d}")
        console.print(table)
    else:
        console.print("counter deltas: none")


def _vma_table(pname: str, rname: str, vmas: list[dict[str, Any]]) -> Table:
    table = Table(title=f"{pname} / {rname}: VMAs (kB)", title_justify="left", box=None,
                  pad_edge=False)
    for name, key in _VMA_COLUMNS:
        table.add_column(name, justify="left" if key in (None, "perms", "vmflags") else "right")
    for v in vmas:
        cells = [f"{v.get('start', 0) // 1024}K-{v.get('end', 0) // 1024}K"]
        for _, key in _VMA_COLUMNS[1:]:
            value = v.get(key)
            if key == "vmflags":
                cells.append(",".join(value or []) or "-")
            elif key == "thp_eligible":
                cells.append("yes" if value else "no")
            else:
                cells.append(str(value))
        table.add_row(*cells)
    return table


def _pages_table(pname: str, rname: str, pages: dict[int, Any]) -> Table:
    table = Table(title=f"{pname} / {rname}: pages", title_justify="left", box=None,
                  pad_edge=False)
    for name in ("pages", "state", "folio", "order", "excl", "mapcount", "flags", "value"):
        table.add_column(name, justify="right" if name in ("order", "mapcount") else "left")
    for run in canonical_runs(pages):
        first, p = run[0]
        last = run[-1][0]
        where = str(first) if first == last else f"{first}-{last}"
        if p.state != "present":
            table.add_row(where, p.state, "", "", "", "", "", "")
            continue
        table.add_row(where, p.state, describe_folios([q.folio_id for _, q in run], orders=False),
                      str(p.order), "x" if p.exclusive else "-", str(p.mapcount),
                      ",".join(p.flags) or "-", str(p.value))
    return table


def render_differences(diffs: Sequence[Difference], console: Console, a_name: str,
                       b_name: str) -> None:
    """Print one row per difference: where it is, the field, and both sides' values."""
    table = Table(box=None, pad_edge=False)
    for name in ("observation", "process", "region", "where", "field", a_name, b_name):
        table.add_column(Text(name), overflow="fold")
    for d in diffs:
        table.add_row(*(Text(c) for c in (d.observation or "-", d.process or "-",
                                           d.region or "-", d.where, d.field, _text(d.a),
                                           _text(d.b))))
    console.print(table)


def _text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    return str(value)
