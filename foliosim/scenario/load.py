"""Loading scenario files: YAML with line numbers, pydantic validation, then a semantic pass that
resolves defaults and refuses what cannot run (unknown regions, processes, pins)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from foliosim.scenario.errors import ScenarioError
from foliosim.scenario.model import OPS, RANGE_OPS, Scenario

#: environment variable with the live runner's memory limit in bytes (foliosim.targets.live)
MEMORY_LIMIT_ENV = "FOLIOSIM_LIVE_MEMORY_LIMIT"
#: io_uring rings one live agent can hold (MAX_PINS in foliosim/targets/live/agent.c)
MAX_PINS = 1024
# prefixes pydantic puts before the message of a validator's exception
_PYDANTIC_PREFIXES = ("Value error, ", "Assertion failed, ")


def live_memory_limit() -> int:
    """The memory limit of live runs (``$FOLIOSIM_LIVE_MEMORY_LIMIT`` or the live target's
    default): no scenario may map more than this, on any target (spec: sizes beyond what the
    live machine may use are bad input)."""
    value = os.environ.get(MEMORY_LIMIT_ENV)
    if value is None:
        from foliosim.targets.live.cgroup import DEFAULT_MEMORY_LIMIT

        return DEFAULT_MEMORY_LIMIT
    try:
        return int(value)
    except ValueError:
        raise ScenarioError(f"${MEMORY_LIMIT_ENV}",
                            f"expected a number of bytes, got {value!r}") from None


def load_scenario(path: str | Path, *, memory_limit: int | None = None) -> Scenario:
    """Read, validate and resolve one scenario file; raises :class:`ScenarioError`.

    ``memory_limit`` (bytes) caps the total size of the scenario's regions; default
    :func:`live_memory_limit`.
    """
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ScenarioError(str(p), f"cannot read the file: {e}") from None
    return load_scenario_text(text, str(p), memory_limit=memory_limit)


def load_scenario_text(text: str, file: str = "<string>", *,
                       memory_limit: int | None = None) -> Scenario:
    """Validate and resolve a scenario given as YAML text."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise _yaml_error(file, text, e) from None
    except RecursionError:
        raise ScenarioError(file, "not valid YAML: nested too deeply") from None
    if not isinstance(data, dict):
        raise ScenarioError(file, "expected a YAML mapping with 'name' and 'steps'", line=1)
    lines = _LineIndex(node)
    steps = data.get("steps")
    if isinstance(steps, list):
        for i, s in enumerate(steps):
            if not isinstance(s, dict):
                raise ScenarioError(file, "expected a mapping with 'op'",
                                    line=lines.get(("steps", i)), step=i)
            op = s.get("op")
            if op not in OPS:
                what = "required field is missing" if "op" not in s else f"unknown op {op!r}"
                raise ScenarioError(file, f"{what}; expected one of {', '.join(OPS)}",
                                    line=lines.get(("steps", i, "op")) or lines.get(("steps", i)),
                                    step=i, field="op")
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as e:
        raise _validation_error(file, e.errors()[0], lines) from None
    except RecursionError:
        raise ScenarioError(file, "nested too deeply", line=1) from None
    return resolve(scenario, file, lines, memory_limit=memory_limit)


def _yaml_error(file: str, text: str, e: yaml.YAMLError) -> ScenarioError:
    """One line naming the line and the problem of a YAML syntax error."""
    mark = getattr(e, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(e, "problem", None)
    if isinstance(e, yaml.reader.ReaderError):  # a character YAML does not allow
        line = text.count("\n", 0, e.position) + 1
        ch = e.character if isinstance(e.character, int) else ord(str(e.character)[:1] or "?")
        problem = f"special character U+{ch:04X} is not allowed"
    message = problem or " ".join(str(e).split())
    return ScenarioError(file, f"not valid YAML: {message}", line=line)


def _validation_error(file: str, err: Any, lines: _LineIndex) -> ScenarioError:
    """The first pydantic error as a :class:`ScenarioError` with line, step and field."""
    loc = list(err["loc"])
    if len(loc) > 2 and loc[0] == "steps" and isinstance(loc[1], int) and loc[2] in OPS:
        del loc[2]  # the discriminated union's tag, not a field of the file
    step = loc[1] if len(loc) > 1 and loc[0] == "steps" and isinstance(loc[1], int) else None
    msg = err["msg"]
    for prefix in _PYDANTIC_PREFIXES:
        msg = msg.removeprefix(prefix)
    field_loc = loc
    if loc and loc[-1] == "[key]":  # a key of a mapping (settings.sizes) that is not allowed
        field_loc = loc[:-2]
        msg = f"unknown key {loc[-2]!r}: {msg}"
    elif err["type"] == "invalid_key":
        msg = f"keys must be strings, got {err.get('input')!r}"
    elif err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] == "missing":
        msg = "required field is missing"
    elif err["type"] == "literal_error":
        msg = f"{msg}, got {err.get('input')!r}"
    path = field_loc[2:] if step is not None else field_loc
    field = str(path[-1]) if path else None
    if len(path) > 1 and path[-2] == "sizes":
        field = f"sizes.{field}"
    line = None
    for k in range(len(field_loc), 0, -1):
        line = lines.get(tuple(field_loc[:k]))
        if line:
            break
    return ScenarioError(file, msg, line=line, step=step, field=field)


class _LineIndex:
    """Maps a path of keys/indexes into the YAML document to its 1-based line."""

    def __init__(self, node: Any) -> None:
        self.root = node

    def get(self, path: tuple) -> int | None:
        node = self.root
        for key in path:
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    if k.value == key:
                        node = v if not isinstance(v, yaml.ScalarNode) else k
                        break
                else:
                    return None
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
                if key >= len(node.value):
                    return None
                node = node.value[key]
            else:
                return None
        return node.start_mark.line + 1 if node is not None else None


def resolve(scenario: Scenario, file: str = "<string>", lines: _LineIndex | None = None, *,
            memory_limit: int | None = None) -> Scenario:
    """Fill in defaults that depend on earlier steps and refuse steps that cannot run.

    Region sizes are tracked per process (a forked child inherits the parent's), so ``length``
    defaults to the rest of the region and ranges must stay inside their region. Pin ids must be
    taken before they are released, and released once, by a process that shares them (the
    pinning process or one forked from a sharer after the pin). The regions of all processes
    together, a forked child's inherited ones counted again (copy-on-write may copy them all),
    may not exceed ``memory_limit`` (default :func:`live_memory_limit`), so a scenario never
    asks the live runner for more than it may use.
    """

    def fail(i: int, field: str, msg: str) -> ScenarioError:
        line = lines.get(("steps", i, field)) or lines.get(("steps", i)) if lines else None
        return ScenarioError(file, msg, line=line, step=i, field=field)

    def charge(i: int, field: str, size: int) -> None:
        nonlocal total
        total += size
        if total > limit:
            raise fail(i, field, f"expected regions of at most {_human(limit)} in all "
                                 f"processes, the live runner's memory limit "
                                 f"(${MEMORY_LIMIT_ENV}); this step brings them to "
                                 f"{_human(total)}")

    regions: dict[str, dict[str, int]] = {"main": {}}
    alive = {"main"}
    pins: dict[str, str] = {}  # id -> state: "held" | "released" | "exited"
    sharers: dict[str, set[str]] = {}  # id -> processes sharing the pin while it is held
    limit = live_memory_limit() if memory_limit is None else memory_limit
    total = 0
    out = []
    for i, step in enumerate(scenario.steps):
        upd: dict[str, Any] = {}
        if step.proc not in alive:
            what = "has exited" if step.proc in regions else "does not exist"
            raise fail(i, "proc", f"process {step.proc!r} {what}")
        mine = regions[step.proc]
        if step.op in ("mmap", "reserve"):
            if step.size == 0:
                raise fail(i, "size", "expected a size greater than 0")
            if step.misalign >= 2 << 20:
                raise fail(i, "misalign", "expected a misalignment below 2M")
            if step.region in mine:
                raise fail(i, "region",
                           f"region {step.region!r} is already defined in {step.proc!r}")
            charge(i, "size", step.size)
            mine[step.region] = step.size
        elif step.op in RANGE_OPS:
            if step.region not in mine:
                raise fail(i, "region", f"unknown region {step.region!r} in process {step.proc!r}")
            size = mine[step.region]
            if step.offset > size:
                raise fail(i, "offset", f"offset {step.offset} is beyond region {step.region!r} "
                                        f"of {size} bytes")
            length = size - step.offset if step.length is None else step.length
            if step.offset + length > size:
                raise fail(i, "length", f"range [{step.offset}, {step.offset + length}) exceeds "
                                        f"region {step.region!r} of {size} bytes")
            upd["length"] = length
            if step.op == "write" and step.value is None:
                upd["value"] = i + 1
            if step.op == "mremap":
                if step.to not in mine:
                    raise fail(i, "to", f"unknown region {step.to!r} in process {step.proc!r}")
                new_length = length if step.new_length is None else step.new_length
                if step.to_offset + new_length > mine[step.to]:
                    raise fail(i, "new_length", f"destination range exceeds region {step.to!r} "
                                                f"of {mine[step.to]} bytes")
                upd["new_length"] = new_length
            if step.op == "pin":
                if step.id in pins:
                    raise fail(i, "id", f"pin id {step.id!r} is already used")
                if len(pins) >= MAX_PINS:
                    raise fail(i, "id", f"expected at most {MAX_PINS} pins (the live agent's "
                                        "limit)")
                pins[step.id] = "held"
                sharers[step.id] = {step.proc}
        elif step.op == "unpin":
            state = pins.get(step.id)
            if state is None:
                raise fail(i, "id", f"pin id {step.id!r} was never taken")
            if state == "released":
                raise fail(i, "id", f"pin id {step.id!r} is released twice")
            if state == "exited":
                raise fail(i, "id", f"pin id {step.id!r} was released when the last process "
                                    "sharing it exited")
            if step.proc not in sharers[step.id]:
                raise fail(i, "proc", f"expected a process sharing pin {step.id!r} (one of "
                                      f"{', '.join(sorted(sharers[step.id]))}), got "
                                      f"{step.proc!r}")
            pins[step.id] = "released"
            sharers[step.id] = set()
        elif step.op == "dma_write":
            if step.id not in pins:
                raise fail(i, "id", f"pin id {step.id!r} was never taken")
            if step.value is None:
                upd["value"] = i + 1
        elif step.op == "fork":
            if step.child in regions:
                raise fail(i, "child", f"process name {step.child!r} is already used")
            charge(i, "child", sum(mine.values()))
            regions[step.child] = dict(mine)
            alive.add(step.child)
            for procs in sharers.values():
                if step.proc in procs:
                    procs.add(step.child)
        elif step.op == "exit":
            alive.discard(step.proc)
            for pin_id, procs in sharers.items():
                if step.proc in procs:
                    procs.discard(step.proc)
                    if not procs:  # the last process sharing the pin releases it
                        pins[pin_id] = "exited"
        out.append(step.model_copy(update=upd) if upd else step)
    return scenario.model_copy(update={"steps": out})


def _human(n: int) -> str:
    """``4G``, ``2M``, ``64K`` or bytes."""
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return f"{n} bytes"
