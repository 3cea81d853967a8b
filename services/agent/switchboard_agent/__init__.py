"""Agent runner service: serves one named agent from a scenario (N replicas = one queue group)."""

from .runner import AgentRunner

__all__ = ["AgentRunner"]
