"""A process that serves one agent's loop on a NATS queue group (agent runners and supervisors)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import socket
import time
from typing import Generic, TypeVar

from nats.aio.msg import Msg
from pydantic import BaseModel, TypeAdapter

from ..agents import Scenario
from ..bus import QueueService, ReplySink, deadline_of
from ..bus.rpc import remaining
from ..errors import ConfigError
from ..guardrails import Boundary, StreamGuard
from ..guardrails.output import guard_result
from ..lifecycle import StartStop
from ..models import ModelError, ModelProvider, build_provider
from ..schemas import ErrorCode, ErrorReply, TurnDelta, TurnRequest, TurnResult
from ..security.bus_access import identity_name
from ..settings import Settings
from ..state.ledger import EffectPending, SideEffectLedger
from ..state.store import ToolStore, store_bucket
from ..telemetry import metrics, names, setup_tracing, shutdown_tracing
from .coalesce import DeltaCoalescer
from .gc import freeze_startup_heap
from .health import HealthServer
from .loop import AgentLoop, IterationCapError, ModelCallPolicy

log = logging.getLogger(__name__)
Req = TypeVar("Req", bound=BaseModel)


class LoopService(StartStop, Generic[Req]):
    """Subclasses name the subject, the queue group and the request type, and handle requests."""

    role = "agent"
    span_name = names.SPAN_AGENT_TURN
    metrics_port: int | None = None

    def __init__(
        self, settings: Settings, scenario: Scenario, name: str, *, model: ModelProvider | None = None
    ) -> None:
        agent = scenario.config.agent(name)
        if agent is None or agent.role != self.role:
            known = [a.name for a in scenario.config.agents if a.role == self.role]
            raise ConfigError(f"no {self.role} {name!r} in scenario {scenario.config.name!r} (known: {known})")
        self.settings = settings
        self.agent = agent
        self.replica = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        """host:pid:random. Host and pid alone collide: containers on the host network share its hostname
        and each runs as PID 1 (two containers of one agent both said ``host:1``)."""
        self.config_fingerprint = hashlib.sha256(self.agent.model_dump_json().encode()).hexdigest()[:12]
        """Names this agent configuration (prompt, model, tools, handoffs, offline rules) in turn results."""
        self.model = model or build_provider(agent, scenario.config.offline_slots, timeout_s=settings.model_timeout_s)
        self.scenario = scenario
        self.loop = AgentLoop(agent, self.model, scenario.tools, policy=ModelCallPolicy.from_settings(settings))
        self.identity = identity_name(self.role, name)
        """Its bus identity, shared by every replica and track of it: it owns their side-effect records."""
        self.bus = settings.bus(self.identity)
        self._service: QueueService[Req] | None = None
        self._health: HealthServer | None = None
        self.draining = False

    def subject(self) -> str:
        raise NotImplementedError

    def queue(self) -> str:
        raise NotImplementedError

    def cancel_subject(self) -> str:
        """Where callers stop requests they no longer want the replies of (every replica listens)."""
        raise NotImplementedError

    def adapter(self) -> TypeAdapter[Req]:
        raise NotImplementedError

    async def handle(self, req: Req, sink: ReplySink, msg: Msg) -> None:
        raise NotImplementedError

    def not_ready(self) -> str | None:
        """Why this process should get no traffic now (``/readyz`` answers 503 with it), or None."""
        if self.draining:
            return "draining"
        if not self.bus.connected:
            return "nats not connected"
        if self._service is None:
            return "not subscribed to its queue group"
        return None

    async def start(self) -> None:
        """Serve health first (``/readyz`` says 503 until subscribed), then connect and subscribe.

        The connection is retried until NATS answers, so a process started before its server waits.
        """
        setup_tracing(f"{self.role}-{self.agent.name}", resource_attributes={names.SERVICE_INSTANCE_ID: self.replica})
        if self.settings.metrics_port >= 0:
            self._health = HealthServer(
                self.settings.metrics_host, self.settings.metrics_port, self.not_ready, metrics().render
            )
            self.metrics_port = await self._health.start()
        await self.bus.connect()
        self.loop.ledger = await SideEffectLedger.open(
            self.bus.js,
            owner=self.identity,
            replicas=self.settings.js_replicas,
            takeover_s=self.settings.ledger_takeover_s,
        )
        if any(self.loop.tools.values()):
            await self._open_store()
        service = QueueService(
            self.bus.nc, self.subject(), self.queue(), self.adapter(), self.handle,
            max_inflight=self.settings.agent_max_inflight, heartbeat_s=self.settings.heartbeat_s,
            span_name=self.span_name, service=self.agent.name, cancel_subject=self.cancel_subject(),
        )  # fmt: skip
        await service.start()
        await self.bus.nc.flush()
        self._service = service
        freeze_startup_heap()
        log.info(
            "%s ready", self.role,
            extra={self.role: self.agent.name, "replica": self.replica, "metrics_port": self.metrics_port},
        )  # fmt: skip

    async def _open_store(self) -> None:
        """Bind the scenario's shared store and seed it before taking turns (every replica does; harmless)."""
        bucket = store_bucket(self.scenario.config.name)
        store = await ToolStore.open(self.bus.js, bucket, replicas=self.settings.js_replicas)
        for seeder in self.scenario.tools.seeders:
            await seeder(store)
        self.loop.store = store
        log.info("tool store ready", extra={"bucket": bucket, "seeders": len(self.scenario.tools.seeders)})

    async def stop(self) -> None:
        """Stop taking requests, finish the ones in flight, close the connection. Safe to call twice."""
        self.draining = True
        service, self._service = self._service, None
        if service is not None:
            await service.stop()
        await self.bus.close()
        await self.model.aclose()
        health, self._health = self._health, None
        if health is not None:
            await health.stop()
        await asyncio.to_thread(shutdown_tracing)
        if service is not None:
            log.info("%s stopped", self.role, extra={self.role: self.agent.name, "replica": self.replica})

    async def run_loop(
        self, req: TurnRequest, sink: ReplySink, msg: Msg, *, note: str | None = None
    ) -> TurnResult | None:
        """Run the loop, streaming its text (output guardrails applied, then coalesced, see
        ``delta_flush_ms``); on failure send a typed error and return None. Every text delta is sent
        before the result or the error."""
        rules = self.scenario.config.guardrails.at(Boundary.OUTPUT)
        guard = StreamGuard(rules)  # the caller never hears what an output guardrail redacts

        async def publish(text: str) -> None:
            await sink.send(TurnDelta(turn_id=req.turn_id, seq=deltas.sent - 1, text=text))

        deltas = DeltaCoalescer(publish, self.settings.delta_flush_ms / 1000)

        async def on_text(text: str) -> None:
            released = guard.feed(text)
            if released:
                deltas.add(released)

        deadline = deadline_of(msg, self.settings.turn_timeout_s)
        error: ErrorReply
        started = time.perf_counter()
        try:
            # In this task, not wait_for's: text still buffered when the run ends rides in the result
            async with asyncio.timeout(max(remaining(deadline), 0.001)):
                result = await self.loop.run(req, on_text, note=note, deadline=deadline)
            metrics().agent_turn_seconds.labels(agent=self.agent.name).observe(time.perf_counter() - started)
            rest = guard.finish()
            if rest:
                deltas.add(rest)
            if rules:
                result = guard_result(result, rules, self.scenario.config.guardrails.blocked_message)
            if req.tail_in_result:  # the conductor speaks what no delta carried from the result's text
                await deltas.close_into(result.text)
            return result
        except ModelError as exc:  # already retried here: the caller should not multiply the attempts
            error = ErrorReply(code=ErrorCode.MODEL_ERROR, message=str(exc), retryable=False)
        except IterationCapError as exc:
            error = ErrorReply(code=ErrorCode.ITERATION_CAP, message=str(exc))
        except EffectPending as exc:  # another replica's run of this very call outlived our deadline
            error = ErrorReply(code=ErrorCode.EFFECT_PENDING, message=str(exc))
        except TimeoutError:
            error = ErrorReply(code=ErrorCode.TIMEOUT, message="deadline exceeded", retryable=True)
        finally:
            await deltas.aclose()
        await sink.send(error)
        return None
