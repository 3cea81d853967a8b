"""Least privilege on the bus: one NKey identity per service, with the subjects it may touch.

Every process connects with its own NKey (an Ed25519 key pair; the seed stays with the process, the
server knows only the public key) and its own inbox prefix, and the server enforces:

- an **agent** or **supervisor** consumes only its own request subjects (every track of them), answers
  only the requests it received (``allow_responses``: no other subject on ``_INBOX``), and reaches only
  its own side-effect records (the ledger's keys under its identity) and its scenario's tool store — not
  another agent's records, not the session state, not the audit stream, not another agent's subject;
- the **edge** (the orchestrator) is the only service that writes session state, the history archive
  and the audit stream, and that sends turns and consults;
- the **admin** identity (``switchboard trace``, ``rollout``, ``store``, ``keys``, ``audit``) may do anything
  and writes the operators' changes to the control-plane audit stream (the edge appends only
  ``agent.config_changed``): an NKey in a cluster (``switchboard bus-keys``), and
  locally the **operator** login (user and password, in the URL ``switchboard run`` writes to
  ``var/bus/operator.env`` and a test ``Stack`` exposes as ``nats.url``).

The server side is a NATS ``authorization`` block (see ``server_config``), written by ``make run``, the
test ``Stack`` and ``switchboard bus-keys`` (Helm); JetStream access is granted per stream through its API
subjects. Any subject not listed is refused: nats-server logs the violation and the client gets a
``Permissions Violation`` error (its request times out).

A reply permission (``allow_responses``) belongs to the connection that received the request: an agent
that reconnects mid-turn (its server died) can no longer answer the turns it took before, and the edge
retries them on another replica after ``SWITCHBOARD_IDLE_TIMEOUT_S`` — the price of agents not being
able to publish into the edge's inbox (they could forge another session's reply there).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import nkeys

from ..bus.subjects import (
    AUDIT_STREAM,
    AUDIT_SUBJECTS,
    CLIENT_SECRETS_BUCKET,
    CONTROL_STREAM,
    EDGE_BUCKET,
    HISTORY_STREAM,
    HISTORY_SUBJECTS,
    PREFIX,
    ROLLOUTS_BUCKET,
    SESSIONS_BUCKET,
    check_token,
    control_action,
)
from ..state.ledger import LEDGER_STREAM, owned_keys
from ..state.store import store_bucket

RESPONSE_WINDOW = {"max": 100_000, "expires": "10m"}
"""A responder may stream this many replies to one request within this long (deltas, heartbeats)."""


def inbox_prefix(identity: str) -> str:
    """A service's private inbox prefix: only it may subscribe there."""
    return f"_INBOX_{identity}"


def _kv_stream(bucket: str) -> str:
    return f"KV_{bucket}"


def stream_access(
    stream: str, *, write_subjects: Iterable[str] = (), get: bool = False, consume: bool = False
) -> list[str]:
    """Publish permissions to use one JetStream stream (and a KV bucket on it) through its API: look it up
    and create it (every user of a stream does, at start), publish to ``write_subjects``, fetch one
    message (``get``: a KV get) and read it through ephemeral ordered consumers (``consume``: a KV watch,
    a replay of the stream) — nothing else (no other stream, no deletes, no durable consumers)."""
    api = "$JS.API"
    allowed = [f"{api}.STREAM.INFO.{stream}", f"{api}.STREAM.CREATE.{stream}"]
    if get:
        allowed.append(f"{api}.STREAM.MSG.GET.{stream}")
    if consume:
        allowed += [
            f"{api}.CONSUMER.CREATE.{stream}",
            f"{api}.CONSUMER.CREATE.{stream}.>",
            f"{api}.CONSUMER.DELETE.{stream}.>",
            f"{api}.CONSUMER.INFO.{stream}.>",  # a KV watch checks its consumer
            f"$JS.FC.{stream}.>",  # flow-control answers of ordered consumers
        ]
    return [*allowed, *write_subjects]


def kv_access(bucket: str, *, watch: bool = False) -> list[str]:
    """Get, put, update and delete keys of one bucket; ``watch``: its watchers (``keys``, ``scan``) too."""
    return stream_access(_kv_stream(bucket), write_subjects=[f"$KV.{bucket}.>"], get=True, consume=watch)


def ledger_access(identity: str) -> list[str]:
    """Create, read, update and delete the side-effect ledger's keys under ``identity`` and no other: writes
    publish to the key, reads are direct gets naming it in the subject (no ``STREAM.MSG.GET``, whose key is
    in the body, and no consumer, whose filter is)."""
    keys = owned_keys(identity)
    return stream_access(LEDGER_STREAM, write_subjects=[keys, f"$JS.API.DIRECT.GET.{LEDGER_STREAM}.{keys}"])


@dataclass(frozen=True)
class Identity:
    """One service's bus identity and permissions (``allow`` lists; everything else is denied)."""

    name: str
    publish: list[str] = field(default_factory=list)
    subscribe: list[str] = field(default_factory=list)
    respond: bool = False
    """May answer requests it received (their reply subjects only)."""
    admin: bool = False

    def authorization_entry(self, public_key: str) -> dict[str, object]:
        if self.admin:
            return {"nkey": public_key}
        permissions: dict[str, object] = {
            "publish": {"allow": list(dict.fromkeys(self.publish))},  # each subject once, in order
            "subscribe": {"allow": [*self.subscribe, f"{inbox_prefix(self.name)}.>"]},
        }
        if self.respond:
            permissions["allow_responses"] = RESPONSE_WINDOW
        return {"nkey": public_key, "permissions": permissions}


def identity_name(role: str, agent: str) -> str:
    """The identity of an agent or supervisor service (every replica and track of it shares it)."""
    return f"{role}-{check_token(agent, 'agent name')}"


def agent_identity(agent: str, scenario: str, *, role: str = "agent") -> Identity:
    """An agent (``role="agent"``) or supervisor service of one scenario."""
    name = check_token(agent, "agent name")
    kind = "consult" if role == "supervisor" else "turn"
    own = [f"{PREFIX}.{role}.{name}.{kind}", f"{PREFIX}.{role}.{name}.*.{kind}"]  # every track of it
    own.append(f"{PREFIX}.{role}.{name}.cancel")  # requests their callers stopped
    store = store_bucket(scenario)
    identity = identity_name(role, name)
    return Identity(
        name=identity,
        subscribe=own,
        publish=[*ledger_access(identity), *kv_access(store, watch=True)],  # tools' scans watch the store
        respond=True,
    )


EDGE = "edge"
TAKEOVER = f"{PREFIX}.edge.session.*.takeover"


def edge_identity(extra_buckets: Iterable[str] = ()) -> Identity:
    """The edge: sends turns and consults, owns session state, the history archive and the audit."""
    return Identity(
        name=EDGE,
        publish=[
            f"{PREFIX}.agent.*.turn",  # every agent's turns, every track
            f"{PREFIX}.agent.*.*.turn",
            f"{PREFIX}.supervisor.*.consult",
            f"{PREFIX}.supervisor.*.*.consult",
            f"{PREFIX}.agent.*.cancel",  # stops a request it no longer wants the replies of
            f"{PREFIX}.supervisor.*.cancel",
            TAKEOVER,  # asks the edge holding a session to let it go
            *kv_access(SESSIONS_BUCKET),
            *kv_access(CLIENT_SECRETS_BUCKET),  # used client secrets (single use across replicas)
            *kv_access(EDGE_BUCKET),  # the edges' shared signing secret
            *kv_access(ROLLOUTS_BUCKET, watch=True),  # every edge follows the rollout weights
            # the first turn each agent configuration serves (operators' own changes are the admin's to record)
            *stream_access(CONTROL_STREAM, write_subjects=[control_action("agent.config_changed")]),
            *stream_access(AUDIT_STREAM, write_subjects=[AUDIT_SUBJECTS]),  # append only: operators read it
            *stream_access(HISTORY_STREAM, write_subjects=[HISTORY_SUBJECTS], consume=True),  # replayed on resume
            *(s for bucket in extra_buckets for s in kv_access(bucket)),
        ],
        subscribe=[TAKEOVER],  # a newer connection to a session this edge holds asks it to let go
        respond=True,
    )


ADMIN = Identity(name="admin", admin=True)
OPERATOR_USER = "operator"
"""The local operator login (user and password): every right, for people, tests and CLI commands."""


def service_identities(scenario: str, agents: Iterable[tuple[str, str]]) -> list[Identity]:
    """The edge and every ``(name, role)`` agent or supervisor of a scenario: the services of a deployment."""
    return [edge_identity(), *(agent_identity(name, scenario, role=role) for name, role in agents)]


def generate_seed() -> bytes:
    """A new user NKey seed (keep it secret: whoever holds it is that service on the bus)."""
    return bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))


def public_key(seed: bytes) -> str:
    return bytes(nkeys.from_seed(bytearray(seed)).public_key).decode()


@dataclass
class BusCredentials:
    """Seeds of every identity, written under ``folder`` (0600), and the server's authorization block."""

    folder: Path
    identities: list[Identity]
    seeds: dict[str, Path] = field(default_factory=dict)
    operator_password: str | None = None

    def write(self) -> None:
        """Create the seeds and the operator password that do not exist yet (existing ones are kept)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        for identity in self.identities:
            path = self.folder / f"{identity.name}.nk"
            _create_secret(path, generate_seed)  # kept across restarts: running services hold them
            self.seeds[identity.name] = path
        password = self.folder / "operator.password"
        _create_secret(password, lambda: secrets.token_urlsafe(24).encode())
        self.operator_password = password.read_text().strip()

    def seed_file(self, identity: str) -> Path:
        return self.seeds[identity]

    def has(self, identity: str) -> bool:
        return identity in self.seeds

    def service_env(self, identity: str) -> dict[str, str]:
        """``SWITCHBOARD_*`` variables that make a process connect as ``identity``."""
        return {
            "SWITCHBOARD_NATS_SEED_FILE": str(self.seed_file(identity)),
            "SWITCHBOARD_NATS_INBOX_PREFIX": inbox_prefix(identity),
        }

    @property
    def operator_login(self) -> tuple[str, str]:
        if self.operator_password is None:
            raise RuntimeError("BusCredentials.write() first")
        return OPERATOR_USER, self.operator_password

    def server_config(self) -> str:
        """The ``authorization`` block for nats-server's config file (JSON is valid NATS config)."""
        users: list[dict[str, object]] = [
            identity.authorization_entry(public_key(self.seeds[identity.name].read_bytes()))
            for identity in self.identities
        ]
        user, password = self.operator_login
        users.append({"user": user, "password": password})
        return "authorization " + json.dumps({"users": users}, indent=2) + "\n"


def _create_secret(path: Path, make: Callable[[], bytes]) -> None:
    """Write ``make()`` to ``path`` readable by its owner only, unless ``path`` exists."""
    if path.exists():
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(make())
