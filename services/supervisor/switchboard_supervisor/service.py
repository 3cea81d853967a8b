"""The supervisor service: answers front agents' consults with a stronger model and the domain tools."""

from __future__ import annotations

from nats.aio.msg import Msg
from pydantic import TypeAdapter

from switchboard.bus import ReplySink, subjects
from switchboard.runtime.service import LoopService
from switchboard.schemas import (
    ConsultRequest,
    ConsultResult,
    ErrorCode,
    ErrorReply,
    MessageItem,
    TurnRequest,
)
from switchboard.telemetry import names


class SupervisorService(LoopService[ConsultRequest]):
    """Serves ``switchboard.v1.supervisor.<name>.consult`` in queue group ``supervisor.<name>``.

    The consult runs the supervisor's tool loop (capped at ``max_iterations``) over the full
    conversation, within the request's deadline, streaming its answer as it is produced.
    """

    role = "supervisor"
    span_name = names.SPAN_SUPERVISOR_ANSWER

    def subject(self) -> str:
        return subjects.supervisor_consult(self.agent.name)

    def queue(self) -> str:
        return subjects.supervisor_queue(self.agent.name)

    def cancel_subject(self) -> str:
        return subjects.supervisor_cancel(self.agent.name)

    def adapter(self) -> TypeAdapter[ConsultRequest]:
        return TypeAdapter(ConsultRequest)

    async def handle(self, req: ConsultRequest, sink: ReplySink, msg: Msg) -> None:
        if req.supervisor != self.agent.name:
            await sink.send(ErrorReply(code=ErrorCode.WRONG_AGENT, message=f"this is {self.agent.name}"))
            return
        turn = TurnRequest(
            session_id=req.session_id, turn_id=req.consult_id, agent=self.agent.name, history=req.history,
            context=req.context, caller=req.caller,
        )  # fmt: skip
        result = await self.run_loop(turn, sink, msg, note=req.note)
        if result is None:
            return
        work = [i for i in result.items if not isinstance(i, MessageItem)]  # the front agent speaks the answer
        await sink.send(
            ConsultResult(
                consult_id=req.consult_id,
                supervisor=self.agent.name,
                text=result.text,
                items=work,
                caller=result.caller,
                usage=result.usage,
                replica=self.replica,
            )  # fmt: skip
        )
