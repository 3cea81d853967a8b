"""Tracing set-up from the standard ``OTEL_*`` variables, and W3C trace context in NATS headers.

``setup_tracing(service)`` exports spans over OTLP/HTTP (protobuf) with a batch processor when an
endpoint is configured (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, or ``OTEL_EXPORTER_OTLP_ENDPOINT``
+ ``/v1/traces``). Without one, or with ``OTEL_TRACES_EXPORTER=none`` or ``OTEL_SDK_DISABLED=true``,
tracing is off: :func:`get_tracer` then hands out non-recording spans, and :func:`inject` adds no
header. The exporter's other settings (headers, timeout, compression, certificates), the sampler
(``OTEL_TRACES_SAMPLER``) and the batch processor (``OTEL_BSP_*``) come from the usual variables.
``OTEL_SERVICE_NAME`` overrides the service name given in code.

With OTLP as the only exporter, spans are recorded and exported by Switchboard's own light tracer
(:mod:`._recorder`: a few microseconds a span instead of the SDK's ~50); ``SWITCHBOARD_TRACER=sdk`` uses the
SDK's tracer and batch processor instead (as does the ``console`` exporter). Both read the same variables.

The tracer from :func:`get_tracer` may be taken at import time: it follows later calls to
``setup_tracing``/``shutdown_tracing``. The SDK's global provider is left alone, so a process
(or a test) can set tracing up again.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from .. import __version__
from . import _recorder, names

if TYPE_CHECKING:
    import requests
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

log = logging.getLogger(__name__)

TRACER_ENV = "SWITCHBOARD_TRACER"
"""``light`` (the default) or ``sdk``: which tracer records spans exported over OTLP."""
CONTENT_ENV = "SWITCHBOARD_TRACE_CONTENT"
"""Set to ``1`` to put conversation content on spans (off by default)."""
_TRUE = {"1", "true", "yes", "on"}
_PROTOCOL = "http/protobuf"


class _Tracer(trace.Tracer):
    """The process's tracer: delegates to the provider ``setup_tracing`` made, or to a no-op one."""

    def __init__(self) -> None:
        self.delegate: trace.Tracer = trace.NoOpTracer()

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        return self.delegate.start_span(
            name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception
        )

    # Returns the delegate's own context manager, so it behaves exactly like the SDK's (``with``
    # and decorator use); the API's return type is private, hence ``Any``.
    def start_as_current_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Any:
        return self.delegate.start_as_current_span(
            name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception, end_on_exit
        )


_tracer = _Tracer()
_shutdown: Callable[[], object] | None = None
"""Flushes and stops the running set-up; ``None`` while tracing is off."""
_atexit_registered = False


def get_tracer() -> trace.Tracer:
    """The process's tracer (safe to keep in a module global: it follows ``setup_tracing``)."""
    return _tracer


def active_tracer() -> trace.Tracer:
    """The tracer ``setup_tracing`` made (a no-op one while tracing is off), for the span helpers' own use:
    unlike :func:`get_tracer`'s, it does not follow later set-ups."""
    return _tracer.delegate


_parent_based = False
"""Whether the sampler follows the parent's decision (the default, ``parentbased_*``)."""


def tracing_enabled() -> bool:
    """Whether spans are being recorded and exported."""
    return _shutdown is not None


def sampled_out(context: Context | None = None) -> bool:
    """Whether a span started now (as a child of ``context``, or of the current span) would not be recorded
    because its parent was not sampled and the sampler follows the parent: the span helpers then skip the
    SDK altogether (a trace nobody samples costs next to nothing)."""
    if not _parent_based:
        return False
    parent = trace.get_current_span(context).get_span_context()
    return parent.is_valid and not parent.trace_flags.sampled


def setup_tracing(service_name: str, *, resource_attributes: Mapping[str, str] | None = None) -> None:
    """Configure tracing for this process from the ``OTEL_*`` variables (see the module docstring).

    ``resource_attributes`` are added to the resource, e.g. ``{"service.instance.id": replica}``.
    Calling it again replaces the previous set-up (flushing it first).
    """
    global _shutdown, _atexit_registered, _parent_based
    shutdown_tracing()
    exporters = _exporters_from_env()
    if not exporters:
        log.debug("tracing disabled", extra={"service_name": service_name})
        return
    attributes: dict[str, str] = {names.SERVICE_NAMESPACE: "switchboard", **(resource_attributes or {})}
    attributes[names.SERVICE_NAME] = os.environ.get("OTEL_SERVICE_NAME") or service_name
    resource = Resource.create(attributes)
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)  # reads the sampler from OTEL_*
    tracer_kind = (os.environ.get(TRACER_ENV) or "light").strip().lower()
    if tracer_kind not in ("light", "sdk"):
        log.warning("unknown %s; using light", TRACER_ENV, extra={"tracer": tracer_kind})
    if tracer_kind != "sdk" and len(exporters) == 1 and not isinstance(exporters[0], ConsoleSpanExporter):
        batcher = _recorder.Batcher(
            cast("OTLPSpanExporter", exporters[0]),
            resource,
            ("switchboard", __version__),
            schedule_delay_s=_env_int("OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000,
            max_queue=_env_int("OTEL_BSP_MAX_QUEUE_SIZE", 2048),
            max_batch=_env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512),
        )
        _tracer.delegate = _recorder.Tracer(provider.sampler, batcher)
        _shutdown = batcher.shutdown
    else:
        for exporter in exporters:
            provider.add_span_processor(BatchSpanProcessor(exporter))
        _tracer.delegate = provider.get_tracer("switchboard", __version__)
        _shutdown = provider.shutdown
    _parent_based = isinstance(provider.sampler, ParentBased)
    if not _atexit_registered:
        atexit.register(shutdown_tracing)
        _atexit_registered = True
    log.info("tracing enabled", extra={"exporters": [type(e).__name__ for e in exporters], "tracer": tracer_kind})


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        value = int(raw) if raw else default
    except ValueError:
        log.warning("ignoring a non-integer setting", extra={"setting": name, "value": raw})
        return default
    return value if value > 0 else default


def shutdown_tracing(timeout_s: float = 5.0) -> None:
    """Export the spans still queued and stop tracing, blocking the caller at most ``timeout_s``.

    The SDK's own flush ignores its timeout (an unreachable collector holds it for the exporter's
    retries), so the export runs on a daemon thread that is abandoned after ``timeout_s``, losing
    what it had not sent. Safe to call twice or when tracing is off.
    """
    global _shutdown, _parent_based
    stop, _shutdown = _shutdown, None
    _parent_based = False
    _tracer.delegate = trace.NoOpTracer()
    if stop is None:
        return
    stopper = threading.Thread(target=stop, name="switchboard-tracing-shutdown", daemon=True)
    stopper.start()
    stopper.join(timeout_s)
    if stopper.is_alive():
        log.warning("tracing shutdown timed out; unexported spans are lost", extra={"timeout_s": timeout_s})


def _exporters_from_env() -> list[SpanExporter]:
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    kinds = {k.strip().lower() for k in (env.get("OTEL_TRACES_EXPORTER") or "otlp").split(",") if k.strip()}
    if "none" in kinds:
        return []
    out: list[SpanExporter] = []
    if "console" in kinds:
        out.append(ConsoleSpanExporter())
    if "otlp" in kinds and (env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
        out.append(_otlp_exporter())
    for unknown in sorted(kinds - {"otlp", "console"}):
        log.warning("unsupported OTEL_TRACES_EXPORTER ignored", extra={"exporter": unknown})
    return out


def _otlp_exporter() -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol and protocol.strip() != _PROTOCOL:
        log.warning("only OTLP over http/protobuf is supported; using it", extra={"protocol": protocol})
    return OTLPSpanExporter(session=_export_session(), certificate_file=_env_ca_bundle())


def _export_session() -> requests.Session:
    """A ``requests`` session that reads the environment once, here, instead of at every export: with
    ``trust_env`` on, each POST scans the environment for proxies and looks for a ``.netrc``, about a quarter
    of the export thread's CPU. The proxies for the collector's URL are resolved now and kept."""
    import requests
    from requests.utils import get_environ_proxies

    session = requests.Session()
    session.trust_env = False
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    session.proxies.update(get_environ_proxies(endpoint) if endpoint else {})
    return session


def _env_ca_bundle() -> str | None:
    """``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``, which a session that does not trust the environment would
    ignore (the ``OTEL_EXPORTER_OTLP_*CERTIFICATE`` variables still come first)."""
    if os.environ.get("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE") or os.environ.get("OTEL_EXPORTER_OTLP_CERTIFICATE"):
        return None
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None


# --- propagation -------------------------------------------------------------------------------


class _HeaderGetter(Getter[Mapping[str, str]]):
    """Reads NATS headers (a plain dict), ignoring the case of header names."""

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            lower = key.lower()
            value = next((v for k, v in carrier.items() if k.lower() == lower), None)
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


_PROPAGATOR = TraceContextTextMapPropagator()
_GETTER = _HeaderGetter()


H = TypeVar("H", bound=MutableMapping[str, str])


def inject(headers: H, context: Context | None = None) -> H:
    """Add ``traceparent``/``tracestate`` of the current span (or ``context``) to ``headers``.

    Mutates and returns ``headers``; adds nothing when there is no valid span (tracing off).
    """
    _PROPAGATOR.inject(headers, context=context)
    return headers


def extract(headers: Mapping[str, str] | None) -> Context:
    """The context carried by ``headers``: pass it as a span's ``context=`` to make it a child
    of the sender's span. Without trace headers, a fresh context (the span becomes a root)."""
    if not headers:
        return Context()
    parent = headers.get("traceparent")
    if parent is not None and "tracestate" not in headers:  # what Switchboard's own messages carry
        remote = _version_00(parent)
        if remote is not None:
            return trace.set_span_in_context(trace.NonRecordingSpan(remote), Context())
    return _PROPAGATOR.extract(headers, getter=_GETTER)


_HEX = frozenset("0123456789abcdef")
_TRACE_FLAGS = (trace.TraceFlags(0), trace.TraceFlags(1))


def _version_00(value: str) -> trace.SpanContext | None:
    """A well-formed version-00 ``traceparent`` (``00-<32 hex>-<16 hex>-<2 hex>``), parsed without the
    propagator's regular expression; ``None`` leaves anything else (other versions, odd spacing) to it."""
    if len(value) != 55 or value[:3] != "00-" or value[35] != "-" or value[52] != "-":
        return None
    trace_hex, span_hex, flags_hex = value[3:35], value[36:52], value[53:]
    if not _HEX.issuperset(trace_hex) or not _HEX.issuperset(span_hex) or not _HEX.issuperset(flags_hex):
        return None
    trace_id, span_id, flags = int(trace_hex, 16), int(span_hex, 16), int(flags_hex, 16)
    if not trace_id or not span_id:
        return None
    return trace.SpanContext(trace_id, span_id, True, _TRACE_FLAGS[flags & 1])


def content_enabled() -> bool:
    """Whether conversation content may go on spans (``SWITCHBOARD_TRACE_CONTENT=1``)."""
    return os.environ.get(CONTENT_ENV, "").strip().lower() in _TRUE
