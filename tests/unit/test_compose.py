"""The compose files stay in step with the scenarios and read alike in Docker Compose and Debian's
podman-compose 1.0.3 (tests/containers/test_compose.py runs them)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml
from test_chart import agent_shutdown_worst_s, edge_shutdown_worst_s

from switchboard.agents import load_scenario
from switchboard.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SUPERVISOR = ROOT / "docker-compose.supervisor.yml"
JAEGER = ROOT / "deploy" / "compose.jaeger.yml"
AGENTS = load_scenario("retail", ROOT / "scenarios").config.agent_names


def test_compose_runs_nats_the_edge_and_one_service_per_retail_agent() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert set(services) == {"nats", "edge", *AGENTS}
    assert services["edge"]["command"] == "edge"
    for name in AGENTS:
        assert shlex.split(services[name]["command"]) == ["agent", "--name", name]
    assert "-js" in services["nats"]["command"]  # sessions, ledger and audit live in JetStream
    for name in ("edge", *AGENTS):  # one image, configured only from the environment
        assert services[name]["image"] == "${SWITCHBOARD_IMAGE:-switchboard:latest}"
        assert services[name]["env_file"] == ["deploy/compose.env"]
    env = dict(line.split("=", 1) for line in (ROOT / "deploy" / "compose.env").read_text().splitlines() if "=" in line)
    assert env["SWITCHBOARD_NATS_URL"] == "nats://nats:4222" and env["SWITCHBOARD_SCENARIO"] == "retail"


def test_docker_waits_out_each_services_whole_shutdown_before_killing_it() -> None:
    """``docker compose stop`` sends SIGTERM, then SIGKILL after ``stop_grace_period``: a kill before the
    service's own timeouts run out cuts off its NATS drain, its last records and spans (the chart's grace
    periods are held to the same sums in test_chart)."""
    env = dict(line.split("=", 1) for line in (ROOT / "deploy" / "compose.env").read_text().splitlines() if "=" in line)
    drain = float(env.get("SWITCHBOARD_DRAIN_GRACE_S", Settings.model_fields["drain_grace_s"].default))
    services = yaml.safe_load(COMPOSE.read_text())["services"]

    def grace_s(service: str) -> float:
        value = services[service]["stop_grace_period"]
        assert re.fullmatch(r"\d+s", value), value
        return float(value[:-1])

    assert grace_s("edge") >= edge_shutdown_worst_s(drain), grace_s("edge")
    for name in AGENTS:
        assert grace_s(name) >= agent_shutdown_worst_s(), (name, grace_s(name))


def test_supervisor_compose_runs_every_agent_of_its_scenario_with_its_role() -> None:
    services = yaml.safe_load(SUPERVISOR.read_text())["services"]
    config = load_scenario("supervisor", ROOT / "scenarios").config
    assert set(services) == {"nats", "edge", *config.agent_names}
    for name in config.agent_names:
        role = config.agent(name).role  # type: ignore[union-attr]
        assert shlex.split(services[name]["command"]) == [role, "--name", name]
        assert services[name]["environment"] == {"SWITCHBOARD_SCENARIO": "supervisor"}
    assert services["edge"]["environment"] == {"SWITCHBOARD_SCENARIO": "supervisor"}
    assert "supervisor" in {config.agent(n).role for n in config.agent_names}  # type: ignore[union-attr]


def test_jaeger_overlay_traces_every_switchboard_service() -> None:
    services = yaml.safe_load(JAEGER.read_text())["services"]
    assert set(services) == {"jaeger", "edge", *AGENTS}
    for name in ("edge", *AGENTS):
        assert services[name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"


def test_no_interpolation_that_podman_compose_reads_differently() -> None:
    """podman-compose 1.0.3 substitutes ``${VAR:-default}`` only for a non-empty default, ignores
    ``profiles`` and has no ``config`` command: none of those may carry meaning here."""
    for path in (COMPOSE, SUPERVISOR, JAEGER, ROOT / "deploy" / "compose.test.yml"):
        text = "\n".join(line.split(" #")[0] for line in path.read_text().splitlines() if not line.startswith("#"))
        assert not re.search(r"\$\{\w+:?-\}", text), path
        assert "profiles:" not in text, path
