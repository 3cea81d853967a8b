"""The supervisor scenario shares the retail store and its account tools."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from switchboard.agents import ToolRegistry

_RETAIL = Path(__file__).resolve().parent.parent / "retail" / "tools.py"
_spec = importlib.util.spec_from_file_location("switchboard_scenario_retail_tools", _RETAIL)
assert _spec is not None and _spec.loader is not None
retail = sys.modules.get(_spec.name) or importlib.util.module_from_spec(_spec)
if _spec.name not in sys.modules:
    sys.modules[_spec.name] = retail
    _spec.loader.exec_module(retail)

registry = ToolRegistry()
registry.include(retail.registry, "verify_customer", "get_balance", "lookup_order")
