"""The agent runner: one process serving one named agent of a scenario on its queue group."""

from __future__ import annotations

from nats.aio.msg import Msg
from pydantic import TypeAdapter

from switchboard.bus import ReplySink, subjects
from switchboard.runtime.service import LoopService
from switchboard.schemas import ErrorCode, ErrorReply, TurnRequest


class AgentRunner(LoopService[TurnRequest]):
    """Serves ``switchboard.v1.agent.<name>.turn`` in queue group ``agent.<name>`` (the stable track), or
    the subject and queue group of ``SWITCHBOARD_TRACK`` (``.canary.turn``, ``agent.<name>.canary``)."""

    role = "agent"

    def subject(self) -> str:
        return subjects.agent_turn(self.agent.name, self.settings.track)

    def queue(self) -> str:
        return subjects.agent_queue(self.agent.name, self.settings.track)

    def cancel_subject(self) -> str:
        return subjects.agent_cancel(self.agent.name)

    def adapter(self) -> TypeAdapter[TurnRequest]:
        return TypeAdapter(TurnRequest)

    async def handle(self, req: TurnRequest, sink: ReplySink, msg: Msg) -> None:
        if req.agent != self.agent.name:
            await sink.send(ErrorReply(code=ErrorCode.WRONG_AGENT, message=f"this is {self.agent.name}"))
            return
        result = await self.run_loop(req, sink, msg)
        if result is not None:
            await sink.send(result.model_copy(update={"replica": self.replica, "config": self.config_fingerprint}))
