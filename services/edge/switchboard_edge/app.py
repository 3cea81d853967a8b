"""The realtime edge: FastAPI app speaking the OpenAI Realtime protocol at ``/v1/realtime``."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse
from starlette.responses import Response

from switchboard.agents import Scenario, load_scenario
from switchboard.bus import Bus, StreamingClient, subjects
from switchboard.errors import ConfigError
from switchboard.guardrails.moderation import Moderator
from switchboard.models import check_realtime_keys
from switchboard.resilience import Breakers, RetryPolicy
from switchboard.rollout import RolloutTable, parse_weights
from switchboard.runtime.gc import freeze_startup_heap
from switchboard.runtime.health import PID_HEADER
from switchboard.schemas import SessionState
from switchboard.security.api_keys import KeyRing
from switchboard.settings import Settings
from switchboard.state import AuditLog, SessionStore, StateRetry
from switchboard.state.control import ControlAudit
from switchboard.telemetry import metrics_route, session_context, setup_tracing, shutdown_tracing

from .auth import Authenticator, Principal, Refusal, api_key_verifier
from .client_secrets import MAX_REQUEST_BYTES, BadRequest, ClientSecrets
from .configs import ConfigWatch
from .limits import CappedSession, KeyLimiter, Limits, end_revoked_sessions
from .orchestration import Conductor, ConsultStats, SupervisorConsults
from .origins import origin_allowed, parse_origins
from .protocol import error_event
from .session import EdgeDeps, check_session_config
from .signing import EdgeKeys, edge_bucket, shared_secret
from .takeover import TAKEOVER_CLOSE_CODE, TAKEOVER_ERROR_CODE, TAKEOVER_REASON, Takeovers
from .ws_transport import CoalescingWebSocketProtocol

log = logging.getLogger(__name__)

_KV_PROBE_TIMEOUT_S = 1.0
"""A readiness probe that waits longer than this for the session KV reports the edge not ready."""


PLATFORM_EVENTS_PARAM = "switchboard_events"
"""Query parameter opting a connection into ``switchboard.*`` server events (``?switchboard_events=1``)."""


def create_app(settings: Settings | None = None, scenario: Scenario | None = None) -> FastAPI:
    settings = settings or Settings()
    scenario = scenario or load_scenario(settings.scenario, settings.scenarios_dir)
    check_realtime_keys(scenario.config)  # an upstream (Realtime API) agent needs OPENAI_API_KEY: fail at start
    keys = KeyRing(settings.api_key_set, settings.api_keys_file)
    if not keys.configured:
        raise ConfigError(
            "no API keys: set SWITCHBOARD_API_KEYS_FILE (keys made by 'switchboard keys create') or, for "
            "development, SWITCHBOARD_API_KEYS; the edge refuses to start without them"
        )
    if not settings.api_key_set and settings.api_keys_file is not None and not settings.api_keys_file.is_file():
        log.warning(  # a typo in the path would refuse every client without a word
            "API key file not found: every client is refused until it is written",
            extra={"file": str(settings.api_keys_file)},
        )
    allowed_origins = parse_origins(settings.allowed_origins)
    limiter = KeyLimiter()
    config = scenario.config
    seed = parse_weights(settings.canary_weights)
    unknown = sorted(set(seed) - set(config.agent_names))
    if unknown:
        raise ConfigError(f"SWITCHBOARD_CANARY_WEIGHTS names agents the scenario does not have: {', '.join(unknown)}")
    authenticator = Authenticator({"api_key": api_key_verifier(keys)})  # client secrets join at start (they need NATS)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        setup_tracing("edge")
        bus = settings.bus("edge")
        if not await connected_unless_stopped(bus):  # a stop signal while NATS does not answer: nothing to undo
            log.info("edge stopped before NATS answered")
            yield
            return
        async with bus:
            client = StreamingClient(bus.nc)
            await client.start()
            audit = await AuditLog.open(bus.js, replicas=settings.js_replicas)
            store = await SessionStore.open(bus.js, replicas=settings.js_replicas, window=settings.history_window)
            rollouts = await RolloutTable.open(bus.js, replicas=settings.js_replicas, seed=seed)
            app.state.rollouts = rollouts
            app.state.edge_keys = EdgeKeys(
                *await shared_secret(settings.edge_secret.get_secret_value(), bus.js, replicas=settings.js_replicas)
            )
            app.state.client_secrets = await ClientSecrets.open(
                bus.js, app.state.edge_keys.client_secrets, keys, max_s=settings.client_secret_max_s,
                replicas=settings.js_replicas,
            )  # fmt: skip
            authenticator.verifiers["client_secret"] = app.state.client_secrets.verifier()
            entry = config.agent(config.entry_agent)
            breakers = Breakers(threshold=settings.breaker_threshold, cooldown_s=settings.breaker_cooldown_s)
            moderator = Moderator.for_scenario(config.guardrails, guard=breakers.guard)
            configs = ConfigWatch(
                await edge_bucket(bus.js, settings.js_replicas, StateRetry()),
                await ControlAudit.open(bus.js, replicas=settings.js_replicas),
            )
            app.state.deps = EdgeDeps(
                settings,
                Conductor(
                    config,
                    client,
                    audit,
                    hop_timeout_s=settings.hop_timeout_s,
                    breakers=breakers,
                    idle_timeout_s=settings.idle_timeout_s,
                    ack_timeout_s=settings.ack_timeout_s,
                    retry=RetryPolicy(attempts=settings.retry_attempts),
                    tracks=rollouts,
                    moderator=moderator,
                    configs=configs,
                    consults=SupervisorConsults(
                        client,
                        breakers,
                        fallback_agent=config.fallback_agent,
                        idle_timeout_s=settings.idle_timeout_s,
                        ack_timeout_s=settings.ack_timeout_s,
                    ),
                ),  # fmt: skip
                store,
                entry.instructions if entry else "",
            )
            app.state.deps.audit = audit
            app.state.bus = bus
            app.state.takeovers = Takeovers(bus.nc)
            revocations = asyncio.create_task(end_revoked_sessions(app.state.deps.sessions, keys))
            freeze_startup_heap()
            log.info("edge ready", extra={"scenario": config.name})
            yield
            revocations.cancel()
            await app.state.deps.flush_records()
            await app.state.deps.conductor.flush()
            await configs.flush()
            await rollouts.stop()
            await client.stop()
            if moderator is not None:
                await moderator.aclose()
        await asyncio.to_thread(shutdown_tracing)
        log.info("edge stopped")

    stopping = asyncio.Event()

    async def connected_unless_stopped(bus: Bus) -> bool:
        """Connect (NATS may take a while to answer), unless told to stop first (``app.state.stop_starting``)."""
        connecting, stop = asyncio.ensure_future(bus.connect()), asyncio.ensure_future(stopping.wait())
        await asyncio.wait({connecting, stop}, return_when=asyncio.FIRST_COMPLETED)
        if not connecting.done():
            connecting.cancel()
        stop.cancel()
        await asyncio.gather(connecting, stop, return_exceptions=True)
        if connecting.cancelled():
            return False
        connecting.result()
        return True

    app = FastAPI(title="Switchboard edge", lifespan=lifespan)
    app.state.stop_starting = lambda: asyncio.get_running_loop().call_soon_threadsafe(stopping.set)
    app.state.ws_protocol = CoalescingWebSocketProtocol  # the server's WebSocket protocol (``switchboard edge``)
    app.router.routes.append(metrics_route())

    def api_key_caller(request: Request) -> Principal | Response:
        """Who calls with an API key, or the error answer for a caller without a valid one."""
        principal = authenticator.authenticate(request.headers, kinds=["api_key"])
        if isinstance(principal, Refusal):
            return _error(principal.status, principal.code, principal.message)
        return principal

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Alive: the event loop answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        """Ready for new sessions: NATS connected, the session KV answering, not draining."""
        reason = await _not_ready(app)
        pid = {PID_HEADER: str(os.getpid())}  # whose readiness this is (see PID_HEADER)
        if reason is not None:
            return JSONResponse({"status": "not_ready", "reason": reason}, status_code=503, headers=pid)
        return JSONResponse({"status": "ready"}, headers=pid)

    @app.get("/v1/switchboard/info")
    async def info(request: Request) -> object:
        """The scenario, its agents' subjects and rollouts (``rollouts_watch``: whether they are current), and the
        caller's tenant's sessions open on this edge (``active_sessions``) and their connections (API key callers
        only). Another tenant's traffic is none of a key's business: the edge-wide count is the
        ``switchboard_active_sessions`` metric (``/metrics``)."""
        principal = api_key_caller(request)
        if isinstance(principal, Response):
            return principal
        deps: EdgeDeps = app.state.deps
        rollouts = app.state.rollouts.snapshot()
        sessions, connections = deps.open_of(principal.owner)
        return {
            "scenario": config.name, "entry_agent": config.entry_agent, "fallback_agent": config.fallback_agent,
            "agents": {a.name: subjects.agent_turn(a.name) for a in config.agents},
            "active_sessions": sessions, "connections": connections,
            "rollouts": {a: r.model_dump(mode="json", exclude={"type"}) for a, r in rollouts.items()},
            "rollouts_watch": dataclasses.asdict(app.state.rollouts.watch_status()),
        }  # fmt: skip

    @app.get("/v1/switchboard/stats")
    async def stats(request: Request) -> object:
        """The caller's tenant's routing figures on this edge process: its completed responses, how often the
        supervisor was consulted for them and what it cost (API key callers only). Edge-wide figures are for
        operators: the ``switchboard_responses``, ``switchboard_supervisor_consults`` and ``switchboard_retries``
        metrics, and the audit stream's turn records."""
        principal = api_key_caller(request)
        if isinstance(principal, Response):
            return principal
        deps: EdgeDeps = app.state.deps
        consults = deps.conductor.consults
        c = consults.stats(principal.owner) if consults else ConsultStats()
        responses = deps.responses.get(principal.owner, 0)
        return {
            "responses": responses, "consulted_responses": c.consults,
            "routing_rate": round(c.consults / responses, 4) if responses else 0.0,
            "consult_failures": c.failed, "consult_retries": c.retries,
            "consult_ms_avg": round(c.total_ms / c.consults, 2) if c.consults else 0.0,
            "consult_tokens": c.tokens, "consult_outcomes": c.by_outcome,
        }  # fmt: skip

    @app.post("/v1/realtime/client_secrets")
    async def client_secrets(request: Request) -> Response:
        """Mint a short-lived, single-use secret a browser connects with (API key callers only)."""
        principal = api_key_caller(request)
        if isinstance(principal, Response):
            return principal
        limits = Limits.of(principal.limits, settings)
        wait = limiter.attempt(principal.key_id, limits.connects_per_minute)
        if wait:
            return _rate_limited(wait, limits.connects_per_minute)
        body = await _read_body(request)
        try:
            minted = app.state.client_secrets.mint(principal, body, check=check_session_config)
        except BadRequest as exc:
            return _error(400, exc.code, exc.message, param=exc.param)
        log.info("client secret minted", extra={"tenant": principal.owner, "key_id": principal.key_id})
        return JSONResponse(minted)

    @app.websocket("/v1/realtime")
    async def realtime(ws: WebSocket) -> None:
        deps: EdgeDeps = app.state.deps
        if not origin_allowed(ws.headers, allowed_origins):
            message = "this page's origin may not open a WebSocket here (SWITCHBOARD_ALLOWED_ORIGINS)"
            await _deny(ws, 403, "origin_not_allowed", message)
            return
        principal = authenticator.authenticate(ws.headers)
        if isinstance(principal, Refusal):
            await _deny(ws, principal.status, principal.code, principal.message)
            return
        limits = Limits.of(principal.limits, settings)
        wait = limiter.attempt(principal.key_id, limits.connects_per_minute)
        if wait:
            await _deny(ws, 429, "rate_limit_exceeded", _rate_message(limits.connects_per_minute),
                        retry_after=str(max(1, round(wait))))  # fmt: skip
            return
        edge_keys: EdgeKeys = app.state.edge_keys
        session_id = ws.query_params.get("session_id") or edge_keys.new_session_id(principal.owner)
        try:
            subjects.check_token(session_id, "session id")
        except ValueError as exc:
            await _deny(ws, 400, "invalid_session_id", str(exc))
            return
        # counted per tenant and session id, from here on, before any await: another tenant naming a live id
        # is a new session to the cap (503 at the cap, like a missing id), never a sign that the id is live
        if deps.draining or not deps.admit(principal.owner, session_id):
            reason = "edge is draining" if deps.draining else f"edge at its limit of {settings.max_sessions} sessions"
            await _deny(ws, 503, "edge_unavailable", f"{reason}; retry on another edge", retry_after="1")
            return
        try:
            if not limiter.open(principal.key_id, limits.max_sessions):
                message = f"this API key has {limits.max_sessions} sessions open on this edge, its limit"
                await _deny(ws, 429, "session_limit_reached", message, retry_after="1")
                return
            try:
                await serve_session(ws, session_id, principal, limits)
            finally:
                limiter.close(principal.key_id)
        finally:
            deps.release(principal.owner, session_id)

    async def serve_session(ws: WebSocket, session_id: str, principal: Principal, limits: Limits) -> None:
        deps: EdgeDeps = app.state.deps
        takeovers: Takeovers = app.state.takeovers
        edge_keys: EdgeKeys = app.state.edge_keys
        owner = principal.owner
        resuming = "session_id" in ws.query_params
        loaded = await deps.store.load(session_id) if resuming else None  # a new id was minted just now
        unknown = loaded is None and resuming and not edge_keys.issued_to(session_id, owner)
        # sessions stored before tenants carry a plain (dev) key's bare fingerprint: the same key still owns them
        owners = (owner, owner.removeprefix("dev-")) if owner.startswith("dev-") else (owner,)
        if unknown or (loaded is not None and loaded[0].owner not in owners):
            # another tenant's session is refused exactly as one that does not exist
            await _deny(ws, 404, "session_not_found", "no session with this id for this API key's tenant")
            return
        if principal.single_use is not None and not await app.state.client_secrets.consume(principal.single_use):
            await _deny(ws, 401, "client_secret_already_used", "the client secret was already used: mint a new one")
            return
        async with takeovers.arriving(session_id):  # one at a time from claim to hold (see Takeovers.arriving)
            if resuming and await takeovers.claim(session_id):
                loaded = await deps.store.load(session_id)  # the older connection may have committed meanwhile
            if loaded is None:
                now = time.time()
                state = SessionState(
                    session_id=session_id, scenario=config.name, active_agent=config.entry_agent, owner=owner,
                    created_at=now, updated_at=now,
                )  # fmt: skip
                revision, resumed = 0, False
            else:
                (state, revision), resumed = loaded, True
            await ws.accept(subprotocol=principal.subprotocol)
            events = ws.query_params.get(PLATFORM_EVENTS_PARAM, "") in ("1", "true")
            session = CappedSession(
                ws, deps, state, revision, resumed, platform_events=events, limits=limits, key_id=principal.key_id,
                tenant=owner,
            )  # fmt: skip
            if principal.session is not None:
                session.apply_session(principal.session)

            async def taken_over() -> None:
                taken = error_event(code=TAKEOVER_ERROR_CODE, message=f"{TAKEOVER_REASON}; this connection is closed")
                taken["error"]["type"] = "invalid_request_error"
                await session.close(TAKEOVER_CLOSE_CODE, TAKEOVER_REASON, taken)

            hold = await takeovers.hold(session_id, taken_over)
        deps.sessions.add(session)
        try:
            with session_context(session_id):
                await session.run()
        finally:
            deps.sessions.discard(session)
            await takeovers.release(hold)

    return app


async def _not_ready(app: FastAPI) -> str | None:
    deps: EdgeDeps | None = getattr(app.state, "deps", None)
    bus: Bus | None = getattr(app.state, "bus", None)
    if deps is None or bus is None:
        return "starting"
    if deps.draining:
        return "draining"
    if not bus.connected:
        return "nats not connected"
    try:
        await deps.store.ping(_KV_PROBE_TIMEOUT_S)
    except Exception as exc:
        return f"session store unreachable: {type(exc).__name__}"
    return None


def _error(
    status: int, code: str, message: str, *, param: str | None = None, retry_after: str | None = None
) -> JSONResponse:
    """An OpenAI-shaped error answer."""
    body: dict[str, object] = {"type": "invalid_request_error", "code": code, "message": message}
    if param is not None:
        body["param"] = param
    headers = {"Retry-After": retry_after} if retry_after else None
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _rate_message(per_minute: int) -> str:
    return f"this API key is limited to {per_minute} connection attempts a minute on this edge"


def _rate_limited(wait_s: float, per_minute: int) -> JSONResponse:
    return _error(429, "rate_limit_exceeded", _rate_message(per_minute), retry_after=str(max(1, round(wait_s))))


async def _read_body(request: Request) -> bytes:
    """The request body, read no further than one byte past the client-secret request limit."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_REQUEST_BYTES:
            break
    return body


async def _deny(ws: WebSocket, status: int, code: str, message: str, retry_after: str | None = None) -> None:
    """Refuse before the upgrade: an HTTP error response instead of a WebSocket."""
    await ws.send_denial_response(_error(status, code, message, retry_after=retry_after))
