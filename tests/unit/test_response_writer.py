"""The ResponseWriter owns a response's event order and ends it with exactly one ``response.done``."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from switchboard_edge.orchestration import AgentFinished, TextDelta
from switchboard_edge.response import ResponseWriter

SERVER_EVENTS: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)


class Sink:
    def __init__(self, fail_after: int | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.fail_after = fail_after

    async def __call__(self, event: dict[str, Any]) -> None:
        if self.fail_after is not None and len(self.events) >= self.fail_after:
            raise ConnectionError("client gone")
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [e["type"] for e in self.events]


async def test_a_cancel_mid_item_closes_it_and_later_endings_do_nothing() -> None:
    sink = Sink()
    writer = ResponseWriter(sink, "resp_1", previous_item_id="item_user")
    await writer.start()
    await writer.on_event(TextDelta("triage", "Hel"))
    await writer.cancelled()
    await writer.completed({"agent": "triage"}, {})
    await writer.failed("turn_failed", "late", {})
    await writer.on_event(TextDelta("triage", "lo"))
    assert sink.kinds() == [
        "response.created", "response.output_item.added", "conversation.item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "conversation.item.done", "response.done",
    ]  # fmt: skip
    done = sink.events[-1]["response"]
    assert done["status"] == "cancelled" and done["status_details"]["reason"] == "client_cancelled"
    assert [o["status"] for o in done["output"]] == ["incomplete"]
    assert sink.events[2]["previous_item_id"] == "item_user"
    for event in sink.events:
        SERVER_EVENTS.validate_python(event)


async def test_failed_before_start_still_opens_then_reports_the_error() -> None:
    sink = Sink()
    writer = ResponseWriter(sink, "resp_2", metadata={"mine": "1"})
    await writer.failed("turn_failed", "no agent answered", {"agent": "triage"})
    await writer.cancelled()
    assert sink.kinds() == ["response.created", "error", "response.done"]
    done = sink.events[-1]["response"]
    assert done["status"] == "failed" and done["metadata"] == {"mine": "1", "agent": "triage"}
    assert done["status_details"]["error"] == {"type": "server_error", "code": "turn_failed"}


async def test_two_agents_two_items_and_a_capped_answer_is_incomplete() -> None:
    sink = Sink()
    writer = ResponseWriter(sink, "resp_3", in_conversation=False)
    await writer.start()
    await writer.on_event(TextDelta("triage", "one"))
    await writer.on_event(AgentFinished("triage", "one", ok=True))
    await writer.on_event(TextDelta("billing", "two words"))
    assert len(writer.message_ids()) == 2
    await writer.completed({}, {"output_tokens": 2}, max_output_tokens=2)
    done = sink.events[-1]["response"]
    assert done["status"] == "incomplete" and [o["status"] for o in done["output"]] == ["completed", "incomplete"]
    assert not [k for k in sink.kinds() if k.startswith("conversation.")]  # out of band


@pytest.mark.parametrize("fail_after", [0, 1, 3])
async def test_a_cancel_never_raises_when_the_client_is_gone(fail_after: int) -> None:
    writer = ResponseWriter(Sink(fail_after), "resp_4")
    with contextlib.suppress(ConnectionError):  # the response's own sends fail once the client is gone
        await writer.start()
        await writer.on_event(TextDelta("triage", "x"))
    await writer.cancelled()
    assert writer.done and writer.status == "cancelled"
