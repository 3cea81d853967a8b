"""OTLP/HTTP trace receiver for the tracing phases, in a process of its own: counts spans by name.

python bench/otlp_sink.py   (prints "ready <endpoint>" once listening; SIGTERM/SIGINT stop it)

It is Switchboard's receiver test double (``switchboard.telemetry.otlp_receiver.OTLPReceiver``: every
export request is decoded span by span), without keeping the spans: ``GET /counts`` on the same port
answers ``{"spans": n, "requests": r, "by_name": {name: n}}``. Running it apart keeps the decoding off
the load generator's event loop.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter

from starlette.requests import Request
from starlette.responses import JSONResponse

from switchboard.telemetry.otlp_receiver import OTLPReceiver, ReceivedSpan

try:
    import uvloop
except ImportError:
    uvloop = None


async def serve() -> None:
    by_name: Counter[str] = Counter()

    def count(span: ReceivedSpan) -> None:
        by_name[span.name] += 1

    receiver = OTLPReceiver(on_span=count)

    async def counts(_: Request) -> JSONResponse:
        receiver.clear()  # counted already; the receiver would otherwise keep every span
        return JSONResponse({"spans": sum(by_name.values()), "requests": receiver.requests, "by_name": by_name})

    receiver.app.add_route("/counts", counts, methods=["GET"])
    async with receiver:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print("ready", receiver.endpoint, flush=True)
        while not stop.is_set():
            receiver.clear()
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=uvloop.new_event_loop if uvloop else None) as runner:
        runner.run(serve())
