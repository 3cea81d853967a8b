"""The agent loop that every agent runner executes."""

from .loop import TRANSFER_PREFIX, AgentLoop, IterationCapError, new_item_id

__all__ = ["TRANSFER_PREFIX", "AgentLoop", "IterationCapError", "new_item_id"]
