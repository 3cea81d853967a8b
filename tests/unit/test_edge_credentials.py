"""Edge credentials and limits without processes: the key ring, the key file, tenant-bound session ids,
the per-key limiter, origin checks and the session audio cap."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.datastructures import Headers

from switchboard.schemas import SessionState
from switchboard.security.api_keys import KeyFile, KeyFileError, KeyLimits, KeyRing, new_key
from switchboard.security.log_filter import scrub_credentials
from switchboard.settings import Settings
from switchboard_edge.limits import CappedSession, KeyLimiter, Limits
from switchboard_edge.origins import origin_allowed, parse_origins
from switchboard_edge.signing import EdgeKeys


def test_a_key_file_holds_hashes_and_the_ring_verifies_by_id(tmp_path: Path) -> None:
    key, record = new_key("acme", name="backend", limits=KeyLimits(max_sessions=3))
    other, other_record = new_key("globex")
    file = KeyFile(tmp_path / "keys.json")
    with file.change() as keys:
        keys.extend([record, other_record])
    text = file.path.read_text()
    assert key.split("-", 2)[2] not in text and other.split("-", 2)[2] not in text
    assert oct(file.path.stat().st_mode & 0o777) == "0o600"
    ring = KeyRing(path=file.path)
    match = ring.verify(key)
    assert match is not None and (match.key_id, match.tenant, match.limits.max_sessions) == (record.id, "acme", 3)
    assert ring.verify(key[:-1] + ("x" if key[-1] != "x" else "y")) is None  # right id, wrong secret
    assert ring.verify(f"sb-{other_record.id}-{key.split('-', 2)[2]}") is None  # one key's secret, another's id
    assert ring.verify("sb-000000000000-" + "a" * 43) is None  # unknown id
    with file.change() as keys:
        keys[:] = [k.model_copy(update={"revoked_at": time.time()}) if k.id == record.id else k for k in keys]
    assert ring.verify(key) is None and ring.get(record.id) is None  # re-read: revoked at once
    assert ring.verify(other) is not None


def test_a_broken_key_file_stops_the_start_but_not_a_running_edge(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text("{not json")
    with pytest.raises(KeyFileError, match="cannot read the key file"):
        KeyRing(path=path)
    for shape in ("[]", '{"keys": {}}'):  # JSON, but not a key file: one line, not an AttributeError
        path.write_text(shape)
        with pytest.raises(KeyFileError, match="expected an object with a 'keys' list"):
            KeyRing(path=path)
    key, record = new_key("acme")
    path.write_text(json.dumps({"keys": [record.model_dump(mode="json")]}))
    ring = KeyRing(path=path)
    path.write_text('{"keys": [{"id": "broken"}]}')  # a bad edit while running
    assert ring.verify(key) is not None  # the keys last read still hold


def test_plain_keys_are_hashed_at_load_and_each_is_its_own_tenant() -> None:
    ring = KeyRing({"dev-key-one", "dev-key-two"})
    one, two = ring.verify("dev-key-one"), ring.verify("dev-key-two")
    assert one is not None and two is not None and one.tenant != two.tenant
    assert one.tenant.startswith("dev-") and ring.get(one.key_id) == one
    assert "dev-key-one" not in json.dumps({k: str(v) for k, v in vars(ring).items()})
    assert ring.verify("dev-key-three") is None


def test_settings_never_show_plain_keys_or_the_edge_secret() -> None:
    settings = Settings(api_keys="sk-plain-secret", edge_secret="edge-signing-secret")
    assert "sk-plain-secret" not in repr(settings) and "edge-signing-secret" not in repr(settings)
    assert settings.api_key_set == frozenset({"sk-plain-secret"})


@pytest.mark.parametrize("tenant", ["", "Acme", "dev-sneaky", "a b", "x" * 64])
def test_bad_tenants_are_refused(tenant: str) -> None:
    with pytest.raises(ValueError, match="invalid tenant"):
        new_key(tenant)


def test_session_ids_are_bound_to_the_tenant_they_were_issued_to() -> None:
    keys, other_edge, other_stack = EdgeKeys(b"s" * 32), EdgeKeys(b"s" * 32), EdgeKeys(b"t" * 32)
    session_id = keys.new_session_id("acme")
    assert other_edge.issued_to(session_id, "acme")  # any replica with the shared secret
    assert not keys.issued_to(session_id, "globex")
    assert not other_stack.issued_to(session_id, "acme")
    assert not keys.issued_to("sess_" + "0" * 32, "acme") and not keys.issued_to("chosen-by-client", "acme")
    rotating = EdgeKeys(b"n" * 32, b"s" * 32)  # SWITCHBOARD_EDGE_SECRET=new,old during a rotation
    assert rotating.issued_to(session_id, "acme")  # ids signed with the old secret still hold
    assert not keys.issued_to(rotating.new_session_id("acme"), "acme")  # new ones are signed with the new


def test_the_limiter_refills_at_the_key_rate_and_counts_open_sessions() -> None:
    now = [1000.0]
    limiter = KeyLimiter(clock=lambda: now[0])
    assert [limiter.attempt("k", 2) for _ in range(2)] == [0.0, 0.0]
    assert limiter.attempt("k", 2) == pytest.approx(30.0)  # one attempt per 30 s at 2 a minute
    assert limiter.attempt("other", 2) == 0.0  # per key
    now[0] += 30
    assert limiter.attempt("k", 2) == 0.0
    assert limiter.open("k", 1) and not limiter.open("k", 1)
    limiter.close("k")
    assert limiter.open("k", 1)


def test_key_limits_override_the_edge_defaults() -> None:
    settings = Settings(api_keys="k", session_max_turns=7)
    limits = Limits.of(KeyLimits(connects_per_minute=5), settings)
    assert (limits.connects_per_minute, limits.session_max_turns) == (5, 7)


@pytest.mark.parametrize(
    ("origin", "allowed", "ok"),
    [
        (None, "", True),  # servers and SDKs send no Origin
        ("http://edge.local:8080", "", True),  # the edge's own page
        ("https://evil.example", "", False),
        ("https://app.example", "https://app.example", True),
        ("https://app.example/", "https://APP.example", True),
        ("https://evil.example", "https://app.example", False),
        ("https://evil.example", "*", True),
        ("null", "", False),  # sandboxed frames, file:// pages
    ],
)
def test_origins(origin: str | None, allowed: str, ok: bool) -> None:
    headers = {"host": "edge.local:8080"} | ({"origin": origin} if origin else {})
    assert origin_allowed(Headers(headers), parse_origins(allowed)) is ok


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        self.scope: dict[str, Any] = {}  # no server extensions: the session sends through send_text

    async def send_text(self, text: str) -> None:
        self.sent.append(json.loads(text))

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


async def test_the_audio_hook_ends_a_session_over_its_audio_cap() -> None:
    ws = FakeSocket()
    state = SessionState(session_id="sess_a", scenario="s", active_agent="a", created_at=0, updated_at=0)
    limits = Limits(10, 1, 60.0, 10, session_max_audio_s=5.0)
    deps: Any = SimpleNamespace(instructions="", conductor=SimpleNamespace(scenario=SimpleNamespace(agents=[])))
    session = CappedSession(ws, deps, state, 0, False, limits=limits)
    session.add_audio_seconds(3.0)
    assert session._ending is None
    session.add_audio_seconds(2.5)
    session.add_audio_seconds(1.0)  # a second breach ends nothing more
    assert session._ending is not None
    await asyncio.wait_for(session._ending, 5)
    assert [e["error"]["code"] for e in ws.sent] == ["session_audio_limit_reached"]
    assert ws.closed == (1008, "session_audio_limit_reached")


def test_credentials_are_scrubbed_from_log_lines() -> None:
    key, record = new_key("acme")
    line = (
        f"< authorization: Bearer {key} | < sec-websocket-protocol: realtime, openai-insecure-api-key.sk-plain "
        "| ek_eyJpIjoi.c2lnbmF0dXJl"
    )
    scrubbed = scrub_credentials(line)
    assert key.split("-", 2)[2] not in scrubbed and "sk-plain" not in scrubbed and "c2lnbmF0dXJl" not in scrubbed
    assert f"sb-{record.id}-[REDACTED]" in scrub_credentials(f"key {key} used")  # the id stays


def test_a_damaged_key_hash_is_a_file_error_at_load_not_a_crash_at_connect(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key, record = new_key("acme")
    damaged = record.model_dump(mode="json") | {"hash": "sha256$zz$00"}
    path.write_text(json.dumps({"keys": [damaged]}))
    with pytest.raises(KeyFileError, match="is not valid"):
        KeyRing(path=path)
    path.write_text(json.dumps({"keys": [record.model_dump(mode="json")]}))
    assert KeyRing(path=path).verify(key) is not None


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("authorization: BEARER abc.def", "abc.def"),
        ("proto openai-insecure-api-key.sk-plain-1", "sk-plain-1"),
        ("secret ek_eyJpIjoi.c2lnbmF0dXJl", "c2lnbmF0dXJl"),
        ("used sb-0123456789ab-s3cr3tpart", "s3cr3tpart"),
    ],
)
def test_each_credential_alone_in_a_line_is_scrubbed(line: str, secret: str) -> None:
    """Each kind on its own: the quick look for any of them must not let one through."""
    assert secret not in scrub_credentials(line)


def test_a_line_without_credentials_is_left_as_it_is() -> None:
    line = "handoff triage -> auth (sb is not a key, nor is bear or ek)"
    assert scrub_credentials(line) is line
