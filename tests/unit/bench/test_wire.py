"""The lean HTTP/1.1 client: chunked and sized bodies, however the socket splits them."""

import asyncio

import pytest

from services.bench.client import Stream, StreamCounters
from services.bench.wire import LeanPool, _Response

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-request-id: r1\r\n"
FRAMES = [b"data: one\n\n", b"data: two;x\n\n", b"data: [DONE]\n\n"]


def _chunked(frames: list[bytes]) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(f), f) for f in frames)
    return HEAD + b"transfer-encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n"


@pytest.mark.parametrize("step", [1, 2, 3, 5, 7, 16, 1000])
async def test_chunked_body_survives_any_split(step: int) -> None:
    raw = _chunked(FRAMES)
    s, counters = Stream(0, []), StreamCounters()
    response = _Response(s, counters)
    for i in range(0, len(raw), step):
        response.feed(float(i), raw[i : i + step])
    assert response.done.done()
    assert s.status == 200 and s.request_id == "r1"
    assert b"".join(c for _, c in s.chunks) == b"".join(FRAMES)
    assert counters.open == 0


async def test_sized_body_and_a_body_that_ends_with_the_connection() -> None:
    s = Stream(0, [])
    sized = _Response(s, StreamCounters())
    sized.feed(1.0, b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 5\r\n\r\nbu")
    assert not sized.done.done()
    sized.feed(2.0, b"sy")
    sized.feed(3.0, b"!")
    assert sized.done.done() and s.status == 503 and s.chunks[-1] == (3.0, b"!")

    until_close = _Response(Stream(1, []), StreamCounters())
    until_close.feed(1.0, b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\ndata")
    until_close.lost(None)
    assert until_close.done.done() and not until_close.keep_alive

    cut = _Response(Stream(2, []), StreamCounters())
    cut.feed(1.0, _chunked(FRAMES)[:60])
    cut.lost(None)
    with pytest.raises(ConnectionError):
        cut.done.result()


async def test_pool_streams_over_one_keep_alive_connection() -> None:
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while head := await reader.readuntil(b"\r\n\r\n"):
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            writer.write(_chunked(FRAMES))
            await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = LeanPool(f"http://127.0.0.1:{port}/v1", 5.0, {"Authorization": "Bearer k"})
    counters = StreamCounters()
    streams = [Stream(i, []) for i in range(3)]
    try:
        for s in streams:
            await pool.send(0, s, {"model": "m"}, counters)
    finally:
        pool.close()
        server.close()
    assert [s.error for s in streams] == [None, None, None]
    assert all(b"".join(c for _, c in s.chunks) == b"".join(FRAMES) for s in streams)
    assert connections == 1
    assert counters.inflight == 0 and counters.done == 3
