"""docker-compose.yml stays in step with the retail scenario (it cannot run here: no Docker daemon)."""

from __future__ import annotations

from pathlib import Path

import yaml

from switchboard.agents import load_scenario

ROOT = Path(__file__).resolve().parents[2]


def test_compose_runs_one_service_per_retail_agent() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    agents = load_scenario("retail", ROOT / "scenarios").config.agent_names
    for name in agents:
        assert compose["services"][name]["command"] == ["agent", "--name", name]
    assert compose["services"]["edge"]["command"] == ["edge"]
    assert set(compose["services"]) == {"nats", "jaeger", "edge", *agents}
    for name in ("edge", *agents):  # every service sends its traces to Jaeger
        assert compose["services"][name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
