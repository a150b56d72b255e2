"""Reading a log on read-only media: what an auditor handed a copy must be able to do.

SQLite reads a WAL database through its -shm (and -wal) files, which it creates
beside the database on the first read. These tests put real logs on a real
read-only file system (a tmpfs, remounted read-only), since root, which runs
them, ignores directory permissions: chmod alone would not stop SQLite.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import logfactory as lf
import pytest
from ifmemd.errors import StoreError
from ifmemd.log.eventlog import EventLog
from ifmemd.log.keys import Signer
from ifmemd.log.verify import verify_log

N = 10


class ReadOnlyMount:
    """A small tmpfs at `path`: writable until `seal()`, then mounted read-only."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def seal(self) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True, timeout=30)
        assert os.statvfs(self.path).f_flag & os.ST_RDONLY


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def media(tmp_path: Path) -> Iterator[ReadOnlyMount]:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) to mount a read-only file system")
    where = tmp_path / "media"
    where.mkdir()
    done = _mount("-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(where))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield ReadOnlyMount(where)
    finally:
        if subprocess.run(["umount", str(where)], timeout=30, check=False).returncode != 0:
            # Still busy (a connection a failed test left open): detach it anyway.
            subprocess.run(["umount", "-l", str(where)], timeout=30, check=True)


def _ifmem() -> str:
    found = shutil.which("ifmem", path=str(Path(sys.executable).parent))
    assert found is not None, "the ifmem command is not installed in this venv"
    return found


def _run(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "XDG_STATE_HOME": str(home / ".local/state"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_RUNTIME_DIR": str(home / "run"),
    }
    return subprocess.run(
        [_ifmem(), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def _live_copy(src: Path, signer: Signer, dest: Path, suffixes: tuple[str, ...]) -> list:
    """Append N events to a new log at `src` and, while it is still open (so its
    -wal still holds them), copy its files with `suffixes` into `dest`."""
    with EventLog.open(src, signer) as log:
        records = log.append_batch(lf.items(N))
        for suffix in suffixes:
            shutil.copyfile(f"{src}{suffix}", dest / f"events.db{suffix}")
    assert (dest / "events.db-wal").stat().st_size > 0
    return records


@pytest.mark.parametrize("folder", ["log", "a b?c#d%20e ü"])
def test_closed_log_reads_and_verifies_on_read_only_media(
    media: ReadOnlyMount, signer: Signer, folder: str
) -> None:
    # The second folder name needs %-escaping in an SQLite URI: unescaped, `?`
    # and `#` would end the path and `%20` would name another folder.
    (media.path / folder).mkdir()
    path = media.path / folder / "events.db"
    written = lf.build(path, signer, N)
    assert sorted(os.listdir(path.parent)) == ["events.db"]  # a clean close drops -wal and -shm
    media.seal()

    with EventLog.open_readonly(path) as log:
        assert list(log.records()) == written
        assert (log.head_seq, log.head_hash) == (N, written[-1].hash)
        assert log.public_keys() == {signer.key_id: signer.public_key}
    report = verify_log(path, jobs=1)
    assert report.ok, str(report)
    assert (report.rows, report.head_seq) == (N, N)
    assert sorted(os.listdir(path.parent)) == ["events.db"]


def test_cli_reads_and_verifies_on_read_only_media(
    media: ReadOnlyMount, signer: Signer, tmp_path: Path
) -> None:
    path = media.path / "events.db"
    written = lf.build(path, signer, N)
    media.seal()
    home = tmp_path / "cli-home"

    verified = _run("audit", "verify", "--db", str(path), "--jobs", "1", "--json", home=home)
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["ok"] is True

    logged = _run("log", "--db", str(path), "--json", home=home)
    assert logged.returncode == 0, logged.stderr
    rows = [json.loads(line) for line in logged.stdout.splitlines()]
    assert rows == [r.to_json() for r in written]


def test_wal_on_read_only_media_is_refused_with_what_to_do(
    media: ReadOnlyMount, signer: Signer, tmp_path: Path
) -> None:
    # Every event is in the -wal only: opened immutable, the log would read as
    # empty, and verify would call that a valid log.
    _live_copy(tmp_path / "live" / "events.db", signer, media.path, ("", "-wal"))
    media.seal()
    path = media.path / "events.db"
    wal = media.path / "events.db-wal"

    with pytest.raises(StoreError) as caught:
        EventLog.open_readonly(path)
    message = str(caught.value)
    assert message.startswith(f"open event log: {path}: ")
    assert f"write-ahead file, {wal}," in message
    assert f"({media.path} is on a read-only file system)" in message
    assert "copy events.db and events.db-wal together to a writable folder" in message
    assert "or open the log where it was written" in message

    failed = _run("audit", "verify", "--db", str(path), "--jobs", "1", home=tmp_path / "h")
    assert failed.returncode != 0
    assert str(wal) in failed.stderr, failed.stderr


def test_advice_for_a_wal_on_read_only_media_works(
    media: ReadOnlyMount, signer: Signer, tmp_path: Path
) -> None:
    written = _live_copy(tmp_path / "live" / "events.db", signer, media.path, ("", "-wal"))
    media.seal()
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("events.db", "events.db-wal"):
        shutil.copyfile(media.path / name, copy / name)

    with EventLog.open_readonly(copy / "events.db") as log:
        assert list(log.records()) == written
    assert verify_log(copy / "events.db", jobs=1).ok


def test_log_copied_with_wal_and_shm_reads_on_read_only_media(
    media: ReadOnlyMount, signer: Signer, tmp_path: Path
) -> None:
    # With its -shm beside it too, SQLite reads the -wal on read-only media
    # itself: the plain read-only open works, commits in the -wal included.
    written = _live_copy(tmp_path / "live" / "events.db", signer, media.path, ("", "-wal", "-shm"))
    media.seal()

    with EventLog.open_readonly(media.path / "events.db") as log:
        assert list(log.records()) == written
    assert verify_log(media.path / "events.db", jobs=1).ok


def test_empty_wal_on_read_only_media_is_no_obstacle(media: ReadOnlyMount, signer: Signer) -> None:
    # A zero-length -wal (left by a TRUNCATE checkpoint) holds no commits.
    path = media.path / "events.db"
    written = lf.build(path, signer, N)
    (media.path / "events.db-wal").touch()
    media.seal()

    with EventLog.open_readonly(path) as log:
        assert list(log.records()) == written


def test_symlink_to_a_log_on_read_only_media(
    media: ReadOnlyMount, signer: Signer, tmp_path: Path
) -> None:
    # SQLite looks for the -wal beside the link's target, so the check must too.
    target = media.path / "events.db"
    written = lf.build(target, signer, N)
    link = tmp_path / "link.db"
    link.symlink_to(target)
    media.seal()

    with EventLog.open_readonly(link) as log:
        assert list(log.records()) == written
