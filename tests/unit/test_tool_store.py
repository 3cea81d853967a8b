"""The tools' shared store (JetStream KV) against a real nats-server: typed documents, atomic creates
across connections (as two replicas would race), compare-and-set, prefix listing, idempotent seeding."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import BaseModel

from switchboard.agents import ToolContext, load_scenario
from switchboard.bus import Bus
from switchboard.cli import main
from switchboard.local import NatsServer
from switchboard.schemas import CallerIdentity
from switchboard.state import (
    CorruptDocument,
    DocumentExists,
    InvalidId,
    RevisionConflict,
    ToolStore,
    store_bucket,
    token_for,
)

ROOT = Path(__file__).resolve().parents[2]


class Item(BaseModel):
    name: str
    qty: int = 0


@pytest.fixture(scope="module")
def nats_url() -> Iterator[str]:
    with NatsServer(Path(tempfile.mkdtemp(prefix="store-nats-"))) as server:
        yield server.url


@pytest.fixture
def bucket() -> str:
    return f"test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def pair(nats_url: str, bucket: str) -> AsyncIterator[tuple[ToolStore, ToolStore]]:
    """The same bucket through two connections, as two replicas of an agent see it."""
    async with Bus([nats_url], name="replica-1") as one, Bus([nats_url], name="replica-2") as two:
        yield await ToolStore.open(one.js, bucket), await ToolStore.open(two.js, bucket)


async def test_documents_round_trip_typed_between_connections(pair: tuple[ToolStore, ToolStore]) -> None:
    one, two = pair
    items_one, items_two = one.collection("items", Item), two.collection("items", Item)
    assert await items_two.get("A1") is None
    await items_one.put("A1", Item(name="cup", qty=2))
    got = await items_two.get("A1")
    assert isinstance(got, Item) and got == Item(name="cup", qty=2)
    await items_two.delete("A1")
    assert await items_one.get("A1") is None


async def test_create_is_create_if_absent(pair: tuple[ToolStore, ToolStore]) -> None:
    one, two = pair
    first = await one.collection("items", Item).create("B1", Item(name="first"))
    assert first.revision > 0
    with pytest.raises(DocumentExists) as caught:
        await two.collection("items", Item).create("B1", Item(name="second"))
    assert caught.value.existing == Item(name="first")
    assert await one.collection("items", Item).get("B1") == Item(name="first")
    await one.collection("items", Item).delete("B1")  # a deleted id is free again
    again = await two.collection("items", Item).create("B1", Item(name="third"))
    assert again.value == Item(name="third")


async def test_racing_creates_through_two_connections_make_one_document(pair: tuple[ToolStore, ToolStore]) -> None:
    one, two = pair
    racers = [
        (one if n % 2 else two).collection("returns", Item).get_or_create("A1001", Item(name=f"return-{n}"))
        for n in range(20)
    ]
    results = await asyncio.gather(*racers)
    assert sum(created for _, created in results) == 1
    assert len({doc.value.name for doc, _ in results}) == 1
    assert await one.collection("returns", Item).get("A1001") == results[0][0].value


async def test_update_is_compare_and_set(pair: tuple[ToolStore, ToolStore]) -> None:
    one, two = pair
    created = await one.collection("items", Item).create("C1", Item(name="cup", qty=1))
    seen_one = await one.collection("items", Item).entry("C1")
    seen_two = await two.collection("items", Item).entry("C1")
    assert seen_one is not None and seen_two is not None and seen_one.revision == created.revision
    await one.collection("items", Item).update("C1", Item(name="cup", qty=2), seen_one.revision)
    with pytest.raises(RevisionConflict):  # the second writer read before the first wrote
        await two.collection("items", Item).update("C1", Item(name="cup", qty=3), seen_two.revision)
    assert await two.collection("items", Item).get("C1") == Item(name="cup", qty=2)


async def test_list_by_prefix_and_collections_are_separate(pair: tuple[ToolStore, ToolStore]) -> None:
    one, two = pair
    orders = one.collection("orders", Item)
    for doc_id in ["C001.A1", "C001.A2", "C002.A3", "C0011.A4"]:
        await orders.put(doc_id, Item(name=doc_id))
    await orders.delete("C001.A2")
    await one.collection("other", Item).put("C001.A9", Item(name="elsewhere"))
    listed = await two.collection("orders", Item).list("C001")
    assert [d.id for d in listed] == ["C001.A1"]
    assert [d.id for d in await two.collection("orders", Item).list()] == ["C001.A1", "C0011.A4", "C002.A3"]
    assert await two.collection("empty", Item).list() == []


class _EndsAtOnce:
    """A KV watch that says "nothing stored" at once, as nats-py's does when the consumer it creates right after
    a leader election reports nothing pending."""

    def __aiter__(self) -> _EndsAtOnce:
        return self

    async def __anext__(self) -> None:
        return None

    async def stop(self) -> None:
        pass


async def test_a_scan_that_ends_before_the_stored_keys_is_retried_not_returned_empty(
    pair: tuple[ToolStore, ToolStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = pair[0]
    items = store.collection("items", Item)
    for n in range(3):
        await items.create(f"i{n}", Item(name=f"item {n}"))
    await items.create("gone", Item(name="deleted"))
    await items.delete("gone")  # a delete marker is a stored key too, and must not fail the check
    real_watch, watches = store.kv.watch, []

    async def watch(*args: Any, **kwargs: Any) -> Any:
        watches.append(args)
        return _EndsAtOnce() if len(watches) == 1 else await real_watch(*args, **kwargs)

    monkeypatch.setattr(store.kv, "watch", watch)
    listed = await items.list()
    assert [d.id for d in listed] == ["i0", "i1", "i2"]
    assert len(watches) == 2  # the first, empty scan was noticed and done again


async def test_seeding_from_two_replicas_at_once_is_harmless_and_keeps_live_data(
    pair: tuple[ToolStore, ToolStore],
) -> None:
    one, two = pair
    docs = {f"S{n}": Item(name=f"seed-{n}") for n in range(10)}
    created = await asyncio.gather(one.collection("items", Item).seed(docs), two.collection("items", Item).seed(docs))
    assert sum(created) == 10  # each document created by exactly one replica
    await one.collection("items", Item).put("S3", Item(name="changed by a tool", qty=7))
    assert await two.collection("items", Item).seed(docs) == 0  # a restart seeds again: nothing overwritten
    assert await one.collection("items", Item).get("S3") == Item(name="changed by a tool", qty=7)


async def test_bad_ids_and_bad_documents_are_typed_errors(pair: tuple[ToolStore, ToolStore]) -> None:
    one, _ = pair
    items = one.collection("items", Item)
    for bad in ["", "a b", "jane@example.com", "a..b", ".a", "a.", "a.*", ">"]:
        with pytest.raises(InvalidId):
            await items.get(bad)
    with pytest.raises(InvalidId):
        one.collection("with.dot", Item)
    await one.kv.put("items.raw", b'{"nope": 1}')
    with pytest.raises(CorruptDocument, match="not a valid Item"):
        await items.get("raw")
    assert token_for(" Jane@Example.com") == token_for("jane@example.com")
    await items.put(token_for("jane@example.com"), Item(name="by email"))
    assert store_bucket("my scenario.v2") == "switchboard_store_my_scenario_v2"


# --- the retail tools on the store ---------------------------------------------------------------------


def _retail_tools() -> ModuleType:
    load_scenario("retail", ROOT / "scenarios")  # imports the tools module the way an agent does
    return sys.modules["switchboard_scenario_retail_tools"]


async def test_retail_returns_race_from_two_replicas_opens_one_return(pair: tuple[ToolStore, ToolStore]) -> None:
    tools = _retail_tools()
    one, two = pair
    await asyncio.gather(*(seeder(store) for store in (one, two) for seeder in tools.registry.seeders))
    jane = CallerIdentity(authenticated=True, customer_id="C001")
    create = tools.registry.get("create_return")

    async def open_return(store: ToolStore, n: int) -> Any:
        ctx = ToolContext(f"sess_{n}", "returns", jane, idempotency_key=f"key-{n}", tool_store=store)
        return await create.invoke({"order_id": "A1001"}, ctx)

    results = await asyncio.gather(*(open_return(one if n % 2 else two, n) for n in range(12)))
    assert len({r["return_id"] for r in results}) == 1, results
    stored = await one.collection("returns", tools.Return).list()
    assert [d.id for d in stored] == ["A1001"] and stored[0].value.return_id == results[0]["return_id"]
    lookup = tools.registry.get("lookup_order")
    seen = await lookup.invoke({"order_id": "a1001"}, ToolContext("s", "returns", jane, tool_store=two))
    assert seen["eligible"] is False and seen["reason"] == "already returned"


def _scenario_folder(folder: Path, name: str) -> str:
    """A scenario of this name in ``folder``, given as a path (as ``--scenario`` takes one)."""
    guard = Path(__file__).resolve().parents[1] / "system" / "scenarios" / "guard" / "scenario.yaml"
    folder.mkdir()
    (folder / "scenario.yaml").write_text(guard.read_text().replace("name: guard", f"name: {name}", 1))
    return str(folder)


def test_switchboard_store_prints_the_stored_documents(
    nats_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    scenario = f"cli_{uuid.uuid4().hex[:8]}"

    async def fill() -> None:
        async with Bus([nats_url], name="fill") as bus:
            store = await ToolStore.open(bus.js, store_bucket(scenario))
            await store.collection("returns", Item).put("A1001", Item(name="R-1", qty=1))
            await store.collection("orders", Item).put("A1001", Item(name="headphones"))

    asyncio.run(fill())
    main(["store", "returns", "--scenario", _scenario_folder(tmp_path / "a", scenario), "--nats-url", nats_url])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == [{"key": "returns.A1001", "revision": lines[0]["revision"], "value": {"name": "R-1", "qty": 1}}]
    with pytest.raises(SystemExit, match=r"no documents in collection 'retrns' \(collections: orders, returns\)"):
        main(["store", "retrns", "--scenario", str(tmp_path / "a"), "--nats-url", nats_url])
    unused = f"cli_{uuid.uuid4().hex[:8]}"  # a scenario whose tools never ran: no bucket
    with pytest.raises(SystemExit, match=f"no store for scenario '{unused}'"):
        main(["store", "--scenario", _scenario_folder(tmp_path / "b", unused), "--nats-url", nats_url])
