"""Comparison of two observation documents field by field (spec section 3).

Two runs of one scenario agree when :func:`compare` returns no :class:`Difference`. Physical
identity is canonicalised first (:func:`canonical_pages`), timings and absolute PFNs are never
looked at, and the fields that depend on per-CPU batching or on history are left out or
reduced as the spec says.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from foliosim.observation import FORMAT, VMA_FIELDS, expand_runs
from foliosim.scenario import ScenarioError

__all__ = [
    "MISSING", "CanonPage", "Difference", "canonical_pages", "canonical_runs", "compare",
    "compare_flags",
    "describe_folios", "flatten_counters", "load_observations", "page_range",
]

MISSING = "missing"
"""The value shown for an observation, process, region, VMA, step or page one side lacks."""

# Flags that per-CPU folio batches set or clear at times the scenario does not control.
_VOLATILE_FLAGS = frozenset({"lru", "active"})
# On order-0 folios these also depend on batching (mlock and LRU-add batches).
_VOLATILE_ORDER0_FLAGS = frozenset({"unevictable", "swapbacked"})
# History dependent: the huge zero page is allocated again only after its shrinker freed it.
_IGNORED_COUNTERS = frozenset({"thp_zero_page_alloc"})
# The shrinker's number of passes over a pinned folio varies: only zero vs non-zero counts.
_ZERO_OR_NOT_COUNTERS = frozenset({"thp_split_page_failed", "split_failed"})


class Difference(NamedTuple):
    """One field on which two observation documents disagree.

    :param observation: label of the observation (of the one the step leads to, for steps)
    :param process: process name, or ``""`` for counters and whole observations
    :param region: region name, or ``""`` outside regions
    :param where: ``"pages 12-15"``, ``"page 7"``, ``"vma 0-1048576"``, ``"step 3"``,
        ``"status"``, ``"counters"``, ``"process"``, ``"region"`` or ``"observation 2"``
    :param field: the field at fault
    :param a: its value in the first document
    :param b: its value in the second document
    """

    observation: str
    process: str
    region: str
    where: str
    field: str
    a: Any
    b: Any


class CanonPage(NamedTuple):
    """A page with its physical identity replaced by a folio name (spec section 3, item 3).

    ``folio`` is ``F0``, ``F1``, ... in order of first appearance within the observation,
    ``zero`` for the shared zero page, ``hugezero`` for the huge zero folio, and ``None`` for a
    page that is not present; ``offset`` is ``pfn - folio_pfn``.
    """

    state: str
    folio: str | None = None
    offset: int = 0
    order: int = 0
    exclusive: bool = False
    mapcount: int = 0
    flags: tuple[str, ...] = ()
    value: int = 0

    @property
    def folio_id(self) -> tuple[str | None, int, int]:
        """The folio structure compared between targets: (name, offset in folio, order)."""
        return self.folio, self.offset, self.order


def canonical_pages(observation: dict[str, Any]) -> dict[tuple[str, str], dict[int, CanonPage]]:
    """Every page of one observation with canonical folio names, keyed by (process, region).

    Folios are named walking processes by name, regions by name, pages by index; the zero
    page and the huge zero folio are recognised by the ``zero`` kpageflag and keep their own
    names, so they never take an ``F`` number.
    """
    names: dict[int, str] = {}
    out: dict[tuple[str, str], dict[int, CanonPage]] = {}
    processes = observation.get("processes") or {}
    for pname in sorted(processes):
        regions = processes[pname].get("regions") or {}
        for rname in sorted(regions):
            pages: dict[int, CanonPage] = {}
            for index, p in sorted(expand_runs(regions[rname].get("pages") or []),
                                   key=lambda ip: ip[0]):
                if p.state != "present":
                    pages[index] = CanonPage(p.state)
                    continue
                if "zero" in p.flags:
                    name = "zero" if p.folio_order == 0 else "hugezero"
                else:
                    name = names.setdefault(p.folio_pfn, f"F{len(names)}")
                pages[index] = CanonPage("present", name, p.pfn - p.folio_pfn, p.folio_order,
                                         p.exclusive, p.mapcount, tuple(sorted(p.flags)),
                                         p.value)
            out[pname, rname] = pages
    return out


def compare_flags(page: CanonPage) -> tuple[str, ...]:
    """The flags of a page that are compared: less ``lru`` and ``active``, and less
    ``unevictable`` and ``swapbacked`` on order-0 folios (per-CPU batching makes those timing
    dependent)."""
    drop = _VOLATILE_FLAGS | _VOLATILE_ORDER0_FLAGS if page.order == 0 else _VOLATILE_FLAGS
    return tuple(f for f in page.flags if f not in drop)


def flatten_counters(counters: dict[str, Any], prefix: str = "") -> dict[str, int]:
    """``{"vmstat/thp_fault_alloc": 1, "mthp/2048kB/nr_anon": 1, ...}`` from nested counters."""
    flat: dict[str, int] = {}
    for key, value in counters.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_counters(value, path + "/"))
        else:
            flat[path] = value
    return flat


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[Difference]:
    """All differences between two observation documents of one scenario (spec section 3).

    Observations are matched by position and must carry the same label; when they do not, only
    the label is reported for that position. Consecutive pages with the same difference in one
    field are reported once, as a page range.
    """
    out: list[Difference] = []
    obs_a, obs_b = a.get("observations") or [], b.get("observations") or []
    step_diffs = _step_differences(a.get("steps") or [], b.get("steps") or [])
    # Each step's differences are reported with the observation it leads to.
    bounds = [o.get("step", 0) for o in obs_a]
    for i in range(max(len(obs_a), len(obs_b))):
        oa = obs_a[i] if i < len(obs_a) else None
        ob = obs_b[i] if i < len(obs_b) else None
        label = (oa or ob or {}).get("label", "")
        if i < len(bounds):
            last = bounds[i]
            out.extend(d._replace(observation=label) for idx, d in step_diffs if idx <= last)
            step_diffs = [(idx, d) for idx, d in step_diffs if idx > last]
        la = oa.get("label", "") if oa is not None else MISSING
        lb = ob.get("label", "") if ob is not None else MISSING
        if la != lb:
            out.append(Difference(label, "", "", f"observation {i}", "label", la, lb))
            continue
        out.extend(_observation_differences(label, oa, ob))
    out.extend(d for _, d in step_diffs)
    return out


def _step_differences(sa: list[dict[str, Any]],
                      sb: list[dict[str, Any]]) -> list[tuple[int, Difference]]:
    """(step index, difference) for each step whose result or errno differ, or that one side
    lacks. The observation label is filled in by the caller."""
    out: list[tuple[int, Difference]] = []
    for i in range(max(len(sa), len(sb))):
        x = sa[i] if i < len(sa) else None
        y = sb[i] if i < len(sb) else None
        proc = (x or y or {}).get("proc", "")
        if x is None or y is None:
            out.append((i, Difference("", proc, "", f"step {i}", "step",
                                      "present" if x else MISSING, "present" if y else MISSING)))
            continue
        for field in ("result", "errno"):
            if x.get(field) != y.get(field):
                out.append((i, Difference("", proc, "", f"step {i}", field,
                                          x.get(field), y.get(field))))
    return out


def _observation_differences(label: str, oa: dict[str, Any],
                             ob: dict[str, Any]) -> Iterator[Difference]:
    pa, pb = oa.get("processes") or {}, ob.get("processes") or {}
    canon_a, canon_b = canonical_pages(oa), canonical_pages(ob)
    for pname in sorted(pa.keys() | pb.keys()):
        if pname not in pa or pname not in pb:
            yield Difference(label, pname, "", "process", "process",
                             "present" if pname in pa else MISSING,
                             "present" if pname in pb else MISSING)
            continue
        sta, stb = pa[pname].get("status") or {}, pb[pname].get("status") or {}
        for key in sorted(sta.keys() | stb.keys()):
            if sta.get(key) != stb.get(key):
                yield Difference(label, pname, "", "status", key,
                                 sta.get(key, MISSING), stb.get(key, MISSING))
        ra, rb = pa[pname].get("regions") or {}, pb[pname].get("regions") or {}
        for rname in sorted(ra.keys() | rb.keys()):
            if rname not in ra or rname not in rb:
                yield Difference(label, pname, rname, "region", "region",
                                 "present" if rname in ra else MISSING,
                                 "present" if rname in rb else MISSING)
                continue
            for d in _vma_differences(ra[rname].get("vmas") or [], rb[rname].get("vmas") or []):
                yield Difference(label, pname, rname, *d)
            for d in _page_differences(canon_a[pname, rname], canon_b[pname, rname]):
                yield Difference(label, pname, rname, *d)
    ca = flatten_counters(oa.get("counters") or {})
    cb = flatten_counters(ob.get("counters") or {})
    for key in sorted(ca.keys() | cb.keys()):
        if not _counters_agree(key.rsplit("/", 1)[-1], ca.get(key, 0), cb.get(key, 0)):
            yield Difference(label, "", "", "counters", key, ca.get(key, 0), cb.get(key, 0))


def _counters_agree(name: str, x: int, y: int) -> bool:
    if name in _IGNORED_COUNTERS:
        return True
    if name in _ZERO_OR_NOT_COUNTERS:
        return (x == 0) == (y == 0)
    return x == y


def _vma_differences(va: list[dict[str, Any]],
                     vb: list[dict[str, Any]]) -> Iterator[tuple[str, str, Any, Any]]:
    """(where, field, a, b) for VMAs matched by start; a VMA only one side has is reported
    whole, so a split on one side reads as a changed ``end`` plus one missing VMA."""
    by_start_a = {v.get("start"): v for v in va}
    by_start_b = {v.get("start"): v for v in vb}
    for start in sorted(by_start_a.keys() | by_start_b.keys(), key=lambda s: (s is None, s)):
        x, y = by_start_a.get(start), by_start_b.get(start)
        where = f"vma {start}-{(x or y or {}).get('end')}"
        if x is None or y is None:
            yield where, "vma", "present" if x else MISSING, "present" if y else MISSING
            continue
        for field in VMA_FIELDS:
            if x.get(field) != y.get(field):
                yield where, field, x.get(field, MISSING), y.get(field, MISSING)


_PAGE_FIELDS = ("state", "folio", "exclusive", "mapcount", "flags", "value")


def _page_fields(p: CanonPage | None) -> dict[str, Any]:
    """The compared fields of one page; a page that is not present has only ``state``."""
    if p is None:
        return {"state": MISSING}
    if p.state != "present":
        return {"state": p.state}
    return {"state": p.state, "folio": p.folio_id, "exclusive": p.exclusive,
            "mapcount": p.mapcount, "flags": compare_flags(p), "value": p.value}


def _page_differences(pa: dict[int, CanonPage],
                      pb: dict[int, CanonPage]) -> Iterator[tuple[str, str, Any, Any]]:
    """(where, field, a, b) per group of consecutive pages with the same field difference."""
    groups: list[tuple[str, int, int, list[Any], list[Any]]] = []  # field, first, last, a, b
    open_: dict[str, int] = {}  # field -> position in groups of the group still growing
    for index in sorted(pa.keys() | pb.keys()):
        fa, fb = _page_fields(pa.get(index)), _page_fields(pb.get(index))
        for field in _PAGE_FIELDS:
            if field not in fa or field not in fb or fa[field] == fb[field]:
                open_.pop(field, None)
                continue
            g = open_.get(field)
            if g is not None and groups[g][2] == index - 1 and _continues(
                    field, groups[g][3][-1], fa[field], groups[g][4][-1], fb[field]):
                f, first, _, xs, ys = groups[g]
                xs.append(fa[field])
                ys.append(fb[field])
                groups[g] = (f, first, index, xs, ys)
            else:
                open_[field] = len(groups)
                groups.append((field, index, index, [fa[field]], [fb[field]]))
    for field, first, last, xs, ys in groups:
        if field == "folio":
            yield page_range(first, last), field, describe_folios(xs), describe_folios(ys)
        elif field == "flags":
            yield page_range(first, last), field, ",".join(xs[0]) or "-", ",".join(ys[0]) or "-"
        else:
            yield page_range(first, last), field, xs[0], ys[0]


def _continues(field: str, prev_a: Any, a: Any, prev_b: Any, b: Any) -> bool:
    """Whether a page's difference in ``field`` is the same as the previous page's."""
    if field != "folio":
        return (prev_a, prev_b) == (a, b)
    return _folio_continues(prev_a, a) and _folio_continues(prev_b, b)


def _folio_continues(prev: tuple[str | None, int, int], cur: tuple[str | None, int, int]) -> bool:
    """The next page of the same folio, or another small page after a small page."""
    if prev[2] == cur[2] == 0:
        return True
    return prev[0] == cur[0] and prev[2] == cur[2] and cur[1] == prev[1] + 1


def canonical_runs(pages: dict[int, CanonPage]) -> list[list[tuple[int, CanonPage]]]:
    """Consecutive pages that differ only in continuing their folio structure, one list each:
    the runs of spec section 2 with canonical names, small folios of a run kept together."""
    runs: list[list[tuple[int, CanonPage]]] = []
    for index in sorted(pages):
        p = pages[index]
        if runs:
            last_index, last = runs[-1][-1]
            if (last_index == index - 1 and last._replace(folio=None, offset=0)
                    == p._replace(folio=None, offset=0)
                    and (p.state != "present" or _folio_continues(last.folio_id, p.folio_id))):
                runs[-1].append((index, p))
                continue
        runs.append([(index, p)])
    return runs


def page_range(first: int, last: int) -> str:
    """``page 7`` or ``pages 12-15``."""
    return f"page {first}" if first == last else f"pages {first}-{last}"


def describe_folios(folios: list[tuple[str | None, int, int]], *, orders: bool = True) -> str:
    """A short text for the folio structure of consecutive pages, each (name, offset, order):
    ``F0[0-511] order 9``, ``F3..F6 order 0``, ``zero x512 order 0`` (without the order when
    ``orders`` is false)."""
    segments: list[list[Any]] = []  # [name, first offset, last offset, pages, order]
    for name, offset, order in folios:
        if segments and segments[-1][0] == name:
            segments[-1][2] = offset
            segments[-1][3] += 1
        else:
            segments.append([name, offset, offset, 1, order])
    seen = sorted({order for _, _, order in folios}, reverse=True)
    order_text = (" order " if len(seen) == 1 else " orders ") + ",".join(map(str, seen))
    if not orders:
        order_text = ""
    numbers = [int(s[0][1:]) if s[0][:1] == "F" and s[0][1:].isdigit() else -1 for s in segments]
    if (seen == [0] and len(segments) > 2 and min(numbers) >= 0
            and all(y == x + 1 for x, y in zip(numbers, numbers[1:], strict=False))):
        return f"{segments[0][0]}..{segments[-1][0]}{order_text}"
    parts = []
    for name, first, last, count, order in segments[:3]:
        if first != last:
            parts.append(f"{name}[{first}-{last}]")
        elif order > 0:
            parts.append(f"{name}[{first}]" + (f" x{count}" if count > 1 else ""))
        else:
            parts.append(name + (f" x{count}" if count > 1 else ""))
    if len(segments) > 3:
        parts.append(f"... {len(segments)} folios")
    return ", ".join(parts) + order_text


# -- loading --------------------------------------------------------------------------------

class _Open(BaseModel):
    # Strict types, but extra fields are allowed: the format grows by adding optional fields.
    model_config = ConfigDict(strict=True, extra="allow")


class _StepRecord(_Open):
    index: int
    op: str
    proc: str
    result: int
    errno: str | None
    ns: int | None = None
    events: list[str] | None = None


class _Vma(_Open):
    start: int
    end: int
    perms: str
    vmflags: list[str]
    rss_kb: int
    anonymous_kb: int
    anon_huge_pages_kb: int
    locked_kb: int
    swap_kb: int
    lazyfree_kb: int
    thp_eligible: bool


class _Run(_Open):
    index: Annotated[int, Field(ge=0)]
    count: Annotated[int, Field(ge=1)]
    state: Literal["present", "swap", "none"]
    pfn: int | None = None
    folio_pfn: int | None = None
    folio_order: Annotated[int, Field(ge=0)] | None = None
    exclusive: bool | None = None
    mapcount: int | None = None
    flags: list[str] | None = None
    value: int | None = None

    @model_validator(mode="after")
    def _present_has_fields(self) -> _Run:
        if self.state == "present":
            for name in ("pfn", "folio_pfn", "folio_order", "exclusive", "mapcount", "flags",
                         "value"):
                if getattr(self, name) is None:
                    raise ValueError(f"a present run needs '{name}'")
        return self


class _Region(_Open):
    vmas: list[_Vma] = []
    pages: list[_Run] = []


class _Process(_Open):
    status: dict[str, int] = {}
    regions: dict[str, _Region] = {}


class _Observation(_Open):
    label: str
    step: int
    processes: dict[str, _Process] = {}
    counters: dict[str, dict[str, int | dict[str, int]]] = {}


class _Document(_Open):
    format: str
    scenario: str
    target: str
    system: dict[str, str] = {}
    steps: list[_StepRecord]
    observations: list[_Observation]


def load_observations(path: str | Path) -> dict[str, Any]:
    """Read an observation file (``foliosim.observations/1``) and check its structure.

    :returns: the document as parsed JSON
    :raises ScenarioError: when the file cannot be read, is not JSON, or does not follow the
        format; the error names the step and the field at fault
    """
    file = str(path)
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ScenarioError(file, f"cannot read the file: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ScenarioError(file, f"not valid JSON: {e.msg}", line=e.lineno) from None
    if not isinstance(data, dict):
        raise ScenarioError(file, "expected a JSON object (an observation document)", line=1)
    if data.get("format") != FORMAT:
        raise ScenarioError(file, f"expected format {FORMAT!r}, got {data.get('format')!r}",
                            field="format")
    try:
        _Document.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = err["loc"]
        step = loc[1] if len(loc) > 1 and loc[0] == "steps" and isinstance(loc[1], int) else None
        field = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in loc).lstrip(".")
        msg = "required field is missing" if err["type"] == "missing" else err["msg"]
        raise ScenarioError(file, msg, step=step, field=field or None) from None
    return data
