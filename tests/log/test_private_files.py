"""Every file the log writes is created 0600, whatever the umask (DESIGN.md: the event log).

The folders are 0700, but a copied or moved folder keeps its files' modes:
the files must be private on their own.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import daemonproc as dp
import pytest
from ifmemd.log import checkpoint as cp
from ifmemd.log import snapshot
from ifmemd.log.eventlog import EventLog
from ifmemd.log.keys import Signer
from ifmemd.log.state import State


@pytest.fixture(params=[0o022, 0o002, 0o000], ids=lambda m: f"umask{m:03o}")
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def modes(*paths: Path) -> dict[str, str]:
    return {p.name: f"{stat.S_IMODE(p.stat().st_mode):04o}" for p in paths}


def test_the_live_file_and_its_wal_and_shm_are_0600(
    tmp_path: Path, signer: Signer, umask: int
) -> None:
    path = tmp_path / "data" / "events.db"
    with EventLog.open(path, signer) as log:
        log.append_batch([("daemon.started", b'{"pid":1,"v":1}')])
        files = [path, path.with_name("events.db-wal"), path.with_name("events.db-shm")]
        assert modes(*files) == dict.fromkeys((p.name for p in files), "0600")


def test_snapshots_and_checkpoints_are_0600(tmp_path: Path, signer: Signer, umask: int) -> None:
    snap = tmp_path / "state" / "snapshot.json"
    snapshot.save(snap, b"\x01" * 16, State())
    checkpoints = tmp_path / "state" / "checkpoints"
    cp.publish(cp.Checkpoint.make(signer, b"\x01" * 16, 1, b"\x02" * 32), checkpoints)
    assert modes(snap, checkpoints) == {"snapshot.json": "0600", "checkpoints": "0600"}


def open_to_others(files: list[Path]) -> dict[str, str]:
    return {name: m for name, m in modes(*files).items() if int(m, 8) & 0o077}


def test_a_daemon_under_umask_022_writes_nothing_others_can_read(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with dp.factory(tmp_path) as daemons:
            d = daemons()
            d.request("remember", text="private note")
            d.request("ask", question="lighthouse beacon")
            # While it runs: the live file with its -wal and -shm.
            live = [p for p in d.db_path.parent.iterdir() if p.is_file()]
            assert {"events.db", "events.db-wal", "events.db-shm"} <= {p.name for p in live}
            assert open_to_others(live) == {}
            # Once it stopped: the final checkpoint and snapshot too.
            d.stop()
            env = d.env()
            written = [
                p
                for folder in (
                    d.db_path.parent,
                    Path(env["XDG_DATA_HOME"]) / "ifmem",
                    Path(env["XDG_STATE_HOME"]) / "ifmem",
                )
                for p in folder.iterdir()
                if p.is_file()
            ]
            names = {p.name for p in written}
            assert {"events.db", "checkpoints", "snapshot.json", "signing.key"} <= names
            assert open_to_others(written) == {}
    finally:
        os.umask(old)
