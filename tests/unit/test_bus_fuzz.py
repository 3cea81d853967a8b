"""Bus fuzzing: malformed requests to the real agent runner get a typed error and never stop it.

A real nats-server and the real ``AgentRunner`` (its ``QueueService``) for the retail
``generalist`` agent (offline model, no delay). Hypothesis sends malformed JSON, truncated and
mistyped turn requests, wrong or missing ``Switchboard-Schema`` headers, payloads near the server's
``max_payload`` and random bytes. Every request must get one ``switchboard.v1.error`` reply
(``unsupported_version`` for a bad header, else ``bad_request``) carrying our schema header; a
request the schema accepts must get a ``turn_result``; and a valid request right after each one
must still be answered.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client
from pydantic import TypeAdapter, ValidationError

from switchboard.agents import load_scenario
from switchboard.bus import Bus, headers, subjects
from switchboard.local import NatsServer
from switchboard.schemas import SCHEMA_VERSION, ErrorCode, ErrorReply, TurnRequest
from switchboard.settings import Settings
from switchboard_agent.runner import AgentRunner

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
AGENT = "generalist"
SUBJECT = subjects.agent_turn(AGENT)
turn_request_adapter: TypeAdapter[TurnRequest] = TypeAdapter(TurnRequest)
error_adapter: TypeAdapter[ErrorReply] = TypeAdapter(ErrorReply)


def valid_request(n: int = 0) -> dict[str, Any]:
    req = TurnRequest(
        session_id=f"fuzz-{n}", turn_id=f"resp_fuzz_{n}-0", agent=AGENT,
        history=[{"type": "message", "id": f"item_{n}", "role": "user", "text": "hello there"}],  # type: ignore[list-item]
    )  # fmt: skip
    data: dict[str, Any] = json.loads(req.to_bytes())
    return data


@dataclass
class Rig:
    loop: asyncio.AbstractEventLoop
    nc: Client
    runner: AgentRunner
    max_payload: int
    sent: int = 0
    seen: Counter[str] = field(default_factory=Counter)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 30))

    async def replies(self, payload: bytes, hdrs: dict[str, str] | None) -> list[Any]:
        """Publish one request and gather its replies until a terminal one (or 5 s of silence)."""
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        try:
            await self.nc.publish(SUBJECT, payload, reply=inbox, headers=hdrs)
            out = []
            while True:
                msg = await sub.next_msg(timeout=5)
                assert (msg.headers or {}).get(headers.SCHEMA) == SCHEMA_VERSION, msg.headers
                body = json.loads(msg.data)
                out.append((body.get("type"), body))
                if body.get("type") in ("switchboard.v1.turn_result", "switchboard.v1.error"):
                    return out
        finally:
            await sub.unsubscribe()

    def still_serves(self) -> None:
        self.sent += 1
        request = json.dumps(valid_request(self.sent)).encode()
        replies = self.run(self.replies(request, {headers.SCHEMA: SCHEMA_VERSION}))
        assert replies[-1][0] == "switchboard.v1.turn_result", replies[-1]


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    loop = asyncio.new_event_loop()
    with NatsServer(Path(tempfile.mkdtemp(prefix="fuzz-nats-"))) as server:
        settings_ = Settings(nats_url=server.url, metrics_port=-1, api_keys="unused")
        scenario = load_scenario("retail", ROOT / "scenarios")
        runner = AgentRunner(settings_, scenario, AGENT)
        loop.run_until_complete(runner.start())
        bus = Bus([server.url], name="fuzzer")
        loop.run_until_complete(bus.connect())
        try:
            yield Rig(loop, bus.nc, runner, bus.nc.max_payload)
        finally:
            loop.run_until_complete(bus.close())
            loop.run_until_complete(runner.stop())
            loop.close()


# --- payload strategies -----------------------------------------------------------------------------

JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)
FIELDS = list(valid_request())


@st.composite
def truncated(draw: st.DrawFn) -> bytes:
    data = json.dumps(valid_request()).encode()
    return data[: draw(st.integers(0, len(data) - 1))]


@st.composite
def wrong_types(draw: st.DrawFn) -> bytes:
    req = valid_request()
    for name in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True)):
        if draw(st.booleans()):
            req[name] = draw(JSON_VALUES)
        else:
            del req[name]
    return json.dumps(req).encode()


@st.composite
def oversized(draw: st.DrawFn) -> bytes:
    """Near the server's max_payload (1 MiB by default), leaving room for the headers."""
    size = (1 << 20) - draw(st.integers(1024, 64 * 1024))
    kind = draw(st.sampled_from(["junk", "string", "history", "nested"]))
    if kind == "junk":
        return b"x" * size
    if kind == "string":
        return json.dumps({"type": "switchboard.v1.turn_request", "session_id": "s" * size}).encode()[:size]
    if kind == "nested":
        depth = size // 2
        return b"[" * depth + b"]" * depth
    req = valid_request()
    req["history"] = [{"type": "message", "id": "i", "role": "user", "text": "y" * (size - 400)}]
    return json.dumps(req).encode()[: size + draw(st.integers(-50, 0))]


PAYLOADS = st.one_of(
    st.binary(max_size=512),
    st.text(max_size=256).map(str.encode),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    truncated(),
    wrong_types(),
    st.sampled_from([b"", b"{", b"null", b"[]", b'{"type": "switchboard.v1.turn_request"}', b"\xff\xfe\x00"]),
)
HEADER_VALUES = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12
) | st.sampled_from(["2.0", "0.9", "10.0", "1x", "v1", "one", "-1.0"])
HEADERS = st.one_of(
    st.just({headers.SCHEMA: SCHEMA_VERSION}),
    st.just({headers.SCHEMA: "1.7"}),  # a newer minor of our major is accepted
    st.none(),  # no headers at all
    st.just({headers.SESSION: "fuzz"}),  # headers, but no schema version
    HEADER_VALUES.map(lambda v: {headers.SCHEMA: v}),
)


def expected(payload: bytes, hdrs: dict[str, str] | None) -> str:
    version = (hdrs or {}).get(headers.SCHEMA)
    if version is None or version.strip().split(".", 1)[0] != "1":
        return ErrorCode.UNSUPPORTED_VERSION.value
    try:
        req = turn_request_adapter.validate_json(payload)
    except ValidationError:
        return ErrorCode.BAD_REQUEST.value
    return "wrong_agent" if req.agent != AGENT else "turn_result"


def check(rig: Rig, payload: bytes, hdrs: dict[str, str] | None) -> None:
    want = expected(payload, hdrs)
    event(want)
    rig.seen[want] += 1
    replies = rig.run(rig.replies(payload, hdrs))
    kind, body = replies[-1]
    if want == "turn_result":
        assert kind == "switchboard.v1.turn_result", body
    else:
        assert kind == "switchboard.v1.error", body
        err = error_adapter.validate_python(body)
        assert err.code == want, (err, payload[:200], hdrs)
        assert not err.retryable
        if err.code == ErrorCode.UNSUPPORTED_VERSION:
            assert err.supported_versions == [SCHEMA_VERSION]
        assert len(replies) == 1, replies  # an invalid request starts no work: no heartbeat, no delta
    rig.still_serves()


FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,  # no .hypothesis/ example store in the work tree
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(payload=PAYLOADS, hdrs=HEADERS)
def test_malformed_requests_get_a_typed_error_and_the_service_keeps_serving(
    rig: Rig, payload: bytes, hdrs: dict[str, str] | None
) -> None:
    check(rig, payload, hdrs)


@settings(FUZZ, max_examples=12)
@given(payload=oversized(), hdrs=HEADERS)
def test_payloads_near_max_payload_get_a_typed_error(rig: Rig, payload: bytes, hdrs: dict[str, str] | None) -> None:
    assert len(payload) < rig.max_payload
    check(rig, payload, hdrs)


def test_after_the_fuzzing_the_runner_is_healthy(rig: Rig) -> None:
    assert {"unsupported_version", "bad_request"} <= set(rig.seen), rig.seen  # both refusals were exercised
    rig.still_serves()
    assert rig.runner._service is not None and rig.runner._service.inflight == 0
