"""Paths, workload texts and small helpers every part of the benchmark shares."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

BENCH = Path(__file__).resolve().parent.parent
"""The bench folder (scenarios, results, the baselines' helper scripts)."""
ROOT = BENCH.parent
SCENARIOS = BENCH / "scenarios"
SCENARIO = str(SCENARIOS / "bench")
"""By path: by name, ``bench`` would resolve to this very folder when the cwd is the repo root."""
SUPERVISOR_SCENARIO = str(SCENARIOS / "bench_supervisor")
PLAIN_TEXT = "Hi, what are your opening hours?"
HANDOFF_TEXT = "I want a refund"
DIRECT_TEXT = "hello"
"""bench_supervisor: answered by the front agent itself."""
CONSULT_TEXT = "my account please"
"""bench_supervisor: a must_consult word, so the platform consults without asking the front agent's model."""
CONSULT_TURNS_PER_SESSION = 10
"""Supervisor-throughput callers move to a fresh session after this many turns (the history stays short)."""
NO_BREAKER = 1_000_000
"""SWITCHBOARD_BREAKER_THRESHOLD of the edge whose breaker must not open (supervisor-throughput phase)."""
TURN_TIMEOUT_S = 30.0
OPEN_PARALLEL = 50
"""WebSocket handshakes in flight at once while opening many sessions (not timed)."""
README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"

T = TypeVar("T")
_t0 = time.monotonic()


def progress(msg: str) -> None:
    print(f"[{time.monotonic() - _t0:6.1f}s] {msg}", flush=True)


@contextmanager
def client_gc_paused() -> Iterator[None]:
    """No garbage collection in the load generator while it times: its gen-2 collections (~100 ms with
    the Agents SDK and openai imported) would show up as platform latency. The system's own processes
    collect garbage as usual."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class BenchError(RuntimeError):
    """The system answered wrongly or not at all: no figures are produced."""


async def bounded(factories: Iterable[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """Run the coroutines at most ``limit`` at a time; the first failure cancels the rest."""
    gate = asyncio.Semaphore(limit)

    async def one(factory: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await factory()

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(one(f)) for f in factories]
    return [t.result() for t in tasks]


@contextmanager
def helper_process(script: str, *args: str) -> Iterator[tuple[str, int]]:
    """``bench/<script>`` in its own process (its event loop and CPU are not the load generator's): yields
    the address it prints when ready (``ready <address>``) and its pid; on exit it is terminated, and what
    it printed at the end is shown."""
    proc = subprocess.Popen([sys.executable, str(BENCH / script), *args], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "ready":
            raise BenchError(f"{script} did not start: {line!r}")
        yield line[1], proc.pid
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
        if out.strip():
            progress(f"{script}: {out.strip()}")
