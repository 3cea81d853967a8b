"""The edge's direct text frames (``ws_transport.TEXT_FRAMES``) on a real uvicorn server with the edge's
WebSocket protocol and a real ``websockets`` client: the client reads every frame as the text written,
in order, at each length encoding; the path declines (and the ASGI ``send`` takes over) when compression
was negotiated, when the socket's buffer is full, and once the connection is closed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import websockets

from switchboard.local.asgi_server import InProcessServer
from switchboard_edge.ws_transport import TEXT_FRAMES, CoalescingWebSocketProtocol, frame_header

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def payload(length: int, mark: str) -> bytes:
    """``length`` bytes of valid UTF-8 that start with ``mark`` and hold multi-byte characters."""
    head = f'{{"mark":"{mark}","pad":"'.encode()
    body = ("é" * length).encode()[: max(0, length - len(head) - 2)]
    if len(body) % 2:  # "é" is two bytes: never cut one in half
        body = body[:-1] + b"x"
    text = head + body + b'"}'
    return text + b" " * (length - len(text))


SIZES = (40, 125, 126, 127, 65535, 65536, 70000)
"""Lengths around the frame header's encodings: 7 bits, 16 bits (126..65535), 64 bits."""


async def serve(app: Callable[[Scope, Receive, Send], Awaitable[None]], **config: Any) -> InProcessServer:
    server = InProcessServer(app, ws=CoalescingWebSocketProtocol, ws_max_size=1 << 24, **config)
    await server.start()
    return server


def test_the_header_encodes_the_length_as_rfc_6455_says() -> None:
    assert frame_header(5) == b"\x81\x05"
    assert frame_header(126) == b"\x81\x7e\x00\x7e"
    assert frame_header(65536) == b"\x81\x7f" + (65536).to_bytes(8, "big")


async def test_direct_frames_arrive_as_the_text_written_in_order_among_asgi_sends() -> None:
    accepted: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        frames = scope["extensions"][TEXT_FRAMES]
        for i, size in enumerate(SIZES):
            accepted.append(frames.text(payload(size, f"direct-{i}")))
            await send({"type": "websocket.send", "text": f'{{"mark":"asgi-{i}"}}'})
        await receive()  # until the client closes

    server = await serve(app, ws_per_message_deflate=False)
    try:
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/", max_size=1 << 24) as ws:
            got = [await ws.recv() for _ in range(2 * len(SIZES))]
    finally:
        await server.stop()
    assert accepted == [True] * len(SIZES)
    expected = []
    for i, size in enumerate(SIZES):
        expected += [payload(size, f"direct-{i}").decode(), f'{{"mark":"asgi-{i}"}}']
    assert got == expected


async def test_with_compression_negotiated_the_direct_path_declines() -> None:
    answers: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        answers.set_result(scope["extensions"][TEXT_FRAMES].text(b'{"mark":"x"}'))
        await send({"type": "websocket.send", "text": "via asgi"})
        await receive()

    server = await serve(app, ws_per_message_deflate=True)
    try:
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/", compression="deflate") as ws:
            assert await ws.recv() == "via asgi"
    finally:
        await server.stop()
    assert await answers is False


async def test_a_full_socket_buffer_sends_the_caller_to_the_asgi_send_which_waits() -> None:
    """The client reads nothing until the server's direct path declines; the ASGI send then waits for the
    client to read; nothing is lost or reordered."""
    chunk = 1 << 16
    state: dict[str, Any] = {}
    declined = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        frames = scope["extensions"][TEXT_FRAMES]
        sent = 0
        while sent < 4000:  # 256 MiB at most: a bound, far above any socket buffer
            if not frames.text(payload(chunk, f"n{sent}")):
                break
            sent += 1
            await asyncio.sleep(0)  # ok-sleep: ends the step, so the transport writes what it holds
        state["direct"] = sent
        declined.set()
        last = asyncio.ensure_future(send({"type": "websocket.send", "text": '{"mark":"last"}'}))
        await asyncio.sleep(0)  # ok-sleep: one step, to show the send did not complete at once
        state["waited"] = not last.done()
        await last
        await receive()

    server = await serve(app, ws_per_message_deflate=False)
    try:
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/", max_size=1 << 24) as ws:
            await asyncio.wait_for(declined.wait(), timeout=60)
            marks = [json.loads(await ws.recv())["mark"] for _ in range(state["direct"] + 1)]
    finally:
        await server.stop()
    assert 0 < state["direct"] < 4000
    assert state["waited"]
    assert marks == [f"n{i}" for i in range(state["direct"])] + ["last"]


@pytest.mark.parametrize("how", ["close handshake", "connection dropped"])
async def test_once_the_client_has_gone_the_direct_path_declines(how: str) -> None:
    after: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        assert message["type"] == "websocket.disconnect"
        after.set_result(scope["extensions"][TEXT_FRAMES].text(b'{"mark":"late"}'))

    server = await serve(app, ws_per_message_deflate=False)
    try:
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/") as ws:
            if how == "connection dropped":  # no close frame: the server only sees the TCP connection end
                ws.transport.abort()
        assert await asyncio.wait_for(after, timeout=10) is False
    finally:
        await server.stop()


@pytest.mark.parametrize("size", SIZES)
def test_payloads_are_the_length_asked(size: int) -> None:
    data = payload(size, "m")
    assert len(data) == size and json.loads(data)["mark"] == "m"
