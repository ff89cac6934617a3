"""The live kernel's ground truth (shared/reference/live-kernel-ground-truth.md, scenarios
S0a-S21) asserted against the simulator's runs of the corpus translations scenarios/gt-*.yaml.

Every table row of the ground truth is copied verbatim below, in the table's own legend, and
mapped to the observation of the translation that shows the same moment (``None``: the
translation does not observe that moment; its counter deltas still count). Each row is checked
per aspect: the VMAs (smaps fields), the pages (folio identity and order, pagemap bit 56,
kpagecount, kpageflags), the counters and the status, plus each scenario's whole-process deltas
incl. exit (the ``end`` observation) and its step results.

How the legend is read:

- counters: the tables give deltas since the same process's previous row (a child's first row:
  since the row before the fork, ``after=``); observations hold deltas since the start, so rows
  are summed along that chain. ``thp_zero_page_alloc`` is not compared, ``split_failed`` and
  ``thp_split_page_failed`` only as zero/non-zero (spec section 3; ground-truth "Determinism").
  The status after ``;`` is absolute; a status left out is 0.
- pages: ``Fn/N@k`` is a page of the large folio ``Fn`` of N pages at folio page k (folios are
  named in order of first appearance over the whole scenario, so ``F1`` after ``F0`` is a new
  folio); ``Fn.split@k`` an order-0 folio at the PFN of page k of ``Fn``; ``4K`` an order-0 page;
  ``zero``/``hugezero`` the zero pages; ``F?`` a large folio whose identity is not checked.
  Flags: T thp, A anon, M mlocked, U unevictable, X anon_exclusive (head page, Q2), Z zero,
  D dirty, B swapbacked, C swapcache; L and R are not observed; lru and active are never
  compared, unevictable and swapbacked not on order-0 folios (spec section 3).
- VMAs: only the regions a cell names are checked (the ground truth leaves PROT_NONE
  reservations out); ``-`` means the default region has no VMA. Lz and Sw are 0 when absent;
  ShD and Pss are not observed. The S10 tables show only the first 256 KiB of their 2 MiB
  region (pages 0-63), and S10_1 rows 3-4 leave out the VMA that starts beyond it
  (``vma_window``). S14b row 0 shows ``-`` for its region, then still PROT_NONE, so its VMAs
  are not checked (``check_vmas``).

Deviations from the tables, each for a reason the ground truth itself gives: ``edited`` rows
replace a PFN reuse by the next 4 KiB fault (S7a, S7b, S16a: "batch-dependent", Determinism) by
``4K``, and S7c's re-faulted THP by ``F?``; ``batch`` rows (S10_15, S15a: lazyfree pages still in
the per-CPU batch on the live kernel, which the runner drains before every observation) skip
LazyFree and ``pglazyfree``; S14's VmLck includes the test program's own memory, so those rows
give the region's 2048 kB instead (scenarios/README.md). Not translated here: S6d and S14d
(their translations differ in layout, scenarios/README.md).
"""

from __future__ import annotations

import functools
import re
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from foliosim.observation import Page, expand_runs
from foliosim.scenario import load_scenario
from foliosim.targets.sim import run

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
ASPECTS = ("vmas", "pages", "counters", "status")


@dataclass
class R:
    """One ground-truth table row: the observation label it maps to (None: not observed), the
    process, and the VMA, page and counter cells verbatim."""

    label: str | None
    proc: str
    vmas: str
    pages: str
    counters: str
    after: int | None = None       # the row this one's deltas follow (-1: the start)
    batch: bool = False            # per-CPU lazyfree batch dependent: no Lz, no pglazyfree
    status: str | None = None      # replaces the status part of ``counters``
    check_vmas: bool = True
    edited: bool = False           # a cell was changed from the table (see the module doc)


@dataclass
class Case:
    gt: str
    stem: str
    region: str                    # the region of cells without a [name]
    _: KW_ONLY
    end: str
    rows: list[R]
    aliases: dict[str, str] = field(default_factory=dict)
    errnos: dict[int, str] = field(default_factory=dict)
    vma_window: int | None = None  # the table shows only VMAs starting below this offset


# The failures that are model bugs, by test id, with what the kernel did and what the model does.
KNOWN_MODEL_BUGS: dict[str, str] = {}


# -- reading the legend ---------------------------------------------------------------------------
FLAG_LETTERS = {"T": "thp", "A": "anon", "M": "mlocked", "U": "unevictable",
                "X": "anon_exclusive", "Z": "zero", "D": "dirty", "B": "swapbacked",
                "C": "swapcache"}
NEVER_COMPARED = frozenset({"lru", "active"})
ORDER0_SKIPPED = frozenset({"unevictable", "swapbacked"})
STATUS_KEYS = {"VmLck": "vm_lck_kb", "VmPin": "vm_pin_kb", "VmSwap": "vm_swap_kb"}
LOOSE = ("split_failed", "thp_split_page_failed")

VMA_RE = re.compile(r"(?:\[(?P<region>[^\]]+)\] )?(?P<start>\d+)K-(?P<end>\d+)K "
                    r"(?P<perms>\S+) (?P<rest>.*)")
PAGE_RE = re.compile(r"(?:\[(?P<region>[^\]]+)\] )?(?P<a>\d+)(?:-(?P<b>\d+))?: (?P<ident>\S+)"
                     r"(?: x(?P<x>[01]) c(?P<c>\d+) (?P<flags>[A-Z]*))?")
COUNTER_RE = re.compile(r"(?:(?P<size>\d+[KM])/)?(?P<name>[a-z_]+)(?P<delta>[+-]\d+)")


def _size_dir(size: str) -> str:
    n = int(size[:-1])
    return f"{n if size[-1] == 'K' else n * 1024}kB"


def parse_counters(cell: str) -> tuple[dict[str, int], dict[str, int] | None]:
    """The deltas of a counter cell, and its status (None if the cell has none)."""
    deltas_part, sep, status_part = cell.partition(";")
    deltas: dict[str, int] = {}
    for tok in deltas_part.split():
        if tok == "-":
            continue
        m = COUNTER_RE.fullmatch(tok)
        assert m, f"unreadable counter {tok!r}"
        name = m["name"]
        if name == "nr_anon_thp":
            name = "nr_anon_transparent_hugepages"
        key = f"{_size_dir(m['size'])}/{name}" if m["size"] else name
        deltas[key] = deltas.get(key, 0) + int(m["delta"])
    return deltas, parse_status(status_part) if sep else None


def parse_status(text: str) -> dict[str, int]:
    out = dict.fromkeys(STATUS_KEYS.values(), 0)
    for tok in text.split():
        k, _, v = tok.partition("=")
        out[STATUS_KEYS[k]] = int(v)
    return out


def parse_vmas(cell: str, case: Case) -> dict[str, list[dict[str, Any]]]:
    """Expected VMAs by region, in the observation's fields."""
    if cell == "-":
        return {case.region: []}
    out: dict[str, list[dict[str, Any]]] = {}
    region = case.region
    for entry in cell.split("<br>"):
        m = VMA_RE.fullmatch(entry)
        assert m, f"unreadable VMA {entry!r}"
        if m["region"]:
            region = case.aliases.get(m["region"], m["region"])
        v: dict[str, Any] = {"start": int(m["start"]) * 1024, "end": int(m["end"]) * 1024,
                             "perms": m["perms"], "vmflags": [], "lazyfree_kb": 0,
                             "swap_kb": 0}
        for tok in m["rest"].split():
            t = re.fullmatch(r"(Rss|An|AH|Lk|Lz|Sw|ShD|Pss|E)(\d+)", tok)
            if t is None:
                v["vmflags"] = sorted(tok.split(","))
                continue
            key = {"Rss": "rss_kb", "An": "anonymous_kb", "AH": "anon_huge_pages_kb",
                   "Lk": "locked_kb", "Lz": "lazyfree_kb", "Sw": "swap_kb"}.get(t[1])
            if t[1] == "E":
                v["thp_eligible"] = t[2] == "1"
            elif key:
                v[key] = int(t[2])
        out.setdefault(region, []).append(v)
    return out


def compared_flags(flags: Any, order0: bool) -> frozenset[str]:
    out = frozenset(flags) - NEVER_COMPARED
    return out - ORDER0_SKIPPED if order0 else out


class Folios:
    """Folio names of the ground truth (``F0``, ``F1``, ...) bound to the PFNs of the model's
    folios in order of first appearance over the whole scenario."""

    def __init__(self) -> None:
        self.base: dict[str, int] = {}

    def bind(self, name: str, base: int) -> str | None:
        if name in self.base:
            return None if self.base[name] == base else (
                f"{name} is another folio than before (PFN {base:#x}, was {self.base[name]:#x})")
        for other, b in self.base.items():
            if b == base:
                return f"{name} is the same folio as {other}"
        self.base[name] = base
        return None


def check_page(pg: Page, ident: str, off: int, x: str | None, c: str | None,
               letters: str | None, names: Folios) -> str | None:
    """What is wrong with one observed page against its legend entry (None: nothing)."""
    if ident in ("none", "swap"):
        return None if pg.state == ident else f"state {pg.state}, expected {ident}"
    if pg.state != "present":
        return f"state {pg.state}, expected present ({ident})"
    if ident in ("zero", "hugezero"):
        order = 9 if ident == "hugezero" else 0
        if "zero" not in pg.flags or pg.folio_order != order:
            return f"not the {ident} page (order {pg.folio_order}, flags {sorted(pg.flags)})"
    elif ident == "4K":
        if pg.folio_order != 0 or "zero" in pg.flags:
            return f"order {pg.folio_order} {sorted(pg.flags)}, expected an order-0 anon page"
    elif m := re.fullmatch(r"(F\d+|F\?)/(\d+)@(\d+)", ident):
        order = int(m[2]).bit_length() - 1
        if pg.folio_order != order:
            return f"folio order {pg.folio_order}, expected {order} ({ident})"
        if pg.pfn - pg.folio_pfn != int(m[3]) + off:
            return f"folio page {pg.pfn - pg.folio_pfn}, expected {int(m[3]) + off}"
        if m[1] != "F?" and (err := names.bind(m[1], pg.folio_pfn)):
            return err
    elif m := re.fullmatch(r"(F\d+)\.split@(\d+)", ident):
        if pg.folio_order != 0:
            return f"folio order {pg.folio_order}, expected an order-0 piece of {m[1]}"
        if err := names.bind(m[1], pg.pfn - int(m[2]) - off):
            return f"not page {int(m[2]) + off} of {m[1]}: {err}"
    else:
        raise AssertionError(f"unknown page identity {ident!r}")
    if x is not None and pg.exclusive != (x == "1"):
        return f"pagemap exclusive {int(pg.exclusive)}, expected {x}"
    if c is not None and pg.mapcount != int(c):
        return f"kpagecount {pg.mapcount}, expected {c}"
    if letters is not None:
        order0 = ident in ("4K", "zero") or ".split" in ident
        want = compared_flags((FLAG_LETTERS[ch] for ch in letters if ch in FLAG_LETTERS),
                              order0)
        got = compared_flags(pg.flags, pg.folio_order == 0)
        if got != want:
            return f"flags {sorted(got)}, expected {sorted(want)} ({letters})"
    return None


def check_pages(cell: str, case: Case, proc_obs: dict[str, Any], names: Folios) -> list[str]:
    problems = []
    region = case.region
    for entry in cell.split("<br>"):
        m = PAGE_RE.fullmatch(entry)
        assert m, f"unreadable page entry {entry!r}"
        if m["region"]:
            region = case.aliases.get(m["region"], m["region"])
        pages = dict(expand_runs(proc_obs["regions"][region]["pages"]))
        a = int(m["a"])
        b = int(m["b"]) if m["b"] else a
        bad = []
        for j in range(a, b + 1):
            if j not in pages:
                bad.append((j, "no such page in the region"))
                continue
            err = check_page(pages[j], m["ident"], j - a, m["x"], m["c"], m["flags"], names)
            if err:
                bad.append((j, err))
        if bad:
            problems.append(f"[{region}] {entry.split('] ')[-1]}: {len(bad)} page(s) differ, "
                            f"first page {bad[0][0]}: {bad[0][1]}")
    return problems


def comparable(counters: dict[str, int], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Counters as compared: no zeros, no thp_zero_page_alloc, the split failures as zero or
    non-zero."""
    out: dict[str, Any] = {}
    for k, v in counters.items():
        name = k.split("/")[-1]
        if not v or name == "thp_zero_page_alloc" or name in skip:
            continue
        out[k] = v > 0 if name in LOOSE else v
    return out


def flat_counters(obs: dict[str, Any]) -> dict[str, int]:
    out = dict(obs["counters"]["vmstat"])
    for size, stats in obs["counters"]["mthp"].items():
        for k, v in stats.items():
            out[f"{size}/{k}"] = v
    return out


def diff_dicts(got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    return [f"{k}: {got.get(k, 0)}, expected {want.get(k, 0)}"
            for k in sorted(set(got) | set(want)) if got.get(k, 0) != want.get(k, 0)]


# -- running a case -------------------------------------------------------------------------------
@functools.cache
def results(gt: str) -> dict[tuple[Any, str], list[str]]:
    """Run the case's scenario on the simulator once; the problems of every row and aspect."""
    case = CASES[gt]
    scenario = load_scenario(SCENARIOS / f"{case.stem}.yaml")
    assert scenario.description.startswith(case.gt), scenario.description
    doc = run(scenario)
    by_label = {o["label"]: o for o in doc["observations"]}
    names = Folios()
    cumulative: list[dict[str, int]] = []
    out: dict[tuple[Any, str], list[str]] = {}
    for i, row in enumerate(case.rows):
        deltas, status = parse_counters(row.counters)
        if row.status is not None:
            status = parse_status(row.status)
        base = row.after
        if base is None:
            base = next((k for k in range(i - 1, -1, -1) if case.rows[k].proc == row.proc), -1)
        total = dict(cumulative[base]) if base >= 0 else {}
        for k, v in deltas.items():
            total[k] = total.get(k, 0) + v
        cumulative.append(total)
        if row.label is None:
            continue
        obs = by_label.get(row.label)
        if obs is None or row.proc not in obs["processes"]:
            for aspect in ASPECTS:
                out[i, aspect] = [f"no observation {row.label!r} of {row.proc}"]
            continue
        proc_obs = obs["processes"][row.proc]
        skip = ("pglazyfree",) if row.batch else ()
        out[i, "counters"] = diff_dicts(comparable(flat_counters(obs), skip),
                                        comparable(total, skip))
        out[i, "status"] = diff_dicts(proc_obs["status"], status or parse_status(""))
        out[i, "pages"] = check_pages(row.pages, case, proc_obs, names)
        problems = []
        for region, want in parse_vmas(row.vmas, case).items():
            got = [v for v in proc_obs["regions"][region]["vmas"]
                   if case.vma_window is None or v["start"] < case.vma_window]
            if len(got) != len(want):
                problems.append(f"[{region}] {len(got)} VMAs, expected {len(want)}: "
                                f"{[(v['start'] >> 10, v['end'] >> 10) for v in got]}")
                continue
            for g, w in zip(got, want, strict=True):
                if row.batch:
                    w = {**w, "lazyfree_kb": g["lazyfree_kb"]}
                problems += [f"[{region}] VMA {w['start'] >> 10}K-{w['end'] >> 10}K {d}"
                             for d in diff_dicts({k: g[k] for k in w}, w)]
        out[i, "vmas"] = problems
    want_end = comparable(parse_counters(case.end)[0])
    out[None, "end"] = diff_dicts(comparable(flat_counters(doc["observations"][-1])), want_end)
    out[None, "steps"] = [
        f"step {s['index']} ({s['op']}): result {s['result']} {s['errno']}, expected "
        + (f"-1 {case.errnos[s['index']]}" if s["index"] in case.errnos else "0")
        for s in doc["steps"]
        if (s["result"], s["errno"]) != ((-1, case.errnos[s["index"]])
                                         if s["index"] in case.errnos else (0, None))]
    return out


CASES: dict[str, Case] = {c.gt: c for c in [
    Case("S0a", "gt-s0a-thp-write-fault", "thp",
         end='2M/anon_fault_alloc+1 thp_fault_alloc+1',
         rows=[
        # 0: main: mapped
        R(None, 'main',
          '[thp] 0K-2048K rw-p Rss0 An0 AH0 Lk0 E1 hg',
          '0-511: none',
          '-'),
        # 1: main: after first write
        R('after-first-write', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1'),
        # 2: main: after filling all 512 pages
        R('after-fill', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '-'),
        # 3: main: after munmap whole
        R('after-munmap', 'main',
          '-',
          '0-511: none',
          '2M/nr_anon-1 nr_anon_thp-1'),
    ]),
    Case("S0b", "gt-s0b-read-huge-zero-then-write", "thp",
         end='2M/anon_fault_alloc+1 thp_fault_alloc+1 thp_zero_page_alloc+1',
         rows=[
        # 0: main: after read fault
        R('after-read-fault', 'main',
          '[thp] 0K-2048K rw-p Rss0 An0 AH0 Lk0 E1 hg',
          '0-511: hugezero x0 c0 TZ',
          'thp_zero_page_alloc+1'),
        # 1: main: after write fault
        R('after-write-fault', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1'),
    ]),
    Case("S0c", "gt-s0c-misaligned-4m-region", "skewed",
         aliases={'skewed4M': 'skewed'},
         end='2M/anon_fault_alloc+1 thp_fault_alloc+1',
         rows=[
        # 0: main: after filling 4M region at 2M+1M
        R('after-fill', 'main',
          '[skewed4M] 0K-4096K rw-p Rss4096 An4096 AH2048 Lk0 E1 hg',
          '0-255: 4K x1 c1 AXB<br>256-767: F0/512@0 x1 c1 TAXB<br>768-1023: 4K x1 c1 AXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1'),
    ]),
    Case("S0d", "gt-s0d-nohugepage-4k-faults", "nothp",
         end='',
         rows=[
        # 0: main: after first write
        R('after-first-write', 'main',
          '[nothp] 0K-2048K rw-p Rss4 An4 AH0 Lk0 E0 nh',
          '0: 4K x1 c1 AXB<br>1-511: none',
          '-'),
        # 1: main: after filling 512 pages
        R('after-fill', 'main',
          '[nothp] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E0 nh',
          '0-511: 4K x1 c1 AXB',
          '-'),
    ]),
    Case("S1", "gt-s1-mlock-first-half", "thp",
         end='2M/anon_fault_alloc+1 thp_fault_alloc+1 thp_split_pmd+1',
         rows=[
        # 0: main: faulted
        R(None, 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1'),
        # 1: main: after mlock first 1M
        R('after-mlock-half', 'main',
          ('[thp] 0K-1024K rw-p Rss1024 An1024 AH0 Lk1024 E0 lo,hg<br>'
           '1024K-2048K rw-p Rss1024 An1024 AH0 Lk0 E0 hg'),
          '0-511: F0/512@0 x1 c1 TAXDB',
          'nr_anon_thp-1 thp_split_pmd+1 ; VmLck=1024'),
        # 2: main: after shrinker
        R('after-shrink', 'main',
          ('[thp] 0K-1024K rw-p Rss1024 An1024 AH0 Lk1024 E0 lo,hg<br>'
           '1024K-2048K rw-p Rss1024 An1024 AH0 Lk0 E0 hg'),
          '0-511: F0/512@0 x1 c1 TAXDB',
          '; VmLck=1024'),
        # 3: main: after munlock first 1M
        R('after-munlock-half', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXDB',
          '-'),
        # 4: main: after mlock whole 2M (PTE-mapped now)
        R('after-mlock-whole', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH0 Lk2048 E1 lo,hg',
          '0-511: F0/512@0 x1 c1 TAMUXDB',
          '; VmLck=2048'),
    ]),
    Case("S2", "gt-s2-mlock-whole-thp", "thp",
         end='2M/anon_fault_alloc+1 thp_fault_alloc+1',
         rows=[
        # 0: main: faulted
        R(None, 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1'),
        # 1: main: after mlock 2M
        R('after-mlock', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk2048 E1 lo,hg',
          '0-511: F0/512@0 x1 c1 TAMUXB',
          '; VmLck=2048'),
        # 2: main: after munlock 2M
        R('after-munlock', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '-'),
    ]),
    Case("S3", "gt-s3-mlock-4m-munlock-1m", "two",
         aliases={'2thp': 'two'},
         end='2M/anon_fault_alloc+2 thp_fault_alloc+2 thp_split_pmd+1',
         rows=[
        # 0: main: faulted
        R(None, 'main',
          '[2thp] 0K-4096K rw-p Rss4096 An4096 AH4096 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB<br>512-1023: F1/512@0 x1 c1 TAXB',
          '2M/anon_fault_alloc+2 2M/nr_anon+2 nr_anon_thp+2 thp_fault_alloc+2'),
        # 1: main: after mlock 4M
        R('after-mlock-4m', 'main',
          '[2thp] 0K-4096K rw-p Rss4096 An4096 AH4096 Lk4096 E1 lo,hg',
          '0-511: F0/512@0 x1 c1 TAMUXB<br>512-1023: F1/512@0 x1 c1 TAMUXB',
          '; VmLck=4096'),
        # 2: main: after munlock [1M,2M)
        R('after-munlock-1m', 'main',
          ('[2thp] 0K-1024K rw-p Rss1024 An1024 AH0 Lk1024 E0 lo,hg<br>'
           '1024K-2048K rw-p Rss1024 An1024 AH0 Lk0 E0 hg<br>'
           '2048K-4096K rw-p Rss2048 An2048 AH2048 Lk2048 E1 lo,hg'),
          '0-511: F0/512@0 x1 c1 TAXDB<br>512-1023: F1/512@0 x1 c1 TAMUXB',
          'nr_anon_thp-1 thp_split_pmd+1 ; VmLck=3072'),
        # 3: main: after shrinker
        R('after-shrink', 'main',
          ('[2thp] 0K-1024K rw-p Rss1024 An1024 AH0 Lk1024 E0 lo,hg<br>'
           '1024K-2048K rw-p Rss1024 An1024 AH0 Lk0 E0 hg<br>'
           '2048K-4096K rw-p Rss2048 An2048 AH2048 Lk2048 E1 lo,hg'),
          '0-511: F0/512@0 x1 c1 TAXDB<br>512-1023: F1/512@0 x1 c1 TAMUXB',
          '; VmLck=3072'),
        # 4: main: after re-mlock [1M,2M) (VMAs merge)
        R('after-remlock-1m', 'main',
          '[2thp] 0K-4096K rw-p Rss4096 An4096 AH2048 Lk4096 E1 lo,hg',
          '0-511: F0/512@0 x1 c1 TAXDB<br>512-1023: F1/512@0 x1 c1 TAMUXB',
          '; VmLck=4096'),
    ]),
    Case("S4", "gt-s4-munmap-middle-shrink", "thp",
         end=('2M/anon_fault_alloc+1 2M/split+1 2M/split_deferred+1 thp_deferred_split_page+1 '
              'thp_fault_alloc+1 thp_split_page+1 thp_split_pmd+1'),
         rows=[
        # 0: main: faulted
        R(None, 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1'),
        # 1: main: after munmap middle 512K
        R('after-munmap-middle', 'main',
          ('[thp] 0K-768K rw-p Rss768 An768 AH0 Lk0 E0 hg<br>'
           '1280K-2048K rw-p Rss768 An768 AH0 Lk0 E0 hg'),
          '0-191: F0/512@0 x1 c1 TAXDB<br>192-319: none<br>320-511: F0/512@320 x1 c1 TAXDB',
          ('2M/nr_anon_partially_mapped+1 2M/split_deferred+1 nr_anon_thp-1 '
           'thp_deferred_split_page+1 thp_split_pmd+1')),
        # 2: main: after drop_caches=1 (pagecache only)
        R(None, 'main',
          ('[thp] 0K-768K rw-p Rss768 An768 AH0 Lk0 E0 hg<br>'
           '1280K-2048K rw-p Rss768 An768 AH0 Lk0 E0 hg'),
          '0-191: F0/512@0 x1 c1 TAXDB<br>192-319: none<br>320-511: F0/512@320 x1 c1 TAXDB',
          '-'),
        # 3: main: after drop_caches=2 (slab/shrinkers)
        R('after-shrink', 'main',
          ('[thp] 0K-768K rw-p Rss768 An768 AH0 Lk0 E0 hg<br>'
           '1280K-2048K rw-p Rss768 An768 AH0 Lk0 E0 hg'),
          '0-191: F0.split@0 x1 c1 AXDB<br>192-319: none<br>320-511: F0.split@320 x1 c1 AXDB',
          '2M/nr_anon-1 2M/nr_anon_partially_mapped-1 2M/split+1 thp_split_page+1'),
        # 4: main: after drop_caches=3
        R('after-second-shrink', 'main',
          ('[thp] 0K-768K rw-p Rss768 An768 AH0 Lk0 E0 hg<br>'
           '1280K-2048K rw-p Rss768 An768 AH0 Lk0 E0 hg'),
          '0-191: F0.split@0 x1 c1 AXDB<br>192-319: none<br>320-511: F0.split@320 x1 c1 AXDB',
          '-'),
    ]),
    Case("S4b", "gt-s4b-munmap-middle-exit-without-shrink", "thp",
         end=('2M/anon_fault_alloc+1 2M/split_deferred+1 thp_deferred_split_page+1 '
              'thp_fault_alloc+1 thp_split_pmd+1'),
         rows=[
        # 0: main: after munmap middle 512K, exiting without shrinker
        R('after-munmap-middle', 'main',
          ('[thp] 0K-768K rw-p Rss768 An768 AH0 Lk0 E0 hg<br>'
           '1280K-2048K rw-p Rss768 An768 AH0 Lk0 E0 hg'),
          '0-191: F0/512@0 x1 c1 TAXDB<br>192-319: none<br>320-511: F0/512@320 x1 c1 TAXDB',
          ('2M/anon_fault_alloc+1 2M/nr_anon+1 2M/nr_anon_partially_mapped+1 '
           '2M/split_deferred+1 thp_deferred_split_page+1 thp_fault_alloc+1 thp_split_pmd+1')),
    ]),
    Case("S4c", "gt-s4c-munmap-first-half-edge", "thp",
         end=('2M/anon_fault_alloc+1 2M/split+1 2M/split_deferred+1 thp_deferred_split_page+1 '
              'thp_fault_alloc+1 thp_split_page+1 thp_split_pmd+1'),
         rows=[
        # 0: main: after munmap first 1M
        R('after-munmap-first-half', 'main',
          '[thp] 1024K-2048K rw-p Rss1024 An1024 AH0 Lk0 E0 hg',
          '0-255: none<br>256-511: F0/512@256 x1 c1 TAXDB',
          ('2M/anon_fault_alloc+1 2M/nr_anon+1 2M/nr_anon_partially_mapped+1 '
           '2M/split_deferred+1 thp_deferred_split_page+1 thp_fault_alloc+1 thp_split_pmd+1')),
        # 1: main: after shrinker
        R('after-shrink', 'main',
          '[thp] 1024K-2048K rw-p Rss1024 An1024 AH0 Lk0 E0 hg',
          '0-255: none<br>256-511: F0.split@256 x1 c1 AXDB',
          '2M/nr_anon-1 2M/nr_anon_partially_mapped-1 2M/split+1 thp_split_page+1'),
    ]),
    Case("S5", "gt-s5-mprotect-half-readonly", "thp",
         end='2M/anon_fault_alloc+1 thp_fault_alloc+1 thp_split_pmd+1',
         rows=[
        # 0: main: faulted
        R(None, 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1'),
        # 1: main: after mprotect second half R
        R('after-mprotect-ro', 'main',
          ('[thp] 0K-1024K rw-p Rss1024 An1024 AH0 Lk0 E0 hg<br>'
           '1024K-2048K r--p Rss1024 An1024 AH0 Lk0 E0 hg'),
          '0-511: F0/512@0 x1 c1 TAXDB',
          'nr_anon_thp-1 thp_split_pmd+1'),
        # 2: main: after shrinker
        R('after-shrink', 'main',
          ('[thp] 0K-1024K rw-p Rss1024 An1024 AH0 Lk0 E0 hg<br>'
           '1024K-2048K r--p Rss1024 An1024 AH0 Lk0 E0 hg'),
          '0-511: F0/512@0 x1 c1 TAXDB',
          '-'),
        # 3: main: after mprotect back RW (VMAs merge)
        R('after-mprotect-back', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXDB',
          '-'),
        # 4: main: after write
        R('after-write', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXDB',
          '-'),
    ]),
    Case("S6a", "gt-s6a-mremap-512k-out", "thp",
         end=('2M/anon_fault_alloc+1 2M/split_deferred+1 thp_deferred_split_page+1 '
              'thp_fault_alloc+1 thp_split_pmd+1'),
         rows=[
        # 0: main: faulted
        R(None, 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '[thp] 0-511: F0/512@0 x1 c1 TAXB<br>[dst] 0-127: none',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1'),
        # 1: main: after mremap 512K out
        R('after-mremap-part', 'main',
          ('[thp] 0K-512K rw-p Rss512 An512 AH0 Lk0 E0 hg<br>'
           '1024K-2048K rw-p Rss1024 An1024 AH0 Lk0 E0 hg<br>'
           '[dst] 0K-512K rw-p Rss512 An512 AH0 Lk0 E0 hg'),
          ('[thp] 0-127: F0/512@0 x1 c1 TAXDB<br>128-255: none<br>'
           '256-511: F0/512@256 x1 c1 TAXDB<br>[dst] 0-127: F0/512@128 x1 c1 TAXDB'),
          'nr_anon_thp-1 thp_split_pmd+1'),
        # 2: main: after shrinker
        R('after-shrink', 'main',
          ('[thp] 0K-512K rw-p Rss512 An512 AH0 Lk0 E0 hg<br>'
           '1024K-2048K rw-p Rss1024 An1024 AH0 Lk0 E0 hg<br>'
           '[dst] 0K-512K rw-p Rss512 An512 AH0 Lk0 E0 hg'),
          ('[thp] 0-127: F0/512@0 x1 c1 TAXDB<br>128-255: none<br>'
           '256-511: F0/512@256 x1 c1 TAXDB<br>[dst] 0-127: F0/512@128 x1 c1 TAXDB'),
          '-'),
        # 3: main: after write to moved part
        R('after-write-moved', 'main',
          ('[thp] 0K-512K rw-p Rss512 An512 AH0 Lk0 E0 hg<br>'
           '1024K-2048K rw-p Rss1024 An1024 AH0 Lk0 E0 hg<br>'
           '[dst] 0K-512K rw-p Rss512 An512 AH0 Lk0 E0 hg'),
          ('[thp] 0-127: F0/512@0 x1 c1 TAXDB<br>128-255: none<br>'
           '256-511: F0/512@256 x1 c1 TAXDB<br>[dst] 0-127: F0/512@128 x1 c1 TAXDB'),
          '-'),
    ]),
    Case("S6b", "gt-s6b-mremap-whole-aligned", "src",
         end='2M/anon_fault_alloc+1 thp_fault_alloc+1',
         rows=[
        # 0: main: faulted
        R(None, 'main',
          '[src] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '[src] 0-511: F0/512@0 x1 c1 TAXB<br>[dst] 0-511: none',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1'),
        # 1: main: after mremap whole
        R('after-mremap-whole', 'main',
          '[dst] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '[src] 0-511: none<br>[dst] 0-511: F0/512@0 x1 c1 TAXB',
          '-'),
    ]),
    Case("S6c", "gt-s6c-mremap-whole-misaligned", "src",
         end=('2M/anon_fault_alloc+1 2M/split_deferred+1 thp_deferred_split_page+1 '
              'thp_fault_alloc+1 thp_split_pmd+1'),
         rows=[
        # 0: main: faulted
        R(None, 'main',
          '[src] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '[src] 0-511: F0/512@0 x1 c1 TAXB<br>[dst] 0-511: none',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1'),
        # 1: main: after mremap whole to misaligned dst
        R('after-mremap-misaligned', 'main',
          '[dst] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E0 hg',
          '[src] 0-511: none<br>[dst] 0-511: F0/512@0 x1 c1 TAXDB',
          'nr_anon_thp-1 thp_split_pmd+1'),
        # 2: main: after shrinker
        R('after-shrink', 'main',
          '[dst] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E0 hg',
          '[src] 0-511: none<br>[dst] 0-511: F0/512@0 x1 c1 TAXDB',
          '-'),
    ]),
    Case("S7a", "gt-s7a-dontneed-4k", "thp",
         end=('2M/anon_fault_alloc+1 2M/split+1 2M/split_deferred+1 thp_deferred_split_page+1 '
              'thp_fault_alloc+1 thp_split_page+1 thp_split_pmd+1'),
         rows=[
        # 0: main: faulted
        R(None, 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1'),
        # 1: main: after MADV_DONTNEED
        R('after-dontneed-4k', 'main',
          '[thp] 0K-2048K rw-p Rss2044 An2044 AH0 Lk0 E1 hg',
          '0-255: F0/512@0 x1 c1 TAXDB<br>256: none<br>257-511: F0/512@257 x1 c1 TAXDB',
          ('2M/nr_anon_partially_mapped+1 2M/split_deferred+1 nr_anon_thp-1 '
           'thp_deferred_split_page+1 thp_split_pmd+1')),
        # 2: main: after shrinker
        R('after-shrink', 'main',
          '[thp] 0K-2048K rw-p Rss2044 An2044 AH0 Lk0 E1 hg',
          '0-255: F0.split@0 x1 c1 AXDB<br>256: none<br>257-511: F0.split@257 x1 c1 AXDB',
          '2M/nr_anon-1 2M/nr_anon_partially_mapped-1 2M/split+1 thp_split_page+1'),
        # 3: main: after re-touch of zapped range start
        R('after-retouch', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          '0-255: F0.split@0 x1 c1 AXDB<br>256: 4K x1 c1 AXB<br>257-511: F0.split@257 x1 c1 AXDB',
          '-', edited=True),
    ]),
    Case("S7b", "gt-s7b-dontneed-64k", "thp",
         end=('2M/anon_fault_alloc+1 2M/split+1 2M/split_deferred+1 thp_deferred_split_page+1 '
              'thp_fault_alloc+1 thp_split_page+1 thp_split_pmd+1'),
         rows=[
        # 0: main: faulted
        R(None, 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1'),
        # 1: main: after MADV_DONTNEED
        R('after-dontneed-64k', 'main',
          '[thp] 0K-2048K rw-p Rss1984 An1984 AH0 Lk0 E1 hg',
          '0-255: F0/512@0 x1 c1 TAXDB<br>256-271: none<br>272-511: F0/512@272 x1 c1 TAXDB',
          ('2M/nr_anon_partially_mapped+1 2M/split_deferred+1 nr_anon_thp-1 '
           'thp_deferred_split_page+1 thp_split_pmd+1')),
        # 2: main: after shrinker
        R('after-shrink', 'main',
          '[thp] 0K-2048K rw-p Rss1984 An1984 AH0 Lk0 E1 hg',
          '0-255: F0.split@0 x1 c1 AXDB<br>256-271: none<br>272-511: F0.split@272 x1 c1 AXDB',
          '2M/nr_anon-1 2M/nr_anon_partially_mapped-1 2M/split+1 thp_split_page+1'),
        # 3: main: after re-touch of zapped range start
        R('after-retouch', 'main',
          '[thp] 0K-2048K rw-p Rss1988 An1988 AH0 Lk0 E1 hg',
          ('0-255: F0.split@0 x1 c1 AXDB<br>256: 4K x1 c1 AXB<br>257-271: none<br>'
           '272-511: F0.split@272 x1 c1 AXDB'),
          '-', edited=True),
    ]),
    Case("S7c", "gt-s7c-dontneed-whole", "thp",
         end='2M/anon_fault_alloc+2 thp_fault_alloc+2',
         rows=[
        # 0: main: faulted
        R(None, 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1'),
        # 1: main: after MADV_DONTNEED whole
        R('after-dontneed-whole', 'main',
          '[thp] 0K-2048K rw-p Rss0 An0 AH0 Lk0 E1 hg',
          '0-511: none',
          '2M/nr_anon-1 nr_anon_thp-1'),
        # 2: main: after re-touch
        R('after-retouch', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F?/512@0 x1 c1 TAXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1', edited=True),
    ]),
    Case("S8a", "gt-s8a-fork-child-cow-write", "thp",
         end='2M/anon_fault_alloc+1 thp_fault_alloc+1 thp_split_pmd+1',
         rows=[
        # 0: main: parent: faulted
        R(None, 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1'),
        # 1: child: child: after fork
        R('after-fork', 'child',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 ShD2048 Pss1024 E1 hg',
          '0-511: F0/512@0 x0 c2 TAB',
          '-', after=0),
        # 2: child: child: after COW write
        R('after-child-cow', 'child',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 ShD2044 Pss1026 E1 hg',
          '0-4: F0/512@0 x0 c2 TADB<br>5: 4K x1 c1 AXB<br>6-511: F0/512@6 x0 c2 TADB',
          'thp_split_pmd+1'),
        # 3: child: child: after 2nd COW write
        R('after-child-second-cow', 'child',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 ShD2040 Pss1028 E1 hg',
          ('0-4: F0/512@0 x0 c2 TADB<br>5: 4K x1 c1 AXB<br>6-255: F0/512@6 x0 c2 TADB<br>'
           '256: 4K x1 c1 AXB<br>257-511: F0/512@257 x0 c2 TADB'),
          '-'),
        # 4: main: parent: while child alive
        R('after-child-second-cow', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 ShD2040 Pss1028 E1 hg',
          ('0-4: F0/512@0 x0 c2 TADB<br>5: F0/512@5 x0 c1 TADB<br>6-255: F0/512@6 x0 c2 TADB<br>'
           '256: F0/512@256 x0 c1 TADB<br>257-511: F0/512@257 x0 c2 TADB'),
          'thp_split_pmd+1'),
        # 5: main: parent: after child exit
        R('after-child-exit', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TADB',
          '-'),
        # 6: main: parent: after own write
        R('after-parent-write', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXDB',
          '-'),
        # 7: main: parent: after shrinker
        R('after-shrink', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXDB',
          '-'),
    ]),
    Case("S8b", "gt-s8b-fork-parent-cow-write", "thp",
         end=('2M/anon_fault_alloc+1 2M/split+1 2M/split_deferred+1 thp_deferred_split_page+1 '
              'thp_fault_alloc+1 thp_split_page+1 thp_split_pmd+1'),
         rows=[
        # 0: main: parent: faulted
        R(None, 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1'),
        # 1: child: child: after fork
        R('after-fork', 'child',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 ShD2048 Pss1024 E1 hg',
          '0-511: F0/512@0 x0 c2 TAB',
          '-', after=0),
        # 2: main: parent: after fork
        R('after-fork', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 ShD2048 Pss1024 E1 hg',
          '0-511: F0/512@0 x0 c2 TAB',
          '-'),
        # 3: main: parent: while child alive
        R('after-parent-cow', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 ShD2044 Pss1026 E1 hg',
          '0-4: F0/512@0 x0 c2 TADB<br>5: 4K x1 c1 AXB<br>6-511: F0/512@6 x0 c2 TADB',
          'thp_split_pmd+1'),
        # 4: child: child: after parent's COW write
        R('after-parent-cow', 'child',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 ShD2044 Pss1026 E1 hg',
          '0-4: F0/512@0 x0 c2 TADB<br>5: F0/512@5 x0 c1 TADB<br>6-511: F0/512@6 x0 c2 TADB',
          'thp_split_pmd+1'),
        # 5: main: parent: after child exit
        R('after-child-exit', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          '0-4: F0/512@0 x1 c1 TADB<br>5: 4K x1 c1 AXB<br>6-511: F0/512@6 x1 c1 TADB',
          ('2M/nr_anon_partially_mapped+1 2M/split_deferred+1 nr_anon_thp-1 '
           'thp_deferred_split_page+1')),
        # 6: main: parent: after own write
        R('after-parent-write', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          '0-4: F0/512@0 x1 c1 TADB<br>5: 4K x1 c1 AXB<br>6-511: F0/512@6 x1 c1 TADB',
          '-'),
        # 7: main: parent: after shrinker
        R('after-shrink', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          ('0-4: F0.split@0 x1 c1 ADB<br>5: 4K x1 c1 AXB<br>6-255: F0.split@6 x1 c1 ADB<br>'
           '256: F0.split@256 x1 c1 AXDB<br>257-511: F0.split@257 x1 c1 ADB'),
          '2M/nr_anon-1 2M/nr_anon_partially_mapped-1 2M/split+1 thp_split_page+1'),
    ]),
    Case("S8c", "gt-s8c-fork-no-write-child-exit", "thp",
         end='2M/anon_fault_alloc+1 thp_fault_alloc+1',
         rows=[
        # 0: main: parent: faulted
        R(None, 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1'),
        # 1: child: child: after fork
        R('after-fork', 'child',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 ShD2048 Pss1024 E1 hg',
          '0-511: F0/512@0 x0 c2 TAB',
          '-', after=0),
        # 2: main: parent: while child alive
        R('after-fork', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 ShD2048 Pss1024 E1 hg',
          '0-511: F0/512@0 x0 c2 TAB',
          '-'),
        # 3: main: parent: after child exit
        R('after-child-exit', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAB',
          '-'),
        # 4: main: parent: after own write
        R('after-parent-write', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '-'),
        # 5: main: parent: after shrinker
        R('after-shrink', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '-'),
    ]),
    Case("S9a", "gt-s9a-pin-64k-munmap-tail", "thp",
         end=('2M/anon_fault_alloc+1 2M/split+1 2M/split_deferred+1 2M/split_failed+8 '
              'thp_deferred_split_page+1 thp_fault_alloc+1 thp_split_page+1 '
              'thp_split_page_failed+8 thp_split_pmd+1'),
         rows=[
        # 0: main: faulted
        R(None, 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1'),
        # 1: main: after register (pinned)
        R('after-pin', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '; VmPin=2048'),
        # 2: main: after partial munmap
        R('after-munmap-tail', 'main',
          '[thp] 0K-1536K rw-p Rss1536 An1536 AH0 Lk0 E0 hg',
          '0-383: F0/512@0 x1 c1 TAXDB<br>384-511: none',
          ('2M/nr_anon_partially_mapped+1 2M/split_deferred+1 nr_anon_thp-1 '
           'thp_deferred_split_page+1 thp_split_pmd+1 ; VmPin=2048')),
        # 3: main: after shrinker (pinned)
        R('after-shrink-pinned', 'main',
          '[thp] 0K-1536K rw-p Rss1536 An1536 AH0 Lk0 E0 hg',
          '0-383: F0/512@0 x1 c1 TAXDB<br>384-511: none',
          '2M/split_failed+3 thp_split_page_failed+3 ; VmPin=2048'),
        # 4: main: after 2nd shrinker (pinned)
        R('after-second-shrink-pinned', 'main',
          '[thp] 0K-1536K rw-p Rss1536 An1536 AH0 Lk0 E0 hg',
          '0-383: F0/512@0 x1 c1 TAXDB<br>384-511: none',
          '2M/split_failed+5 thp_split_page_failed+5 ; VmPin=2048'),
        # 5: main: after unregister
        R('after-unpin', 'main',
          '[thp] 0K-1536K rw-p Rss1536 An1536 AH0 Lk0 E0 hg',
          '0-383: F0/512@0 x1 c1 TAXDB<br>384-511: none',
          '-'),
        # 6: main: after shrinker (unpinned)
        R('after-shrink-unpinned', 'main',
          '[thp] 0K-1536K rw-p Rss1536 An1536 AH0 Lk0 E0 hg',
          '0-383: F0.split@0 x1 c1 AXDB<br>384-511: none',
          '2M/nr_anon-1 2M/nr_anon_partially_mapped-1 2M/split+1 thp_split_page+1'),
    ]),
    Case("S9b", "gt-s9b-pin-64k-munmap-overlapping", "thp",
         end=('2M/anon_fault_alloc+1 2M/split+1 2M/split_deferred+1 2M/split_failed+5 '
              'thp_deferred_split_page+1 thp_fault_alloc+1 thp_split_page+1 '
              'thp_split_page_failed+5 thp_split_pmd+1'),
         rows=[
        # 0: main: faulted
        R(None, 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1'),
        # 1: main: after register (pinned)
        R('after-pin', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '; VmPin=2048'),
        # 2: main: after partial munmap
        R('after-munmap-middle', 'main',
          ('[thp] 0K-768K rw-p Rss768 An768 AH0 Lk0 E0 hg<br>'
           '1280K-2048K rw-p Rss768 An768 AH0 Lk0 E0 hg'),
          '0-191: F0/512@0 x1 c1 TAXDB<br>192-319: none<br>320-511: F0/512@320 x1 c1 TAXDB',
          ('2M/nr_anon_partially_mapped+1 2M/split_deferred+1 nr_anon_thp-1 '
           'thp_deferred_split_page+1 thp_split_pmd+1 ; VmPin=2048')),
        # 3: main: after shrinker (pinned)
        R('after-shrink-pinned', 'main',
          ('[thp] 0K-768K rw-p Rss768 An768 AH0 Lk0 E0 hg<br>'
           '1280K-2048K rw-p Rss768 An768 AH0 Lk0 E0 hg'),
          '0-191: F0/512@0 x1 c1 TAXDB<br>192-319: none<br>320-511: F0/512@320 x1 c1 TAXDB',
          '2M/split_failed+3 thp_split_page_failed+3 ; VmPin=2048'),
        # 4: main: after 2nd shrinker (pinned)
        R('after-second-shrink-pinned', 'main',
          ('[thp] 0K-768K rw-p Rss768 An768 AH0 Lk0 E0 hg<br>'
           '1280K-2048K rw-p Rss768 An768 AH0 Lk0 E0 hg'),
          '0-191: F0/512@0 x1 c1 TAXDB<br>192-319: none<br>320-511: F0/512@320 x1 c1 TAXDB',
          '2M/split_failed+2 thp_split_page_failed+2 ; VmPin=2048'),
        # 5: main: after unregister
        R('after-unpin', 'main',
          ('[thp] 0K-768K rw-p Rss768 An768 AH0 Lk0 E0 hg<br>'
           '1280K-2048K rw-p Rss768 An768 AH0 Lk0 E0 hg'),
          '0-191: F0/512@0 x1 c1 TAXDB<br>192-319: none<br>320-511: F0/512@320 x1 c1 TAXDB',
          '-'),
        # 6: main: after shrinker (unpinned)
        R('after-shrink-unpinned', 'main',
          ('[thp] 0K-768K rw-p Rss768 An768 AH0 Lk0 E0 hg<br>'
           '1280K-2048K rw-p Rss768 An768 AH0 Lk0 E0 hg'),
          '0-191: F0.split@0 x1 c1 AXDB<br>192-319: none<br>320-511: F0.split@320 x1 c1 AXDB',
          '2M/nr_anon-1 2M/nr_anon_partially_mapped-1 2M/split+1 thp_split_page+1'),
    ]),
    Case("S9c", "gt-s9c-pin-whole-mlock-munmap", "thp",
         end='2M/anon_fault_alloc+1 thp_fault_alloc+1',
         rows=[
        # 0: main: after register whole THP
        R('after-pin', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1 ; VmPin=2048'),
        # 1: main: after mlock while pinned
        R('after-mlock-pinned', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk2048 E1 lo,hg',
          '0-511: F0/512@0 x1 c1 TAMUXB',
          '; VmLck=2048 VmPin=2048'),
        # 2: main: after munmap whole while pinned
        R('after-munmap-pinned', 'main',
          '-',
          '0-511: none',
          'nr_anon_thp-1 ; VmPin=2048'),
        # 3: main: after unregister
        R('after-unpin', 'main',
          '-',
          '0-511: none',
          '2M/nr_anon-1'),
    ]),
    Case("S10_fault", "gt-s10-fault-64k-mthp", "r",
         end='64K/anon_fault_alloc+32',
         rows=[
        # 0: main: after first write
        R('after-first-write', 'main',
          '[r] 0K-2048K rw-p Rss64 An64 AH0 Lk0 E1 hg',
          '0-15: F0/16@0 x1 c1 TAXB<br>16-63: none',
          '64K/anon_fault_alloc+1 64K/nr_anon+1'),
        # 1: main: after fill 2M
        R('after-fill', 'main',
          '[r] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          ('0-15: F0/16@0 x1 c1 TAXB<br>16-31: F1/16@0 x1 c1 TAXB<br>'
           '32-47: F2/16@0 x1 c1 TAXB<br>48-63: F3/16@0 x1 c1 TAXB'),
          '64K/anon_fault_alloc+31 64K/nr_anon+31'),
    ]),
    Case("S10_1", "gt-s10-1-64k-mlock-parts", "r",
         vma_window=256 << 10,
         end='64K/anon_fault_alloc+32 64K/split_deferred+3',
         rows=[
        # 0: main: faulted
        R(None, 'main',
          '[r] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          ('0-15: F0/16@0 x1 c1 TAXB<br>16-31: F1/16@0 x1 c1 TAXB<br>'
           '32-47: F2/16@0 x1 c1 TAXB<br>48-63: F3/16@0 x1 c1 TAXB'),
          '64K/anon_fault_alloc+32 64K/nr_anon+32'),
        # 1: main: after mlock first 32K
        R('after-mlock-half-folio', 'main',
          ('[r] 0K-32K rw-p Rss32 An32 AH0 Lk32 E0 lo,hg<br>'
           '32K-2048K rw-p Rss2016 An2016 AH0 Lk0 E1 hg'),
          ('0-15: F0/16@0 x1 c1 TAXB<br>16-31: F1/16@0 x1 c1 TAXB<br>'
           '32-47: F2/16@0 x1 c1 TAXB<br>48-63: F3/16@0 x1 c1 TAXB'),
          '; VmLck=32'),
        # 2: main: after mlock exactly folio #1
        R('after-mlock-one-folio', 'main',
          ('[r] 0K-32K rw-p Rss32 An32 AH0 Lk32 E0 lo,hg<br>'
           '32K-64K rw-p Rss32 An32 AH0 Lk0 E0 hg<br>'
           '64K-128K rw-p Rss64 An64 AH0 Lk64 E1 lo,hg<br>'
           '128K-2048K rw-p Rss1920 An1920 AH0 Lk0 E1 hg'),
          ('0-15: F0/16@0 x1 c1 TAXB<br>16-31: F1/16@0 x1 c1 TAMUXB<br>'
           '32-47: F2/16@0 x1 c1 TAXB<br>48-63: F3/16@0 x1 c1 TAXB'),
          '; VmLck=96'),
        # 3: main: after mlock [128K,288K)
        R('after-mlock-2.5-folios', 'main',
          ('[r] 0K-32K rw-p Rss32 An32 AH0 Lk32 E0 lo,hg<br>'
           '32K-64K rw-p Rss32 An32 AH0 Lk0 E0 hg<br>'
           '64K-288K rw-p Rss224 An224 AH0 Lk224 E1 lo,hg'),
          ('0-15: F0/16@0 x1 c1 TAXB<br>16-31: F1/16@0 x1 c1 TAMUXB<br>'
           '32-47: F2/16@0 x1 c1 TAMUXB<br>48-63: F3/16@0 x1 c1 TAMUXB'),
          '; VmLck=256'),
        # 4: main: after munlock half of mlocked folio #1
        R('after-munlock-half-folio', 'main',
          ('[r] 0K-32K rw-p Rss32 An32 AH0 Lk32 E0 lo,hg<br>'
           '32K-96K rw-p Rss64 An64 AH0 Lk0 E0 hg<br>'
           '96K-288K rw-p Rss192 An192 AH0 Lk192 E1 lo,hg'),
          ('0-15: F0/16@0 x1 c1 TAXB<br>16-31: F1/16@0 x1 c1 TAXB<br>'
           '32-47: F2/16@0 x1 c1 TAMUXB<br>48-63: F3/16@0 x1 c1 TAMUXB'),
          '; VmLck=224'),
    ]),
    Case("S10_4", "gt-s10-4-64k-partial-unmap-shrink", "r",
         end='64K/anon_fault_alloc+32 64K/split+2 64K/split_deferred+2',
         rows=[
        # 0: main: faulted
        R(None, 'main',
          '[r] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          ('0-15: F0/16@0 x1 c1 TAXB<br>16-31: F1/16@0 x1 c1 TAXB<br>'
           '32-47: F2/16@0 x1 c1 TAXB<br>48-63: F3/16@0 x1 c1 TAXB'),
          '64K/anon_fault_alloc+32 64K/nr_anon+32'),
        # 1: main: after munmap 16K in folio #1
        R('after-munmap-16k', 'main',
          ('[r] 0K-72K rw-p Rss72 An72 AH0 Lk0 E1 hg<br>'
           '88K-2048K rw-p Rss1960 An1960 AH0 Lk0 E1 hg'),
          ('0-15: F0/16@0 x1 c1 TAXB<br>16-17: F1/16@0 x1 c1 TAXB<br>18-21: none<br>'
           '22-31: F1/16@6 x1 c1 TAXB<br>32-47: F2/16@0 x1 c1 TAXB<br>48-63: F3/16@0 x1 c1 TAXB'),
          '64K/nr_anon_partially_mapped+1 64K/split_deferred+1'),
        # 2: main: after DONTNEED 4K in folio #2
        R('after-dontneed-4k', 'main',
          ('[r] 0K-72K rw-p Rss72 An72 AH0 Lk0 E1 hg<br>'
           '88K-2048K rw-p Rss1956 An1956 AH0 Lk0 E1 hg'),
          ('0-15: F0/16@0 x1 c1 TAXB<br>16-17: F1/16@0 x1 c1 TAXB<br>18-21: none<br>'
           '22-31: F1/16@6 x1 c1 TAXB<br>32: F2/16@0 x1 c1 TAXB<br>33: none<br>'
           '34-47: F2/16@2 x1 c1 TAXB<br>48-63: F3/16@0 x1 c1 TAXB'),
          '64K/nr_anon_partially_mapped+1 64K/split_deferred+1'),
        # 3: main: after shrinker
        R('after-shrink', 'main',
          ('[r] 0K-72K rw-p Rss72 An72 AH0 Lk0 E1 hg<br>'
           '88K-2048K rw-p Rss1956 An1956 AH0 Lk0 E1 hg'),
          ('0-15: F0/16@0 x1 c1 TAXB<br>16-17: F1.split@0 x1 c1 AXDB<br>18-21: none<br>'
           '22-31: F1.split@6 x1 c1 AXDB<br>32: F2.split@0 x1 c1 AXDB<br>33: none<br>'
           '34-47: F2.split@2 x1 c1 AXDB<br>48-63: F3/16@0 x1 c1 TAXB'),
          '64K/nr_anon-2 64K/nr_anon_partially_mapped-2 64K/split+2'),
    ]),
    Case("S10_8", "gt-s10-8-64k-fork-cow", "r",
         end='64K/anon_fault_alloc+32',
         rows=[
        # 0: main: parent: faulted
        R(None, 'main',
          '[r] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          '0-15: F0/16@0 x1 c1 TAXB<br>16-31: F1/16@0 x1 c1 TAXB',
          '64K/anon_fault_alloc+32 64K/nr_anon+32'),
        # 1: child: child: after COW write
        R('after-child-cow', 'child',
          '[r] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 ShD2044 Pss1026 E1 hg',
          ('0: F0/16@0 x0 c2 TAB<br>1: 4K x1 c1 AXB<br>2-15: F0/16@2 x0 c2 TAB<br>'
           '16-31: F1/16@0 x0 c2 TAB'),
          '-', after=0),
        # 2: main: parent: while child alive
        R('after-child-cow', 'main',
          '[r] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 ShD2044 Pss1026 E1 hg',
          ('0: F0/16@0 x0 c2 TAB<br>1: F0/16@1 x1 c1 TAB<br>2-15: F0/16@2 x0 c2 TAB<br>'
           '16-31: F1/16@0 x0 c2 TAB'),
          '-'),
        # 3: main: parent: after child exit
        R('after-child-exit', 'main',
          '[r] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          '0-15: F0/16@0 x1 c1 TAB<br>16-31: F1/16@0 x1 c1 TAB',
          '-'),
    ]),
    Case("S10_15", "gt-s10-15-64k-madvise-free", "r",
         end='64K/anon_fault_alloc+32 64K/split+1 64K/split_deferred+1 pglazyfree+20',
         rows=[
        # 0: main: faulted
        R(None, 'main',
          '[r] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          '0-15: F0/16@0 x1 c1 TAXB<br>16-31: F1/16@0 x1 c1 TAXB',
          '64K/anon_fault_alloc+32 64K/nr_anon+32'),
        # 1: main: after MADV_FREE 16K in folio #0
        R('after-free-part', 'main',
          '[r] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          ('0-3: F0.split@0 x1 c1 AXDB<br>4-7: F0.split@4 x1 c1 AXB<br>'
           '8-15: F0.split@8 x1 c1 AXDB<br>16-31: F1/16@0 x1 c1 TAXB'),
          '64K/nr_anon-1 64K/split+1 64K/split_deferred+1', batch=True),
        # 2: main: after MADV_FREE whole folio #1
        R('after-free-whole-folio', 'main',
          '[r] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 Lz80 E1 hg',
          ('0-3: F0.split@0 x1 c1 AXDB<br>4-7: F0.split@4 x1 c1 AX<br>'
           '8-15: F0.split@8 x1 c1 AXDB<br>16-31: F1/16@0 x1 c1 TAX'),
          'pglazyfree+20'),
    ]),
    Case("S11a", "gt-s11a-collapse-512-small-pages", "r",
         end='thp_collapse_alloc+1',
         rows=[
        # 0: main: 512 x 4K (NOHUGEPAGE)
        R('small-pages', 'main',
          '[r] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E0 nh',
          '0-511: 4K x1 c1 AXB',
          '-'),
        # 1: main: after MADV_COLLAPSE
        R('after-collapse', 'main',
          '[r] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '2M/nr_anon+1 nr_anon_thp+1 thp_collapse_alloc+1'),
        # 2: main: content verified
        R(None, 'main',
          '[r] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '-'),
    ]),
    Case("S11b", "gt-s11b-collapse-one-page-no-hugepage-flag", "r",
         end='thp_collapse_alloc+1',
         rows=[
        # 0: main: 1 x 4K present, no MADV_HUGEPAGE
        R('one-page', 'main',
          '[r] 0K-2048K rw-p Rss4 An4 AH0 Lk0 E0',
          '0: 4K x1 c1 AXB<br>1-511: none',
          '-'),
        # 1: main: after MADV_COLLAPSE
        R('after-collapse', 'main',
          '[r] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E0',
          '0-511: F0/512@0 x1 c1 TAXB',
          '2M/nr_anon+1 nr_anon_thp+1 thp_collapse_alloc+1'),
    ]),
    Case("S11c", "gt-s11c-collapse-nohugepage-einval", "r",
         errnos={3: 'EINVAL'},
         end='',
         rows=[
        # 0: main: after MADV_COLLAPSE on NOHUGEPAGE vma
        R('after-collapse-einval', 'main',
          '[r] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E0 nh',
          '0-511: 4K x1 c1 AXB',
          '-'),
    ]),
    Case("S11d", "gt-s11d-collapse-split-thp-with-hole", "r",
         end=('2M/anon_fault_alloc+1 2M/split+1 2M/split_deferred+1 thp_collapse_alloc+1 '
              'thp_deferred_split_page+1 thp_fault_alloc+1 thp_split_page+1 thp_split_pmd+1'),
         rows=[
        # 0: main: THP split (DONTNEED 4K + shrinker)
        R('split-with-hole', 'main',
          '[r] 0K-2048K rw-p Rss2044 An2044 AH0 Lk0 E1 hg',
          '0-255: 4K x1 c1 AXDB<br>256: none<br>257-511: 4K x1 c1 AXDB',
          ('2M/anon_fault_alloc+1 2M/split+1 2M/split_deferred+1 thp_deferred_split_page+1 '
           'thp_fault_alloc+1 thp_split_page+1 thp_split_pmd+1')),
        # 1: main: after MADV_COLLAPSE
        R('after-collapse', 'main',
          '[r] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '2M/nr_anon+1 nr_anon_thp+1 thp_collapse_alloc+1'),
    ]),
    Case("S11e", "gt-s11e-collapse-pte-mapped-thp", "r",
         end='2M/anon_fault_alloc+1 thp_collapse_alloc+1 thp_fault_alloc+1 thp_split_pmd+1',
         rows=[
        # 0: main: PTE-mapped intact THP
        R('pte-mapped', 'main',
          '[r] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXDB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 thp_fault_alloc+1 thp_split_pmd+1'),
        # 1: main: after MADV_COLLAPSE
        R('after-collapse', 'main',
          '[r] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F1/512@0 x1 c1 TAXB',
          'nr_anon_thp+1 thp_collapse_alloc+1'),
    ]),
    Case("S12a", "gt-s12a-pageout-swapfile", "thp",
         end=('2M/anon_fault_alloc+1 2M/split+1 2M/swpout_fallback+1 pswpout+512 '
              'thp_fault_alloc+1 thp_split_page+1 thp_split_pmd+1 thp_swpout_fallback+1'),
         rows=[
        # 0: main: faulted
        R(None, 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1'),
        # 1: main: after MADV_PAGEOUT
        R('after-pageout', 'main',
          '[thp] 0K-2048K rw-p Rss0 An0 AH0 Lk0 Sw2048 E1 hg',
          '0-511: swap',
          ('2M/nr_anon-1 2M/split+1 2M/swpout_fallback+1 nr_anon_thp-1 pswpout+512 '
           'thp_split_page+1 thp_split_pmd+1 thp_swpout_fallback+1 ; VmSwap=2048')),
        # 2: main: 200ms later
        R(None, 'main',
          '[thp] 0K-2048K rw-p Rss0 An0 AH0 Lk0 Sw2048 E1 hg',
          '0-511: swap',
          '; VmSwap=2048'),
        # 3: main: after touching @1M
        R('after-touch-one', 'main',
          '[thp] 0K-2048K rw-p Rss4 An4 AH0 Lk0 Sw2044 E1 hg',
          '0-255: swap<br>256: F0.split@256 x1 c1 AXBC<br>257-511: swap',
          '; VmSwap=2044'),
        # 4: main: after touching all
        R('after-touch-all', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          '0-511: F0.split@0 x1 c1 AXBC',
          '-'),
    ]),
    Case("S12b", "gt-s12b-pageout-half-swapfile", "thp",
         end=('2M/anon_fault_alloc+1 2M/split+1 pswpout+256 thp_fault_alloc+1 thp_split_page+1 '
              'thp_split_pmd+1'),
         rows=[
        # 0: main: faulted
        R(None, 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1'),
        # 1: main: after MADV_PAGEOUT half
        R('after-pageout-half', 'main',
          '[thp] 0K-2048K rw-p Rss1024 An1024 AH0 Lk0 Sw1024 E1 hg',
          '0-255: swap<br>256-511: F0.split@256 x1 c1 AXDB',
          ('2M/nr_anon-1 2M/split+1 nr_anon_thp-1 pswpout+256 thp_split_page+1 thp_split_pmd+1 '
           '; VmSwap=1024')),
    ]),
    Case("S12c", "gt-s12c-pageout-cold-mlocked-einval", "thp",
         errnos={4: 'EINVAL', 5: 'EINVAL'},
         end='2M/anon_fault_alloc+1 thp_fault_alloc+1',
         rows=[
        # 0: main: faulted+mlocked
        R(None, 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk2048 E1 lo,hg',
          '0-511: F0/512@0 x1 c1 TAMUXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1 ; VmLck=2048'),
        # 1: main: after MADV_PAGEOUT on mlocked
        R(None, 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk2048 E1 lo,hg',
          '0-511: F0/512@0 x1 c1 TAMUXB',
          '; VmLck=2048'),
        # 2: main: after MADV_COLD on mlocked
        R('after-pageout-cold-einval', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk2048 E1 lo,hg',
          '0-511: F0/512@0 x1 c1 TAMUXB',
          '; VmLck=2048'),
    ]),
    Case("S12d", "gt-s12d-pageout-no-swap", "thp",
         end=('2M/anon_fault_alloc+1 2M/split+1 2M/swpout_fallback+1 thp_fault_alloc+1 '
              'thp_split_page+1 thp_split_pmd+1 thp_swpout_fallback+1'),
         rows=[
        # 0: main: faulted
        R(None, 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1'),
        # 1: main: after MADV_PAGEOUT
        R('after-pageout', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          '0-511: F0.split@0 x1 c1 AXDB',
          ('2M/nr_anon-1 2M/split+1 2M/swpout_fallback+1 nr_anon_thp-1 thp_split_page+1 '
           'thp_split_pmd+1 thp_swpout_fallback+1')),
        # 2: main: 200ms later
        R(None, 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          '0-511: F0.split@0 x1 c1 AXDB',
          '-'),
        # 3: main: after touching @1M
        R(None, 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          '0-511: F0.split@0 x1 c1 AXDB',
          '-'),
        # 4: main: after touching all
        R('after-touch-all', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          '0-511: F0.split@0 x1 c1 AXDB',
          '-'),
    ]),
    Case("S12e", "gt-s12e-pageout-64k-swapfile", "r",
         end=('64K/anon_fault_alloc+32 64K/split+4 64K/split_deferred+4 64K/swpout_fallback+4 '
              'pswpout+64'),
         rows=[
        # 0: main: faulted
        R(None, 'main',
          '[r] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          ('0-15: F0/16@0 x1 c1 TAXB<br>16-31: F1/16@0 x1 c1 TAXB<br>'
           '32-47: F2/16@0 x1 c1 TAXB<br>48-63: F3/16@0 x1 c1 TAXB'),
          '64K/anon_fault_alloc+32 64K/nr_anon+32'),
        # 1: main: after MADV_PAGEOUT
        R('after-pageout', 'main',
          '[r] 0K-2048K rw-p Rss1792 An1792 AH0 Lk0 Sw256 E1 hg',
          '0-63: swap',
          ('64K/nr_anon-4 64K/split+4 64K/split_deferred+4 64K/swpout_fallback+4 pswpout+64 ; '
           'VmSwap=256')),
        # 2: main: after touching @64K
        R('after-touch', 'main',
          '[r] 0K-2048K rw-p Rss1796 An1796 AH0 Lk0 Sw252 E1 hg',
          '0-15: swap<br>16: F1.split@0 x1 c1 AXBC<br>17-63: swap',
          '; VmSwap=252'),
    ]),
    Case("S12f", "gt-s12f-pageout-pte-mapped-no-swap", "thp",
         end=('2M/anon_fault_alloc+1 2M/split+1 2M/split_deferred+1 2M/swpout_fallback+1 '
              'thp_deferred_split_page+1 thp_fault_alloc+1 thp_split_page+1 thp_split_pmd+1 '
              'thp_swpout_fallback+1'),
         rows=[
        # 0: main: PTE-mapped intact THP
        R('pte-mapped', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXDB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 thp_fault_alloc+1 thp_split_pmd+1'),
        # 1: main: after MADV_PAGEOUT
        R('after-pageout', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          '0-511: F0.split@0 x1 c1 AXDB',
          ('2M/nr_anon-1 2M/split+1 2M/split_deferred+1 2M/swpout_fallback+1 '
           'thp_deferred_split_page+1 thp_split_page+1 thp_swpout_fallback+1')),
    ]),
    Case("S13a", "gt-s13a-mlock-onfault-whole", "thp",
         end='2M/anon_fault_alloc+1 thp_fault_alloc+1',
         rows=[
        # 0: main: after mlock2 ONFAULT (nothing touched)
        R('after-mlock-onfault', 'main',
          '[thp] 0K-2048K rw-p Rss0 An0 AH0 Lk0 E1 lo,lf,hg',
          '0-511: none',
          '; VmLck=2048'),
        # 1: main: after write 1 byte
        R('after-write', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk2048 E1 lo,lf,hg',
          '0-511: F0/512@0 x1 c1 TAMUXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1 ; VmLck=2048'),
    ]),
    Case("S13b", "gt-s13b-mlock-onfault-first-half", "thp",
         end='',
         rows=[
        # 0: main: after mlock2 ONFAULT first 1M
        R('after-mlock-onfault-half', 'main',
          ('[thp] 0K-1024K rw-p Rss0 An0 AH0 Lk0 E0 lo,lf,hg<br>'
           '1024K-2048K rw-p Rss0 An0 AH0 Lk0 E0 hg'),
          '0-511: none',
          '; VmLck=1024'),
        # 1: main: after writes @0 and @1M
        R('after-writes', 'main',
          ('[thp] 0K-1024K rw-p Rss4 An4 AH0 Lk4 E0 lo,lf,hg<br>'
           '1024K-2048K rw-p Rss4 An4 AH0 Lk0 E0 hg'),
          '0: 4K x1 c1 AMXB<br>1-255: none<br>256: 4K x1 c1 AXB<br>257-511: none',
          '; VmLck=1024'),
    ]),
    Case("S13c", "gt-s13c-mlock-populates-thp", "thp",
         end='2M/anon_fault_alloc+1 thp_fault_alloc+1',
         rows=[
        # 0: main: after mlock populate
        R('after-mlock', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk2048 E1 lo,hg',
          '0-511: F0/512@0 x1 c1 TAMUXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1 ; VmLck=2048'),
    ]),
    Case("S14a", "gt-s14a-mlockall-future-then-mmap", "thp",
         end='',
         rows=[
        # 0: main: after mmap(+MADV_HUGEPAGE) under MCL_FUTURE
        R('after-mmap-locked', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH0 Lk2048 E1 lo,hg',
          '0-511: 4K x1 c1 AMUXB',
          '; VmLck=12792', status='VmLck=2048'),
        # 1: main: after writes
        R('after-writes', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH0 Lk2048 E1 lo,hg',
          '0-511: 4K x1 c1 AMUXB',
          '; VmLck=12792', status='VmLck=2048'),
    ]),
    Case("S14b", "gt-s14b-mlockall-future-prot-none-mprotect", "thp",
         end='2M/anon_fault_alloc+1 thp_fault_alloc+1',
         rows=[
        # 0: main: PROT_NONE + MADV_HUGEPAGE under MCL_FUTURE
        R('prot-none-locked', 'main',
          '-',
          '0-511: none',
          '; VmLck=12792', status='VmLck=2048', check_vmas=False),
        # 1: main: after mprotect RW
        R('after-mprotect-rw', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk2048 E1 lo,hg',
          '0-511: F0/512@0 x1 c1 TAMUXB',
          ('2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 '
           'thp_fault_alloc+1 ; VmLck=12792'), status='VmLck=2048'),
    ]),
    Case("S14c", "gt-s14c-mlockall-onfault", "thp",
         end='2M/anon_fault_alloc+1 thp_fault_alloc+1',
         rows=[
        # 0: main: after mmap under MCL_ONFAULT
        R('after-mmap-onfault', 'main',
          '[thp] 0K-2048K rw-p Rss0 An0 AH0 Lk0 E1 lo,lf,hg',
          '0-511: none',
          '; VmLck=12792', status='VmLck=2048'),
        # 1: main: after write 1 byte
        R('after-write', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk2048 E1 lo,lf,hg',
          '0-511: F0/512@0 x1 c1 TAMUXB',
          ('2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 '
           'thp_fault_alloc+1 ; VmLck=12792'), status='VmLck=2048'),
    ]),
    Case("S14e", "gt-s14e-mlockall-current-munlockall", "thp",
         end='2M/anon_fault_alloc+1 thp_fault_alloc+1',
         rows=[
        # 0: main: faulted
        R(None, 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1'),
        # 1: main: after mlockall(CURRENT)
        R('after-mlockall', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk2048 E1 lo,hg',
          '0-511: F0/512@0 x1 c1 TAMUXB',
          '; VmLck=12792', status='VmLck=2048'),
        # 2: main: after munlockall
        R('after-munlockall', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '-'),
    ]),
    Case("S15a", "gt-s15a-free-64k-of-thp", "thp",
         end=('2M/anon_fault_alloc+1 2M/split+1 pglazyfree+16 pglazyfreed+16 thp_fault_alloc+1 '
              'thp_split_page+1 thp_split_pmd+1'),
         rows=[
        # 0: main: faulted
        R(None, 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1'),
        # 1: main: after MADV_FREE 64K
        R('after-free-64k', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          ('0-255: F0.split@0 x1 c1 AXDB<br>256-271: F0.split@256 x1 c1 AXB<br>'
           '272-511: F0.split@272 x1 c1 AXDB'),
          '2M/nr_anon-1 2M/split+1 nr_anon_thp-1 thp_split_page+1 thp_split_pmd+1', batch=True),
        # 2: main: after MADV_PAGEOUT (lazyfree reclaim)
        R('after-pageout', 'main',
          '[thp] 0K-2048K rw-p Rss1984 An1984 AH0 Lk0 E1 hg',
          '0-255: F0.split@0 x1 c1 AXDB<br>256-271: none<br>272-511: F0.split@272 x1 c1 AXDB',
          'pglazyfree+16 pglazyfreed+16'),
        # 3: main: after reading all pages
        R('after-read-all', 'main',
          '[thp] 0K-2048K rw-p Rss1984 An1984 AH0 Lk0 E1 hg',
          ('0-255: F0.split@0 x1 c1 AXDB<br>256-271: zero x0 c0 ZR<br>'
           '272-511: F0.split@272 x1 c1 AXDB'),
          '-'),
    ]),
    Case("S15b", "gt-s15b-free-whole-thp", "thp",
         end=('2M/anon_fault_alloc+1 pglazyfree+512 pglazyfreed+512 thp_fault_alloc+1 '
              'thp_split_pmd+1'),
         rows=[
        # 0: main: faulted
        R(None, 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1'),
        # 1: main: after MADV_FREE whole
        R('after-free-whole', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 Lz2048 E1 hg',
          '0-511: F0/512@0 x1 c1 TAX',
          'pglazyfree+512'),
        # 2: main: after MADV_PAGEOUT (lazyfree reclaim)
        R('after-pageout', 'main',
          '[thp] 0K-2048K rw-p Rss0 An0 AH0 Lk0 E1 hg',
          '0-511: none',
          '2M/nr_anon-1 nr_anon_thp-1 pglazyfreed+512 thp_split_pmd+1'),
        # 3: main: after reading all pages
        R('after-read-all', 'main',
          '[thp] 0K-2048K rw-p Rss0 An0 AH0 Lk0 E1 hg',
          '0-511: zero x0 c0 ZR',
          '-'),
    ]),
    Case("S15c", "gt-s15c-free-whole-then-redirty", "thp",
         end='2M/anon_fault_alloc+1 pglazyfree+512 thp_fault_alloc+1 thp_split_pmd+1',
         rows=[
        # 0: main: after MADV_FREE whole + write
        R('after-free-and-write', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAX',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 pglazyfree+512 thp_fault_alloc+1'),
        # 1: main: after MADV_PAGEOUT
        R('after-pageout', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXDB',
          'nr_anon_thp-1 thp_split_pmd+1'),
        # 2: main: after reading all pages
        R('after-read-all', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXDB',
          '-'),
    ]),
    Case("S16a", "gt-s16a-underused-split", "thp",
         end=('2M/anon_fault_alloc+1 2M/split+1 thp_fault_alloc+1 thp_split_page+1 '
              'thp_split_pmd+1 thp_underused_split_page+1'),
         rows=[
        # 0: main: faulted, 2 non-zero pages
        R('two-nonzero-pages', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1'),
        # 1: main: after shrinker
        R('after-shrink', 'main',
          '[thp] 0K-2048K rw-p Rss8 An8 AH0 Lk0 E1 hg',
          '0-1: F0.split@0 x1 c1 AXDB<br>2-511: zero x0 c0 ZR',
          ('2M/nr_anon-1 2M/split+1 nr_anon_thp-1 thp_split_page+1 thp_split_pmd+1 '
           'thp_underused_split_page+1')),
        # 2: main: after write @1M
        R('after-write-zero-page', 'main',
          '[thp] 0K-2048K rw-p Rss12 An12 AH0 Lk0 E1 hg',
          ('0-1: F0.split@0 x1 c1 AXDB<br>2-255: zero x0 c0 ZR<br>256: 4K x1 c1 AXB<br>'
           '257-511: zero x0 c0 ZR'),
          '-', edited=True),
    ]),
    Case("S16a_ctl", "gt-s16a-ctl-underused-default-off", "thp",
         end='2M/anon_fault_alloc+1 thp_fault_alloc+1',
         rows=[
        # 0: main: faulted, 2 non-zero pages
        R('two-nonzero-pages', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1'),
        # 1: main: after shrinker
        R('after-shrink', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '-'),
        # 2: main: after write @1M
        R('after-write', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '-'),
    ]),
    Case("S16b", "gt-s16b-underused-all-nonzero", "thp",
         end='2M/anon_fault_alloc+1 thp_fault_alloc+1',
         rows=[
        # 0: main: faulted, all non-zero
        R(None, 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1'),
        # 1: main: after shrinker
        R('after-shrink', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB',
          '-'),
    ]),
    Case("S17", "gt-s17-mprotect-munmap-aligned-thp", "r",
         end='2M/anon_fault_alloc+2 thp_fault_alloc+2',
         rows=[
        # 0: main: faulted 2 THPs
        R(None, 'main',
          '[r] 0K-4096K rw-p Rss4096 An4096 AH4096 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB<br>512-1023: F1/512@0 x1 c1 TAXB',
          '2M/anon_fault_alloc+2 2M/nr_anon+2 nr_anon_thp+2 thp_fault_alloc+2'),
        # 1: main: after mprotect exactly one THP
        R('after-mprotect-one-thp', 'main',
          ('[r] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg<br>'
           '2048K-4096K r--p Rss2048 An2048 AH2048 Lk0 E1 hg'),
          '0-511: F0/512@0 x1 c1 TAXB<br>512-1023: F1/512@0 x1 c1 TAXB',
          '-'),
        # 2: main: after munmap exactly one THP
        R('after-munmap-one-thp', 'main',
          '[r] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXB<br>512-1023: none',
          '2M/nr_anon-1 nr_anon_thp-1'),
    ]),
    Case("S18", "gt-s18-nohugepage-then-cold-half", "thp",
         end=('2M/anon_fault_alloc+1 2M/split+1 thp_fault_alloc+1 thp_split_page+1 '
              'thp_split_pmd+1'),
         rows=[
        # 0: main: after MADV_NOHUGEPAGE
        R('after-nohugepage', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E0 nh',
          '0-511: F0/512@0 x1 c1 TAXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1'),
        # 1: main: after MADV_COLD partial
        R('after-cold-half', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E0 nh',
          '0-511: F0.split@0 x1 c1 AXDB',
          '2M/nr_anon-1 2M/split+1 nr_anon_thp-1 thp_split_page+1 thp_split_pmd+1'),
    ]),
    Case("S19", "gt-s19-mlocked-thp-dontneed-partial-munmap", "thp",
         errnos={4: 'EINVAL'},
         end=('2M/anon_fault_alloc+1 2M/split+1 2M/split_deferred+1 thp_deferred_split_page+1 '
              'thp_fault_alloc+1 thp_split_page+1 thp_split_pmd+1'),
         rows=[
        # 0: main: faulted+mlocked
        R(None, 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk2048 E1 lo,hg',
          '0-511: F0/512@0 x1 c1 TAMUXB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1 ; VmLck=2048'),
        # 1: main: after MADV_DONTNEED on VM_LOCKED
        R('after-dontneed-einval', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk2048 E1 lo,hg',
          '0-511: F0/512@0 x1 c1 TAMUXB',
          '; VmLck=2048'),
        # 2: main: after partial munmap
        R('after-partial-munmap', 'main',
          ('[thp] 0K-768K rw-p Rss768 An768 AH0 Lk768 E0 lo,hg<br>'
           '1280K-2048K rw-p Rss768 An768 AH0 Lk768 E0 lo,hg'),
          '0-191: F0/512@0 x1 c1 TAXDB<br>192-319: none<br>320-511: F0/512@320 x1 c1 TAXDB',
          ('2M/nr_anon_partially_mapped+1 2M/split_deferred+1 nr_anon_thp-1 '
           'thp_deferred_split_page+1 thp_split_pmd+1 ; VmLck=1536')),
        # 3: main: after shrinker
        R('after-shrink', 'main',
          ('[thp] 0K-768K rw-p Rss768 An768 AH0 Lk768 E0 lo,hg<br>'
           '1280K-2048K rw-p Rss768 An768 AH0 Lk768 E0 lo,hg'),
          '0-191: F0.split@0 x1 c1 AMUXDB<br>192-319: none<br>320-511: F0.split@320 x1 c1 AMUXDB',
          '2M/nr_anon-1 2M/nr_anon_partially_mapped-1 2M/split+1 thp_split_page+1 ; VmLck=1536'),
    ]),
    Case("S20", "gt-s20-child-munmap-half-shared-thp", "thp",
         end='2M/anon_fault_alloc+1 thp_fault_alloc+1 thp_split_pmd+1',
         rows=[
        # 0: child: child: after munmap first half
        R(None, 'child',
          '[thp] 1024K-2048K rw-p Rss1024 An1024 AH0 Lk0 ShD1024 Pss512 E0 hg',
          '0-255: none<br>256-511: F0/512@256 x0 c2 TADB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1 thp_split_pmd+1'),
        # 1: child: child: after shrinker
        R('after-child-munmap-and-shrink', 'child',
          '[thp] 1024K-2048K rw-p Rss1024 An1024 AH0 Lk0 ShD1024 Pss512 E0 hg',
          '0-255: none<br>256-511: F0/512@256 x0 c2 TADB',
          '-'),
        # 2: main: parent: while child alive
        R('after-child-munmap-and-shrink', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 ShD1024 Pss1536 E1 hg',
          '0-255: F0/512@0 x1 c1 TADB<br>256-511: F0/512@256 x1 c2 TADB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 nr_anon_thp+1 thp_fault_alloc+1 thp_split_pmd+1'),
        # 3: main: parent: after child exit
        R('after-child-exit', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH2048 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TADB',
          '-'),
    ]),
    Case("S21", "gt-s21-pte-mapped-thp-reuse-after-fork", "thp",
         end='2M/anon_fault_alloc+1 thp_fault_alloc+1 thp_split_pmd+1',
         rows=[
        # 0: main: PTE-mapped intact THP
        R('pte-mapped', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXDB',
          '2M/anon_fault_alloc+1 2M/nr_anon+1 thp_fault_alloc+1 thp_split_pmd+1'),
        # 1: main: after fork + child exit
        R('after-fork-and-child-exit', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TADB',
          '-'),
        # 2: main: after parent write @20K
        R('after-write-page-5', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TADB',
          '-'),
        # 3: main: after parent write @0
        R('after-write-page-0', 'main',
          '[thp] 0K-2048K rw-p Rss2048 An2048 AH0 Lk0 E1 hg',
          '0-511: F0/512@0 x1 c1 TAXDB',
          '-'),
    ]),
]}


def _params() -> list[Any]:
    params = []
    for case in CASES.values():
        checks: list[tuple[Any, str]] = []
        for i, row in enumerate(case.rows):
            if row.label is not None:
                checks += [(i, a) for a in ASPECTS if a != "vmas" or row.check_vmas]
        checks += [(None, "end"), (None, "steps")]
        for i, aspect in checks:
            pid = f"{case.gt}-{'row' + str(i) if i is not None else 'exit'}-{aspect}"
            if aspect == "steps":
                pid = f"{case.gt}-steps"
            marks = ([pytest.mark.xfail(strict=True, reason=KNOWN_MODEL_BUGS[pid])]
                     if pid in KNOWN_MODEL_BUGS else [])
            params.append(pytest.param(case.gt, i, aspect, id=pid, marks=marks))
    return params


@pytest.mark.parametrize(("gt", "row", "aspect"), _params())
def test_simulator_matches_ground_truth(gt: str, row: int | None, aspect: str) -> None:
    """One aspect of one ground-truth row (or the exit deltas, or the step results)."""
    problems = results(gt)[row, aspect]
    assert not problems, "\n".join(problems)


def test_legend_reader_parses_counter_cells() -> None:
    """The legend reader itself: size prefixes, the nr_anon_thp name, the status part, and the
    loosely compared counters."""
    deltas, status = parse_counters("2M/nr_anon+1 nr_anon_thp-1 thp_split_pmd+1 ; VmLck=1024")
    assert deltas == {"2048kB/nr_anon": 1, "nr_anon_transparent_hugepages": -1,
                      "thp_split_pmd": 1}
    assert status == {"vm_lck_kb": 1024, "vm_pin_kb": 0, "vm_swap_kb": 0}
    assert parse_counters("-") == ({}, None)
    assert parse_counters("64K/split+4 pswpout+64")[0] == {"64kB/split": 4, "pswpout": 64}
    assert comparable({"thp_split_page_failed": 3, "thp_zero_page_alloc": 1, "x": 0}) == {
        "thp_split_page_failed": True}
