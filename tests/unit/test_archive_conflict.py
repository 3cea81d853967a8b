"""A commit that archives and then loses its compare-and-set must leave no trace in the transcript.

Two writers load the same revision of a session (two edges after a resume, or a connection's turn and its
item-save timer). The loser's commit moves its oldest items to the history stream, then its CAS fails: the
winner's state is what the session is. Whatever the order of the two writers' archive appends and CAS writes,
the window plus the archive must show the winner's conversation, each item once and in order, and again after
the loser redoes its change on the reloaded state. Real nats-server; the interleaving is forced by running the
winner's whole commit inside the loser's, at a chosen point.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from switchboard.bus.subjects import history_items
from switchboard.schemas import ConversationItem, MessageItem, SessionState
from switchboard.state import ArchiveBroken, HistoryArchive, HistoryWindow, SessionConflict, SessionStore

WINDOW = HistoryWindow(max_items=8, keep_items=4, max_bytes=4096)
Change = Callable[[SessionState], SessionState]


def _msg(item_id: str, text: str | None = None, size: int = 0) -> MessageItem:
    return MessageItem(id=item_id, role="user", text=text or (item_id + "x" * size))


def _with(state: SessionState, history: list[ConversationItem]) -> SessionState:
    return state.model_copy(update={"history": history})


def delete_first(state: SessionState) -> SessionState:  # conversation.item.delete of the oldest item
    return _with(state, state.history[1:])


def insert_second(state: SessionState) -> SessionState:  # conversation.item.create, previous_item_id = the oldest
    return _with(state, [state.history[0], _msg("x"), *state.history[1:]])


def edit_first(state: SessionState) -> SessionState:  # a spoken item cut to what was heard (same id)
    return _with(state, [state.history[0].model_copy(update={"text": "cut"}), *state.history[1:]])


def add_one(state: SessionState) -> SessionState:  # an item of the other connection, nothing archived
    return _with(state, [*state.history, _msg("w1")])


def add_turn_that_archives(state: SessionState) -> SessionState:  # the winner archives too
    return _with(state, [*state.history, _msg("w1"), _msg("w2"), _msg("w3")])


def loser_turn(state: SessionState) -> SessionState:  # a turn: the caller's words and the answer
    return _with(state, [*state.history, _msg("u1"), _msg("u2")])


def loser_big_turn(state: SessionState) -> SessionState:  # an answer so big that the turn's own words archive
    return _with(state, [*state.history, _msg("u1"), _msg("u2", size=4000)])


Seed = Callable[[SessionStore], Awaitable[tuple[SessionState, int]]]


def _session(history: list[ConversationItem], archived: int = 0) -> SessionState:
    return SessionState(
        session_id="s1", scenario="t", active_agent="a", history=history, archived_items=archived,
        created_at=0, updated_at=0,
    )  # fmt: skip


SEVEN = [_msg(f"i{k}") for k in range(7)]


async def seven_items(store: SessionStore) -> tuple[SessionState, int]:
    state, revision = await store.commit(_session(list(SEVEN)), 0)
    assert state.archived_items == 0
    return state, revision


async def _race(
    nc: Client, winner: Change, loser: Change, point: str, seed: Seed = seven_items
) -> tuple[SessionStore, SessionState]:
    """A session (``seed``); the loser's commit archives, and the winner's whole commit runs inside it at
    ``point``: before the loser's archive append, or between that append and the loser's CAS write.
    Returns a store and the state both started from."""
    js = nc.jetstream()
    first, second = await SessionStore.open(js, window=WINDOW), await SessionStore.open(js, window=WINDOW)
    state, revision = await seed(first)

    async def winner_commits() -> None:
        await first.commit(winner(state), revision)

    hook_on: Any = second.archive if point == "before_append" else second
    name = "append" if point == "before_append" else "save"
    real: Callable[..., Awaitable[Any]] = getattr(hook_on, name)

    async def hooked(*args: Any, **kwargs: Any) -> Any:
        setattr(hook_on, name, real)  # once
        await winner_commits()
        return await real(*args, **kwargs)

    setattr(hook_on, name, hooked)
    loses = loser(state)
    assert WINDOW.split(loses.history)[0], "the loser's commit must archive"
    with pytest.raises(SessionConflict):
        await second.commit(loses, revision)
    return second, state


def _ids(items: list[ConversationItem]) -> list[str]:
    return [f"{i.id}:{i.text}" if isinstance(i, MessageItem) and i.text == "cut" else i.id for i in items]


async def _check(store: SessionStore, expected: list[ConversationItem]) -> None:
    """The stored session, read by this store and by a fresh one (a resume elsewhere), is ``expected``."""
    fresh = SessionStore(store._kv, archive=HistoryArchive(store.archive._js), window=WINDOW)  # type: ignore[union-attr]
    for reader in (store, fresh):
        loaded = await reader.load("s1")
        assert loaded is not None
        assert _ids(await reader.transcript("s1")) == _ids(expected)
        assert loaded[0].archived_items + len(loaded[0].history) == len(expected)  # the counters cover it all


WINNERS = [delete_first, insert_second, edit_first, add_one, add_turn_that_archives]


@pytest.mark.parametrize("point", ["before_append", "before_cas"])
@pytest.mark.parametrize("loser", [loser_turn, loser_big_turn])
@pytest.mark.parametrize("winner", WINNERS)
async def test_a_commit_that_archives_and_loses_leaves_the_winners_conversation(
    nc: Client, winner: Change, loser: Change, point: str
) -> None:
    store, base = await _race(nc, winner, loser, point)
    won = winner(base).history
    await _check(store, won)  # after the race: the winner's conversation, nothing of the loser's

    loaded = await store.load("s1")  # the loser reloads and redoes its change, which archives again
    assert loaded is not None
    redo = loser(loaded[0])
    await store.commit(redo, loaded[1])
    await _check(store, [*won, *redo.history[-2:]])  # the winner's conversation, then the redone turn


async def test_two_commits_that_archive_at_once_leave_the_winners_conversation(nc: Client) -> None:
    """Both archive, their appends interleaved on the stream; whichever wins the CAS is the conversation."""
    js = nc.jetstream()
    stores = [await SessionStore.open(js, window=WINDOW) for _ in range(2)]
    state, revision = await seven_items(stores[0])
    changes = [add_turn_that_archives(delete_first(state)), loser_big_turn(insert_second(state))]
    results = await asyncio.gather(
        *(store.commit(change, revision) for store, change in zip(stores, changes, strict=True)),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["SessionConflict", "tuple"]
    won = next(c for c, r in zip(changes, results, strict=True) if isinstance(r, tuple))
    await _check(stores[0], won.history)


async def _archive_the_old_way(js: JetStreamContext, items: list[ConversationItem]) -> None:
    """What an edge before schema 1.4 wrote: no batch headers, the item id as the message id."""
    for item in items:
        await js.publish(history_items("s1"), item.to_bytes(), headers={"Nats-Msg-Id": f"s1.{item.id}"})


async def old_format(store: SessionStore) -> tuple[SessionState, int]:
    """A session archived before batches: i0-i2 in the stream (i1 twice: an append repeated after the
    dedup window), i3-i6 in a KV value without ``archive_head``."""
    js = store.archive._js  # type: ignore[union-attr]
    await _archive_the_old_way(js, SEVEN[:3])
    await js.publish(history_items("s1"), SEVEN[1].to_bytes())
    value = _session(SEVEN[3:], archived=3).to_bytes()
    assert b"archive_head" not in value
    revision = await store._kv.create("s1", value)
    state, _ = await store.load("s1")  # type: ignore[misc]
    return state, revision


async def test_a_session_archived_in_the_old_format_reads_and_archives_on(nc: Client) -> None:
    store = await SessionStore.open(nc.jetstream(), window=WINDOW)
    state, revision = await old_format(store)
    await _check(store, SEVEN)
    for turn in range(3):  # batches after the old items
        state, revision = await store.commit(
            _with(state, [*state.history, _msg(f"t{turn}a"), _msg(f"t{turn}b")]), revision
        )
    assert state.archive_head is not None and state.archived_items > 3
    await _check(store, [*SEVEN, *(_msg(f"t{t}{x}") for t in range(3) for x in "ab")])


@pytest.mark.parametrize("point", ["before_append", "before_cas"])
async def test_a_lost_commit_on_an_old_format_session_leaves_no_trace(nc: Client, point: str) -> None:
    store, base = await _race(nc, add_turn_that_archives, loser_big_turn, point, seed=old_format)
    await _check(store, [*SEVEN[:3], *add_turn_that_archives(base).history])


async def test_a_batch_the_state_names_that_is_not_in_the_stream_is_an_error(nc: Client) -> None:
    store = await SessionStore.open(nc.jetstream(), window=WINDOW)
    state, revision = await seven_items(store)
    await store.commit(add_turn_that_archives(state).model_copy(update={"archive_head": "0123456789abcdef"}), revision)
    with pytest.raises(ArchiveBroken, match="0123456789abcdef"):
        await store.transcript("s1")


async def test_a_session_an_older_edge_wrote_after_batches_loses_no_item(nc: Client) -> None:
    """An edge before 1.4 ignores ``archive_head``, so its commit drops it and archives without batches."""
    store = await SessionStore.open(nc.jetstream(), window=WINDOW)
    state, revision = await seven_items(store)
    state, revision = await store.commit(add_turn_that_archives(state), revision)  # a batch: i0 .. i5
    assert state.archive_head is not None
    by_older_edge = [_msg(f"o{k}") for k in range(5)]
    older = _with(state, [*state.history, *by_older_edge]).model_copy(update={"archive_head": None})
    moved, window = WINDOW.split(older.history)
    assert moved
    await _archive_the_old_way(store.archive._js, moved)  # type: ignore[union-attr]
    await store.save(older.model_copy(update={"history": window, "archived_items": 6 + len(moved)}), revision)
    await _check(store, [*SEVEN, _msg("w1"), _msg("w2"), _msg("w3"), *by_older_edge])
