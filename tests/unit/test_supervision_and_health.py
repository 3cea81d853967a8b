"""The restart policy's backoff, the agents' health server routing, and whose readiness a probe counts
(``tests/system/test_launcher.py`` runs the real services)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from switchboard.local.ports import free_port
from switchboard.local.stack import Proc, Stack, http_ok
from switchboard.local.supervision import RestartPolicy, Supervised, Supervisor
from switchboard.runtime.health import HealthServer


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    policy = RestartPolicy(initial_backoff_s=0.5, max_backoff_s=4.0, multiplier=2.0, jitter=0.2)
    rng = random.Random(7)
    for crashes, full in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0), (40, 4.0), (10_000, 4.0)]:
        waits = [policy.backoff_s(crashes, rng) for _ in range(200)]
        assert all(full * 0.8 <= w <= full for w in waits), (crashes, min(waits), max(waits))
        assert max(waits) - min(waits) > full * 0.1  # jittered, not constant


def test_a_crash_looping_process_waits_the_cap_however_few_of_its_crashes_are_recent() -> None:
    """Its older crashes leave the window while it keeps crashing: without this it was retried every 7-16 s."""
    policy = RestartPolicy()
    rng = random.Random(3)
    waits = [policy.backoff_s(crashes, rng, crash_looping=True) for crashes in (1, 3, 5, 7) for _ in range(50)]
    assert min(waits) >= 24 and max(waits) <= 30
    assert policy.backoff_s(1, rng) <= 0.5  # not looping: the first restart is quick


def test_the_supervisor_keeps_a_crash_looping_process_at_the_cap() -> None:
    """A process that dies a second after each start, over ten minutes of a fake clock."""
    clock = [1000.0]

    class Dying:
        name, pid, returncode = "agent:x", 1, 1
        started_at = -1e9

        def alive(self) -> bool:
            return clock[0] - self.started_at < 1.0

    proc, events = Dying(), []

    def restart(p: Supervised) -> None:
        proc.started_at = clock[0]

    supervisor = Supervisor(
        lambda: [proc], restart, on_event=lambda kind, f: events.append((kind, f)), seed=1, clock=lambda: clock[0]
    )
    while clock[0] < 1600:
        supervisor._check(proc)  # noqa: SLF001  (the thread's step, on the fake clock)
        clock[0] += 0.1
    kinds = [kind for kind, _ in events]
    looping = kinds.index("crash_loop")
    waits = [f["backoff_s"] for kind, f in events[looping:] if kind == "crashed"]
    assert len(waits) >= 15 and all(24 <= w <= 30 for w in waits), waits


def test_a_policy_whose_cap_is_below_its_start_is_refused() -> None:
    with pytest.raises(ValidationError, match="max_backoff_s"):
        RestartPolicy(initial_backoff_s=5, max_backoff_s=1)


def test_health_routes() -> None:
    reason: list[str | None] = ["nats not connected"]
    server = HealthServer("127.0.0.1", 0, lambda: reason[0], lambda: b"# metrics\n")
    assert server.respond("GET", "/healthz")[0] == 200
    status, ctype, body = server.respond("GET", "/readyz")
    assert (status, ctype, json.loads(body)) == (503, "application/json", {"status": "not_ready", "reason": reason[0]})
    reason[0] = None
    assert server.respond("GET", "/readyz")[::2] == (200, b'{"status": "ready"}')
    status, ctype, body = server.respond("GET", "/metrics")
    assert (status, body) == (200, b"# metrics\n") and ctype.startswith("text/plain")
    assert server.respond("GET", "/nothing")[0] == 404
    assert server.respond("POST", "/readyz")[0] == 405


async def test_readiness_counts_only_an_answer_from_the_process_that_was_given_the_port() -> None:
    """A service whose port another process bound first dies with EADDRINUSE; the launcher's probe of that
    port then reaches the other process, whose 200 must not make the dead one count as ready."""
    server = HealthServer("127.0.0.1", free_port(), lambda: None, lambda: b"")
    port = await server.start()
    idle = [sys.executable, "-c", "import sys; sys.stdin.read()"]  # lives until killed
    child = await asyncio.to_thread(subprocess.Popen, idle, stdin=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}/readyz"
        given = Proc("agent:returns", [], {}, url, child)  # the port was given to the child
        assert not await asyncio.to_thread(given.is_ready)
        assert await asyncio.to_thread(http_ok, url, pid=os.getpid())  # the process that holds it is ready
        assert await asyncio.to_thread(http_ok, url)  # and a probe that names no process takes any answer
    finally:
        child.kill()
        await asyncio.to_thread(child.communicate)  # reaps it and closes its stdin
        await server.stop()


def test_a_stack_keeping_the_latest_lines_holds_a_bounded_number_of_them(tmp_path: Path) -> None:
    """``switchboard run`` serves for hours: what it keeps of a process's output must not grow with it."""
    (tmp_path / "log").mkdir()
    stack = Stack(tmp_path, api_key="k", keep_lines=100)
    child = subprocess.Popen(
        [sys.executable, "-c", "for i in range(5000): print(i)"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    proc = Proc("agent:chatty", [], {}, "", child)
    held: list[int] = []
    proc.lines = _Watched(held)
    stack._pump(proc, child)  # reads to the end of the child's output
    assert child.wait(10) == 0
    assert max(held) <= 200, max(held)  # never more than twice what it keeps
    assert proc.lines[-100:] == [str(i) for i in range(4900, 5000)]  # the latest ones, in order
    assert (tmp_path / "log" / "agent-chatty.log").read_text().count("\n") == 5000  # the log file has them all


class _Watched(list[str]):
    """A list that notes its length after every append."""

    def __init__(self, held: list[int]) -> None:
        super().__init__()
        self.held = held

    def append(self, line: str) -> None:
        super().append(line)
        self.held.append(len(self))
