"""Security: least-privilege bus identities (and, next, edge credentials and guardrails)."""

from .bus_access import ADMIN, BusCredentials, Identity, agent_identity, edge_identity, inbox_prefix

__all__ = ["ADMIN", "BusCredentials", "Identity", "agent_identity", "edge_identity", "inbox_prefix"]
