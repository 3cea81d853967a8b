"""A process that serves one agent's loop on a NATS queue group (agent runners and supervisors)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from types import TracebackType
from typing import Generic, Self, TypeVar

from nats.aio.msg import Msg
from pydantic import BaseModel, TypeAdapter

from ..agents import Scenario
from ..bus import QueueService, ReplySink, deadline_of
from ..bus.rpc import remaining
from ..guardrails import Boundary, StreamGuard
from ..guardrails.output import guard_result
from ..models import ModelError, ModelProvider, build_provider
from ..schemas import ErrorCode, ErrorReply, TurnDelta, TurnRequest, TurnResult
from ..settings import Settings
from ..state.ledger import EffectPending, SideEffectLedger
from ..state.store import ToolStore, store_bucket
from ..telemetry import metrics, names, setup_tracing, shutdown_tracing, start_metrics_server
from .coalesce import DeltaCoalescer
from .gc import freeze_startup_heap
from .loop import AgentLoop, IterationCapError

log = logging.getLogger(__name__)
Req = TypeVar("Req", bound=BaseModel)


class LoopService(Generic[Req]):
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
            raise ValueError(f"no {self.role} {name!r} in scenario {scenario.config.name!r} (known: {known})")
        self.settings = settings
        self.agent = agent
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        self.model = model or build_provider(agent, scenario.config.offline_slots)
        self.scenario = scenario
        self.loop = AgentLoop(agent, self.model, scenario.tools)
        self.bus = settings.bus(f"{self.role}-{name}")
        self._service: QueueService[Req] | None = None

    def subject(self) -> str:
        raise NotImplementedError

    def queue(self) -> str:
        raise NotImplementedError

    def adapter(self) -> TypeAdapter[Req]:
        raise NotImplementedError

    async def handle(self, req: Req, sink: ReplySink, msg: Msg) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        setup_tracing(f"{self.role}-{self.agent.name}", resource_attributes={names.SERVICE_INSTANCE_ID: self.replica})
        self.metrics_port = (
            start_metrics_server(self.settings.metrics_port) if self.settings.metrics_port >= 0 else None
        )
        await self.bus.connect()
        self.loop.ledger = await SideEffectLedger.open(
            self.bus.js, replicas=self.settings.js_replicas, takeover_s=self.settings.ledger_takeover_s
        )
        if any(self.loop.tools.values()):
            await self._open_store()
        self._service = QueueService(
            self.bus.nc, self.subject(), self.queue(), self.adapter(), self.handle,
            max_inflight=self.settings.agent_max_inflight, heartbeat_s=self.settings.heartbeat_s,
            span_name=self.span_name, service=self.agent.name,
        )  # fmt: skip
        await self._service.start()
        await self.bus.nc.flush()
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
        service, self._service = self._service, None
        if service is not None:
            await service.stop()
        await self.bus.close()
        await self.model.aclose()
        await asyncio.to_thread(shutdown_tracing)

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
            run = self.loop.run(req, on_text, note=note, deadline=deadline)
            result = await asyncio.wait_for(run, max(remaining(deadline), 0.001))
            metrics().agent_turn_seconds.labels(agent=self.agent.name).observe(time.perf_counter() - started)
            rest = guard.finish()
            if rest:
                deltas.add(rest)
            return guard_result(result, rules, self.scenario.config.guardrails.blocked_message) if rules else result
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

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
