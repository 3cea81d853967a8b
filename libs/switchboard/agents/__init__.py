"""Agent definitions as data: scenario config, tools, handoff contracts."""

from .config import (
    CONSULT_TOOL,
    TRANSFER_PREFIX,
    AgentConfig,
    ConsultConfig,
    ConsultFallback,
    ContractField,
    HandoffConfig,
    ModelConfig,
    OfflineRule,
    OfflineScript,
    ScenarioConfig,
)
from .loader import Scenario, ScenarioError, load_scenario
from .tools import Owns, Seeder, Tool, ToolContext, ToolError, ToolRegistry, ToolSpec, build_tool

__all__ = [
    "CONSULT_TOOL",
    "TRANSFER_PREFIX",
    "AgentConfig",
    "ConsultConfig",
    "ConsultFallback",
    "ContractField",
    "HandoffConfig",
    "ModelConfig",
    "OfflineRule",
    "OfflineScript",
    "Owns",
    "Scenario",
    "ScenarioConfig",
    "ScenarioError",
    "Seeder",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolRegistry",
    "ToolSpec",
    "build_tool",
    "load_scenario",
]
