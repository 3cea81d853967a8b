"""OpenAIChatProvider against the scripted OpenAI-compatible server, over real HTTP."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any

import httpx
import pytest

from switchboard.agents.tools import ToolSpec
from switchboard.models.base import ModelError, ModelRequest
from switchboard.models.openai_chat import OpenAIChatProvider
from switchboard.schemas import FunctionCallItem, FunctionCallOutputItem, MessageItem
from switchboard.testing import ScriptedOpenAIServer, ScriptedReply

LOOKUP = ToolSpec(
    name="lookup_order",
    description="Find an order by id.",
    parameters={"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
)


@pytest.fixture
async def server() -> AsyncIterator[ScriptedOpenAIServer]:
    async with ScriptedOpenAIServer() as srv:
        yield srv


def make_provider(server: ScriptedOpenAIServer, **kwargs: Any) -> OpenAIChatProvider:
    return OpenAIChatProvider("test-model", api_key="sk-test", base_url=server.base_url, **kwargs)


def user(text: str, item_id: str = "item_1") -> MessageItem:
    return MessageItem(id=item_id, role="user", text=text)


class Collector:
    def __init__(self) -> None:
        self.deltas: list[str] = []

    async def __call__(self, delta: str) -> None:
        self.deltas.append(delta)


async def complete(provider: OpenAIChatProvider, request: ModelRequest) -> tuple[Any, Collector]:
    sink = Collector()
    try:
        return await provider.complete(request, sink), sink
    finally:
        await provider.aclose()


async def test_streamed_text_arrives_in_deltas(server: ScriptedOpenAIServer) -> None:
    text = "Hello! Your order ships tomorrow morning."
    server.script(ScriptedReply(text=text, chunk_size=5))
    response, sink = await complete(make_provider(server), ModelRequest("Be brief.", [user("hi")]))
    assert len(sink.deltas) == len(range(0, len(text), 5))
    assert "".join(sink.deltas) == text
    assert response.text == text
    assert response.tool_calls == ()
    body = server.requests[0]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["model"] == "test-model"
    assert "tools" not in body


async def test_usage_tokens_reported(server: ScriptedOpenAIServer) -> None:
    server.script(ScriptedReply(text="one two three"))
    response, _ = await complete(make_provider(server), ModelRequest("Be brief.", [user("hi there")]))
    assert response.input_tokens == 4  # "Be brief." + "hi there", counted in words
    assert response.output_tokens == 3


async def test_tool_call_parsed_and_history_converted(server: ScriptedOpenAIServer) -> None:
    server.script(ScriptedReply(tool_calls=[("lookup_order", {"order_id": "A-1234", "verbose": True})], chunk_size=4))
    history = [
        user("where is my order?"),
        MessageItem(id="item_2", role="assistant", text="Let me transfer you.", agent="triage"),
        MessageItem(id="item_3", role="assistant", text="I can help with orders.", agent="orders"),
        FunctionCallItem(id="item_4", call_id="c1", name="lookup_order", arguments='{"order_id":"A"}', agent="orders"),
        FunctionCallItem(id="item_5", call_id="c2", name="lookup_order", arguments='{"order_id":"B"}', agent="orders"),
        FunctionCallOutputItem(id="item_6", call_id="c1", output='{"status":"shipped"}', agent="orders"),
        FunctionCallOutputItem(id="item_7", call_id="c2", output='{"status":"lost"}', agent="orders"),
    ]
    provider = make_provider(server, agent="orders")
    response, sink = await complete(provider, ModelRequest("You handle orders.", history, tools=[LOOKUP]))

    assert sink.deltas == []
    assert response.text == ""
    (call,) = response.tool_calls
    assert call.name == "lookup_order"
    assert call.call_id.startswith("call_")
    assert json.loads(call.arguments) == {"order_id": "A-1234", "verbose": True}

    body = server.requests[0]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "lookup_order",
                "description": "Find an order by id.",
                "parameters": LOOKUP.parameters,
            },
        }
    ]
    assert body["messages"] == [
        {"role": "system", "content": "You handle orders."},
        {"role": "user", "content": "where is my order?"},
        {"role": "assistant", "content": "[triage] Let me transfer you."},
        {"role": "assistant", "content": "I can help with orders."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "lookup_order", "arguments": '{"order_id":"A"}'},
                },
                {
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "lookup_order", "arguments": '{"order_id":"B"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"status":"shipped"}'},
        {"role": "tool", "tool_call_id": "c2", "content": '{"status":"lost"}'},
    ]


async def test_several_tool_calls_keep_their_order(server: ScriptedOpenAIServer) -> None:
    server.script(ScriptedReply(text="Checking.", tool_calls=[("a", {"x": 1}), ("b", {"y": "two"})]))
    response, _ = await complete(make_provider(server), ModelRequest("", [user("go")], tools=[LOOKUP]))
    assert response.text == "Checking."
    assert [(c.name, json.loads(c.arguments)) for c in response.tool_calls] == [
        ("a", {"x": 1}),
        ("b", {"y": "two"}),
    ]
    assert len({c.call_id for c in response.tool_calls}) == 2
    assert server.requests[0]["messages"] == [{"role": "user", "content": "go"}]  # no empty system message


async def test_settings_reach_the_server(server: ScriptedOpenAIServer) -> None:
    server.script(ScriptedReply(text="ok"))
    provider = make_provider(server, settings={"temperature": 0.2, "max_tokens": 64, "top_k": 5})
    await complete(provider, ModelRequest("", [user("hi")]))
    body = server.requests[0]
    assert body["temperature"] == 0.2
    assert body["max_tokens"] == 64
    assert body["top_k"] == 5  # server-specific parameters pass through too


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (503, True), (429, True), (400, False), (404, False)])
async def test_http_errors_map_to_model_error(server: ScriptedOpenAIServer, status: int, retryable: bool) -> None:
    server.script(ScriptedReply(status=status), ScriptedReply(text="never reached"))
    with pytest.raises(ModelError) as info:
        await complete(make_provider(server), ModelRequest("", [user("hi")]))
    assert info.value.status == status
    assert info.value.retryable is retryable
    assert len(server.requests) == 1  # the client itself does not retry


async def test_empty_script_is_an_error(server: ScriptedOpenAIServer) -> None:
    with pytest.raises(ModelError) as info:
        await complete(make_provider(server), ModelRequest("", [user("hi")]))
    assert info.value.status == 500
    assert "exhausted" in str(info.value).lower()


async def test_connection_refused_is_retryable() -> None:
    async with ScriptedOpenAIServer() as srv:
        base_url = srv.base_url
    provider = OpenAIChatProvider("m", api_key="sk-test", base_url=base_url, timeout_s=2.0)
    with pytest.raises(ModelError) as info:
        await complete(provider, ModelRequest("", [user("hi")]))
    assert info.value.retryable is True
    assert info.value.status is None


async def test_timeout_is_retryable(server: ScriptedOpenAIServer) -> None:
    server.script(ScriptedReply(text="late", delay_s=0.5))
    provider = make_provider(server, timeout_s=0.1)
    with pytest.raises(ModelError) as info:
        await complete(provider, ModelRequest("", [user("hi")]))
    assert info.value.retryable is True


async def test_responder_answers_when_queue_is_empty() -> None:
    async with ScriptedOpenAIServer(responder=lambda body: ScriptedReply(text=f"n={len(body['messages'])}")) as srv:
        srv.script(ScriptedReply(text="scripted first"))
        provider = make_provider(srv)
        try:
            first = await provider.complete(ModelRequest("", [user("a")]), Collector())
            second = await provider.complete(ModelRequest("sys", [user("a")]), Collector())
        finally:
            await provider.aclose()
    assert (first.text, second.text) == ("scripted first", "n=2")


async def test_server_rejects_missing_bearer_and_serves_models(server: ScriptedOpenAIServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        assert (await client.post("/chat/completions", json={"messages": []})).status_code == 401
        models = await client.get("/models", headers={"Authorization": "Bearer sk-test"})
        server.script(ScriptedReply(text="plain", tool_calls=[("f", {"a": 1})]))
        plain = await client.post(
            "/chat/completions",
            headers={"Authorization": "Bearer sk-test"},
            json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        )
    assert models.json()["data"][0]["id"] == "scripted-model"
    message = plain.json()["choices"][0]["message"]
    assert message["content"] == "plain"
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"a": 1}


async def test_stop_is_idempotent() -> None:
    srv = ScriptedOpenAIServer()
    await srv.start()
    await srv.stop()
    await srv.stop()
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(srv.base_url + "/models")


@pytest.mark.parametrize(
    "reply",
    [
        ScriptedReply(text="Your order ships tomor", cut=True),
        ScriptedReply(tool_calls=[("lookup_order", {"order_id": "A-1234"})], chunk_size=4, cut=True),
    ],
    ids=["text", "tool_call"],
)
async def test_stream_cut_before_its_finish_reason_is_a_retryable_error(
    server: ScriptedOpenAIServer, reply: ScriptedReply
) -> None:
    """A stream that ends cleanly without a ``finish_reason`` lost the rest of its answer: it is not an answer
    (a cut tool call's arguments are not even JSON)."""
    server.script(reply)
    with pytest.raises(ModelError) as info:
        await complete(make_provider(server), ModelRequest("", [user("hi")], tools=[LOOKUP]))
    assert info.value.retryable is True
    assert "finish_reason" in str(info.value)


MALFORMED = {
    "bad_json": b"data: {not json\n\n",
    "non_utf8": b'data: {"id": "\xff\xfe"}\n\n',
    "not_an_object": b"data: 5\n\n",
    "null_choice": b'data: {"choices": [null]}\n\n',
    "text_not_a_string": b'data: {"choices": [{"index": 0, "delta": {"content": 5}}]}\n\n',
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_stream_is_a_retryable_model_error(server: ScriptedOpenAIServer, raw: bytes) -> None:
    server.script(ScriptedReply(text="Hello", raw=[raw]))
    with pytest.raises(ModelError) as info:
        await complete(make_provider(server), ModelRequest("", [user("hi")]))
    assert info.value.retryable is True
    assert "malformed" in str(info.value)


async def test_chunk_without_a_delta_is_skipped(server: ScriptedOpenAIServer) -> None:
    """Some servers send a choice with no ``delta`` (e.g. one that only carries its ``finish_reason``)."""
    bare = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": None}]}  # fmt: skip
    server.script(ScriptedReply(text="Hello there", raw=[f"data: {json.dumps(bare)}\n\n".encode()]))
    response, sink = await complete(make_provider(server), ModelRequest("", [user("hi")]))
    assert response.text == "Hello there" == "".join(sink.deltas)


async def test_answer_finished_before_the_stream_hangs_is_kept(server: ScriptedOpenAIServer) -> None:
    """The answer is whole at its ``finish_reason``: a server that then goes silent (no usage chunk, no
    ``[DONE]``) must not turn the answer the caller heard into a failure."""
    server.script(ScriptedReply(text="Your order ships tomorrow.", hang_after_finish_s=3))
    response, sink = await complete(make_provider(server, timeout_s=0.5), ModelRequest("", [user("hi")]))
    assert response.text == "Your order ships tomorrow." == "".join(sink.deltas)


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [("2", (2.0, 2.0)), ("date", (25.0, 30.0)), (None, None), ("soon", None)],
    ids=["seconds", "http_date", "absent", "unreadable"],
)
async def test_retry_after_is_read_from_the_error(
    server: ScriptedOpenAIServer, retry_after: str | None, expected: tuple[float, float] | None
) -> None:
    if retry_after == "date":
        retry_after = formatdate(time.time() + 30, usegmt=True)
    server.script(ScriptedReply(status=429, retry_after=retry_after))
    with pytest.raises(ModelError) as info:
        await complete(make_provider(server), ModelRequest("", [user("hi")]))
    wait = info.value.retry_after_s
    if expected is None:
        assert wait is None
    else:
        assert wait is not None and expected[0] <= wait <= expected[1]


def _call(call_id: str, name: str = "lookup_order") -> FunctionCallItem:
    return FunctionCallItem(id=f"item_{call_id}", call_id=call_id, name=name, arguments="{}", agent="orders")


def _output(call_id: str) -> FunctionCallOutputItem:
    return FunctionCallOutputItem(id=f"item_out_{call_id}", call_id=call_id, output=f'"{call_id} done"', agent="orders")


HISTORIES = {
    # the caller spoke while a client's tool ran: their message was committed before the tool's output
    "output_after_a_message": [user("check my order"), _call("c1"), user("are you there?", "item_u2"), _output("c1")],
    # a client never answered its tool call, and the caller went on
    "call_never_answered": [user("check my order"), _call("c1"), user("never mind", "item_u2")],
    # a consult: the supervisor's two tool rounds sit between the front agent's consult call and its output
    "consult_around_tool_rounds": [
        user("what do I owe?"),
        _call("k1", "consult_supervisor"),
        _call("s1"),
        _output("s1"),
        _call("s2"),
        _output("s2"),
        _output("k1"),
        MessageItem(id="item_a", role="assistant", text="You owe 5.", agent="orders"),
        user("thanks", "item_u2"),
    ],  # fmt: skip
    # the hot window was cut inside a group of calls: an output whose call was archived
    "output_of_an_archived_call": [_call("c2"), _output("c1"), _output("c2"), user("and now?", "item_u2")],
}


@pytest.mark.parametrize("history", HISTORIES.values(), ids=HISTORIES.keys())
async def test_history_is_sent_as_chat_completions_accepts_it(
    server: ScriptedOpenAIServer, history: list[MessageItem | FunctionCallItem | FunctionCallOutputItem]
) -> None:
    """Realtime conversations allow any item order; Chat Completions (OpenAI answers 400 otherwise, as the scripted
    server does) wants each assistant message's tool calls answered by the tool messages right after it."""
    server.script(ScriptedReply(text="ok"))
    response, _ = await complete(make_provider(server, agent="orders"), ModelRequest("", history, tools=[LOOKUP]))
    assert response.text == "ok"
    messages = server.requests[0]["messages"]
    sent = [m["content"] for m in messages if m["role"] == "user"]
    assert sent == [m.text for m in history if isinstance(m, MessageItem) and m.role == "user"]  # none lost
    outputs = {m["tool_call_id"]: m["content"] for m in messages if m["role"] == "tool"}
    kept = {o.call_id: o.output for o in history if isinstance(o, FunctionCallOutputItem) and o.call_id in outputs}
    assert all(outputs[k] == v for k, v in kept.items())  # every answered call keeps its output


async def test_scripted_server_refuses_tool_messages_openai_refuses(server: ScriptedOpenAIServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, headers={"Authorization": "Bearer k"}) as client:
        dangling = [{"role": "assistant", "tool_calls": [{"id": "c1", "type": "function"}]}, {"role": "user"}]
        orphan = [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "c9", "content": "x"}]
        for messages in (dangling, orphan):
            answer = await client.post("/chat/completions", json={"model": "m", "messages": messages})
            assert answer.status_code == 400, messages


async def test_tool_call_id_and_name_repeated_in_every_chunk_are_taken_once(server: ScriptedOpenAIServer) -> None:
    server.script(
        ScriptedReply(tool_calls=[("lookup_order", {"order_id": "A-1234"}), ("a", {"x": 1})], chunk_size=4,
                      repeat_call_fields=True)
    )  # fmt: skip
    response, _ = await complete(make_provider(server), ModelRequest("", [user("go")], tools=[LOOKUP]))
    assert [(c.name, json.loads(c.arguments)) for c in response.tool_calls] == [
        ("lookup_order", {"order_id": "A-1234"}),
        ("a", {"x": 1}),
    ]
    assert all(re.fullmatch(r"call_\d+", c.call_id) for c in response.tool_calls), response.tool_calls


@pytest.mark.parametrize(("kind", "retryable"), [("server_error", True), ("invalid_request_error", False)])
async def test_error_event_in_the_stream(server: ScriptedOpenAIServer, kind: str, retryable: bool) -> None:
    """An error the server sends inside its 200 stream (OpenAI does when it fails mid-answer) is retryable
    unless it blames the request."""
    event = {"error": {"message": "The server had an error while processing your request.", "type": kind}}
    server.script(ScriptedReply(text="Hel", raw=[f"data: {json.dumps(event)}\n\n".encode()]))
    with pytest.raises(ModelError) as info:
        await complete(make_provider(server), ModelRequest("", [user("hi")]))
    assert info.value.retryable is retryable
    assert "processing your request" in str(info.value)


async def test_malformed_tail_after_the_answer_is_left_out(server: ScriptedOpenAIServer) -> None:
    """After the finish_reason, a garbled usage chunk costs the usage, not the answer the caller heard."""
    garbled = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [],
               "usage": {"prompt_tokens": "many", "completion_tokens": 2}}  # fmt: skip
    server.script(ScriptedReply(text="All done.", tail_raw=[f"data: {json.dumps(garbled)}\n\n".encode()]))
    response, sink = await complete(make_provider(server), ModelRequest("", [user("hi")]))
    assert response.text == "All done." == "".join(sink.deltas)


async def test_stream_ended_by_done_without_a_finish_reason_is_whole(server: ScriptedOpenAIServer) -> None:
    """Some OpenAI-compatible proxies send no finish_reason; their ``[DONE]`` still says the answer is whole."""
    server.script(ScriptedReply(text="Your order ships tomorrow.", omit_finish=True))
    response, _ = await complete(make_provider(server), ModelRequest("", [user("hi")]))
    assert response.text == "Your order ships tomorrow."
    assert response.output_tokens == 4  # the usage chunk, after which [DONE] came
