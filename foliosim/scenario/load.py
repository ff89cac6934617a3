"""Loading scenario files: YAML with line numbers, pydantic validation, then a semantic pass that
resolves defaults and refuses what cannot run (unknown regions, processes, pins)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from foliosim.scenario.errors import ScenarioError
from foliosim.scenario.model import OPS, RANGE_OPS, Scenario


def load_scenario(path: str | Path) -> Scenario:
    """Read, validate and resolve one scenario file; raises :class:`ScenarioError`."""
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ScenarioError(str(p), f"cannot read the file: {e}") from None
    return load_scenario_text(text, str(p))


def load_scenario_text(text: str, file: str = "<string>") -> Scenario:
    """Validate and resolve a scenario given as YAML text."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(e, "problem", None) or str(e)
        raise ScenarioError(file, f"not valid YAML: {problem}", line=line) from None
    if not isinstance(data, dict):
        raise ScenarioError(file, "expected a YAML mapping with 'name' and 'steps'", line=1)
    lines = _LineIndex(node)
    steps = data.get("steps")
    if isinstance(steps, list):
        for i, s in enumerate(steps):
            if not isinstance(s, dict):
                raise ScenarioError(file, "expected a mapping with 'op'", line=lines.get(("steps", i)),
                                    step=i)
            op = s.get("op")
            if op not in OPS:
                raise ScenarioError(file, f"unknown op {op!r}; expected one of {', '.join(OPS)}",
                                    line=lines.get(("steps", i, "op")) or lines.get(("steps", i)),
                                    step=i, field="op")
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = [x for x in err["loc"] if not (isinstance(x, str) and x in OPS)]
        step = loc[1] if len(loc) > 1 and loc[0] == "steps" and isinstance(loc[1], int) else None
        fields = [str(x) for x in loc if isinstance(x, str)]
        field = fields[-1] if fields else None
        line = None
        for k in range(len(loc), 0, -1):
            line = lines.get(tuple(loc[:k]))
            if line:
                break
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "literal_error":
            msg = f"{msg}, got {err.get('input')!r}"
        raise ScenarioError(file, msg, line=line, step=step, field=field) from None
    return resolve(scenario, file, lines)


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


def resolve(scenario: Scenario, file: str = "<string>", lines: _LineIndex | None = None) -> Scenario:
    """Fill in defaults that depend on earlier steps and refuse steps that cannot run.

    Region sizes are tracked per process (a forked child inherits the parent's), so ``length``
    defaults to the rest of the region and ranges must stay inside their region. Pin ids must be
    taken before they are released, and released once.
    """

    def fail(i: int, field: str, msg: str) -> ScenarioError:
        line = lines.get(("steps", i, field)) or lines.get(("steps", i)) if lines else None
        return ScenarioError(file, msg, line=line, step=i, field=field)

    regions: dict[str, dict[str, int]] = {"main": {}}
    alive = {"main"}
    pins: dict[str, str] = {}  # id -> state: "held" | "released"
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
                raise fail(i, "region", f"region {step.region!r} is already defined in {step.proc!r}")
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
                pins[step.id] = "held"
        elif step.op == "unpin":
            state = pins.get(step.id)
            if state is None:
                raise fail(i, "id", f"pin id {step.id!r} was never taken")
            if state == "released":
                raise fail(i, "id", f"pin id {step.id!r} is released twice")
            pins[step.id] = "released"
        elif step.op == "dma_write":
            if step.id not in pins:
                raise fail(i, "id", f"pin id {step.id!r} was never taken")
            if step.value is None:
                upd["value"] = i + 1
        elif step.op == "fork":
            if step.child in regions:
                raise fail(i, "child", f"process name {step.child!r} is already used")
            regions[step.child] = dict(mine)
            alive.add(step.child)
        elif step.op == "exit":
            alive.discard(step.proc)
        out.append(step.model_copy(update=upd) if upd else step)
    return scenario.model_copy(update={"steps": out})
