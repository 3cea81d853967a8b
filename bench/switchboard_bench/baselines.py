"""Same-run yardsticks: raw NATS request/reply between two processes, the Agents SDK in-process."""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from typing import Any

import agents_sdk_baseline as sdk
import nats

from .common import BENCH, BenchError, client_gc_paused, progress
from .stats import summarize


async def nats_baseline(nats_url: str, requests: int, warmup_n: int = 200) -> dict[str, Any]:
    """Sequential request/reply to an echo responder in another process, on the stack's nats-server."""
    subject = "bench.echo"
    responder = await asyncio.create_subprocess_exec(
        sys.executable, str(BENCH / "nats_echo.py"), nats_url, subject, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert responder.stdout is not None
        line = await asyncio.wait_for(responder.stdout.readline(), 30)
        if line.strip() != b"ready":
            raise BenchError(f"NATS echo responder did not start: {line!r}")
        nc = await nats.connect(nats_url, name="bench-requester")
        try:
            payload = secrets.token_bytes(96)
            samples = []
            with client_gc_paused():
                for i in range(warmup_n + requests):
                    t0 = time.perf_counter()
                    reply = await nc.request(subject, payload, timeout=5)
                    ms = (time.perf_counter() - t0) * 1000
                    if reply.data != payload:
                        raise BenchError("NATS echo returned a different payload")
                    if i >= warmup_n:
                        samples.append(ms)
        finally:
            await nc.close()
    finally:
        responder.terminate()
        await responder.wait()
    stats = summarize(samples)
    progress(f"nats: {requests} sequential requests, p50 {stats['p50_ms']:.3f} ms, p99 {stats['p99_ms']:.3f} ms")
    return {"latency": stats, "payload_bytes": len(payload)}


async def sdk_baseline(runs: int) -> dict[str, Any]:
    progress(f"agents-sdk: {runs} plain + {runs} handoff runs in-process (fake zero-latency model)")
    res = await sdk.measure(runs=runs, concurrency=200, warmup=min(200, runs))
    p, h = res["plain"], res["handoff"]
    progress(
        f"agents-sdk {res['sdk_version']}: plain p50 {p['p50_ms']:.3f} ms, handoff p50 {h['p50_ms']:.3f} ms, "
        f"adds {res['handoff_added_ms_p50']:.3f} ms"
    )
    return res
