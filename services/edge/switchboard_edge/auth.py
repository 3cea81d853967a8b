"""Who is calling: the credential a WebSocket upgrade carries, checked against the accepted keys.

Two ways to present a credential, the two the OpenAI Realtime API accepts:

- ``Authorization: Bearer <credential>`` (servers, SDKs);
- the WebSocket subprotocols ``realtime`` + ``openai-insecure-api-key.<credential>`` (browsers cannot set
  headers); the upgrade is then answered with the ``realtime`` subprotocol selected.

Two kinds of credential: an API key (``sb-<id>-<secret>`` from the key file, or a plain development
key), and a short-lived client secret ``ek_...`` minted with an API key (``client_secrets``). Each way is
a small *extractor* returning a :class:`Credential`; a :class:`Verifier` per kind checks it and says who
the caller is (a :class:`Principal`) or why not (a :class:`Refusal`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from starlette.datastructures import Headers

from switchboard.security.api_keys import KeyLimits, KeyRing

from .client_events import SessionConfig

SUBPROTOCOL = "realtime"
"""The subprotocol a browser client asks for, and the one the edge selects when it does."""
KEY_SUBPROTOCOL_PREFIX = "openai-insecure-api-key."
CLIENT_SECRET_PREFIX = "ek_"

CredentialKind = Literal["api_key", "client_secret"]


@dataclass(frozen=True)
class Credential:
    kind: CredentialKind
    secret: str
    via: Literal["header", "subprotocol"]


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. ``owner`` (its tenant) is the stable, non-secret id sessions are bound to."""

    owner: str
    key_id: str
    """The API key used, or the one that minted the client secret: its limits apply."""
    kind: CredentialKind
    limits: KeyLimits = KeyLimits()
    subprotocol: str | None = None
    """The subprotocol to select in the upgrade answer (``realtime`` when the client offered it)."""
    session: SessionConfig | None = None
    """A client secret's session configuration, applied at connect."""
    single_use: str | None = None
    """A client secret's id: consumed when the connection is admitted (a replay is refused)."""


@dataclass(frozen=True)
class Refusal:
    """Why a credential is refused: an HTTP status and an OpenAI-shaped error code and message."""

    status: int
    code: str
    message: str


MISSING = Refusal(
    401, "invalid_api_key",
    "missing or invalid API key: send 'Authorization: Bearer <key>' or the subprotocols "
    "'realtime' and 'openai-insecure-api-key.<key>'",
)  # fmt: skip


class Verifier(Protocol):
    def __call__(self, secret: str) -> Principal | Refusal:
        """Who holds ``secret``, or why it is refused."""


def api_key_verifier(keys: KeyRing) -> Verifier:
    """Accept the key ring's keys; the owner is the key's tenant."""

    def verify(secret: str) -> Principal | Refusal:
        match = keys.verify(secret)
        if match is None:
            return MISSING
        return Principal(match.tenant, match.key_id, "api_key", match.limits)

    return verify


def offered_subprotocols(headers: Headers) -> list[str]:
    return [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()]


def _kind(secret: str) -> CredentialKind:
    return "client_secret" if secret.startswith(CLIENT_SECRET_PREFIX) else "api_key"


def from_bearer(headers: Headers) -> Credential | None:
    scheme, _, secret = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return None
    return Credential(_kind(secret.strip()), secret.strip(), "header")


def from_subprotocol(headers: Headers) -> Credential | None:
    for proto in offered_subprotocols(headers):
        if proto.startswith(KEY_SUBPROTOCOL_PREFIX) and len(proto) > len(KEY_SUBPROTOCOL_PREFIX):
            secret = proto[len(KEY_SUBPROTOCOL_PREFIX) :]
            return Credential(_kind(secret), secret, "subprotocol")
    return None


Extractor = Callable[[Headers], Credential | None]
EXTRACTORS: Sequence[Extractor] = (from_bearer, from_subprotocol)


class Authenticator:
    """The first credential found (header first) decides; a present but wrong one is never retried."""

    def __init__(self, verifiers: Mapping[CredentialKind, Verifier], extractors: Sequence[Extractor] = EXTRACTORS):
        self.verifiers = dict(verifiers)
        self.extractors = tuple(extractors)

    def authenticate(self, headers: Headers, *, kinds: Sequence[CredentialKind] | None = None) -> Principal | Refusal:
        """The caller, or why not; ``kinds`` limits the credential kinds accepted (default: any)."""
        credential = next((c for c in (x(headers) for x in self.extractors) if c is not None), None)
        if credential is None:
            return MISSING
        verifier = self.verifiers.get(credential.kind)
        if verifier is None or (kinds is not None and credential.kind not in kinds):
            return MISSING
        verdict = verifier(credential.secret)
        if isinstance(verdict, Refusal):
            return verdict
        selected = SUBPROTOCOL if SUBPROTOCOL in offered_subprotocols(headers) else None
        return dataclasses.replace(verdict, subprotocol=selected)
