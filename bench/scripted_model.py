"""Scripted model for the supervisor-throughput phase: an OpenAI-compatible server in its own process.

The supervisor (whose system prompt names the "bench expert") is answered after ``DELAY_MS``, as a
latency-bound model would; any other caller at once. Run in its own process so that its event loop
and CPU time are not the load generator's.

python bench/scripted_model.py DELAY_MS   (prints "ready <base_url>" once serving; on SIGTERM it
                                           prints "served <supervisor requests> <other requests>")
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

from switchboard.testing import ScriptedOpenAIServer, ScriptedReply

try:
    import uvloop
except ImportError:
    uvloop = None

ANSWER = "Checked: your account is fine, the last payment was received on time and there is nothing more to pay now."
"""The scripted supervisor's answer (20 words); differs from the offline one, so replies prove which model spoke."""
OTHER = "Scripted reply for an agent the benchmark did not expect to call the model."
MARKER = "bench expert"
"""In the supervisor's instructions (bench/scenarios/bench_supervisor/scenario.yaml)."""


def is_supervisor(body: dict[str, Any]) -> bool:
    messages = body.get("messages") or [{}]
    return MARKER in str(messages[0].get("content", ""))


async def serve(delay_s: float) -> None:
    counts = {"supervisor": 0, "other": 0}
    server: ScriptedOpenAIServer

    def respond(body: dict[str, Any]) -> ScriptedReply:
        server.requests.clear()  # the server records every body; the benchmark needs none of them
        if is_supervisor(body):
            counts["supervisor"] += 1
            return ScriptedReply(text=ANSWER, delay_s=delay_s)
        counts["other"] += 1
        return ScriptedReply(text=OTHER)

    server = ScriptedOpenAIServer(responder=respond, model="bench-expert")
    async with server:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"ready {server.base_url}", flush=True)
        await stop.wait()
    print(f"served {counts['supervisor']} {counts['other']}", flush=True)


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=uvloop.new_event_loop if uvloop else None) as runner:
        runner.run(serve(float(sys.argv[1]) / 1000))
