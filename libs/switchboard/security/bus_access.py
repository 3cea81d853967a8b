"""Least privilege on the bus: one NKey identity per service, with the subjects it may touch.

Every process connects with its own NKey (an Ed25519 key pair; the seed stays with the process, the
server knows only the public key) and its own inbox prefix, and the server enforces:

- an **agent** or **supervisor** consumes only its own request subjects (every track of them), answers
  only the requests it received (``allow_responses``: no other subject on ``_INBOX``), and reaches only
  its side-effect ledger and its scenario's tool store — not the session state, not the audit stream,
  not another agent's subject;
- the **edge** (the orchestrator) is the only service that writes session state, the history archive
  and the audit stream, and that sends turns and consults;
- the **admin** identity (``switchboard trace``, ``rollout``, ``store``, ``keys``, ``audit``) may do anything;
  it alone writes the control-plane audit stream.

The server side is a NATS ``authorization`` block (see ``server_config``), written by ``make run`` and
the tests; JetStream access is granted per stream through its API subjects.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import nkeys

from ..bus.subjects import (
    AUDIT_STREAM,
    AUDIT_SUBJECTS,
    CLIENT_SECRETS_BUCKET,
    EDGE_BUCKET,
    HISTORY_STREAM,
    HISTORY_SUBJECTS,
    PREFIX,
    SESSIONS_BUCKET,
    check_token,
)
from ..state.ledger import LEDGER_BUCKET

RESPONSE_WINDOW = {"max": 100_000, "expires": "10m"}
"""A responder may stream this many replies to one request within this long (deltas, heartbeats)."""


def inbox_prefix(identity: str) -> str:
    """A service's private inbox prefix: only it may subscribe there."""
    return f"_INBOX_{identity}"


def _kv_stream(bucket: str) -> str:
    return f"KV_{bucket}"


def stream_access(stream: str, *, write_subjects: Iterable[str] = ()) -> list[str]:
    """Publish permissions to use one JetStream stream (and a KV bucket on it) through its API."""
    api = "$JS.API"
    return [
        f"{api}.INFO",
        f"{api}.STREAM.INFO.{stream}",
        f"{api}.STREAM.CREATE.{stream}",
        f"{api}.STREAM.MSG.GET.{stream}",
        f"{api}.DIRECT.GET.{stream}",
        f"{api}.DIRECT.GET.{stream}.>",
        f"{api}.CONSUMER.CREATE.{stream}",
        f"{api}.CONSUMER.CREATE.{stream}.>",
        f"{api}.CONSUMER.DELETE.{stream}.>",
        f"{api}.CONSUMER.INFO.{stream}.>",
        f"$JS.FC.{stream}.>",
        f"$JS.ACK.{stream}.>",
        *write_subjects,
    ]


def kv_access(bucket: str) -> list[str]:
    return stream_access(_kv_stream(bucket), write_subjects=[f"$KV.{bucket}.>"])


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
            "publish": {"allow": self.publish},
            "subscribe": {"allow": [*self.subscribe, f"{inbox_prefix(self.name)}.>"]},
        }
        if self.respond:
            permissions["allow_responses"] = RESPONSE_WINDOW
        return {"nkey": public_key, "permissions": permissions}


def agent_identity(agent: str, scenario: str, *, role: str = "agent") -> Identity:
    """An agent (``role="agent"``) or supervisor service of one scenario."""
    name = check_token(agent, "agent name")
    kind = "consult" if role == "supervisor" else "turn"
    own = [f"{PREFIX}.{role}.{name}.{kind}", f"{PREFIX}.{role}.{name}.*.{kind}"]  # every track of it
    store = f"switchboard_store_{check_token(scenario, 'scenario name')}"
    return Identity(
        name=f"{role}-{name}",
        subscribe=own,
        publish=[*kv_access(LEDGER_BUCKET), *kv_access(store)],
        respond=True,
    )


def edge_identity(extra_buckets: Iterable[str] = ()) -> Identity:
    """The edge: sends turns and consults, owns session state, the history archive and the audit."""
    return Identity(
        name="edge",
        publish=[
            f"{PREFIX}.agent.>",
            f"{PREFIX}.supervisor.>",
            *kv_access(SESSIONS_BUCKET),
            *kv_access(CLIENT_SECRETS_BUCKET),  # used client secrets (single use across replicas)
            *kv_access(EDGE_BUCKET),  # the edges' shared signing secret
            *stream_access(AUDIT_STREAM, write_subjects=[AUDIT_SUBJECTS]),
            *stream_access(HISTORY_STREAM, write_subjects=[HISTORY_SUBJECTS]),
            *(s for bucket in extra_buckets for s in kv_access(bucket)),
        ],
        subscribe=[f"{PREFIX}.edge.>"],  # edge-to-edge notices (e.g. a session taken over elsewhere)
        respond=True,
    )


ADMIN = Identity(name="admin", admin=True)


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

    def write(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        for identity in self.identities:
            path = self.folder / f"{identity.name}.nk"
            if not path.exists():  # keep seeds across restarts: running services hold them
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(generate_seed())
            self.seeds[identity.name] = path

    def seed_file(self, identity: str) -> Path:
        return self.seeds[identity]

    def server_config(self) -> str:
        """The ``authorization`` block for nats-server's config file (JSON is valid NATS config)."""
        users = [
            identity.authorization_entry(public_key(self.seeds[identity.name].read_bytes()))
            for identity in self.identities
        ]
        return "authorization " + json.dumps({"users": users}, indent=2) + "\n"
