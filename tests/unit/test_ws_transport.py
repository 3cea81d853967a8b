"""The edge's coalescing transport over a real loopback TCP connection: the frames of one loop step
leave in one socket write, in order; a later step is a new write; closing first writes what waits."""

from __future__ import annotations

import asyncio

from switchboard_edge.ws_transport import CoalescingTransport


async def connected() -> tuple[CoalescingTransport, asyncio.StreamReader, asyncio.StreamWriter, asyncio.Server]:
    made: asyncio.Future[asyncio.Transport] = asyncio.get_running_loop().create_future()

    class Server(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            made.set_result(transport)

    server = await asyncio.get_running_loop().create_server(Server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)  # kept: a collected writer closes
    return CoalescingTransport(await made, asyncio.get_running_loop()), reader, writer, server


async def test_one_loop_step_is_one_write_and_order_is_kept() -> None:
    transport, reader, writer, server = await connected()
    for part in (b"one ", b"two ", b"three "):
        transport.write(part)
    assert transport.writes == 0  # nothing left yet: the step is not over
    assert await reader.readexactly(14) == b"one two three "
    assert transport.writes == 1

    transport.write(b"four ")
    await asyncio.sleep(0)  # ok-sleep: ends the loop step, the subject of this test
    transport.write(b"five")
    assert await reader.readexactly(9) == b"four five"
    assert transport.writes == 3

    transport.write(b"last")
    transport.close()  # what waits is written before the close
    assert await reader.read() == b"last"
    writer.close()
    server.close()
