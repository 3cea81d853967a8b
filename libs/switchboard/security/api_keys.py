"""Edge API keys, stored hashed: ``sb-<keyid>-<secret>``, looked up by id, verified in constant time.

A key is shown once, when ``switchboard keys create`` makes it; the key file keeps only a salted
SHA-256 of its secret, with the key's tenant, its limits and whether it was revoked. The secret is 256
random bits, so a fast salted hash is enough (slow hashes such as scrypt protect guessable passwords,
and would make every connection attempt cost tens of milliseconds of CPU).

``SWITCHBOARD_API_KEYS`` (plain keys, a development convenience) is hashed when it is loaded; each plain
key is its own tenant, ``dev-<fingerprint>``. No key is ever logged: only key ids and tenants are.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import SwitchboardError

log = logging.getLogger(__name__)

KEY_PREFIX = "sb"
DEFAULT_KEYS_FILE = "api-keys.json"
"""Where ``switchboard run`` and ``switchboard keys`` keep the key file under the var directory by default."""
_KEY = re.compile(r"^sb-([0-9a-f]{12})-([A-Za-z0-9_-]{20,})$")
_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
DEV_TENANT_PREFIX = "dev-"


class KeyLimits(BaseModel):
    """Limits of one key; ``None`` takes the edge's default (``SWITCHBOARD_KEY_*``, ``SWITCHBOARD_SESSION_*``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)  # `keys create --help`

    connects_per_minute: int | None = Field(None, ge=1)
    """WebSocket connection attempts per minute (and client secrets minted) with this key, per edge."""
    max_sessions: int | None = Field(None, ge=1)
    """Sessions open at once with this key, per edge."""
    session_max_s: float | None = Field(None, gt=0)
    """Longest one session (connection) may last."""
    session_max_turns: int | None = Field(None, ge=1)
    """Responses one connection may ask for."""
    session_max_audio_s: float | None = Field(None, gt=0)
    """Seconds of audio one connection may send and receive."""


class ApiKey(BaseModel):
    """One key's record in the key file: never its secret, only a salted hash of it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[0-9a-f]{12}$")
    tenant: str
    hash: str = Field(pattern=r"^sha256\$[0-9a-f]{32}\$[0-9a-f]{64}$")
    """``sha256$<salt hex>$<digest hex>``: SHA-256 of salt + secret (checked at load: a damaged record is a
    file error, not a crash at the next connection)."""
    created_at: float
    name: str = ""
    revoked_at: float | None = None
    close_sessions: bool = False
    """Revoked with ``--close-sessions`` (a leaked key): edges also end the sessions open with it. Written only
    when true, so an older edge still reads the file of an ordinary revocation."""
    limits: KeyLimits = KeyLimits()

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, v: str) -> str:
        return check_tenant(v)

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def check_tenant(tenant: str) -> str:
    if not _TENANT.match(tenant) or tenant.startswith(DEV_TENANT_PREFIX):
        raise ValueError(
            f"invalid tenant {tenant!r}: 1-63 lowercase letters, digits, '_' or '-', not starting with "
            f"{DEV_TENANT_PREFIX!r} (kept for plain development keys)"
        )
    return tenant


def _digest(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode()).digest()


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    return f"sha256${salt.hex()}${_digest(salt, secret).hex()}"


def secret_matches(stored: str, secret: str) -> bool:
    algorithm, salt, digest = stored.split("$")
    if algorithm != "sha256":
        raise ValueError(f"unknown key hash algorithm {algorithm!r}")
    return hmac.compare_digest(_digest(bytes.fromhex(salt), secret), bytes.fromhex(digest))


def parse_key(key: str) -> tuple[str, str] | None:
    """``(key id, secret)`` of a well-formed ``sb-`` key, else None."""
    m = _KEY.match(key)
    return (m.group(1), m.group(2)) if m else None


def new_key(tenant: str, *, name: str = "", limits: KeyLimits | None = None) -> tuple[str, ApiKey]:
    """A new key: its full text (show it once) and the record to store."""
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    record = ApiKey(
        id=key_id, tenant=check_tenant(tenant), hash=hash_secret(secret), created_at=time.time(), name=name,
        limits=limits or KeyLimits(),
    )  # fmt: skip
    return f"{KEY_PREFIX}-{key_id}-{secret}", record


def key_fingerprint(key: str) -> str:
    """A non-secret id of a plain key (the first 16 hex digits of its SHA-256)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class KeyFileError(SwitchboardError):
    """The key file cannot be read or changed (one line, for the command and the edge's start)."""


class KeyFile:
    """The JSON key file: ``{"keys": [ApiKey, ...]}``, written whole (atomic rename), mode 0600.

    Changes hold an exclusive lock on ``<file>.lock`` so two ``switchboard keys`` commands cannot lose
    each other's key.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[ApiKey]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise KeyFileError(f"cannot read the key file {self.path}: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("keys", []), list):
            raise KeyFileError(f"the key file {self.path} is not valid: expected an object with a 'keys' list")
        try:
            return [ApiKey.model_validate(k) for k in data.get("keys", [])]
        except ValueError as exc:
            first = str(exc).splitlines()
            raise KeyFileError(f"the key file {self.path} is not valid: {' '.join(first[:3])}") from None

    @contextmanager
    def change(self) -> Iterator[list[ApiKey]]:
        """Read the keys under the lock; what the caller leaves in the list is written back."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            keys = self.read()
            yield keys
            self._write(keys)

    def _write(self, keys: Iterable[ApiKey]) -> None:
        records = [k.model_dump(mode="json", exclude=None if k.close_sessions else {"close_sessions"}) for k in keys]
        body = json.dumps({"keys": records}, indent=2) + "\n"
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w") as out:  # mkstemp creates it 0600
                out.write(body)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@dataclass(frozen=True)
class KeyMatch:
    """A verified key: its id (``dev-<fingerprint>`` for a plain key), tenant and limits."""

    key_id: str
    tenant: str
    limits: KeyLimits


_DUMMY_HASH = hash_secret(secrets.token_urlsafe(32))
"""Checked against when a key id is unknown, so an unknown id costs as much as a wrong secret."""


class KeyRing:
    """The keys an edge accepts: the key file's (re-read when it changes) and the plain development keys."""

    def __init__(self, plain: Iterable[str] = (), path: Path | None = None) -> None:
        self._plain = {hashlib.sha256(k.encode()).digest(): key_fingerprint(k) for k in plain}
        self._file = KeyFile(path) if path else None
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[str, ApiKey] = {}
        self._load()  # a broken file at start is an error: the edge does not start

    @property
    def configured(self) -> bool:
        return bool(self._plain) or self._file is not None

    def _load(self) -> None:
        if self._file is None:
            return
        try:
            st = self._file.path.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp or stamp is None:
            try:
                self._keys = {k.id: k for k in self._file.read()}
            except KeyFileError:
                if self._stamp is None and not self._keys:
                    raise
                # a broken edit while running: keep the keys last read, try again at the next change
                log.error("key file not reloaded: keeping the keys last read", exc_info=True)
            self._stamp = stamp

    def get(self, key_id: str) -> KeyMatch | None:
        """The active key ``key_id`` (for a client secret minted with it), else None."""
        self._load()
        if key_id.startswith(DEV_TENANT_PREFIX):
            fingerprint = key_id.removeprefix(DEV_TENANT_PREFIX)
            known = fingerprint in self._plain.values()
            return KeyMatch(key_id, key_id, KeyLimits()) if known else None
        record = self._keys.get(key_id)
        return KeyMatch(record.id, record.tenant, record.limits) if record and record.active else None

    def sessions_closed(self, key_ids: Iterable[str]) -> set[str]:
        """Of ``key_ids``, those revoked with ``close_sessions``: their open sessions must end (the file is
        re-read when it changed; plain development keys never are)."""
        self._load()
        return {i for i in key_ids if (record := self._keys.get(i)) is not None and record.close_sessions}

    def verify(self, key: str) -> KeyMatch | None:
        fingerprint = self._plain.get(hashlib.sha256(key.encode()).digest())
        if fingerprint is not None:
            dev = f"{DEV_TENANT_PREFIX}{fingerprint}"
            return KeyMatch(dev, dev, KeyLimits())
        parsed = parse_key(key)
        if parsed is None:
            return None
        self._load()
        key_id, secret = parsed
        record = self._keys.get(key_id)
        matches = secret_matches(record.hash if record else _DUMMY_HASH, secret)
        if record is None or not matches or not record.active:
            return None
        return KeyMatch(record.id, record.tenant, record.limits)
