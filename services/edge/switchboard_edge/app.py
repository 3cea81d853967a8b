"""The realtime edge: FastAPI app speaking the OpenAI Realtime protocol at ``/v1/realtime``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, WebSocket
from fastapi.responses import JSONResponse
from starlette.responses import Response

from switchboard.agents import Scenario, load_scenario
from switchboard.bus import Bus, StreamingClient, subjects
from switchboard.resilience import Breakers, RetryPolicy
from switchboard.rollout import RolloutTable, parse_weights
from switchboard.runtime.gc import freeze_startup_heap
from switchboard.schemas import SessionState
from switchboard.settings import Settings
from switchboard.state import AuditLog, SessionStore
from switchboard.telemetry import metrics_route, session_context, setup_tracing, shutdown_tracing

from .auth import Authenticator, Principal, api_key_verifier
from .orchestration import Conductor, ConsultStats, SupervisorConsults
from .protocol import error_event, new_session_id
from .session import EdgeDeps, EdgeSession
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
    if not settings.api_key_set:
        raise ValueError("SWITCHBOARD_API_KEYS is empty: the edge refuses to start without an API key")
    config = scenario.config
    seed = parse_weights(settings.canary_weights)
    unknown = sorted(set(seed) - set(config.agent_names))
    if unknown:
        raise ValueError(f"SWITCHBOARD_CANARY_WEIGHTS names agents the scenario does not have: {', '.join(unknown)}")
    authenticator = Authenticator({"api_key": api_key_verifier(settings.api_key_set)})

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        setup_tracing("edge")
        async with settings.bus("edge") as bus:
            client = StreamingClient(bus.nc)
            await client.start()
            audit = await AuditLog.open(bus.js, replicas=settings.js_replicas)
            store = await SessionStore.open(bus.js, replicas=settings.js_replicas, window=settings.history_window)
            rollouts = await RolloutTable.open(bus.js, replicas=settings.js_replicas, seed=seed)
            app.state.rollouts = rollouts
            entry = config.agent(config.entry_agent)
            breakers = Breakers(threshold=settings.breaker_threshold, cooldown_s=settings.breaker_cooldown_s)
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
            freeze_startup_heap()
            log.info("edge ready", extra={"scenario": config.name})
            yield
            await app.state.deps.flush_records()
            await app.state.deps.conductor.flush()
            await rollouts.stop()
            await client.stop()
        await asyncio.to_thread(shutdown_tracing)
        log.info("edge stopped")

    app = FastAPI(title="Switchboard edge", lifespan=lifespan)
    app.state.ws_protocol = CoalescingWebSocketProtocol  # the server's WebSocket protocol (``switchboard edge``)
    app.router.routes.append(metrics_route())

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Alive: the event loop answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        """Ready for new sessions: NATS connected, the session KV answering, not draining."""
        reason = await _not_ready(app)
        if reason is not None:
            return JSONResponse({"status": "not_ready", "reason": reason}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/v1/switchboard/info")
    async def info() -> dict[str, object]:
        deps: EdgeDeps = app.state.deps
        rollouts = app.state.rollouts.snapshot()
        return {
            "scenario": config.name, "entry_agent": config.entry_agent, "fallback_agent": config.fallback_agent,
            "agents": {a.name: subjects.agent_turn(a.name) for a in config.agents},
            "active_sessions": len(deps.active_sessions), "connections": len(deps.sessions),
            "rollouts": {a: r.model_dump(mode="json", exclude={"type"}) for a, r in rollouts.items()},
        }  # fmt: skip

    @app.get("/v1/switchboard/stats")
    async def stats() -> dict[str, object]:
        """Process-wide routing figures: how often the supervisor was consulted and what it cost."""
        deps: EdgeDeps = app.state.deps
        consults = deps.conductor.consults
        c = consults.stats if consults else ConsultStats()
        responses = deps.responses
        return {
            "responses": responses, "consulted_responses": c.consults,
            "routing_rate": round(c.consults / responses, 4) if responses else 0.0,
            "consult_failures": c.failed, "consult_retries": c.retries,
            "consult_ms_avg": round(c.total_ms / c.consults, 2) if c.consults else 0.0,
            "consult_tokens": c.tokens, "consult_outcomes": c.by_outcome,
        }  # fmt: skip

    @app.websocket("/v1/realtime")
    async def realtime(ws: WebSocket) -> None:
        deps: EdgeDeps = app.state.deps
        principal = authenticator.authenticate(ws.headers)
        if principal is None:
            await _deny(
                ws, 401, "invalid_api_key",
                "missing or invalid API key: send 'Authorization: Bearer <key>' or the subprotocols "
                "'realtime' and 'openai-insecure-api-key.<key>'",
            )  # fmt: skip
            return
        session_id = ws.query_params.get("session_id") or new_session_id()
        try:
            subjects.check_token(session_id, "session id")
        except ValueError as exc:
            await _deny(ws, 400, "invalid_session_id", str(exc))
            return
        if deps.draining or not deps.admit(session_id):  # counted from here on, before any await
            reason = "edge is draining" if deps.draining else f"edge at its limit of {settings.max_sessions} sessions"
            await _deny(ws, 503, "edge_unavailable", f"{reason}; retry on another edge", retry_after="1")
            return
        try:
            await serve_session(ws, session_id, principal)
        finally:
            deps.release(session_id)

    async def serve_session(ws: WebSocket, session_id: str, principal: Principal) -> None:
        deps: EdgeDeps = app.state.deps
        takeovers: Takeovers = app.state.takeovers
        owner = principal.owner
        loaded = await deps.store.load(session_id)
        if loaded is not None and loaded[0].owner not in (None, owner):
            await _deny(ws, 403, "session_forbidden", "this session belongs to another API key")
            return
        if "session_id" in ws.query_params and await takeovers.claim(session_id):
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
        session = EdgeSession(ws, deps, state, revision, resumed, platform_events=events)

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


async def _deny(ws: WebSocket, status: int, code: str, message: str, retry_after: str | None = None) -> None:
    """Refuse before the upgrade: an HTTP error response instead of a WebSocket."""
    body = {"error": {"type": "invalid_request_error", "code": code, "message": message}}
    headers = {"Retry-After": retry_after} if retry_after else None
    await ws.send_denial_response(JSONResponse(body, status_code=status, headers=headers))
