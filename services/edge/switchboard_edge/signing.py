"""The edges' shared signing secret, and the session ids it makes unforgeable per tenant.

``SWITCHBOARD_EDGE_SECRET`` when set (every replica the same; ``new,old`` during a rotation: the first
signs, any verifies, so nothing in flight breaks while replicas roll); otherwise the first edge generates one
and keeps it in the ``switchboard_edge`` KV bucket, where every other edge of the stack reads it, so
client secrets minted on one replica are accepted on another with no setting at all.

A new session's id carries a MAC of its tenant: ``sess_<16 hex random><16 hex MAC>``. Resuming an id
that is not stored yet is only allowed to the tenant it was issued to, so another tenant cannot tell
an existing session from one that does not exist, nor claim an id issued to someone else.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from switchboard.bus.subjects import EDGE_BUCKET
from switchboard.state import StateRetry
from switchboard.state.retry import cas_write

SECRET_KEY = "signing_secret"
_SESSION_ID = re.compile(r"^sess_([0-9a-f]{16})([0-9a-f]{16})$")


async def edge_bucket(js: JetStreamContext, replicas: int, retry: StateRetry) -> KeyValue:
    """The edges' shared KV bucket (``EDGE_BUCKET``), created by the first edge."""

    async def bucket() -> KeyValue:
        try:
            return await js.key_value(EDGE_BUCKET)
        except BucketNotFoundError:
            return await js.create_key_value(KeyValueConfig(bucket=EDGE_BUCKET, history=1, replicas=replicas))

    return await retry.run("edge.secret.open", bucket)


async def shared_secret(configured: str, js: JetStreamContext, *, replicas: int = 1) -> list[bytes]:
    """The configured secrets (signing one first), else the stack's generated one (made by the first edge)."""
    if configured.strip():
        return [s.strip().encode() for s in configured.split(",") if s.strip()]
    retry = StateRetry()
    kv = await edge_bucket(js, replicas, retry)
    try:
        await cas_write(kv, SECRET_KEY, secrets.token_hex(32).encode(), 0, retry, "edge.secret.create")
    except KeyWrongLastSequenceError:
        pass  # another edge made it first: use theirs
    entry = await retry.run("edge.secret.read", lambda: kv.get(SECRET_KEY))
    assert entry.value is not None
    return [entry.value]


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return hmac.new(secret, purpose, hashlib.sha256).digest()


class EdgeKeys:
    """Keys derived from the shared secrets, one per purpose; the first secret's keys sign, all verify."""

    def __init__(self, *shared: bytes) -> None:
        if not shared:
            raise ValueError("EdgeKeys needs at least one secret")
        self.client_secrets = [_derive(s, b"switchboard client secret v1") for s in shared]
        self._session_ids = [_derive(s, b"switchboard session id v1") for s in shared]

    @staticmethod
    def _tag(key: bytes, owner: str, nonce: str) -> str:
        return hmac.new(key, f"{owner}\0{nonce}".encode(), hashlib.sha256).hexdigest()[:16]

    def new_session_id(self, owner: str) -> str:
        nonce = secrets.token_hex(8)
        return f"sess_{nonce}{self._tag(self._session_ids[0], owner, nonce)}"

    def issued_to(self, session_id: str, owner: str) -> bool:
        """Whether ``session_id`` was made by :meth:`new_session_id` for ``owner`` (by any edge of the stack)."""
        m = _SESSION_ID.match(session_id)
        if m is None:
            return False
        return any(hmac.compare_digest(m.group(2), self._tag(k, owner, m.group(1))) for k in self._session_ids)
