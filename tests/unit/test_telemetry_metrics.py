"""Prometheus metrics: names, bounded labels, the text format, the agent server and the edge's ASGI app."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from switchboard.telemetry import (
    Metrics,
    metrics,
    metrics_app,
    metrics_route,
    start_metrics_server,
    stop_metrics_servers,
)


def samples(text: str) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def value(found: dict[str, list[Sample]], name: str, **labels: str) -> float:
    matching = [s.value for s in found.get(name, []) if s.labels == labels]
    assert len(matching) == 1, (name, labels, found.get(name))
    return matching[0]


@pytest.fixture
def m() -> Metrics:
    return Metrics(CollectorRegistry())


def test_every_metric_renders_with_its_labels(m: Metrics) -> None:
    m.agent_turn_seconds.labels(agent="triage").observe(0.004)
    m.agent_turn_seconds.labels(agent="triage").observe(2.0)
    m.record_response(0.02, consulted=False)
    m.record_response(0.3, consulted=True)
    m.record_response(0.4, consulted=True)
    m.record_handoff("triage", "auth", "redirected_auth", 1)
    m.record_handoff("auth", "returns", "accepted", 2)
    m.supervisor_consults.labels(agent="front", outcome="ok").inc()
    m.retries.labels(target="agent.returns", reason="busy").inc(2)
    m.set_breaker_state("agent.returns", "open")
    m.set_breaker_state("agent.billing", "half-opened")  # purgatory's spelling
    m.set_breaker_state("agent.auth", "closed")
    m.inflight.labels(service="edge").inc()
    m.active_sessions.set(3)
    m.busy_rejections.labels(service="returns").inc()

    found = samples(m.render().decode())

    assert value(found, "switchboard_agent_turn_seconds_count", agent="triage") == 2
    assert value(found, "switchboard_agent_turn_seconds_sum", agent="triage") == pytest.approx(2.004)
    assert value(found, "switchboard_agent_turn_seconds_bucket", agent="triage", le="0.005") == 1
    assert value(found, "switchboard_agent_turn_seconds_bucket", agent="triage", le="+Inf") == 2
    assert value(found, "switchboard_response_seconds_count") == 3
    assert value(found, "switchboard_response_seconds_bucket", le="0.025") == 1
    assert value(found, "switchboard_responses_total", consulted="true") == 2
    assert value(found, "switchboard_responses_total", consulted="false") == 1
    assert value(found, "switchboard_handoffs_total", from_agent="auth", to_agent="returns", outcome="accepted") == 1
    assert (
        value(found, "switchboard_handoffs_total", from_agent="triage", to_agent="auth", outcome="redirected_auth") == 1
    )
    assert value(found, "switchboard_handoff_depth_count") == 2
    assert value(found, "switchboard_handoff_depth_bucket", le="1.0") == 1
    assert value(found, "switchboard_supervisor_consults_total", agent="front", outcome="ok") == 1
    assert value(found, "switchboard_retries_total", target="agent.returns", reason="busy") == 2
    assert value(found, "switchboard_breaker_state", target="agent.returns") == 2
    assert value(found, "switchboard_breaker_state", target="agent.billing") == 1
    assert value(found, "switchboard_breaker_state", target="agent.auth") == 0
    assert value(found, "switchboard_inflight_requests", service="edge") == 1
    assert value(found, "switchboard_active_sessions") == 3
    assert value(found, "switchboard_busy_rejections_total", service="returns") == 1
    assert not any(name.endswith("_created") for name in found)


def test_labels_are_bounded_by_design(m: Metrics) -> None:
    test_every_metric_renders_with_its_labels(m)
    found = samples(m.render().decode())
    label_names = {name for group in found.values() for sample in group for name in sample.labels}
    assert label_names == {
        "agent",
        "from_agent",
        "to_agent",
        "outcome",
        "consulted",
        "target",
        "reason",
        "service",
        "le",
    }
    with pytest.raises(ValueError, match="unknown breaker state"):
        m.set_breaker_state("agent.returns", "ajar")


def test_process_metrics_object_is_one_per_process_with_runtime_collectors() -> None:
    assert metrics() is metrics()
    found = samples(metrics().render().decode())
    assert "python_info" in found
    assert "switchboard_response_seconds_count" in found


def test_agent_metrics_server_on_a_free_port(m: Metrics) -> None:
    m.busy_rejections.labels(service="triage").inc()
    try:
        port = start_metrics_server(0, source=m)
        assert port > 0
        reply = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    finally:
        stop_metrics_servers()
    assert reply.status_code == 200
    assert value(samples(reply.text), "switchboard_busy_rejections_total", service="triage") == 1
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1)
    stop_metrics_servers()  # a second call is harmless


@pytest.mark.parametrize("attach", ["mount", "route"])
async def test_edge_serves_metrics_from_the_asgi_app(m: Metrics, attach: str) -> None:
    app = FastAPI()
    if attach == "mount":
        app.mount("/metrics", metrics_app(m))  # answers /metrics with a redirect to /metrics/
    else:
        app.router.routes.append(metrics_route(source=m))
    m.active_sessions.set(5)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge", follow_redirects=True) as client:
        reply = await client.get("/metrics")
    assert reply.status_code == 200
    assert [r.status_code for r in reply.history] == ([307] if attach == "mount" else [])
    assert reply.headers["content-type"].startswith("text/plain")
    assert value(samples(reply.text), "switchboard_active_sessions") == 5
