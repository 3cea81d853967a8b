"""The edges' shared signing secret, and the session ids it makes unforgeable per tenant.

``SWITCHBOARD_EDGE_SECRET`` when set (every replica the same); otherwise the first edge generates one
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


async def _bucket(js: JetStreamContext, replicas: int, retry: StateRetry) -> KeyValue:
    async def bucket() -> KeyValue:
        try:
            return await js.key_value(EDGE_BUCKET)
        except BucketNotFoundError:
            return await js.create_key_value(KeyValueConfig(bucket=EDGE_BUCKET, history=1, replicas=replicas))

    return await retry.run("edge.secret.open", bucket)


async def shared_secret(configured: str, js: JetStreamContext, *, replicas: int = 1) -> bytes:
    """The configured secret, else the stack's generated one (created by the first edge to ask)."""
    if configured:
        return configured.encode()
    retry = StateRetry()
    kv = await _bucket(js, replicas, retry)
    try:
        await cas_write(kv, SECRET_KEY, secrets.token_hex(32).encode(), 0, retry, "edge.secret.create")
    except KeyWrongLastSequenceError:
        pass  # another edge made it first: use theirs
    entry = await retry.run("edge.secret.read", lambda: kv.get(SECRET_KEY))
    assert entry.value is not None
    return entry.value


class EdgeKeys:
    """Keys derived from the shared secret, one per purpose."""

    def __init__(self, secret: bytes) -> None:
        self.client_secrets = hmac.new(secret, b"switchboard client secret v1", hashlib.sha256).digest()
        self._session_ids = hmac.new(secret, b"switchboard session id v1", hashlib.sha256).digest()

    def _tag(self, owner: str, nonce: str) -> str:
        return hmac.new(self._session_ids, f"{owner}\0{nonce}".encode(), hashlib.sha256).hexdigest()[:16]

    def new_session_id(self, owner: str) -> str:
        nonce = secrets.token_hex(8)
        return f"sess_{nonce}{self._tag(owner, nonce)}"

    def issued_to(self, session_id: str, owner: str) -> bool:
        """Whether ``session_id`` was made by :meth:`new_session_id` for ``owner`` (by any edge of the stack)."""
        m = _SESSION_ID.match(session_id)
        return m is not None and hmac.compare_digest(m.group(2), self._tag(owner, m.group(1)))
