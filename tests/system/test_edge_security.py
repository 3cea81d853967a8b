"""Edge security against real processes: hashed keys made by ``switchboard keys``, client secrets minted
over HTTP and used once, tenant isolation, key and session limits, origin checks, and the control-plane
audit (``switchboard audit``). Most of these are attempts that must fail."""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from openai import AsyncOpenAI
from websockets.exceptions import ConnectionClosed

from switchboard.local.ports import free_port
from switchboard.local.stack import Stack
from switchboard.security.api_keys import KeyFile
from switchboard.security.command import keys, register
from switchboard.telemetry.otlp_receiver import OTLPReceiver
from switchboard_edge.signing import EdgeKeys

from .client import RawClient, done_of, open_session, say, sdk_client
from .stacks import make_stack

pytestmark = pytest.mark.system

EDGE_SECRET = secrets.token_hex(32)
ACTOR = "test-operator"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("edge-security")
    env = {
        "SWITCHBOARD_API_KEYS_FILE": str(tmp / "keys.json"), "SWITCHBOARD_EDGE_SECRET": EDGE_SECRET,
        "SWITCHBOARD_ACTOR": ACTOR, "SWITCHBOARD_ALLOWED_ORIGINS": "https://app.example",
    }  # fmt: skip
    with make_stack(tmp, agents=["triage", "generalist"], env=env) as stack:
        yield stack


def switchboard(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``switchboard`` command in its own process, with the stack's settings."""
    return subprocess.run(
        [sys.executable, "-m", "switchboard", *args], env=stack.env(), capture_output=True, text=True, timeout=60
    )


def create_key(stack: Stack, tenant: str, *limits: str) -> tuple[str, str]:
    """``switchboard keys create`` in its own process: the key (printed once) and its id."""
    done = switchboard(stack, "keys", "create", "--tenant", tenant, *limits)
    assert done.returncode == 0, done.stderr
    key = done.stdout.splitlines()[0]
    return key, key.split("-")[1]


async def keys_verb(stack: Stack, verb: str, *argv: str) -> str:
    """``switchboard keys VERB`` run in this process (quicker, for tests about what keys do, not the command)."""
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    env = stack.env()
    return await keys(parser.parse_args(["keys", verb, "--file", env["SWITCHBOARD_API_KEYS_FILE"],
                                         "--nats-url", env["SWITCHBOARD_NATS_URL"], *argv]))  # fmt: skip


async def new_key(stack: Stack, tenant: str, *limits: str) -> tuple[str, str]:
    key = (await keys_verb(stack, "create", "--tenant", tenant, *limits)).splitlines()[0]
    return key, key.split("-")[1]


def refusal(excinfo: pytest.ExceptionInfo[websockets.InvalidStatus]) -> tuple[int, dict[str, Any]]:
    response = excinfo.value.response
    return response.status_code, json.loads(response.body or b"{}")


async def refused(stack: Stack, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """Status and body of a WebSocket upgrade the edge must refuse."""
    with pytest.raises(websockets.InvalidStatus) as excinfo:
        async with RawClient(stack, **kwargs):
            pass
    return refusal(excinfo)


async def mint(stack: Stack, key: str, body: dict[str, Any] | None = None, port: int | None = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}" if port else stack.edge_url) as http:
        auth = {"Authorization": f"Bearer {key}"}
        return await http.post("/v1/realtime/client_secrets", json=body or {}, headers=auth)


def text_of_files(*paths: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in paths)


async def test_keys_made_by_the_cli_open_sessions_and_are_stored_hashed(stack: Stack) -> None:
    key, key_id = create_key(stack, "acme", "--name", "web backend")
    stored = text_of_files(Path(stack.env()["SWITCHBOARD_API_KEYS_FILE"]))
    assert key_id in stored and key.split("-", 2)[2] not in stored  # the id, never the secret
    listed = switchboard(stack, "keys", "list")
    assert key_id in listed.stdout and "acme" in listed.stdout and "web backend" in listed.stdout
    assert key.split("-", 2)[2] not in listed.stdout
    async with sdk_client(stack, key=key).realtime.connect(model="switchboard") as conn:
        await open_session(conn)
        assert (await say(conn, "hello")).status == "completed"
    status, body = await refused(stack, key=key[:-1] + ("A" if key[-1] != "A" else "B"))
    assert (status, body["error"]["code"]) == (401, "invalid_api_key")
    bad = switchboard(stack, "keys", "create", "--tenant", "acme", "--max-sessions", "0")
    assert bad.returncode == 1  # one line naming the option, not a pydantic dump
    assert bad.stderr == "switchboard keys create: error: --max-sessions: Input should be greater than or equal to 1\n"


async def test_the_edges_info_and_stats_answer_api_key_callers_only(stack: Stack) -> None:
    async with httpx.AsyncClient() as http:
        for path in ("/v1/switchboard/info", "/v1/switchboard/stats"):
            anonymous = await http.get(f"{stack.edge_url}{path}")
            assert (anonymous.status_code, anonymous.json()["error"]["code"]) == (401, "invalid_api_key"), path
            wrong = await http.get(f"{stack.edge_url}{path}", headers={"Authorization": "Bearer not-a-key"})
            assert wrong.status_code == 401, path
            known = await http.get(f"{stack.edge_url}{path}", headers={"Authorization": f"Bearer {stack.api_key}"})
            assert known.status_code == 200 and known.json(), path


async def test_a_revoked_key_is_refused_at_once(stack: Stack) -> None:
    key, key_id = create_key(stack, "acme")
    async with RawClient(stack, key=key) as client:
        await client.open()
    done = switchboard(stack, "keys", "revoke", key_id)
    assert done.returncode == 0, done.stderr
    status, body = await refused(stack, key=key)
    assert (status, body["error"]["code"]) == (401, "invalid_api_key")
    assert "revoked" in switchboard(stack, "keys", "list").stdout


async def test_a_key_revoked_with_close_sessions_ends_its_open_sessions_and_only_those(stack: Stack) -> None:
    leaked, leaked_id = await new_key(stack, "acme")
    retired, retired_id = await new_key(stack, "acme")
    other, _ = await new_key(stack, "acme")
    async with (
        RawClient(stack, key=leaked) as on_leaked,
        RawClient(stack, key=retired) as on_retired,
        RawClient(stack, key=other) as on_other,
    ):
        for client in (on_leaked, on_retired, on_other):
            await client.open()
        assert "its open sessions run on" in await keys_verb(stack, "revoke", retired_id)  # a rotation
        assert "end its open sessions" in await keys_verb(stack, "revoke", leaked_id, "--close-sessions")
        error = (await on_leaked.next("error"))["error"]
        assert (error["code"], error["type"]) == ("api_key_revoked", "invalid_request_error")
        await on_leaked.ws.wait_closed()
        assert on_leaked.ws.close_code == 1008
        # the check that ended it had read both revocations: the retired key's session runs on, as do others
        for client in (on_retired, on_other):
            done = next(e for e in await client.turn("hello") if e["type"] == "response.done")
            assert done["response"]["status"] == "completed"
    status, body = await refused(stack, key=leaked)
    assert (status, body["error"]["code"]) == (401, "invalid_api_key")
    stored = await asyncio.to_thread(text_of_files, Path(stack.env()["SWITCHBOARD_API_KEYS_FILE"]))
    assert '"close_sessions": true' in stored
    assert (await asyncio.to_thread(switchboard, stack, "keys", "list", "--json")).returncode == 0


async def test_a_key_change_that_cannot_be_audited_is_undone(stack: Stack) -> None:
    key, key_id = create_key(stack, "acme")
    nowhere = ("--nats-url", f"nats://127.0.0.1:{free_port()}")
    file = KeyFile(Path(stack.env()["SWITCHBOARD_API_KEYS_FILE"]))
    before = await asyncio.to_thread(file.read)
    both = await asyncio.gather(  # each waits out the command's connect timeout: side by side
        asyncio.to_thread(switchboard, stack, "keys", "create", "--tenant", "acme", *nowhere),
        asyncio.to_thread(switchboard, stack, "keys", "revoke", key_id, *nowhere),
    )
    for done in both:
        assert done.returncode == 1 and "cannot reach NATS" in done.stderr, done.stderr
    # a NATS that answers but refuses the login is not "unreachable": the command says what it needs
    anonymous = ("--nats-url", stack.nats.client_url)
    for verb in (["keys", "create", "--tenant", "acme", *anonymous], ["audit", *anonymous]):
        done = await asyncio.to_thread(switchboard, stack, *verb)
        assert done.returncode == 1 and "refused the credentials" in done.stderr, done.stderr
        assert "operator login" in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert await asyncio.to_thread(file.read) == before  # no key added, none revoked
    async with RawClient(stack, key=key) as client:
        await client.open()


async def test_keys_and_the_edge_secret_rotate_without_downtime(tmp_path: Path) -> None:
    old, new = secrets.token_hex(32), secrets.token_hex(32)
    env = {"SWITCHBOARD_API_KEYS_FILE": str(tmp_path / "keys.json"), "SWITCHBOARD_EDGE_SECRET": old}
    with make_stack(tmp_path, agents=["triage", "generalist"], env=env) as stack:
        first, first_id = await new_key(stack, "acme")
        async with RawClient(stack, key=first) as client:
            session_id = (await client.open())["session_id"]
            await client.turn("hello")
        async with RawClient(stack, key=first) as client:
            fresh_id = (await client.open())["session_id"]  # issued under the old secret, never committed
        minted_before = (await mint(stack, first)).json()["value"]
        second, _ = await new_key(stack, "acme")  # the rollover window: both keys are valid
        stack.extra_env["SWITCHBOARD_EDGE_SECRET"] = f"{new},{old}"  # a replica rolled to the new secret
        _, rolled = stack.start_edge()
        for key in (first, second):
            async with RawClient(stack, key=key, port=rolled, session_id=session_id) as client:
                assert (await client.open())["history_items"] == 2
        async with RawClient(stack, key=second, port=rolled, session_id=fresh_id) as client:
            assert (await client.open())["resumed"] is False
        async with RawClient(stack, key=minted_before, port=rolled) as client:
            await client.open()
        minted_after = (await mint(stack, second, port=rolled)).json()["value"]
        async with RawClient(stack, key=minted_after, port=rolled) as client:
            await client.open()
        await keys_verb(stack, "revoke", first_id)  # the old key retires; the sessions stay the tenant's
        for port in (None, rolled):
            status, body = await refused(stack, key=first, port=port)
            assert (status, body["error"]["code"]) == (401, "invalid_api_key")
        async with RawClient(stack, key=second, session_id=session_id) as client:
            assert (await client.open())["history_items"] == 2


async def test_another_tenant_cannot_tell_a_session_exists(stack: Stack) -> None:
    acme, _ = await new_key(stack, "acme")
    acme_rotated, _ = await new_key(stack, "acme")
    globex, _ = await new_key(stack, "globex")
    async with RawClient(stack, key=acme) as owner:
        session_id = (await owner.open())["session_id"]
        await owner.turn("hello")
    async with RawClient(stack, key=acme) as owner:
        fresh_id = (await owner.open())["session_id"]  # issued, never committed
    existing = await refused(stack, key=globex, session_id=session_id)
    fresh = await refused(stack, key=globex, session_id=fresh_id)
    missing = await refused(stack, key=globex, session_id=f"sess_{secrets.token_hex(16)}")
    invented = await refused(stack, key=globex, session_id="my-own-session-name")
    assert existing == fresh == missing == invented
    assert existing[0] == 404 and existing[1]["error"]["code"] == "session_not_found"
    async with RawClient(stack, key=acme_rotated, session_id=session_id) as same_tenant:  # another key, same tenant
        assert (await same_tenant.open())["history_items"] == 2
    async with RawClient(stack, key=acme, session_id=fresh_id) as owner:
        assert (await owner.open())["resumed"] is False  # the owner may still take its own fresh id


async def test_a_browser_connects_once_with_a_client_secret(stack: Stack) -> None:
    key, _ = await new_key(stack, "acme")
    minted = await mint(stack, key, {"expires_after": {"anchor": "created_at", "seconds": 60},
                                     "session": {"type": "realtime", "instructions": "Be brief.",
                                                 "max_output_tokens": 64}})  # fmt: skip
    assert minted.status_code == 200, minted.text
    secret = minted.json()
    assert secret["value"].startswith("ek_") and secret["expires_at"] - time.time() <= 60
    async with RawClient(stack, key=secret["value"], auth="subprotocol", events=False) as browser:
        assert browser.ws.subprotocol == "realtime"
        created = await browser.open()
        assert created["session"]["instructions"] == "Be brief."  # the secret's session, applied at connect
        assert created["session"]["max_output_tokens"] == 64
        assert done_of(await browser.turn("hello"))["status"] == "completed"
    _, other_port = stack.start_edge()
    for port in (None, other_port):  # replayed on the edge that took it and on another replica
        status, body = await refused(stack, key=secret["value"], auth="subprotocol", port=port)
        assert (status, body["error"]["code"]) == (401, "client_secret_already_used")


async def test_the_official_sdk_mints_a_client_secret_and_connects_with_it(stack: Stack) -> None:
    key, _ = await new_key(stack, "acme")
    server = sdk_client(stack, key=key)
    secret = await server.realtime.client_secrets.create(
        expires_after={"anchor": "created_at", "seconds": 120}, session={"type": "realtime", "instructions": "Hi."}
    )
    assert secret.value.startswith("ek_")
    browser = AsyncOpenAI(api_key=secret.value, websocket_base_url=stack.ws_base, base_url=stack.edge_url + "/v1")
    async with browser.realtime.connect(model="switchboard") as conn:
        created = await conn.recv()
        assert created.type == "session.created"
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}
        )
        await conn.response.create()
        async for event in conn:
            if event.type == "response.done":
                assert event.response.status == "completed"
                break
        else:
            raise AssertionError("the connection ended before response.done")


def _signed(claims: dict[str, Any]) -> str:
    """A client secret signed with the edges' real secret (what only an edge can make)."""
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    key = EdgeKeys(EDGE_SECRET.encode()).client_secrets[0]
    sig = hmac.new(key, f"ek1.{payload}".encode(), hashlib.sha256).digest()
    return f"ek_{payload}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"


async def test_forged_expired_and_orphaned_client_secrets_are_refused(stack: Stack) -> None:
    key, key_id = await new_key(stack, "acme")
    value = (await mint(stack, key)).json()["value"]
    payload, signature = value.removeprefix("ek_").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged_claims = base64.urlsafe_b64encode(json.dumps(claims | {"t": "globex"}).encode()).rstrip(b"=").decode()
    cases = {
        f"ek_{forged_claims}.{signature}": "invalid_api_key",  # another tenant's claims under acme's signature
        f"ek_{payload}.{signature[:-2]}AA": "invalid_api_key",
        _signed(claims | {"e": int(time.time()) - 1, "i": secrets.token_hex(12)}): "client_secret_expired",
    }
    for secret, code in cases.items():
        for auth in ("bearer", "subprotocol"):
            status, body = await refused(stack, key=secret, auth=auth)
            assert (status, body["error"]["code"]) == (401, code), secret
    minting = await mint(stack, value)  # a client secret cannot mint more
    assert minting.status_code == 401
    assert switchboard(stack, "keys", "revoke", key_id).returncode == 0
    status, body = await refused(stack, key=value)  # minted by a key revoked since
    assert (status, body["error"]["code"]) == (401, "invalid_api_key")


async def test_mint_requests_outside_the_limits_get_openai_shaped_errors(stack: Stack) -> None:
    key, _ = await new_key(stack, "acme")
    too_long = await mint(stack, key, {"expires_after": {"anchor": "created_at", "seconds": 3600}})
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "expires_after.seconds"
    bad_field = await mint(stack, key, {"expires_after": {"anchor": "created_at", "seconds": 5}})
    assert bad_field.status_code == 400 and bad_field.json()["error"]["code"] == "invalid_value"
    assert (await mint(stack, "sk-nothing")).status_code == 401


@pytest.mark.parametrize(
    ("session", "param"),
    [
        ({"output_modalities": []}, "session.output_modalities"),
        ({"tools": [{"type": "function", "name": "a"}], "tool_choice": {"type": "function", "name": "b"}},
         "session.tool_choice.name"),
        ({"tools": [{"type": "function", "name": "a"}, {"type": "function", "name": "a"}]}, "session.tools.1.name"),
        ({"audio": {"output": {"speed": 100}}}, "session.audio.output.speed"),
    ],
)  # fmt: skip
async def test_a_client_secret_for_a_session_the_edge_would_refuse_is_not_minted(
    stack: Stack, session: dict[str, Any], param: str
) -> None:
    """Refused at mint, in the answer to the backend that asked, not after the browser's upgrade."""
    key, _ = await new_key(stack, "acme")
    answer = await mint(stack, key, {"session": session})
    assert answer.status_code == 400, answer.text
    assert (answer.json()["error"]["code"], answer.json()["error"]["param"]) == ("invalid_value", param)


async def test_a_key_over_its_connection_rate_or_session_count_is_refused(stack: Stack) -> None:
    rated, _ = await new_key(stack, "acme", "--connects-per-minute", "2")
    for _ in range(2):
        async with RawClient(stack, key=rated) as client:
            await client.open()
    status, body = await refused(stack, key=rated)
    assert (status, body["error"]["code"]) == (429, "rate_limit_exceeded")
    single, _ = await new_key(stack, "acme", "--max-sessions", "1")
    async with RawClient(stack, key=single) as first:
        await first.open()
        status, body = await refused(stack, key=single)
        assert (status, body["error"]["code"]) == (429, "session_limit_reached")


async def _closed_by_limit(client: RawClient) -> tuple[dict[str, Any], int | None]:
    """The error event and close code of a connection the edge ends for a limit."""
    error: dict[str, Any] = {}
    try:
        while True:
            event = await client.recv()
            if event["type"] == "error":
                error = event["error"]
    except ConnectionClosed as closed:
        return error, closed.rcvd.code if closed.rcvd else None


async def test_sessions_are_held_to_their_turn_and_duration_caps(stack: Stack) -> None:
    one_turn, _ = await new_key(stack, "acme", "--session-max-turns", "1")
    async with RawClient(stack, key=one_turn) as client:
        await client.open()
        assert done_of(await client.turn("hello"))["status"] == "completed"
        await client.send({"type": "response.create"})
        error, code = await asyncio.wait_for(_closed_by_limit(client), 10)
    assert error["code"] == "session_turn_limit_reached" and error["type"] == "invalid_request_error"
    assert code == 1008
    short, _ = await new_key(stack, "acme", "--session-max-s", "1")
    async with RawClient(stack, key=short) as client:
        await client.open()
        error, code = await asyncio.wait_for(_closed_by_limit(client), 10)
    assert error["code"] == "session_expired" and code == 1008


async def test_browsers_from_other_origins_are_refused(stack: Stack) -> None:
    status, body = await refused(stack, headers={"Origin": "https://evil.example"})
    assert (status, body["error"]["code"]) == (403, "origin_not_allowed")
    for origin in ("https://app.example", f"http://127.0.0.1:{stack.edge_port}"):  # listed, and the edge's own
        async with RawClient(stack, headers={"Origin": origin}) as client:
            await client.open()


async def test_control_plane_changes_are_audited(stack: Stack) -> None:
    key, key_id = create_key(stack, "auditco")
    assert switchboard(stack, "keys", "revoke", key_id).returncode == 0
    assert switchboard(stack, "rollout", "set-weight", "triage", "0").returncode == 0
    assert switchboard(stack, "rollout", "abort", "triage").returncode == 0
    listed = switchboard(stack, "audit", "--json")
    assert listed.returncode == 0, listed.stderr
    records = [json.loads(line) for line in listed.stdout.splitlines()]
    mine = [r for r in records if r["target"] in (key_id, "triage") and r["action"] != "agent.config_changed"]
    assert [(r["action"], r["target"]) for r in mine] == [("key.created", key_id), ("key.revoked", key_id),
                    ("rollout.weight_set", "triage"), ("rollout.aborted", "triage")]  # fmt: skip
    assert all(r["actor"] == ACTOR and r["ts"] > 0 for r in mine)
    created = next(r for r in records if r["target"] == key_id)
    assert created["details"]["tenant"] == "auditco" and key.split("-", 2)[2] not in listed.stdout
    table = switchboard(stack, "audit").stdout
    assert "key.created" in table and "rollout.aborted" in table and ACTOR in table


async def test_no_key_or_client_secret_reaches_a_log_or_a_trace(tmp_path: Path) -> None:
    async with OTLPReceiver() as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100",
            "SWITCHBOARD_TRACE_CONTENT": "1", "SWITCHBOARD_LOG_LEVEL": "DEBUG",
            "SWITCHBOARD_API_KEYS_FILE": str(tmp_path / "keys.json"),
        }  # fmt: skip
        with make_stack(tmp_path, agents=["triage", "generalist"], env=env) as stack:
            key, _ = await new_key(stack, "acme")
            ek = (await mint(stack, key)).json()["value"]
            async with RawClient(stack, key=ek) as client:
                await client.open()
                assert done_of(await client.turn("hello"))["status"] == "completed"
            await refused(stack, key=ek)  # a replay
            await refused(stack, key=key[:-2] + "zz")  # a wrong secret under a real key id
            for param in ("api_key", "key"):  # a key in the URL is no credential, and the access log has the URL
                with pytest.raises(websockets.InvalidStatus):
                    async with websockets.connect(f"{stack.ws_base}/realtime?{param}={stack.api_key}&model=x"):
                        pass
            await receiver.wait_for(lambda spans: any(s.name == "edge.response" for s in spans), timeout_s=20)
    logs = text_of_files(*(tmp_path / "log").glob("*.log"))  # noqa: ASYNC240 (a directory listing)
    spans = json.dumps([(s.name, s.attributes, s.resource) for s in receiver.spans], default=str)
    assert "client secret minted" in logs and "edge.response" in spans  # both saw these credentials pass
    for secret in (key, key.split("-", 2)[2], ek, ek.removeprefix("ek_").split(".")[1], stack.api_key):
        assert secret not in logs and secret not in spans


async def test_a_full_edge_answers_another_tenant_s_live_session_as_a_missing_one(tmp_path: Path) -> None:
    """At the session cap, a live session id of another tenant is a new session to the edge (503), the answer
    any missing id gets: the cap's exemption for reconnects must not tell which ids are live."""
    env = {"SWITCHBOARD_API_KEYS_FILE": str(tmp_path / "keys.json"), "SWITCHBOARD_MAX_SESSIONS": "1"}
    with make_stack(tmp_path, agents=["triage", "generalist"], env=env) as full:
        acme, _ = await new_key(full, "acme")
        globex, _ = await new_key(full, "globex")
        async with RawClient(full, key=acme) as owner:
            session_id = (await owner.open())["session_id"]
            await owner.turn("hello")  # committed and live: the edge is at its cap of one session
            live = await refused(full, key=globex, session_id=session_id)
            missing = await refused(full, key=globex, session_id=f"sess_{secrets.token_hex(16)}")
            assert live[0] == missing[0] == 503 and live[1]["error"]["code"] == missing[1]["error"]["code"]
            async with RawClient(full, key=acme, session_id=session_id) as again:  # its owner still reconnects
                assert (await again.open())["session_id"] == session_id
