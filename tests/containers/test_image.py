"""The image, built from scratch, runs every service: a conversation with handoffs through containers."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from openai import AsyncOpenAI

from switchboard.local.nats_server import NatsServer
from switchboard.local.ports import free_port
from switchboard.local.stack import wait_http_ok

from . import talk
from .podman import Container, Containers, inspect, podman

pytestmark = [pytest.mark.containers, pytest.mark.timeout(300, func_only=True)]


@dataclass
class ContainerSystem:
    """nats-server on the host; the edge and agents in containers of the image on the host network."""

    nats: NatsServer
    pool: Containers
    key: str
    edge_port: int = 0

    @property
    def env(self) -> dict[str, str]:
        return {"SWITCHBOARD_NATS_URL": self.nats.url, "SWITCHBOARD_API_KEYS": self.key}

    def agent(self, name: str, label: str | None = None, *, read_only: bool = False) -> Container:
        options = ["--read-only"] if read_only else []
        return self.pool.run(label or name, ["agent", "--name", name], self.env, options=options)

    def edge(self) -> Container:
        self.edge_port = free_port()
        edge = self.pool.run(
            "edge",
            ["edge"],
            self.env | {"SWITCHBOARD_EDGE_PORT": str(self.edge_port), "SWITCHBOARD_EDGE_HOST": "127.0.0.1"},
        )
        wait_http_ok(f"http://127.0.0.1:{self.edge_port}/readyz", time.monotonic() + 60)
        return edge

    def client(self) -> AsyncOpenAI:
        return talk.client(self.edge_port, self.key)


def start_system(tmp: Path, pool: Containers) -> Iterator[ContainerSystem]:
    nats = NatsServer(tmp / "nats", log_file=tmp / "nats.log")
    nats.start()
    try:
        yield ContainerSystem(nats, pool, f"test-{secrets.token_hex(8)}")
    finally:
        pool.close()
        nats.stop()


@pytest.fixture
def system(tmp_path: Path, containers: Containers) -> Iterator[ContainerSystem]:
    yield from start_system(tmp_path, containers)


async def test_conversation_with_handoffs_through_containers(system: ContainerSystem) -> None:
    agents = [system.agent(name) for name in talk.RETAIL_AGENTS]
    for agent in agents:
        agent.wait_log('"msg": "agent ready"')
    edge = system.edge()

    assert await talk.greet(system.client()) == "triage"
    await talk.refund(system.client(), "A1001", confirm=True)

    for container in (edge, *agents):  # non-root, with the uid that owns the data dir
        assert container.exec("id", "-u") == "10001"
    returns = next(a for a in agents if a.name.endswith("-returns"))
    assert returns.exec("stat", "-c", "%u", "/var/lib/switchboard") == "10001"  # its HOME
    records = returns.log_records()  # JSON lines on stdout
    assert any(r.get("msg") == "agent ready" and r.get("service") == "agent-returns" for r in records)


async def test_sigterm_reaches_the_process_and_drains(system: ContainerSystem) -> None:
    """`podman stop` sends SIGTERM to PID 1: the exec-form entrypoint makes that switchboard itself,
    which drains and exits 0 at once (a shell in between would ignore it until the SIGKILL: 137)."""
    agent = system.agent("generalist")
    agent.wait_log('"msg": "agent ready"')
    started = time.monotonic()
    podman("stop", "--time", "30", agent.name, timeout=60)
    assert time.monotonic() - started < 10
    assert inspect(agent.name, "{{.State.ExitCode}}") == "0"


async def test_two_replicas_in_separate_containers_share_tool_data(system: ContainerSystem) -> None:
    """Two containers of one agent with read-only root filesystems and no volume: a return opened
    through one replica is seen through the other (tool data lives in the shared store on NATS)."""
    for name in ("triage", "auth"):
        system.agent(name).wait_log('"msg": "agent ready"')
    first = system.agent("returns", "returns-a", read_only=True)
    first.wait_log('"msg": "agent ready"')
    system.edge()
    await talk.refund(system.client(), "A1001", confirm=True)

    second = system.agent("returns", "returns-b", read_only=True)
    second.wait_log('"msg": "agent ready"')
    podman("stop", "--time", "30", first.name, timeout=60)  # from now on only the second replica answers
    for container in (first, second):
        assert inspect(container.name, "{{range .Mounts}}{{.Destination}} {{end}}") == ""
        assert inspect(container.name, "{{.HostConfig.ReadonlyRootfs}}") == "true"
    said = await talk.refund(system.client(), "A1001", confirm=False)
    assert "already returned" in said, said
