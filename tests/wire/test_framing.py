"""Line framing: the sans-IO LineBuffer and the anyio LineReader over real and chunked streams."""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from anyio.abc import ByteReceiveStream
from hypothesis import given, settings
from hypothesis import strategies as st
from ifmemd.wire import protocol
from ifmemd.wire.framing import LineReader, MessageWriter, send_message, server_handshake
from ifmemd.wire.protocol import (
    BAD_HANDSHAKE,
    LINE_TOO_LONG,
    MAX_LINE,
    UNSUPPORTED_VERSION,
    ConnectionClosedError,
    LineBuffer,
    ProtocolError,
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # pytest's tmp_path can exceed the 108-byte limit of a Unix socket path.
    path = Path(tempfile.mkdtemp(prefix="ifm-", dir="/tmp"))
    yield path
    shutil.rmtree(path)


class ChunkStream(ByteReceiveStream):
    """A byte stream that delivers exactly the given chunks, then ends."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.max_bytes_seen: list[int] = []

    async def receive(self, max_bytes: int = 65536) -> bytes:
        self.max_bytes_seen.append(max_bytes)
        if not self.chunks:
            raise anyio.EndOfStream
        return self.chunks.pop(0)

    async def aclose(self) -> None:
        self.chunks.clear()


def _chunk(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


def _expected(lines: list[bytes], max_line: int) -> list[bytes | str]:
    return [line if len(line) <= max_line else LINE_TOO_LONG for line in lines]


def _drain(buf: LineBuffer, out: list[bytes | str]) -> None:
    while True:
        try:
            line = buf.next_line()
        except ProtocolError as e:
            out.append(e.code)
            continue
        if line is None:
            return
        out.append(line)


# --- LineBuffer --------------------------------------------------------------


def test_splits_lines_and_keeps_partial_tail() -> None:
    buf = LineBuffer()
    buf.feed(b'{"a":1}\n{"b":2}\n{"c"')
    assert buf.next_line() == b'{"a":1}'
    assert buf.next_line() == b'{"b":2}'
    assert buf.next_line() is None
    assert buf.pending == 4
    buf.feed(b":3}\n")
    assert buf.next_line() == b'{"c":3}'
    assert buf.next_line() is None
    assert buf.pending == 0
    buf.eof()  # nothing pending: a clean end


def test_empty_lines_are_lines() -> None:
    buf = LineBuffer()
    buf.feed(b"\n\nx\n")
    assert [buf.next_line(), buf.next_line(), buf.next_line()] == [b"", b"", b"x"]


def test_line_of_exactly_max_line_is_accepted() -> None:
    buf = LineBuffer(max_line=8)
    buf.feed(b"12345678\n123456789\nok\n")
    assert buf.next_line() == b"12345678"
    with pytest.raises(ProtocolError) as info:
        buf.next_line()
    assert info.value.code == LINE_TOO_LONG
    assert "line of 9 bytes exceeds the limit of 8 bytes" in str(info.value)
    assert buf.next_line() == b"ok"


def test_oversized_line_is_reported_only_after_its_newline() -> None:
    buf = LineBuffer(max_line=4)
    buf.feed(b"abcdefgh")
    assert buf.next_line() is None  # too long already, but not over yet
    assert buf.pending == 8
    buf.feed(b"ijkl")
    assert buf.next_line() is None
    buf.feed(b"mn\nnext\n")
    with pytest.raises(ProtocolError, match="line of 14 bytes"):
        buf.next_line()
    assert buf.next_line() == b"next"


def test_oversized_line_is_not_held_in_memory() -> None:
    buf = LineBuffer(max_line=16)
    for _ in range(1000):
        buf.feed(b"x" * 100)
        assert buf.next_line() is None
        assert len(buf._buf) <= 116  # dropped as it arrives
    assert buf.pending == 100_000


def test_eof_mid_line_is_a_disconnect_not_a_protocol_error() -> None:
    buf = LineBuffer()
    buf.feed(b'{"id":1')
    assert buf.next_line() is None
    with pytest.raises(ConnectionClosedError, match="after 7 bytes of an unfinished line"):
        buf.eof()


def test_eof_while_discarding_is_a_disconnect() -> None:
    buf = LineBuffer(max_line=2)
    buf.feed(b"abcdef")
    assert buf.next_line() is None
    with pytest.raises(ConnectionClosedError):
        buf.eof()


def test_full_size_limit() -> None:
    buf = LineBuffer()
    assert buf.max_line == MAX_LINE == 1 << 20
    buf.feed(b"a" * MAX_LINE + b"\n" + b"b" * (MAX_LINE + 1) + b"\nafter\n")
    assert buf.next_line() == b"a" * MAX_LINE
    with pytest.raises(ProtocolError, match=f"line of {MAX_LINE + 1} bytes"):
        buf.next_line()
    assert buf.next_line() == b"after"


def test_each_byte_is_scanned_once() -> None:
    # A long line arriving a byte at a time must not be re-scanned from its start.
    calls: list[int] = []

    class CountingArray(bytearray):
        def find(self, sub: bytes, start: int = 0, *args: int) -> int:  # type: ignore[override]
            calls.append(len(self) - start)
            return super().find(sub, start, *args)

    buf = LineBuffer()
    buf._buf = CountingArray()
    for _ in range(5000):
        buf.feed(b"x")
        assert buf.next_line() is None
    assert sum(calls) == 5000


lines_strategy = st.lists(
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
    max_size=20,
)


@settings(max_examples=300, deadline=None)
@given(lines=lines_strategy, cuts=st.lists(st.integers(min_value=0), max_size=30))
def test_any_chunking_yields_exactly_the_lines(lines: list[bytes], cuts: list[int]) -> None:
    max_line = 16
    data = b"".join(line + b"\n" for line in lines)
    buf = LineBuffer(max_line=max_line)
    out: list[bytes | str] = []
    for chunk in _chunk(data, cuts):
        buf.feed(chunk)
        _drain(buf, out)
    buf.eof()
    assert out == _expected(lines, max_line)


# --- LineReader --------------------------------------------------------------


async def _read_all(reader: LineReader) -> list[bytes | str]:
    out: list[bytes | str] = []
    while True:
        try:
            out.append(await reader.read_line())
        except ProtocolError as e:
            out.append(e.code)
        except anyio.EndOfStream:
            return out


@settings(max_examples=200, deadline=None)
@given(lines=lines_strategy, cuts=st.lists(st.integers(min_value=0), max_size=30))
def test_reader_any_chunking_yields_exactly_the_lines(lines: list[bytes], cuts: list[int]) -> None:
    data = b"".join(line + b"\n" for line in lines)
    reader = LineReader(ChunkStream(_chunk(data, cuts)), max_line=16)
    assert anyio.run(_read_all, reader) == _expected(lines, 16)


@pytest.mark.anyio
async def test_reader_clean_eof_and_async_iteration() -> None:
    reader = LineReader(ChunkStream([b"a\nb", b"\n"]))
    assert [line async for line in reader] == [b"a", b"b"]
    with pytest.raises(anyio.EndOfStream):
        await reader.read_line()


@pytest.mark.anyio
async def test_reader_eof_mid_line_raises_connection_closed() -> None:
    reader = LineReader(ChunkStream([b"a\nhalf a li", b"ne"]))
    assert await reader.read_line() == b"a"
    with pytest.raises(ConnectionClosedError):
        await reader.read_line()


@pytest.mark.anyio
async def test_reader_read_message_decodes() -> None:
    reader = LineReader(ChunkStream([b'{"id":1,"op":"status"}\n[1]\n']))
    assert await reader.read_message() == {"id": 1, "op": "status"}
    with pytest.raises(ProtocolError, match="expected a JSON object"):
        await reader.read_message()


@pytest.mark.anyio
async def test_server_keeps_serving_after_an_oversized_line(sock_dir: Path) -> None:
    """Over a real Unix socket: a 1 MiB + 1 line gets an error answer, the next line an answer."""
    path = sock_dir / "s"
    answers: list[dict[str, object]] = []

    async def serve(listener: anyio.abc.SocketListener) -> None:
        stream = await listener.accept()
        async with stream:
            reader = LineReader(stream)
            while True:
                try:
                    msg = await reader.read_message()
                except ProtocolError as e:
                    await send_message(stream, protocol.error_response(None, e.code, e.reason))
                    continue
                except anyio.EndOfStream:
                    return
                await send_message(stream, protocol.ok_response(msg["id"], "seen"))

    async with await anyio.create_unix_listener(path) as listener, anyio.create_task_group() as tg:
        tg.start_soon(serve, listener)
        async with await anyio.connect_unix(path) as client:
            big = json.dumps({"id": 1, "op": "remember", "text": "x" * MAX_LINE}).encode()
            await client.send(big + b"\n" + protocol.encode({"id": 2, "op": "status"}))
            await client.send_eof()
            reader = LineReader(client)
            async for line in reader:
                answers.append(json.loads(line))
    assert answers == [
        {
            "id": None,
            "ok": False,
            "error": {
                "code": LINE_TOO_LONG,
                "message": f"line of {len(big)} bytes exceeds the limit of {MAX_LINE} bytes; "
                "discarded",
            },
        },
        {"id": 2, "ok": True, "result": "seen"},
    ]


# --- handshake ---------------------------------------------------------------


class Collect(anyio.abc.ByteSendStream):
    def __init__(self) -> None:
        self.sent = b""

    async def send(self, item: bytes) -> None:
        self.sent += item

    async def send_eof(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


@pytest.mark.anyio
async def test_server_handshake_accepts_and_answers() -> None:
    out = Collect()
    reader = LineReader(ChunkStream([protocol.encode(protocol.client_hello())]))
    assert await server_handshake(reader, out) == 1
    assert out.sent == b'{"proto":"ifmem","version":1}\n'


@pytest.mark.parametrize(
    ("hello", "code"),
    [
        (b'{"proto":"ifmem","min":2,"max":3}\n', UNSUPPORTED_VERSION),
        (b'{"proto":"http","min":1,"max":1}\n', BAD_HANDSHAKE),
        (b"GET / HTTP/1.1\n", protocol.BAD_JSON),
    ],
)
@pytest.mark.anyio
async def test_server_handshake_refuses_with_an_error_hello(hello: bytes, code: str) -> None:
    out = Collect()
    with pytest.raises(ProtocolError) as info:
        await server_handshake(LineReader(ChunkStream([hello])), out)
    assert info.value.code == code
    reply = json.loads(out.sent)
    assert reply == {"proto": "ifmem", "error": {"code": code, "message": info.value.reason}}


@pytest.mark.anyio
async def test_message_writer_keeps_concurrent_lines_whole(sock_dir: Path) -> None:
    path = sock_dir / "s"
    big = "y" * 300_000  # larger than a socket buffer: each send takes several writes
    async with (
        await anyio.create_unix_listener(path) as listener,
        await anyio.connect_unix(path) as client,
        await listener.accept() as server_side,
    ):
        writer = MessageWriter(server_side)

        async def send_all() -> None:
            async with anyio.create_task_group() as tg:
                for i in range(8):
                    tg.start_soon(writer.send, protocol.event_message(i, {"pad": big}))
            await server_side.send_eof()

        async with anyio.create_task_group() as tg:
            tg.start_soon(send_all)
            got = [protocol.decode_line(line) async for line in LineReader(client)]
    assert sorted(m["id"] for m in got) == list(range(8))
    assert all(m["event"]["pad"] == big for m in got)


@pytest.mark.anyio
async def test_message_writer_refuses_oversized_messages_before_sending() -> None:
    out = Collect()
    with pytest.raises(ProtocolError) as info:
        await MessageWriter(out).send(protocol.ok_response("r", "x" * MAX_LINE))
    assert (info.value.code, info.value.request_id, out.sent) == (LINE_TOO_LONG, "r", b"")
