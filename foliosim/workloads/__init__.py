"""Seeded workload generators, each producing a scenario (and able to write it out as a
scenario file for ``foliosim run``).

Example::

    from foliosim.workloads import WORKLOADS, write_scenario

    scenario = WORKLOADS["pinned-buffers"](seed=3)
    write_scenario(scenario, "pinned-buffers-s3.yaml")
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from foliosim.scenario.model import Scenario
from foliosim.workloads.generators import (
    allocator_churn,
    fork_snapshot,
    guard_pages,
    mlock_slices,
    pinned_buffers,
)

__all__ = ["WORKLOADS", "generate", "scenario_yaml", "write_scenario"]

WORKLOADS: dict[str, Callable[..., Scenario]] = {
    "mlock-slices": mlock_slices,
    "allocator-churn": allocator_churn,
    "fork-snapshot": fork_snapshot,
    "pinned-buffers": pinned_buffers,
    "guard-pages": guard_pages,
}
"""Every workload generator by name: ``generator(seed, scale=1) -> Scenario``."""


def generate(name: str, seed: int, scale: int = 1) -> Scenario:
    """The scenario of workload ``name`` for ``seed``.

    :raises KeyError: for an unknown workload (the message lists the known ones)
    """
    try:
        gen = WORKLOADS[name]
    except KeyError:
        raise KeyError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}") from None
    return gen(seed, scale)


def scenario_yaml(scenario: Scenario) -> str:
    """The scenario as a scenario file (``foliosim.scenario/1``); fields at their default are
    left out."""
    doc = scenario.model_dump(mode="json", exclude_defaults=True)
    doc = {"format": scenario.format, **doc}
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100)


def write_scenario(scenario: Scenario, path: str | Path) -> Path:
    """Write the scenario file; returns its path."""
    p = Path(path)
    p.write_text(scenario_yaml(scenario))
    return p
