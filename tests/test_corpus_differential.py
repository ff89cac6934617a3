"""The judge on the whole corpus: every scenario of scenarios/ runs on the model and on this
machine's live kernel, and the two observations must agree field by field (spec section 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from foliosim.compare import compare
from foliosim.scenario import load_scenario
from foliosim.targets import live, sim

SCENARIOS = sorted((Path(__file__).parent.parent / "scenarios").glob("*.yaml"))
REASON = live.unavailable_reason()


@pytest.mark.skipif(REASON is not None, reason=f"live kernel not usable: {REASON}")
@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_agrees_with_live_kernel(path: Path) -> None:
    scenario = load_scenario(path)
    diffs = compare(sim.run(scenario), live.run(scenario))
    assert not diffs, "\n".join(
        f"{d.observation} {d.process}/{d.region} {d.where} {d.field}: sim={d.a!r} live={d.b!r}"
        for d in diffs[:20])
