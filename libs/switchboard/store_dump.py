"""``switchboard store``: print what the scenario's tools have stored (one JSON object per line)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from nats.js.errors import BucketNotFoundError

from .bus import Bus
from .state.store import ToolStore, store_bucket
from .timeline import CONNECT_TIMEOUT_S


async def read(
    servers: list[str], scenario: str, collection: str | None, *, seed_file: Path | None = None
) -> list[dict[str, object]]:
    """Every live document of the scenario's store (of one collection if given), by key; ``seed_file``: the
    admin NKey, where the bus requires one."""
    bucket = store_bucket(scenario)
    bus = Bus(servers, name="switchboard-store", seed_file=seed_file)
    await bus.connect_within(CONNECT_TIMEOUT_S)
    async with bus:
        try:
            kv = await bus.js.key_value(bucket)
        except BucketNotFoundError:
            hint = "no agent with tools has started yet"
            raise SystemExit(f"no store for scenario {scenario!r} (bucket {bucket}): {hint}") from None
        store = ToolStore(kv, bucket)
        found = await store.scan(f"{collection}.>" if collection else ">")
        if collection and not found:  # a typo, or nothing stored yet: say which collections there are
            names = sorted({key.split(".", 1)[0] for key in await store.scan(">")})
            raise SystemExit(f"no documents in collection {collection!r} (collections: {', '.join(names) or 'none'})")
    return [{"key": key, "revision": rev, "value": _json(data)} for key, (data, rev) in sorted(found.items())]


def render(docs: list[dict[str, object]]) -> Iterator[str]:
    for doc in docs:
        yield json.dumps(doc, sort_keys=True)


def _json(data: bytes) -> object:
    try:
        return json.loads(data)
    except ValueError:
        return data.decode(errors="replace")
