"""Tests for ifmemd.shards.readahead: the second process that reads a first build's files.

It must give what reading in the shard gives, end with the shard however the
shard ends, and never hold the shard's pipes to the supervisor.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from ifmemd.shards import store
from ifmemd.shards.corpus import Skipped
from ifmemd.shards.readahead import Read, ReadAhead, ReadAheadError, read_and_cut
from shardproc import ShardProc

CODE = "import os\n\n\nclass Deploy:\n    def run(self):\n        return os.getcwd()\n"


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_read_and_cut_gives_the_passages_and_definitions_of_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "deploy.py", CODE)
    read = read_and_cut(str(path), 1 << 20)
    assert isinstance(read, Read)
    assert read.digest == store.file_digest(CODE.encode())
    assert (read.lines, read.bytes) == (6, len(CODE))
    assert read.passages == store.cut(str(path), CODE)
    assert {name for _, name in read.passages.names} >= {"deploy", "run"}
    # Bytes as known: nothing to cut.
    assert read_and_cut(str(path), 1 << 20, known_digest=read.digest).passages is None  # type: ignore[union-attr]


def test_the_child_reads_what_this_process_would_in_the_order_asked(tmp_path: Path) -> None:
    paths = [write(tmp_path / f"m{i}.py", CODE + f"X{i} = {i}\n") for i in range(40)]
    paths.insert(7, write(tmp_path / "blob.bin", b"\x00\x01binary" * 100))
    paths.insert(9, tmp_path / "missing.py")
    wanted = [str(p) for p in paths]
    ahead = ReadAhead.start()
    try:
        got = list(ahead.read(wanted, 1 << 20))
    finally:
        ahead.close()
    assert [r.path for r in got] == wanted
    here = [read_and_cut(p, 1 << 20) for p in wanted]
    assert [r.passages if isinstance(r, Read) else r for r in got] == [
        r.passages if isinstance(r, Read) else r for r in here
    ]
    assert isinstance(got[7], Skipped) and isinstance(got[9], Skipped)


def test_a_child_that_dies_is_an_error_not_a_short_build(tmp_path: Path) -> None:
    paths = [str(write(tmp_path / f"m{i}.py", CODE)) for i in range(3)]
    ahead = ReadAhead.start()
    try:
        ahead.process.kill()
        with pytest.raises(ReadAheadError, match="ended early"):
            list(ahead.read(paths, 1 << 20))
    finally:
        ahead.close()


# -- a real shard, SIGKILLed while its read-ahead process runs ----------------------


def children(pid: int) -> dict[int, str]:
    """Processes whose parent is `pid`: their command lines."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found[int(entry)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return found


def alive(pid: int) -> bool:
    """Running: neither gone nor a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def open_pipes(pid: int) -> set[str]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("pipe:"):
            found.add(target)
    return found


@pytest.mark.timeout(120)
def test_sigkill_mid_build_leaves_no_reader_and_an_index_that_converges(tmp_path: Path) -> None:
    root = tmp_path / "code"
    files = 4000
    for i in range(files):
        body = "".join(f"def f{i}_{j}(x):\n    return x + {j}\n\n\n" for j in range(40))
        write(root / f"d{i // 100}" / f"m{i}.py", f'"""Module {i}: word{i}."""\n\n\n{body}')
    index_dir = tmp_path / "index"
    proc = ShardProc("code", [root], index_dir)
    shard_pipes = open_pipes(proc.proc.pid)
    deadline = time.monotonic() + 60
    reader: dict[int, str] = {}
    while not reader and time.monotonic() < deadline:
        reader = {pid: cmd for pid, cmd in children(proc.proc.pid).items() if "readahead" in cmd}
        time.sleep(0.01)
    assert reader, "the shard's first build started no read-ahead process"
    (child,) = reader
    # Its descriptors are its own: none of the shard's pipes to the supervisor.
    assert not open_pipes(child) & shard_pipes
    assert proc.seen("ready") == []
    os.kill(proc.proc.pid, signal.SIGKILL)
    proc.proc.wait()
    # Nobody holds the shard's stdout any more: the supervisor sees it end.
    assert proc.output_ended(timeout=10)
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(child), "the read-ahead process outlived the shard"
    proc.close()
    again = ShardProc("code", [root], index_dir)
    try:
        ready = again.ready(timeout=90)
        assert ready["files"] == files
        assert not [w for w in again.seen("warning") if "rebuilt" in w["reason"]]
        last = str(root / f"d{(files - 1) // 100}" / f"m{files - 1}.py")
        assert {p[0] for p in again.search(f"word{files - 1}")} == {last}
    finally:
        again.close()
