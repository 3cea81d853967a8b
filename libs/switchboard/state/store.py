"""The tools' shared data store: typed JSON documents in one JetStream KV bucket per scenario.

Every replica of every agent reaches the same bucket over the NATS connection it already has, so
data a tool writes through one replica is what the next replica reads; nothing lives on a local
disk. The bucket is replicated like the sessions bucket (``SWITCHBOARD_JS_REPLICAS``) and every
operation rides out leader elections (``StateRetry``).

Documents are pydantic models in named collections; a key is ``<collection>.<id>`` and an id is
one or more dot-separated tokens (``C001``, ``C001.A1001``), so ``list("C001")`` finds every id
under ``C001.``. Free text (an email) becomes an id through ``token_for``. ``create`` is atomic
across replicas (the KV's compare-and-set): of two replicas creating the same id, exactly one wins.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import StaleRead, StateError
from .retry import StateRetry, cas_write

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

STORE_BUCKET_PREFIX = "switchboard_store_"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")
_ID = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


class StoreError(StateError):
    """Base of the store's errors."""


class InvalidId(StoreError, ValueError):
    """An id or collection name that cannot be a KV key (a ValueError: tools report it to the model)."""


class DocumentExists(StoreError):
    """``create`` found the id taken; ``existing`` is what is stored there."""

    def __init__(self, key: str, existing: BaseModel) -> None:
        super().__init__(f"{key} already exists")
        self.key = key
        self.existing = existing


class RevisionConflict(StoreError):
    """``update`` lost a compare-and-set: the document changed (or vanished) since it was read."""

    def __init__(self, key: str, revision: int) -> None:
        super().__init__(f"{key} changed since revision {revision}")
        self.key = key
        self.revision = revision


class CorruptDocument(StoreError):
    """A stored value does not validate as the collection's model."""


def store_bucket(scenario: str) -> str:
    """The KV bucket of a scenario's data (bucket names allow letters, digits, ``_`` and ``-``)."""
    return STORE_BUCKET_PREFIX + re.sub(r"[^A-Za-z0-9_-]", "_", scenario)


def token_for(text: str) -> str:
    """A stable id for free text that is not a key token (an email): a digest of its lower-case form."""
    return hashlib.sha256(text.strip().lower().encode()).hexdigest()[:32]


def _check(value: str, what: str, pattern: re.Pattern[str]) -> str:
    if not pattern.match(value):
        raise InvalidId(f"invalid {what} {value!r}: use letters, digits, '_' and '-' (ids: dot-separated tokens)")
    return value


@dataclass(frozen=True)
class Document(Generic[M]):
    """A stored document and the revision to pass to ``update``."""

    id: str
    value: M
    revision: int


class Collection(Generic[M]):
    """Documents of one model under ``<name>.`` in a scenario's bucket. Cheap to make; no I/O."""

    def __init__(self, store: ToolStore, name: str, model: type[M]) -> None:
        self._store = store
        self.name = _check(name, "collection name", _TOKEN)
        self.model = model

    def _key(self, doc_id: str) -> str:
        return f"{self.name}.{_check(doc_id, 'id', _ID)}"

    def _parse(self, key: str, data: bytes | None) -> M:
        try:
            return self.model.model_validate_json(data or b"")
        except ValidationError as exc:
            raise CorruptDocument(f"{self._store.bucket}/{key} is not a valid {self.model.__name__}: {exc}") from exc

    async def entry(self, doc_id: str) -> Document[M] | None:
        """The document and its revision, or None."""
        key = self._key(doc_id)
        kv, retry = self._store.kv, self._store.retry
        try:
            entry = await retry.run("store.get", lambda: kv.get(key))
        except KeyNotFoundError:
            return None
        return Document(doc_id, self._parse(key, entry.value), entry.revision or 0)

    async def get(self, doc_id: str) -> M | None:
        doc = await self.entry(doc_id)
        return None if doc is None else doc.value

    async def put(self, doc_id: str, value: M) -> int:
        """Write unconditionally (last writer wins); return the revision."""
        key = self._key(doc_id)
        data = self._bytes(value)
        kv, retry = self._store.kv, self._store.retry
        return await retry.run("store.put", lambda: kv.put(key, data))

    async def create(self, doc_id: str, value: M) -> Document[M]:
        """Write only if the id is free, atomically across replicas; else raise ``DocumentExists``."""
        key = self._key(doc_id)
        try:
            revision = await cas_write(self._store.kv, key, self._bytes(value), 0, self._store.retry, "store.create")
        except KeyWrongLastSequenceError:
            existing = await self.entry(doc_id)
            if existing is None:  # deleted in between: the id is free again
                return await self.create(doc_id, value)
            raise DocumentExists(key, existing.value) from None
        return Document(doc_id, value, revision)

    async def get_or_create(self, doc_id: str, value: M) -> tuple[Document[M], bool]:
        """The stored document, creating it from ``value`` if absent; ``True`` when this call created it.

        Of any number of callers racing on one id, across replicas, exactly one gets ``True``.
        """
        while True:
            try:
                return await self.create(doc_id, value), True
            except DocumentExists:
                doc = await self.entry(doc_id)
                if doc is not None:
                    return doc, False

    async def update(self, doc_id: str, value: M, revision: int) -> int:
        """Write only if the document is still at ``revision``; else raise ``RevisionConflict``."""
        key = self._key(doc_id)
        try:
            return await cas_write(self._store.kv, key, self._bytes(value), revision, self._store.retry, "store.update")
        except KeyWrongLastSequenceError:
            raise RevisionConflict(key, revision) from None

    async def delete(self, doc_id: str) -> None:
        key = self._key(doc_id)
        kv, retry = self._store.kv, self._store.retry
        await retry.run("store.delete", lambda: kv.delete(key))

    async def list(self, prefix: str = "") -> list[Document[M]]:
        """Every document whose id starts with the tokens ``prefix`` (all when empty), by id."""
        pattern = f"{self.name}.{_check(prefix, 'id prefix', _ID)}.>" if prefix else f"{self.name}.>"
        found = await self._store.scan(pattern)
        offset = len(self.name) + 1
        docs = [Document(key[offset:], self._parse(key, data), rev) for key, (data, rev) in found.items()]
        return sorted(docs, key=lambda d: d.id)

    async def seed(self, docs: Mapping[str, M]) -> int:
        """Create each document that is absent; never overwrite. Return how many this call created.

        Safe to run from every replica at once: each id is created by exactly one of them.
        """
        created = 0
        for doc_id, value in docs.items():
            try:
                await self.create(doc_id, value)
                created += 1
            except DocumentExists:
                pass
        return created

    @staticmethod
    def _bytes(value: BaseModel) -> bytes:
        return value.model_dump_json().encode()


_SUBJECTS_PAGE = 100_000
"""Subjects nats-server lists in one stream-info answer; a longer list is paged."""


class _AnyDocument(BaseModel):
    model_config = ConfigDict(extra="allow")


class ToolStore:
    """A scenario's documents. ``ToolContext.store`` in a tool; open once per process."""

    def __init__(self, kv: KeyValue, bucket: str, retry: StateRetry | None = None) -> None:
        self.kv = kv
        self.bucket = bucket
        self.retry = retry or StateRetry()

    @classmethod
    async def open(
        cls, js: JetStreamContext, bucket: str, *, replicas: int = 1, retry: StateRetry | None = None
    ) -> ToolStore:
        """Bind to the bucket, creating it on first use (two replicas creating it at once is harmless)."""
        retry = retry or StateRetry()
        _check(bucket, "bucket name", _TOKEN)

        async def bind() -> KeyValue:
            try:
                return await js.key_value(bucket)
            except BucketNotFoundError:
                config = KeyValueConfig(bucket=bucket, history=1, replicas=replicas)
                return await js.create_key_value(config)

        return cls(await retry.run("store.open", bind), bucket, retry)

    def collection(self, name: str, model: type[M]) -> Collection[M]:
        return Collection(self, name, model)

    async def raw(self, collection: str, doc_id: str) -> dict[str, Any] | None:
        """One document as plain JSON fields, whatever its model (for platform checks such as ``Owns``)."""
        doc = await self.collection(collection, _AnyDocument).get(doc_id)
        return None if doc is None else doc.model_dump()

    async def scan(self, pattern: str = ">") -> dict[str, tuple[bytes, int]]:
        """Raw ``{key: (value, revision)}`` of every live key matching a subject pattern (for inspection)."""
        # a scan reads the whole match: give it longer than one KV request, and restart it on failure
        retry = dataclasses.replace(self.retry, attempt_timeout_s=max(self.retry.attempt_timeout_s, 10.0))
        return await retry.run("store.scan", lambda: self._scan(pattern))

    async def _scan(self, pattern: str) -> dict[str, tuple[bytes, int]]:
        present = await self._keys_stored(pattern)
        watcher = await self.kv.watch(pattern)  # deletes included: every stored key shows up, value or marker
        out: dict[str, tuple[bytes, int]] = {}
        seen: set[str] = set()
        try:
            async for entry in watcher:
                if entry is None:  # the end of what is stored now
                    break
                seen.add(entry.key)
                if entry.operation is None:
                    out[entry.key] = (entry.value or b"", entry.revision or 0)
                else:  # a delete seen during the scan removes what it deleted
                    out.pop(entry.key, None)
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves KeyWatcher.stop unannotated
        if present is not None and not present <= seen:
            # Right after a leader election the watch's consumer can report nothing pending and end at once
            # while the stream holds the keys (a chaos test saw an empty list of 21 stored documents).
            missing = len(present - seen)
            raise StaleRead(f"a scan of {self.bucket} ended before {missing} stored key(s) (leader election?)")
        return out

    async def _keys_stored(self, pattern: str) -> set[str] | None:
        """The keys the stream holds a message for (value or delete marker) under ``pattern``, asked of the stream
        itself; ``None`` when the answer would be partial (the server pages subject lists past 100,000)."""
        prefix = f"$KV.{self.bucket}."
        info = await self.kv._js.stream_info(f"KV_{self.bucket}", subjects_filter=prefix + pattern)  # noqa: SLF001
        subjects = info.state.subjects or {}
        if len(subjects) >= _SUBJECTS_PAGE:
            return None
        return {subject[len(prefix) :] for subject in subjects}
