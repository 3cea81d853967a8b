"""The agent loop that every agent runner executes."""

from .loop import AgentLoop, IterationCapError, new_item_id

__all__ = ["AgentLoop", "IterationCapError", "new_item_id"]
