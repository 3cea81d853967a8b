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


async def test_a_held_block_leaves_in_one_write_when_it_ends() -> None:
    transport, reader, writer, server = await connected()
    transport.write(b"answer ")  # written before the hold, its flush already scheduled: held too
    with transport.held(60.0):
        await asyncio.sleep(0)  # ok-sleep: steps end inside the block, the subject of this test
        transport.write(b"more ")
        await asyncio.sleep(0)  # ok-sleep: as above
        assert transport.writes == 0
        transport.write(b"done")
    assert await reader.readexactly(16) == b"answer more done"
    assert transport.writes == 1
    writer.close()
    server.close()


async def test_a_hold_lets_go_after_its_bound() -> None:
    transport, reader, writer, server = await connected()
    with transport.held(0.05):
        transport.write(b"not kept forever")
        assert await asyncio.wait_for(reader.readexactly(16), timeout=10) == b"not kept forever"
        transport.write(b" later")  # the hold is over: this one leaves at the end of its step
        assert await asyncio.wait_for(reader.readexactly(6), timeout=10) == b" later"
    assert transport.writes == 2
    writer.close()
    server.close()


async def test_closing_while_held_writes_what_waits() -> None:
    transport, reader, writer, server = await connected()
    with transport.held(60.0):
        transport.write(b"last words")
        transport.close()
    assert await reader.read() == b"last words"
    writer.close()
    server.close()
