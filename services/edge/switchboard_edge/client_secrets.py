"""Ephemeral client secrets: ``POST /v1/realtime/client_secrets``, shaped like OpenAI's.

A server holding an API key mints one for a browser; the browser connects with it (the subprotocol
``openai-insecure-api-key.ek_...``, or ``Authorization: Bearer ek_...``) and never holds the key.

A secret is ``ek_<claims>.<signature>``: the claims (id, tenant, minting key, expiry, session
configuration) in base64url JSON, signed with HMAC-SHA256 under a key derived from the edges' shared
secret (``signing``), so any edge replica accepts it. It is usable once: the connection that uses it
creates its id in the ``switchboard_client_secrets`` KV bucket, and a second use, on any replica, finds
the id there and is refused. Entries expire from the bucket once no secret they guard can be valid.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from switchboard.bus.subjects import CLIENT_SECRETS_BUCKET
from switchboard.errors import SwitchboardError
from switchboard.security.api_keys import KeyRing
from switchboard.state import StateRetry
from switchboard.state.retry import cas_write

from .auth import CLIENT_SECRET_PREFIX, MISSING, Principal, Refusal, Verifier
from .client_events import SessionConfig
from .protocol import ProtocolError

MAX_SESSION_BYTES = 5 * 1024
"""Largest session configuration a secret carries: the secret travels in one header line (a bearer token
or a subprotocol), which WebSocket servers cap at 8 KiB; base64 and the other claims add about a third."""
MAX_SECRET_CHARS = 7800
"""Longest secret minted: one that could not pass an 8 KiB header line is refused at mint, not at use."""
MAX_REQUEST_BYTES = 64 * 1024
"""Largest request body ``POST /v1/realtime/client_secrets`` reads."""


class ExpiresAfter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    anchor: Literal["created_at"] = "created_at"
    seconds: int = Field(600, ge=10, le=7200)


class ClientSecretRequest(BaseModel):
    """The request body (GA ``ClientSecretCreateParams``)."""

    model_config = ConfigDict(extra="forbid")

    expires_after: ExpiresAfter = ExpiresAfter()
    session: SessionConfig = SessionConfig()


@dataclass(frozen=True)
class Claims:
    secret_id: str
    tenant: str
    key_id: str
    expires_at: int
    session: dict[str, Any]


class BadRequest(SwitchboardError):
    """A mint request the edge refuses (400, with the OpenAI error code and the faulty ``param``)."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ClientSecrets:
    def __init__(
        self, signing: list[bytes], used: KeyValue, keys: KeyRing, *, max_s: int, retry: StateRetry | None = None
    ):
        self._signing = signing
        """Signs with the first; a secret signed with any of them is genuine (a secret rotation's window)."""
        self._used = used
        self._keys = keys
        self.max_s = max_s
        self.retry = retry or StateRetry()

    @classmethod
    async def open(
        cls, js: JetStreamContext, signing: list[bytes], keys: KeyRing, *, max_s: int, replicas: int = 1
    ) -> ClientSecrets:
        retry = StateRetry()

        async def bucket() -> KeyValue:
            try:
                return await js.key_value(CLIENT_SECRETS_BUCKET)
            except BucketNotFoundError:
                # an entry must outlive the longest secret it guards (any configured maximum)
                config = KeyValueConfig(bucket=CLIENT_SECRETS_BUCKET, history=1, ttl=7200 + 60, replicas=replicas)
                return await js.create_key_value(config)

        return cls(signing, await retry.run("client_secrets.open", bucket), keys, max_s=max_s, retry=retry)

    @staticmethod
    def _sign(key: bytes, payload: str) -> str:
        return _b64(hmac.new(key, f"ek1.{payload}".encode(), hashlib.sha256).digest())

    def mint(
        self, principal: Principal, body: bytes, check: Callable[[SessionConfig], None] | None = None
    ) -> dict[str, Any]:
        """The response to a mint request by ``principal`` (raises :class:`BadRequest`). ``check`` refuses a
        session configuration the connection would refuse (a ``ProtocolError``): at mint, not after the upgrade."""
        if len(body) > MAX_REQUEST_BYTES:
            raise BadRequest("request_too_large", f"the request body is over {MAX_REQUEST_BYTES} bytes")
        try:
            request = ClientSecretRequest.model_validate_json(body or b"{}")
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            param = ".".join(str(p) for p in first["loc"]) or None
            raise BadRequest("invalid_value", f"{param or 'body'}: {first['msg']}", param) from None
        asked = "seconds" in request.expires_after.model_fields_set
        seconds = request.expires_after.seconds if asked else min(request.expires_after.seconds, self.max_s)
        if seconds > self.max_s:
            raise BadRequest(
                "invalid_value", f"expires_after.seconds {seconds} is over this edge's maximum of {self.max_s}",
                "expires_after.seconds",
            )  # fmt: skip
        if check is not None:
            try:
                check(request.session)
            except ProtocolError as exc:
                raise BadRequest(exc.code, exc.message, exc.param) from None
        session = request.session.model_dump(mode="json", exclude_unset=True) | {"type": "realtime"}
        if len(json.dumps(session)) > MAX_SESSION_BYTES:
            raise BadRequest("invalid_value", f"the session is over {MAX_SESSION_BYTES} bytes", "session")
        expires_at = int(time.time()) + seconds
        claims = {"i": secrets.token_hex(12), "t": principal.owner, "k": principal.key_id, "e": expires_at,
                  "s": session}  # fmt: skip
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        value = f"{CLIENT_SECRET_PREFIX}{payload}.{self._sign(self._signing[0], payload)}"
        if len(value) > MAX_SECRET_CHARS:
            raise BadRequest("invalid_value", "the session is too large to travel in a client secret", "session")
        return {"value": value, "expires_at": expires_at, "session": session}

    def read(self, value: str) -> Claims | Refusal:
        """The claims of a genuine, unexpired secret (not yet checked for reuse), else why not."""
        payload, _, signature = value.removeprefix(CLIENT_SECRET_PREFIX).partition(".")
        genuine = any(hmac.compare_digest(signature.encode(), self._sign(k, payload).encode()) for k in self._signing)
        if not signature or not genuine:
            return Refusal(401, "invalid_api_key", "invalid client secret")
        raw = json.loads(_unb64(payload))
        claims = Claims(raw["i"], raw["t"], raw["k"], int(raw["e"]), raw["s"])
        if claims.expires_at <= time.time():
            return Refusal(401, "client_secret_expired", "the client secret has expired: mint a new one")
        return claims

    def verifier(self) -> Verifier:
        def verify(secret: str) -> Principal | Refusal:
            claims = self.read(secret)
            if isinstance(claims, Refusal):
                return claims
            key = self._keys.get(claims.key_id)
            if key is None or key.tenant != claims.tenant:
                return MISSING  # the key that minted it was revoked
            session = SessionConfig.model_validate(claims.session)
            return Principal(claims.tenant, key.key_id, "client_secret", key.limits, session=session,
                             single_use=claims.secret_id)  # fmt: skip

        return verify

    async def consume(self, secret_id: str) -> bool:
        """Mark a secret used; False when it already was (on this edge or any other)."""
        marker = f"{time.time()}:{secrets.token_hex(4)}".encode()  # unique: a retried create recognises its own
        try:
            await cas_write(self._used, secret_id, marker, 0, self.retry, "client_secrets.consume")
        except KeyWrongLastSequenceError:
            return False
        return True
