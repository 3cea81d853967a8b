"""OTLP/HTTP trace receiver for the tracing phases, in a process of its own: counts spans by name.

python bench/otlp_sink.py   (prints "ready <endpoint>" once listening; SIGTERM/SIGINT stop it)

``POST /v1/traces`` takes OTLP protobuf (plain, gzip or deflate) as a collector would; ``GET /counts`` on the
same port answers ``{"spans": n, "requests": r, "by_name": {name: n}}``. It stands in for a collector that
would run on other machines, yet here it shares the 2 cores with the stacks being measured, so it does the
least it can: it decodes each request with the protobuf library's C parser and counts names, without
building a Python object per span as Switchboard's receiver test double
(``switchboard.telemetry.otlp_receiver``) does for the tests. Its own CPU is reported beside the figures.
"""

from __future__ import annotations

import asyncio
import gzip
import signal
import zlib
from collections import Counter

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from switchboard.local.asgi_server import InProcessServer

try:
    import uvloop
except ImportError:
    uvloop = None

_PROTOBUF = "application/x-protobuf"
_OK = ExportTraceServiceResponse().SerializeToString()


async def serve() -> None:
    by_name: Counter[str] = Counter()
    requests = 0

    async def traces(request: Request) -> Response:
        nonlocal requests
        requests += 1
        body = await request.body()
        encoding = request.headers.get("content-encoding", "").lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            export = ExportTraceServiceRequest.FromString(body)
        except (DecodeError, OSError, zlib.error) as exc:
            return Response(f"undecodable export request: {exc}", status_code=400)
        for resource_spans in export.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                by_name.update(s.name for s in scope_spans.spans)
        return Response(_OK, media_type=_PROTOBUF)

    async def counts(_: Request) -> JSONResponse:
        return JSONResponse({"spans": sum(by_name.values()), "requests": requests, "by_name": by_name})

    app = Starlette(routes=[Route("/v1/traces", traces, methods=["POST"]), Route("/counts", counts)])
    async with InProcessServer(app) as server:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print("ready", f"http://{server.host}:{server.port}", flush=True)
        await stop.wait()


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=uvloop.new_event_loop if uvloop else None) as runner:
        runner.run(serve())
