"""Connection.send: whole lines, in order, whether or not the socket has room for them."""

from __future__ import annotations

import json
import socket
import threading
import time

import anyio
import pytest
from anyio.abc import UNIXSocketStream
from ifmemd.wire.peercred import Peer
from ifmemd.wire.server import Connection, ReplyTooLongError


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _read_all(sock: socket.socket, into: list[bytes], delay: float) -> None:
    """Read until the peer closes, slowly at first so that the sender's buffer fills."""
    time.sleep(delay)
    while chunk := sock.recv(4096):
        into.append(chunk)


@pytest.mark.anyio
async def test_concurrent_large_answers_arrive_whole_and_in_order() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    received: list[bytes] = []
    reader = threading.Thread(target=_read_all, args=(theirs, received, 0.2))
    reader.start()
    stream = await UNIXSocketStream.from_socket(ours)
    conn = Connection(stream, Peer(uid=0, gid=0, pid=0))
    # Each answer is far larger than the socket's buffer: most sends wait for room.
    messages = [{"id": i, "ok": True, "result": {"text": chr(97 + i) * 50_000}} for i in range(8)]
    async with anyio.create_task_group() as tg:
        for message in messages:
            tg.start_soon(conn.send, message)
            await anyio.sleep(0)  # each task starts its send before the next
    # Small answers, which fit at once, after them on the same connection.
    for i in range(8, 20):
        await conn.send({"id": i, "ok": True, "result": i})
    await stream.aclose()
    reader.join(10)
    theirs.close()
    lines = b"".join(received).split(b"\n")
    assert lines[-1] == b""
    got = [json.loads(line) for line in lines[:-1]]
    assert [m["id"] for m in got] == list(range(20))
    assert got[:8] == messages


@pytest.mark.anyio
async def test_a_send_to_a_client_gone_is_a_broken_resource() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.close()
    stream = await UNIXSocketStream.from_socket(ours)
    conn = Connection(stream, Peer(uid=0, gid=0, pid=0))
    with pytest.raises(anyio.BrokenResourceError):
        await conn.send({"id": 1, "ok": True, "result": None})
    await stream.aclose()


@pytest.mark.anyio
async def test_an_answer_too_long_for_a_line_is_refused_under_its_id() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    stream = await UNIXSocketStream.from_socket(ours)
    conn = Connection(stream, Peer(uid=0, gid=0, pid=0))
    # 400,000 characters, 2.4 MB escaped as the wire sends them (ASCII only).
    with pytest.raises(ReplyTooLongError, match="exceeds the limit"):
        await conn.send({"id": "big", "ok": True, "result": {"text": "\U0001f600" * 200_000}})
    await conn.send({"id": "next", "ok": True, "result": 1})  # the connection goes on
    await stream.aclose()
    lines = theirs.makefile("rb").read().split(b"\n")
    theirs.close()
    refused, after = json.loads(lines[0]), json.loads(lines[1])
    assert refused["id"] == "big" and refused["ok"] is False
    assert refused["error"]["code"] == "line_too_long" and len(lines[0]) < 200
    assert after == {"id": "next", "ok": True, "result": 1}
