"""Typed errors of rollout operations: each says what was wrong, and nothing was changed."""

from __future__ import annotations

from ..errors import SwitchboardError


class RolloutError(SwitchboardError):
    """A rollout operation was refused; the message is one line for the operator."""


class UnknownAgent(RolloutError):
    pass


class BadWeight(RolloutError):
    pass


class NoCanary(RolloutError):
    pass


class CanaryNotServing(RolloutError):
    """No canary replica answers: it is not deployed, or its agent configuration did not load."""


class GateRefused(RolloutError):
    """The canary does worse than stable on the platform's own metrics."""


class ClusterError(RolloutError):
    """The Kubernetes API refused or the Deployment did not become ready."""
