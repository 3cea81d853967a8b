"""Prometheus metrics of one process, with bounded labels.

Label values come from the scenario (agent names), enums (handoff outcomes, error codes) or a
fixed set: never a session, turn or request id, and never a name a model made up (count a handoff
under the *final* target, which is a scenario agent).

Call sites use the process's :func:`metrics` object::

    metrics().agent_turn_seconds.labels(agent=name).observe(seconds)
    with metrics().inflight.labels(service=name).track_inprogress(): ...
    metrics().record_handoff(source, final_target, outcome, depth)

Agent processes serve them with :func:`start_metrics_server`; the edge adds :func:`metrics_route`
(or mounts :func:`metrics_app`).
"""

from __future__ import annotations

import threading
from typing import Any, Final
from wsgiref.simple_server import WSGIServer

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.asgi import make_asgi_app
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds: from a zero-latency offline turn (~1 ms) to the default turn timeout (30 s)."""
DEPTH_BUCKETS: Final = (0, 1, 2, 3, 4, 5, 6, 8, 10)
"""Handoffs in a conversation (``max_handoff_depth`` defaults to 6)."""

BREAKER_CLOSED: Final = 0
BREAKER_HALF_OPEN: Final = 1
BREAKER_OPEN: Final = 2
_BREAKER_STATES: Final = {
    "closed": BREAKER_CLOSED,
    "half-open": BREAKER_HALF_OPEN,
    "half_open": BREAKER_HALF_OPEN,
    "half-opened": BREAKER_HALF_OPEN,  # purgatory's names
    "open": BREAKER_OPEN,
    "opened": BREAKER_OPEN,
}


class Metrics:
    """Every Switchboard metric, registered on one registry (a process has one: :func:`metrics`)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process_collectors: bool = False) -> None:
        # ``*_created`` series double every counter and histogram for a timestamp nobody graphs.
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        if process_collectors:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        reg = self.registry

        self.agent_turn_seconds = Histogram(
            "switchboard_agent_turn_seconds",
            "Time an agent replica took to run one turn request.",
            ["agent"], buckets=LATENCY_BUCKETS, registry=reg,
        )  # fmt: skip
        self.response_seconds = Histogram(
            "switchboard_response_seconds",
            "Edge latency of one response: response.create to response.done, every hop included.",
            buckets=LATENCY_BUCKETS, registry=reg,
        )  # fmt: skip
        self.responses = Counter(
            "switchboard_responses",
            "Responses completed at the edge, by whether a supervisor was consulted (routing rate).",
            ["consulted"], registry=reg,
        )  # fmt: skip
        self.handoffs = Counter(
            "switchboard_handoffs",
            "Handoff decisions, by source agent, final target agent and guardrail outcome.",
            ["from_agent", "to_agent", "outcome"], registry=reg,
        )  # fmt: skip
        self.handoff_depth = Histogram(
            "switchboard_handoff_depth",
            "The conversation's handoff count after each handoff decision.",
            buckets=DEPTH_BUCKETS, registry=reg,
        )  # fmt: skip
        self.supervisor_consults = Counter(
            "switchboard_supervisor_consults",
            "Consults of a supervisor by a front agent, by outcome.",
            ["agent", "outcome"], registry=reg,
        )  # fmt: skip
        self.retries = Counter(
            "switchboard_retries",
            "Retried calls to a downstream (agent, supervisor, model provider), by reason.",
            ["target", "reason"], registry=reg,
        )  # fmt: skip
        self.breaker_state = Gauge(
            "switchboard_breaker_state",
            "Circuit breaker state per downstream: 0 closed, 1 half-open, 2 open.",
            ["target"], registry=reg,
        )  # fmt: skip
        self.inflight = Gauge(
            "switchboard_inflight_requests",
            "Requests being handled now, per service (the edge, or an agent).",
            ["service"], registry=reg,
        )  # fmt: skip
        self.active_sessions = Gauge(
            "switchboard_active_sessions",
            "Sessions with an open connection on this edge.",
            registry=reg,
        )  # fmt: skip
        self.watch_following = Gauge(
            "switchboard_watch_following",
            "1 while this process follows a watched KV bucket (the edge: switchboard_rollouts); 0 while its watch "
            "is lost and it acts on the values it last saw.",
            ["bucket"], registry=reg,
        )  # fmt: skip
        self.watch_losses = Counter(
            "switchboard_watch_losses",
            "Times this process lost its watch of a KV bucket (ended, failed, stopped delivering, or the bucket "
            "was re-created), each re-established with backoff.",
            ["bucket"], registry=reg,
        )  # fmt: skip
        self.busy_rejections = Counter(
            "switchboard_busy_rejections",
            "Requests refused with a retryable busy error because a service was at its concurrency limit.",
            ["service"], registry=reg,
        )  # fmt: skip

    def record_response(self, seconds: float, *, consulted: bool) -> None:
        """One completed response at the edge."""
        self.response_seconds.observe(seconds)
        self.responses.labels(consulted="true" if consulted else "false").inc()

    def record_handoff(self, from_agent: str, to_agent: str, outcome: str, depth: int) -> None:
        """One handoff decision; ``to_agent`` is the final target (a scenario agent)."""
        self.handoffs.labels(from_agent=from_agent, to_agent=to_agent, outcome=outcome).inc()
        self.handoff_depth.observe(depth)

    def set_breaker_state(self, target: str, state: str) -> None:
        """``state``: ``closed``, ``half-open`` or ``open`` (purgatory's ``opened``/``half-opened`` too)."""
        try:
            value = _BREAKER_STATES[state.lower()]
        except KeyError:
            raise ValueError(f"unknown breaker state {state!r}") from None
        self.breaker_state.labels(target=target).set(value)

    def render(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return prometheus_client.generate_latest(self.registry)


_metrics: Metrics | None = None
_metrics_lock = threading.Lock()
_servers: list[WSGIServer] = []


def metrics() -> Metrics:
    """This process's metrics (created on first use, with process and runtime collectors)."""
    global _metrics
    if _metrics is None:
        with _metrics_lock:
            if _metrics is None:
                _metrics = Metrics(process_collectors=True)
    return _metrics


def start_metrics_server(port: int = 0, *, addr: str = "127.0.0.1", source: Metrics | None = None) -> int:
    """Serve ``/metrics`` over HTTP from a daemon thread; returns the port (``0`` picks a free one).

    Pass ``addr="0.0.0.0"`` where a scraper on another host must reach it (e.g. in a pod).
    """
    server, _thread = prometheus_client.start_http_server(port, addr=addr, registry=(source or metrics()).registry)
    _servers.append(server)
    return int(server.server_port)


def stop_metrics_servers() -> None:
    """Stop every server :func:`start_metrics_server` started; safe to call twice."""
    while _servers:
        server = _servers.pop()
        server.shutdown()
        server.server_close()


class MetricsApp:
    """ASGI app serving the metrics (``app.mount("/metrics", ...)`` answers ``/metrics`` with a
    redirect to ``/metrics/``; :func:`metrics_route` serves ``/metrics`` itself)."""

    def __init__(self, source: Metrics | None = None) -> None:
        self._app: Any = make_asgi_app((source or metrics()).registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


def metrics_app(source: Metrics | None = None) -> MetricsApp:
    """The ASGI app the edge serves at ``/metrics``."""
    return MetricsApp(source)


def metrics_route(path: str = "/metrics", source: Metrics | None = None) -> Route:
    """A route serving the metrics at exactly ``path``: ``app.router.routes.append(metrics_route())``."""
    return Route(path, metrics_app(source), methods=["GET"])
