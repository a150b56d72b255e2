"""Bad files, read-only places, a full disk, failing fsyncs: a named error, data left intact.

The read-only and full-disk cases run in a child process inside a private mount
namespace (`unshare -m`), where a read-only bind mount or a 2 MiB tmpfs can be
set up without touching the host; the tests run as root, for whom chmod alone
does not stop writes.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from ifmemd.errors import IfmemError, LogMissingError, NotAnEventLogError, StoreError
from ifmemd.log import checkpoint as cp
from ifmemd.log.eventlog import EventLog
from ifmemd.log.events import encode
from ifmemd.log.keys import Signer, load_or_create_signer
from ifmemd.log.verify import verify_log
from ifmemd.system import durable


def make_log(path: Path, signer: Signer, n: int = 50) -> bytes:
    """A real, cleanly closed ifmem log with `n` events; returns its bytes."""
    with EventLog.open(path, signer) as log:
        for i in range(n):
            fields = {"memory_id": f"m{i}", "text": f"memory {i} " + "x" * 200}
            log.append_batch([("memory.remembered", encode("memory.remembered", fields))])
    return path.read_bytes()


def sidecars(path: Path) -> list[str]:
    return sorted(
        p.name for p in path.parent.iterdir() if p.name.startswith(path.name) and p != path
    )


def both_opens_fail(path: Path, signer: Signer, error: type[IfmemError], *why: str) -> None:
    """EventLog.open and open_readonly both raise `error`, naming the path and each of `why`."""
    for opener in (lambda: EventLog.open(path, signer), lambda: EventLog.open_readonly(path)):
        with pytest.raises(error) as info:
            opener()
        message = str(info.value)
        assert str(path) in message
        for part in why:
            assert part in message


# -- files that are not (intact) ifmem logs ---------------------------------------


def test_random_bytes_are_refused_untouched(tmp_path: Path, signer: Signer) -> None:
    path = tmp_path / "events.db"
    data = os.urandom(16384)
    path.write_bytes(data)
    both_opens_fail(path, signer, NotAnEventLogError, "not an ifmem event log", "not an SQLite")
    assert path.read_bytes() == data
    assert sidecars(path) == []


def test_a_log_with_its_magic_overwritten_is_refused_untouched(
    tmp_path: Path, signer: Signer
) -> None:
    path = tmp_path / "events.db"
    data = bytearray(make_log(path, signer))
    data[:16] = b"not sqlite!!!!!\x00"
    path.write_bytes(data)
    both_opens_fail(path, signer, NotAnEventLogError, "not an SQLite database, or corrupt")
    assert path.read_bytes() == data


def test_a_log_with_its_first_page_mangled_is_refused_untouched(
    tmp_path: Path, signer: Signer
) -> None:
    path = tmp_path / "events.db"
    data = bytearray(make_log(path, signer))
    page_size = int.from_bytes(data[16:18], "big")
    # Keep the 100-byte file header (so SQLite opens it), scramble the schema page.
    data[100:page_size] = os.urandom(page_size - 100)
    path.write_bytes(data)
    both_opens_fail(path, signer, StoreError, "open event log", "malformed")
    assert path.read_bytes() == data


def test_a_foreign_sqlite_file_is_refused_and_not_modified(tmp_path: Path, signer: Signer) -> None:
    path = tmp_path / "other.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, text TEXT)")
        db.executemany("INSERT INTO notes(text) VALUES(?)", [(f"note {i}",) for i in range(100)])
        db.commit()
    data = path.read_bytes()
    assert data[18:20] == b"\x01\x01"  # rollback journal, not WAL
    both_opens_fail(path, signer, NotAnEventLogError, "application_id is 0x0")
    assert path.read_bytes() == data  # not converted to WAL, no key table added
    assert sidecars(path) == []
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert db.execute("SELECT count(*) FROM notes").fetchone()[0] == 100


@pytest.mark.parametrize(
    ("setup", "why"),
    [
        ("CREATE TABLE t(x)", "no meta table"),
        (
            "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);"
            "INSERT INTO meta VALUES('format', '2'), ('log_id', '" + "ab" * 16 + "')",
            "format '2'; this ifmem reads format 1",
        ),
        (
            "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);"
            "INSERT INTO meta VALUES('format', '1'), ('log_id', 'zz')",
            "log_id is not 32 hex",
        ),
    ],
)
def test_a_file_claiming_to_be_ours_is_checked(
    tmp_path: Path, signer: Signer, setup: str, why: str
) -> None:
    path = tmp_path / "events.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA application_id = {int.from_bytes(b'ifm1', 'big')}")
        db.executescript(setup)
        db.commit()
    data = path.read_bytes()
    both_opens_fail(path, signer, NotAnEventLogError, why)
    assert path.read_bytes() == data


def test_a_missing_log_is_not_created_by_a_reader(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "events.db"
    with pytest.raises(LogMissingError) as info:
        EventLog.open_readonly(path)
    assert str(path) in str(info.value)
    assert "no such file" in str(info.value)
    assert isinstance(info.value, StoreError)
    assert not path.parent.exists()
    with pytest.raises(LogMissingError):
        verify_log(path)


# -- a private mount namespace ------------------------------------------------------


def in_namespace(tmp_path: Path, setup: str, script: str, *args: str) -> dict[str, Any]:
    """Run `script` under `sh -c setup` in a private mount namespace; its last line is JSON."""
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-m", "true"], check=False).returncode:
        if os.environ.get("CI"):
            pytest.fail("`unshare -m` is not available, and CI is set: this test must run")
        pytest.skip("needs `unshare -m` (util-linux, as root) for a private mount namespace")
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(script))
    command = f"{setup} && exec {sys.executable} {path} " + " ".join(args)
    done = subprocess.run(
        [unshare, "-m", "--propagation", "private", "sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"child failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.splitlines()[-1])


READ_ONLY_CHILD = """
    import json, sys
    from pathlib import Path
    from ifmemd.errors import IfmemError
    from ifmemd.log.eventlog import EventLog
    from ifmemd.log.keys import Signer

    folder = Path(sys.argv[1])
    signer = Signer.from_seed(bytes.fromhex(sys.argv[2]))
    out = {}

    def attempt(name, opener):
        try:
            log = opener()
        except IfmemError as e:
            out[name] = {"error": type(e).__name__, "message": str(e)}
        else:
            out[name] = {"head": log.head_seq, "rows": sum(1 for _ in log.records())}
            log.close()

    attempt("existing", lambda: EventLog.open(folder / "events.db", signer))
    attempt("new", lambda: EventLog.open(folder / "new.db", signer))
    attempt("new_dir", lambda: EventLog.open(folder / "sub" / "events.db", signer))
    attempt("reader", lambda: EventLog.open_readonly(folder / "events.db"))
    print(json.dumps(out))
"""


def test_a_read_only_directory_gives_a_clear_error(tmp_path: Path, signer: Signer) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    data = make_log(folder / "events.db", signer, n=5)
    before = sorted(p.name for p in folder.iterdir())
    out = in_namespace(
        tmp_path,
        f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder}",
        READ_ONLY_CHILD,
        str(folder),
        signer.seed.hex(),
    )
    for name, path in [
        ("existing", folder / "events.db"),
        ("new", folder / "new.db"),
        ("new_dir", folder / "sub"),
    ]:
        assert out[name].get("error") == "StoreError", (name, out[name])
        assert str(path) in out[name]["message"], out[name]
        assert "read-only file system" in out[name]["message"].lower(), out[name]
    # A reader either reads the log or says why it cannot.
    reader = out["reader"]
    if "error" in reader:
        assert reader["error"] == "StoreError"
        assert "read-only file system" in reader["message"], reader
    else:
        assert reader == {"head": 5, "rows": 5}
    assert folder.joinpath("events.db").read_bytes() == data
    assert sorted(p.name for p in folder.iterdir()) == before


FULL_DISK_CHILD = """
    import json, sys
    from pathlib import Path

    import anyio

    from ifmemd.errors import StoreError
    from ifmemd.log.eventlog import EventLog
    from ifmemd.log.keys import Signer
    from ifmemd.log.verify import verify_log
    from ifmemd.log.writer import LogWriter

    folder = Path(sys.argv[1])
    signer = Signer.from_seed(bytes.fromhex(sys.argv[2]))
    db = folder / "events.db"
    filler = folder / "filler"
    out = {"acked": {}}


    def report_of(report):
        return {"ok": report.ok, "rows": report.rows, "failure": str(report.failure)}


    def stored_tokens():
        with EventLog.open_readonly(db) as log:
            return {r.data()["memory_id"]: r.seq for r in log.records()}


    async def main():
        filler.write_bytes(b"\\0" * (512 * 1024))
        log = EventLog.open(db, signer)
        writer = LogWriter(log)
        async with anyio.create_task_group() as tg:
            await tg.start(writer.run)
            i = 0
            while True:
                token = f"t{i}"
                head = (log.head_seq, log.head_hash)
                try:
                    record = await writer.append(
                        "memory.remembered", {"memory_id": token, "text": "y" * 3000}
                    )
                except StoreError as e:
                    out["error"] = {"type": type(e).__name__, "message": str(e)}
                    out["head_unchanged"] = head == (log.head_seq, log.head_hash)
                    break
                out["acked"][token] = record.seq
                i += 1
            try:
                await writer.append("memory.remembered", {"memory_id": "again", "text": "y" * 3000})
                out["again"] = "stored"
            except StoreError as e:
                out["again"] = str(e)
            out["verify_full"] = report_of(verify_log(db, jobs=1))
            out["stored_full"] = stored_tokens()
            filler.unlink()
            record = await writer.append("memory.remembered", {"memory_id": "after", "text": "z"})
            out["after"] = record.seq
            await writer.close()
        log.close()
        out["verify_end"] = report_of(verify_log(db, jobs=1))
        out["stored_end"] = stored_tokens()
        with EventLog.open(db, signer) as log:
            out["reopened_head"] = log.head_seq


    anyio.run(main)
    print(json.dumps(out))
"""


def test_a_full_disk_fails_the_append_and_keeps_the_log(tmp_path: Path, signer: Signer) -> None:
    folder = tmp_path / "small"
    folder.mkdir()
    out = in_namespace(
        tmp_path,
        f"mount -t tmpfs -o size=2m tmpfs {folder}",
        FULL_DISK_CHILD,
        str(folder),
        signer.seed.hex(),
    )
    acked: dict[str, int] = out["acked"]
    assert len(acked) > 10, "the disk was full before anything was stored"
    assert out["error"]["type"] == "StoreError"
    assert out["error"]["message"] == f"append event: {folder / 'events.db'}: disk full"
    assert out["head_unchanged"] is True
    assert "disk full" in out["again"]  # the writer is still serving, not closed
    assert out["verify_full"]["ok"], out["verify_full"]
    assert out["verify_full"]["rows"] == len(acked)
    assert out["stored_full"] == acked
    assert out["after"] == len(acked) + 1
    assert out["verify_end"]["ok"], out["verify_end"]
    assert out["stored_end"] == {**acked, "after": len(acked) + 1}
    assert out["reopened_head"] == len(acked) + 1


# -- the durable-write fault hooks --------------------------------------------------


def enospc(fd: int) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_write_atomic_keeps_the_original_when_fsync_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = durable.ensure_private_dir(tmp_path / "state") / "snapshot.json"
    durable.write_atomic(path, b"original")
    monkeypatch.setattr(durable, "fsync", enospc)
    with pytest.raises(OSError) as info:
        durable.write_atomic(path, b"replacement" * 1000)
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"original"
    assert [p.name for p in path.parent.iterdir()] == ["snapshot.json"]


def test_write_atomic_keeps_the_original_when_the_temp_file_cannot_be_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = durable.ensure_private_dir(tmp_path / "state") / "snapshot.json"
    durable.write_atomic(path, b"original")

    def refuse(*args: Any, **kwargs: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(durable, "os_open", refuse)
    with pytest.raises(OSError):
        durable.write_atomic(path, b"replacement")
    assert path.read_bytes() == b"original"
    assert [p.name for p in path.parent.iterdir()] == ["snapshot.json"]


def test_exclusive_write_atomic_never_replaces(tmp_path: Path) -> None:
    path = durable.ensure_private_dir(tmp_path / "keys") / "signing.key"
    durable.write_atomic(path, b"first", exclusive=True)
    with pytest.raises(FileExistsError):
        durable.write_atomic(path, b"second", exclusive=True)
    assert path.read_bytes() == b"first"
    assert [p.name for p in path.parent.iterdir()] == ["signing.key"]


def test_append_line_failing_fsync_keeps_earlier_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "checkpoints"
    durable.append_line(path, "line 1")
    durable.append_line(path, "line 2")
    before = path.read_bytes()
    monkeypatch.setattr(durable, "fsync", enospc)
    with pytest.raises(OSError) as info:
        durable.append_line(path, "line 3")
    assert info.value.errno == errno.ENOSPC
    # The earlier lines are intact, and a line that was not made durable is not
    # left behind for a reader to trust.
    assert path.read_bytes() == before
    monkeypatch.setattr(durable, "fsync", os.fsync)
    durable.append_line(path, "line 4")
    assert path.read_text().splitlines() == ["line 1", "line 2", "line 4"]


class ShortWrites:
    """`os` as durable.py sees it, except that write() stores only half of what it is given."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    @staticmethod
    def write(fd: int, data: bytes) -> int:
        return os.write(fd, bytes(data[: max(1, len(data) // 2)]))


def test_a_torn_checkpoint_line_does_not_spoil_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    signer = load_or_create_signer(tmp_path / "signing.key")
    path = tmp_path / "checkpoints"
    lines = [cp.Checkpoint.make(signer, bytes(16), seq, bytes(32)) for seq in (1, 2, 3)]
    cp.publish(lines[0], path)
    before = path.read_bytes()
    # A disk that fills mid-write stores part of a line.
    monkeypatch.setattr(durable, "os", ShortWrites())
    with pytest.raises(OSError, match="short write"):
        cp.publish(lines[1], path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    cp.publish(lines[2], path)
    assert [c.seq for c in cp.read_file(path)] == [1, 3]
