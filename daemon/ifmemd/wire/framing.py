"""Newline-delimited JSON over anyio byte streams: the daemon's side of the wire.

`LineReader` turns any `anyio.abc.ByteReceiveStream` into lines with the same
`LineBuffer` the blocking client uses, so both ends enforce `MAX_LINE` the same
way. `MessageWriter` sends whole lines from concurrent tasks, and
`server_handshake` runs the version negotiation on a fresh connection.
"""

from __future__ import annotations

from typing import Any, Final

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream

from ifmemd.wire.protocol import (
    MAX_LINE,
    LineBuffer,
    ProtocolError,
    decode_line,
    encode,
    negotiate,
    server_hello,
    server_hello_error,
)

RECEIVE_CHUNK: Final = 65536


class LineReader:
    """Reads lines from an anyio byte stream, at most `max_line` bytes each.

    Error handling: a line over the limit raises `ProtocolError(LINE_TOO_LONG)`
    once it has been read to its newline and dropped, so the caller can answer
    with an error and go on reading the next line. The stream ending between
    lines raises `anyio.EndOfStream` (a clean disconnect); ending inside a line
    raises `ConnectionClosedError`. Other stream errors propagate unchanged.

    Also an async iterator of lines that stops at a clean end of stream.
    """

    def __init__(self, stream: ByteReceiveStream, max_line: int = MAX_LINE) -> None:
        self.stream = stream
        self._buffer = LineBuffer(max_line)

    async def read_line(self) -> bytes:
        """Return the next line without its newline."""
        while True:
            line = self._buffer.next_line()
            if line is not None:
                return line
            try:
                data = await self.stream.receive(RECEIVE_CHUNK)
            except anyio.EndOfStream:
                self._buffer.eof()
                raise
            self._buffer.feed(data)

    async def read_message(self) -> dict[str, Any]:
        """Return the next line decoded as a JSON object (see `decode_line`)."""
        return decode_line(await self.read_line())

    def __aiter__(self) -> LineReader:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.read_line()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None


async def send_message(stream: ByteSendStream, obj: dict[str, Any]) -> None:
    """Send one message as a line (see `encode`)."""
    await stream.send(encode(obj))


class MessageWriter:
    """Sends whole messages on a stream that several tasks write to.

    A connection's request handlers and its subscription both answer on one
    stream; the lock keeps their lines from interleaving (anyio would refuse
    concurrent sends with `BusyResourceError` instead).
    """

    def __init__(self, stream: ByteSendStream) -> None:
        self.stream = stream
        self._lock = anyio.Lock()

    async def send(self, obj: dict[str, Any]) -> None:
        """Send one message as a line; raises `ProtocolError` before sending if it is too long."""
        data = encode(obj)
        async with self._lock:
            await self.stream.send(data)


async def server_handshake(reader: LineReader, stream: ByteSendStream) -> int:
    """Read the client's hello, answer it, and return the negotiated version.

    Error handling: a bad or unsupported hello is answered with an error hello
    and then re-raised as `ProtocolError`; the caller should close the
    connection. Bound the wait with `anyio.fail_after` around this call.
    """
    try:
        version = negotiate(await reader.read_message())
    except ProtocolError as e:
        await send_message(stream, server_hello_error(e.code, e.reason))
        raise
    await send_message(stream, server_hello(version))
    return version
