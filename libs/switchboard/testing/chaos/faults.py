"""A fault: what it acts on (:class:`FaultEnv`) and what it is (:class:`FaultSpec`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...bus.subjects import SESSIONS_BUCKET
from ...local.stack import Stack
from .model import ChaosModel, ModelFaults
from .workload import Workload

SESSIONS_STREAM = f"KV_{SESSIONS_BUCKET}"


@dataclass
class FaultEnv:
    """What a fault acts on: the running stack, the live edges, the scripted model (if any)."""

    stack: Stack
    edges: list[tuple[str, int]]
    """Live edges as (process label, port); clients reconnect to these."""
    model: ChaosModel | None = None
    state: dict[str, Any] = field(default_factory=dict)
    """Scratch space between a fault's inject and recover."""
    data_dir: Path | None = None
    """The folder of the effects witness database (``EFFECTS_DB``, where ``record_effect`` writes)."""
    in_flight: Callable[[int], list[str]] = lambda _port: []
    """Texts of the effect turns now in flight through the edge on this port (set by the run)."""
    in_flight_turns: Callable[[int], list[str]] = lambda _port: []
    """Texts of all the turns now in flight through the edge on this port (set by the run)."""

    def edge_ports(self) -> list[int]:
        return [port for _, port in self.edges]


FaultAction = Callable[[FaultEnv], str]


@dataclass(frozen=True)
class FaultSpec:
    """One fault: the system it needs, how it is injected, and how the system is brought back."""

    name: str
    title: str
    description: str
    """What the fault does and what the platform is expected to do about it (for the README)."""
    workload: Workload
    inject: FaultAction
    recover: FaultAction
    replicas: Mapping[str, int]
    """Processes per agent (supervisors included); agents not listed are not started."""
    edges: int = 1
    nats_cluster: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    model: ModelFaults | None = None
    """Use the scripted OpenAI-compatible server (:class:`ChaosModel`) instead of the offline model."""
    hold_s: float = 0.0
    """How long the fault lasts before ``recover`` (a kill is instantaneous; an outage is held)."""
    hold_until: float | None = None
    """Hold until this fraction of the turns has started instead (a fault spanning most of the run)."""
    expect_fallback: bool = False
    """Whether completed-by-fallback turns are the expected way of answering during this fault."""
    injections: int | None = None
    """Overrides ``ChaosConfig.injections`` (a fault whose recovery takes most of a run is injected once)."""
    first_at: float | None = None
    """Overrides ``ChaosConfig.first_at`` (inject early when recovery should show within the run)."""
