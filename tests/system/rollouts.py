"""Helpers of the rollout system tests: the CLI as an operator runs it, the edge's view, one-turn sessions."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from switchboard.local.stack import Stack

from .client import Reply, open_session, say, sdk_client
from .stacks import probe


def rollout_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """``switchboard rollout ...`` in its own process, against the stack's NATS and scenario."""
    return subprocess.run(
        [sys.executable, "-m", "switchboard", "rollout", *args], env=stack.env(), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def edge_rollouts(stack: Stack) -> dict[str, Any]:
    status, info = probe(f"{stack.edge_url}/v1/switchboard/info", key=stack.api_key)
    assert status == 200, (status, info)
    assert info["rollouts_watch"]["following"], info["rollouts_watch"]  # the view is current, not stale
    rollouts: dict[str, Any] = info["rollouts"]
    return rollouts


async def wait_edge_sees(stack: Stack, agent: str, *, state: str | None, weight: int | None = None) -> None:
    """Poll the edge until its live view of ``agent``'s rollout matches (``state=None``: no rollout)."""
    deadline = time.monotonic() + 10
    while True:
        current = await asyncio.to_thread(edge_rollouts, stack)
        r = current.get(agent)
        if (r is None and state is None) or (
            r is not None and r["state"] == state and (weight is None or r["weight"] == weight)
        ):
            return
        assert time.monotonic() < deadline, f"edge still shows {r} for {agent}"
        await asyncio.sleep(0.05)  # ok-sleep: poll interval


@dataclass
class Caller:
    """One conversation: its session id and every reply it got."""

    session_id: str = ""
    replies: list[Reply] = field(default_factory=list)
    said: list[str] = field(default_factory=list)


async def converse(stack: Stack, caller: Caller, lines: list[str], *, port: int | None = None) -> Caller:
    """Say ``lines`` in one connection (a new session, or a resume of ``caller.session_id``)."""
    extra = {"session_id": caller.session_id} if caller.session_id else {}
    async with sdk_client(stack, port=port).realtime.connect(model="switchboard", extra_query=extra) as conn:
        info = await open_session(conn)
        caller.session_id = info["session_id"]
        for line in lines:
            caller.said.append(line)
            caller.replies.append(await say(conn, line))
    return caller


async def many(
    stack: Stack, callers: list[Caller], lines: list[str], *, port: int | None = None, limit: int = 16
) -> None:
    gate = asyncio.Semaphore(limit)

    async def one(c: Caller) -> None:
        async with gate:
            await converse(stack, c, lines, port=port)

    await asyncio.gather(*(one(c) for c in callers))


@dataclass
class Traffic:
    """Conversations that keep talking (one turn after another) until stopped; each reply is tagged with
    the phase that was current when its turn started."""

    stack: Stack
    callers: list[Caller]
    phase: str = "start"
    phases: dict[str, list[str]] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._talk(c)) for c in self.callers]

    async def _talk(self, caller: Caller) -> None:
        tags = self.phases.setdefault(str(id(caller)), [])
        async with sdk_client(self.stack).realtime.connect(model="switchboard") as conn:
            caller.session_id = (await open_session(conn))["session_id"]
            while not self.stop.is_set():
                line = f"hello number {len(caller.said)}"
                tag = self.phase
                caller.said.append(line)
                caller.replies.append(await say(conn, line))
                tags.append(tag)

    def tags(self, caller: Caller) -> list[str]:
        return self.phases.get(str(id(caller)), [])

    async def wait_turns_in(self, phase: str, turns: int, timeout_s: float = 60) -> None:
        """Until every caller has had ``turns`` turns that started in ``phase``."""
        deadline = time.monotonic() + timeout_s
        while any(self.tags(c).count(phase) < turns for c in self.callers):
            for t in self.tasks:
                if t.done():
                    t.result()  # a conversation that failed fails the test here
            assert time.monotonic() < deadline, f"callers stuck in phase {phase}"
            await asyncio.sleep(0.05)  # ok-sleep: poll interval

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)
