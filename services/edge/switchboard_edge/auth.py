"""Who is calling: the credential a WebSocket upgrade carries, checked against the accepted keys.

Two ways to present an API key, the two the OpenAI Realtime API accepts:

- ``Authorization: Bearer <key>`` (servers, SDKs);
- the WebSocket subprotocols ``realtime`` + ``openai-insecure-api-key.<key>`` (browsers cannot set
  headers); the upgrade is then answered with the ``realtime`` subprotocol selected.

Each way is a small *extractor* returning a :class:`Credential` (its kind and secret); a
:class:`Verifier` per kind checks it. A later credential kind (short-lived client secrets) is one more
extractor and one more verifier, without touching the WebSocket handler.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from starlette.datastructures import Headers

SUBPROTOCOL = "realtime"
"""The subprotocol a browser client asks for, and the one the edge selects when it does."""
KEY_SUBPROTOCOL_PREFIX = "openai-insecure-api-key."

CredentialKind = Literal["api_key"]


@dataclass(frozen=True)
class Credential:
    kind: CredentialKind
    secret: str
    via: Literal["header", "subprotocol"]


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. ``owner`` is the stable, non-secret id sessions are bound to."""

    owner: str
    kind: CredentialKind
    subprotocol: str | None
    """The subprotocol to select in the upgrade answer (``realtime`` when the client offered it)."""


class Verifier(Protocol):
    def __call__(self, secret: str) -> str | None:
        """The owner id for a valid secret, else None."""


def key_fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def api_key_verifier(accepted: frozenset[str]) -> Verifier:
    """Accept any of ``accepted`` (constant-time compare); the owner is the key's fingerprint."""

    def verify(secret: str) -> str | None:
        return key_fingerprint(secret) if any(hmac.compare_digest(secret, k) for k in accepted) else None

    return verify


def offered_subprotocols(headers: Headers) -> list[str]:
    return [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()]


def from_bearer(headers: Headers) -> Credential | None:
    scheme, _, secret = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return None
    return Credential("api_key", secret.strip(), "header")


def from_subprotocol(headers: Headers) -> Credential | None:
    for proto in offered_subprotocols(headers):
        if proto.startswith(KEY_SUBPROTOCOL_PREFIX) and len(proto) > len(KEY_SUBPROTOCOL_PREFIX):
            return Credential("api_key", proto[len(KEY_SUBPROTOCOL_PREFIX) :], "subprotocol")
    return None


Extractor = Callable[[Headers], Credential | None]
EXTRACTORS: Sequence[Extractor] = (from_bearer, from_subprotocol)


class Authenticator:
    """The first credential found (header first) decides; a present but wrong one is never retried."""

    def __init__(self, verifiers: Mapping[CredentialKind, Verifier], extractors: Sequence[Extractor] = EXTRACTORS):
        self.verifiers = dict(verifiers)
        self.extractors = tuple(extractors)

    def authenticate(self, headers: Headers) -> Principal | None:
        credential = next((c for c in (x(headers) for x in self.extractors) if c is not None), None)
        if credential is None:
            return None
        verifier = self.verifiers.get(credential.kind)
        owner = verifier(credential.secret) if verifier else None
        if owner is None:
            return None
        selected = SUBPROTOCOL if SUBPROTOCOL in offered_subprotocols(headers) else None
        return Principal(owner, credential.kind, selected)
