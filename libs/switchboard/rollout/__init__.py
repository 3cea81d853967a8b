"""Per-agent version tracks: weights in NATS KV, a session's track chosen once and pinned, the rollout
gate, and the Kubernetes adapter that scales canary Deployments."""

from .errors import (
    BadWeight,
    CanaryNotServing,
    ClusterError,
    GateRefused,
    NoCanary,
    RolloutError,
    UnknownAgent,
)
from .router import STABLE_PIN, choose
from .store import RolloutStore, check_weight, open_bucket
from .table import RolloutTable, TrackRouter, WatchStatus, parse_weights

__all__ = [
    "STABLE_PIN",
    "BadWeight",
    "CanaryNotServing",
    "ClusterError",
    "GateRefused",
    "NoCanary",
    "RolloutError",
    "RolloutStore",
    "RolloutTable",
    "TrackRouter",
    "UnknownAgent",
    "WatchStatus",
    "check_weight",
    "choose",
    "open_bucket",
    "parse_weights",
]
