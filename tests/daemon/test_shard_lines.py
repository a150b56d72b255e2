"""What the supervisor does with lines from a shard's process that are not its messages:
each is dropped (and said, briefly), and the shard's own messages still count."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from ifmemd.config import DaemonConfig, parse_config
from ifmemd.supervisor import SHARD_STDOUT_MAX_LINE, ShardHandle, Supervisor

READY = {"type": "ready", "files": 1, "lines": 2, "tokens": 3, "digest": "d", "load_ms": 4}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_lines_that_are_not_messages_are_dropped_and_reading_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [
        b"Loading model weights... done",  # a library's print
        b"42",  # JSON, not an object
        json.dumps({"type": "heartbeat"}).encode(),  # a message missing its fields
        b'{"type": "x", "pad": "' + b"a" * SHARD_STDOUT_MAX_LINE + b'"}',  # too long
        json.dumps(READY).encode(),
    ]
    out = tmp_path / "stdout"
    out.write_bytes(b"\n".join(lines) + b"\n")
    recorded: list[tuple[str, dict[str, Any]]] = []

    async def record(kind: str, fields: dict[str, Any]) -> None:
        recorded.append((kind, fields))

    config = parse_config("", tmp_path / "ifmem.toml")
    supervisor = Supervisor(config, record, lambda: [])
    handle = ShardHandle(config.shards[0], DaemonConfig(), supervisor.clock)
    process = await anyio.open_process(
        [sys.executable, "-c", f"print(open({str(out)!r}).read(), end='')"]
    )
    async with process:
        await supervisor._read(handle, process)
    assert handle.status == "ready" and handle.ready_event.is_set()
    assert recorded == [
        ("shard.ready", {k: v for k, v in READY.items() if k != "type"} | {"shard": "working"})
    ]
    assert handle.dropped_lines == 4
    # Said at the first and each doubling: 1, 2, 4 (not at 3).
    said = [line for line in capsys.readouterr().err.splitlines() if "dropped a line" in line]
    assert [line.rsplit("; ", 1)[1] for line in said] == ["1 so far", "2 so far", "4 so far"]
