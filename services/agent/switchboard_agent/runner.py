"""The agent runner: one process serving one named agent of a scenario on its queue group."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from types import TracebackType
from typing import Self

from nats.aio.msg import Msg
from pydantic import TypeAdapter

from switchboard.agents import Scenario
from switchboard.bus import Bus, QueueService, ReplySink, deadline_of, subjects
from switchboard.bus.rpc import remaining
from switchboard.models import ModelError, ModelProvider, build_provider
from switchboard.runtime import AgentLoop, IterationCapError
from switchboard.runtime.gc import freeze_startup_heap
from switchboard.schemas import ErrorCode, ErrorReply, TurnDelta, TurnRequest
from switchboard.settings import Settings

log = logging.getLogger(__name__)


class AgentRunner:
    """Serves ``switchboard.v1.agent.<name>.turn`` in queue group ``agent.<name>``."""

    def __init__(
        self, settings: Settings, scenario: Scenario, agent_name: str, *, model: ModelProvider | None = None
    ) -> None:
        agent = scenario.config.agent(agent_name)
        if agent is None:
            raise ValueError(
                f"agent {agent_name!r} is not in scenario {scenario.config.name!r} "
                f"(agents: {scenario.config.agent_names})"
            )
        self.settings = settings
        self.agent = agent
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        self.model = model or build_provider(agent, scenario.config.offline_slots)
        self.loop = AgentLoop(agent, self.model, scenario.tools)
        self.bus = Bus(settings.nats_servers, name=f"agent-{agent_name}")
        self._service: QueueService[TurnRequest] | None = None

    async def start(self) -> None:
        await self.bus.connect()
        self._service = QueueService(
            self.bus.nc, subjects.agent_turn(self.agent.name), subjects.agent_queue(self.agent.name),
            TypeAdapter(TurnRequest), self.handle, max_inflight=self.settings.agent_max_inflight,
        )  # fmt: skip
        await self._service.start()
        await self.bus.nc.flush()
        freeze_startup_heap()
        log.info("agent ready", extra={"agent": self.agent.name, "replica": self.replica})

    async def stop(self) -> None:
        """Stop taking turns, finish the ones in flight, close the connection. Safe to call twice."""
        service, self._service = self._service, None
        if service is not None:
            await service.stop()
        await self.bus.close()
        await self.model.aclose()

    async def handle(self, req: TurnRequest, sink: ReplySink, msg: Msg) -> None:
        if req.agent != self.agent.name:
            await sink.send(ErrorReply(code=ErrorCode.WRONG_AGENT, message=f"this is {self.agent.name}"))
            return
        seq = 0

        async def on_text(text: str) -> None:
            nonlocal seq
            await sink.send(TurnDelta(turn_id=req.turn_id, seq=seq, text=text))
            seq += 1

        deadline = deadline_of(msg, self.settings.turn_timeout_s)
        try:
            result = await asyncio.wait_for(self.loop.run(req, on_text), max(remaining(deadline), 0.001))
        except ModelError as exc:
            await sink.send(ErrorReply(code=ErrorCode.MODEL_ERROR, message=str(exc), retryable=exc.retryable))
            return
        except IterationCapError as exc:
            await sink.send(ErrorReply(code=ErrorCode.ITERATION_CAP, message=str(exc)))
            return
        except TimeoutError:
            await sink.send(ErrorReply(code=ErrorCode.TIMEOUT, message="turn deadline exceeded", retryable=True))
            return
        await sink.send(result.model_copy(update={"replica": self.replica}))

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
