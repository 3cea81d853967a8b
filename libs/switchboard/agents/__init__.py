"""Agent definitions as data: scenario config, tools, handoff contracts."""

from .config import (
    AgentConfig,
    ContractField,
    HandoffConfig,
    ModelConfig,
    OfflineRule,
    OfflineScript,
    ScenarioConfig,
)
from .loader import Scenario, ScenarioError, load_scenario
from .tools import Tool, ToolContext, ToolError, ToolRegistry, build_tool

__all__ = [
    "AgentConfig",
    "ContractField",
    "HandoffConfig",
    "ModelConfig",
    "OfflineRule",
    "OfflineScript",
    "Scenario",
    "ScenarioConfig",
    "ScenarioError",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolRegistry",
    "build_tool",
    "load_scenario",
]
