"""The scenario contract (spec section 1): models of scenario files, loading, and input errors."""

from foliosim.scenario.errors import ScenarioError
from foliosim.scenario.load import load_scenario, load_scenario_text
from foliosim.scenario.model import Scenario, Settings, Step

__all__ = ["Scenario", "ScenarioError", "Settings", "Step", "load_scenario", "load_scenario_text"]
