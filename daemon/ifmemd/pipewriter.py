"""The write end of a pipe to a child process, written without a task switch.

A request to a shard is a short line: it nearly always fits in the pipe at
once, so `send` writes it with one `os.write` and returns without yielding
to the event loop (anyio's process streams cost a write, a drain and two
cancellation checkpoints per line). Only a line that does not fit waits,
shielded, until the child has read enough: a line is never left half
written, and lines from concurrent senders never interleave.
"""

from __future__ import annotations

import os

import anyio


class PipeClosedError(OSError):
    """Raised when sending on a pipe this side has closed."""

    def __init__(self) -> None:
        super().__init__("send to a pipe that was closed")


class PipeWriter:
    """Owns `fd`, the write end of a pipe; `close()` gives the reader end-of-file."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._lock = anyio.Lock()  # held only while a line waits for room

    @property
    def closed(self) -> bool:
        return self._fd < 0

    async def send(self, data: bytes) -> None:
        """Write all of `data`; raises OSError (EPIPE) if the reader is gone."""
        if self._lock.locked():
            # Another line is waiting for room: queue behind it, in order.
            async with self._lock:
                await self._send_rest(memoryview(data))
            return
        view = memoryview(data)
        try:
            written = self._write(view)
        except BlockingIOError:
            written = 0
        if written == len(view):
            return
        async with self._lock:  # free: nothing awaited since the check above
            await self._send_rest(view[written:])

    async def _send_rest(self, view: memoryview) -> None:
        with anyio.CancelScope(shield=True):
            while view:
                await anyio.wait_writable(self._fd)
                try:
                    view = view[self._write(view) :]
                except BlockingIOError:
                    continue

    def _write(self, view: memoryview) -> int:
        if self._fd < 0:
            raise PipeClosedError()
        return os.write(self._fd, view)

    def close(self) -> None:
        """Close the pipe (idempotent)."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
