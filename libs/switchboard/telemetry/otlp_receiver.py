"""A tiny OTLP/HTTP trace receiver: a test double (and dev tool) that collects exported spans.

Serves ``POST /v1/traces`` (protobuf ``ExportTraceServiceRequest``, optionally gzip- or
deflate-encoded) on 127.0.0.1 and keeps every span as a :class:`ReceivedSpan`. Point a process at
it with ``OTEL_EXPORTER_OTLP_ENDPOINT=<receiver.endpoint>``, then ``await receiver.wait_for(...)``.

It runs on the event loop of whoever starts it: in a process that exports to it itself, let the
loop run while spans are exported (``await asyncio.to_thread(shutdown_tracing)``, not a blocking
call on the loop).

Manual use: ``python -m switchboard.telemetry.otlp_receiver --port 4318`` prints spans as they come.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import signal
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..local.asgi_server import InProcessServer

_PROTOBUF = "application/x-protobuf"
_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_STATUS = {Status.STATUS_CODE_UNSET: "unset", Status.STATUS_CODE_OK: "ok", Status.STATUS_CODE_ERROR: "error"}


@dataclass(frozen=True)
class ReceivedEvent:
    """One event of a received span."""

    name: str
    attributes: dict[str, Any]
    time_ns: int


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the receiver decoded it (ids in lowercase hex)."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    """None for a root span."""
    name: str
    service_name: str | None
    """The ``service.name`` resource attribute."""
    attributes: dict[str, Any]
    start_ns: int
    end_ns: int
    kind: str = "internal"
    """``internal``, ``server``, ``client``, ``producer`` or ``consumer``."""
    status: str = "unset"
    """``unset``, ``ok`` or ``error``."""
    status_message: str = ""
    events: list[str] = field(default_factory=list)
    """Names of the span's events (e.g. ``exception``)."""
    event_details: list[ReceivedEvent] = field(default_factory=list)
    """The span's events with their attributes, in the order of ``events``."""
    resource: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


SpansPredicate = Callable[[list["ReceivedSpan"]], bool]


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return _attributes(v.kvlist_value.values)
    return getattr(v, kind)


def _attributes(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kv: KeyValue
    for kv in kvs:
        out[kv.key] = _value(kv.value)
    return out


def decode(body: bytes) -> list[ReceivedSpan]:
    """The spans of one serialized ``ExportTraceServiceRequest``."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    out: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        service = resource.get("service.name")
        for scope_spans in resource_spans.scope_spans:
            s: Span
            for s in scope_spans.spans:
                out.append(
                    ReceivedSpan(
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex() or None,
                        name=s.name,
                        service_name=service if isinstance(service, str) else None,
                        attributes=_attributes(s.attributes),
                        start_ns=s.start_time_unix_nano,
                        end_ns=s.end_time_unix_nano,
                        kind=_KINDS.get(s.kind, "unspecified"),
                        status=_STATUS.get(s.status.code, "unset"),
                        status_message=s.status.message,
                        events=[e.name for e in s.events],
                        event_details=[
                            ReceivedEvent(e.name, _attributes(e.attributes), e.time_unix_nano) for e in s.events
                        ],
                        resource=resource,
                    )
                )
    return out


class OTLPReceiver(InProcessServer):
    """Collects spans exported over OTLP/HTTP; ``endpoint`` goes into ``OTEL_EXPORTER_OTLP_ENDPOINT``."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, on_span: Callable[[ReceivedSpan], None] | None = None
    ) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        """Export requests received (rejected ones included)."""
        self.encodings: set[str] = set()
        """Every ``Content-Encoding`` an export request came with (``""`` for none)."""
        self._on_span = on_span
        self._changed = asyncio.Condition()
        self.app = Starlette(routes=[Route("/v1/traces", self._traces, methods=["POST"])])
        super().__init__(self.app, host=host, port=port)

    @property
    def endpoint(self) -> str:
        """Base URL, for ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def traces_endpoint(self) -> str:
        """Full URL, for ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``."""
        return f"{self.endpoint}/v1/traces"

    def named(self, name: str) -> list[ReceivedSpan]:
        """The spans received so far called ``name``, in arrival order."""
        return [s for s in self.spans if s.name == name]

    def clear(self) -> None:
        self.spans.clear()

    async def wait_for(self, predicate: SpansPredicate, timeout_s: float = 5.0) -> list[ReceivedSpan]:
        """Wait until ``predicate(spans received so far)`` holds; return those spans.

        Raises ``TimeoutError`` (naming the spans received) if it does not hold within ``timeout_s``.
        """
        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(lambda: predicate(list(self.spans)))
        except TimeoutError:
            got = sorted({s.name for s in self.spans})
            raise TimeoutError(f"spans did not arrive within {timeout_s}s; received {len(self.spans)}: {got}") from None
        return list(self.spans)

    async def wait_for_span(self, match: str | Callable[[ReceivedSpan], bool], timeout_s: float = 5.0) -> ReceivedSpan:
        """Wait for the first span named ``match`` (or satisfying it) and return it."""
        test = (lambda s: s.name == match) if isinstance(match, str) else match
        spans = await self.wait_for(lambda got: any(test(s) for s in got), timeout_s)
        return next(s for s in spans if test(s))

    async def _traces(self, request: Request) -> Response:
        self.requests += 1
        if request.headers.get("content-type", "").split(";")[0].strip() != _PROTOBUF:
            return Response(f"only {_PROTOBUF} is supported", status_code=415)
        body = await request.body()
        try:
            encoding = request.headers.get("content-encoding", "").lower()
            self.encodings.add(encoding)
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            spans = decode(body)
        except (DecodeError, OSError, zlib.error) as exc:
            return Response(f"undecodable export request: {exc}", status_code=400)
        async with self._changed:
            self.spans.extend(spans)
            self._changed.notify_all()
        if self._on_span is not None:
            for span in spans:
                self._on_span(span)
        return Response(ExportTraceServiceResponse().SerializeToString(), media_type=_PROTOBUF)


def _print_span(span: ReceivedSpan) -> None:
    print(
        json.dumps(
            {
                "service": span.service_name, "name": span.name, "trace_id": span.trace_id,
                "span_id": span.span_id, "parent": span.parent_span_id,
                "ms": round(span.duration_s * 1000, 3), "status": span.status, "attributes": span.attributes,
            },
            default=str,
        ),
        flush=True,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Run a receiver that prints each span as one JSON line, until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4318)
    args = parser.parse_args(argv)

    async def run() -> None:
        async with OTLPReceiver(host=args.host, port=args.port, on_span=_print_span) as receiver:
            stop = asyncio.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                asyncio.get_running_loop().add_signal_handler(sig, stop.set)
            print(f"OTLP receiver: OTEL_EXPORTER_OTLP_ENDPOINT={receiver.endpoint} (Ctrl-C to stop)", flush=True)
            await stop.wait()

    asyncio.run(run())


if __name__ == "__main__":
    main()
