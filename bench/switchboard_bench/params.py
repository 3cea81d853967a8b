"""The run's parameters (``--quick`` and the command-line options resolve to one ``Params``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Params:
    sessions: int
    turns: int
    handoffs: int
    idle_sessions: int
    idle_sample: int
    sdk_runs: int
    nats_requests: int
    unloaded_sessions: int
    unloaded_handoffs: int
    rate: float
    quick: bool
    retail: bool = True
    """The headline phase group on the shipped ``retail`` scenario (``--no-retail`` skips it)."""
    retail_sessions: int = 50
    """Sessions of the retail closed-loop phase (the issue's 50 sessions x 20 turns)."""
    load_sweep: tuple[float, ...] = (100.0, 200.0, 300.0, 400.0)
    """Offered rates (turns/s) of the retail latency-vs-load sweep, beside the paced phase's ``rate``."""
    sweep_s: float = 5.0
    """Seconds of traffic per sweep point."""
    profile_dir: str | None = None
    """``--profile DIR``: py-spy flame graphs of the edge and agents during the retail phases."""
    consult: bool = True
    """The chat-supervisor phase group (``--no-consult`` skips it)."""
    consult_rate: float = 500.0
    """Turns/s of the paced direct and consult phases (default: ``rate``)."""
    consult_replicas: tuple[int, ...] = (1, 2, 3)
    consult_sessions: int = 24
    """Concurrent callers of the supervisor-throughput phase."""
    consult_duration_s: float = 5.0
    model_delay_ms: float = 50.0
    """The scripted supervisor model's latency in the throughput phase."""
    supervisor_max_inflight: int = 4
    """SWITCHBOARD_AGENT_MAX_INFLIGHT of each supervisor replica in the throughput phase."""
    tracing: bool = True
    """The tracing-overhead phase group (``--no-tracing`` skips it)."""
    tracing_blocks: int = 4
    """Measurement blocks per phase on each of the tracing-off and tracing-on stacks, alternating."""
    tracing_export_delay_ms: float = 200.0
    """OTEL_BSP_SCHEDULE_DELAY of the traced stack: short, so a block's spans are exported during the block."""
    tracing_tracer: str = "light"
    """SWITCHBOARD_TRACER of the traced stack: ``light`` (as shipped) or ``sdk`` (the OpenTelemetry SDK's)."""
    tracing_sample_ratio: float = 1.0
    """Share of turns the traced stack samples (1: every span, ``parentbased_always_on``; below 1
    ``parentbased_traceidratio``, as under load in production)."""
