"""Scenario files: YAML in, a validated `Scenario` out (or every problem at once)."""

from chaoslab.scenario.loader import ScenarioError, load_scenario, parse_scenario
from chaoslab.scenario.model import Scenario, Status

__all__ = ["Scenario", "ScenarioError", "Status", "load_scenario", "parse_scenario"]
