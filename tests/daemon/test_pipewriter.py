"""Tests for ifmemd.pipewriter: whole lines, in order, never blocking the event loop."""

from __future__ import annotations

import errno
import os

import anyio
import pytest
from ifmemd.pipewriter import PipeClosedError, PipeWriter


async def _drain(fd: int, into: bytearray, delay: float = 0.0) -> None:
    """Read until end-of-file, a little at a time (a slow child)."""
    while True:
        await anyio.wait_readable(fd)
        chunk = os.read(fd, 4096)
        if not chunk:
            return
        into += chunk
        await anyio.sleep(delay)


@pytest.mark.anyio
async def test_lines_bigger_than_the_pipe_arrive_whole_and_in_order() -> None:
    r, w = os.pipe()
    os.set_blocking(r, False)
    writer = PipeWriter(w)
    got = bytearray()
    # Three senders at once, each line 4x the pipe's 64 KiB: they must not interleave.
    lines = [bytes([65 + i]) * (256 * 1024) + b"\n" for i in range(3)]
    async with anyio.create_task_group() as tg:
        tg.start_soon(_drain, r, got, 0.0005)
        async with anyio.create_task_group() as senders:
            for line in lines:
                senders.start_soon(writer.send, line)
        writer.close()
    os.close(r)
    received = bytes(got).splitlines(keepends=True)
    assert sorted(received) == sorted(lines)
    assert all(len(set(line.rstrip(b"\n"))) == 1 for line in received)


@pytest.mark.anyio
async def test_a_short_line_is_written_without_waiting() -> None:
    r, w = os.pipe()
    writer = PipeWriter(w)
    with anyio.fail_after(1):
        await writer.send(b"hello\n")
    assert os.read(r, 100) == b"hello\n"
    writer.close()
    writer.close()  # idempotent
    assert writer.closed
    os.close(r)


@pytest.mark.anyio
async def test_sending_after_close_or_to_a_gone_reader_raises() -> None:
    r, w = os.pipe()
    writer = PipeWriter(w)
    os.close(r)
    with pytest.raises(OSError) as info:
        await writer.send(b"x\n")
    assert info.value.errno == errno.EPIPE
    writer.close()
    with pytest.raises(PipeClosedError):
        await writer.send(b"x\n")
