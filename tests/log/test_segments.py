"""Sealed segments on real files: sealing, reading across them, kill -9 at every step.

Logs are built through the real writer code (`logfactory`), sealed with the
same `segments.seal` the daemon runs, and read back with the readers users
run (`LogChain`, `verify_log`, `replay`, the `ifmem` CLI). Crash tests run the
seal in a child process that SIGKILLs itself at the named step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import logfactory as lf
import pytest
from ifmem.main import app
from ifmemd.errors import LogLockedError
from ifmemd.log import maintenance, segments
from ifmemd.log.chain import LogChain
from ifmemd.log.eventlog import EventLog
from ifmemd.log.keys import Signer
from ifmemd.log.replay import replay
from ifmemd.log.verify import verify_log
from typer.testing import CliRunner

STEPS = ("checkpointed", "moved", "read-only", "continued", "compressing", "compressed")


def db_in(tmp_path: Path) -> Path:
    return tmp_path / "data" / "events.db"


def append(db: Path, signer: Signer, n: int, start: int) -> None:
    with EventLog.open(db, signer) as log:
        log.append_batch(lf.items(n, start))


def all_rows(db: Path) -> list[tuple]:
    with LogChain.open(db) as chain:
        return [tuple(r) for r in chain.rows(0)]


def test_seal_moves_the_file_and_a_new_live_file_continues_the_chain(
    tmp_path: Path, signer: Signer
) -> None:
    db = db_in(tmp_path)
    records = lf.build(db, signer, 20)
    segment = maintenance.seal_files(db, signer, tmp_path / "checkpoints", compress=False)

    assert segment.path == db.parent / "segments" / "events-000000000001-000000000020.db"
    assert segment.path.stat().st_mode & 0o777 == 0o400
    assert sorted(os.listdir(db.parent)) == ["events.db", "segments"]  # no -wal or -shm left
    with EventLog.open_readonly(segment.path, immutable=True) as sealed:
        assert [r.hash for r in sealed.records()] == [r.hash for r in records]
    with EventLog.open_readonly(db) as live:
        assert live.log_id == lf.log_id_of(segment.path)
        assert live.first_seq == 21
        first = live.first_row()
        assert first is not None
        assert (first.seq, first.kind, first.prev) == (21, "log.sealed", records[-1].hash)
        assert first.data() == {
            "segment": segment.name,
            "first_seq": 1,
            "last_seq": 20,
            "v": 1,
        }
    # The final checkpoint vouches for the sealed segment's last row.
    line = (tmp_path / "checkpoints").read_text().split()
    assert (int(line[2]), line[3]) == (20, records[-1].hash.hex())

    append(db, signer, 5, 100)
    rows = all_rows(db)
    assert [r[0] for r in rows] == list(range(1, 27))
    report = verify_log(db, checkpoints=[])
    assert report.ok, report.failure
    assert (report.rows, report.head_seq, report.segments) == (26, 26, 1)
    with LogChain.open(db) as chain:
        assert replay(chain).state.seq == 26
        assert replay(chain, upto=12).state.seq == 12


def test_compressed_segments_are_read_through_a_private_temporary_copy(
    tmp_path: Path, signer: Signer
) -> None:
    db = db_in(tmp_path)
    lf.build(db, signer, 30)
    segment = maintenance.seal_files(db, signer, None, compress=True)
    assert segment.path.name == "events-000000000001-000000000030.db.zst"
    assert segment.path.stat().st_mode & 0o777 == 0o400
    assert os.listdir(segment.path.parent) == [segment.path.name]
    append(db, signer, 3, 50)
    with LogChain.open(db) as chain:
        assert [r[0] for r in chain.rows(0)] == list(range(1, 35))
        [plain] = chain._plain.values()
        assert plain.stat().st_mode & 0o777 == 0o600
        assert plain.parent.stat().st_mode & 0o777 == 0o700
        record = chain.record(7)
        assert record is not None and record.seq == 7
    assert not plain.exists() and not plain.parent.exists()
    assert verify_log(db).ok

    runner = CliRunner()
    shown = runner.invoke(app, ["log", "--db", str(db), "--json"])
    assert shown.exit_code == 0, shown.output
    assert [json.loads(x)["seq"] for x in shown.stdout.splitlines()] == list(range(1, 35))
    replayed = runner.invoke(app, ["replay", "--db", str(db), "--upto", "10", "--json"])
    assert replayed.exit_code == 0, replayed.output
    assert json.loads(replayed.stdout)["seq"] == 10
    audit = runner.invoke(app, ["audit", "verify", "--db", str(db)])
    assert audit.exit_code == 0, audit.output
    assert "34 events verified" in audit.stdout and "1 sealed segment(s)" in audit.stdout


def test_seal_on_the_cli_without_a_daemon(tmp_path: Path, signer: Signer) -> None:
    db = tmp_path / "home/.local/share/ifmem/events.db"
    key = tmp_path / "home/.local/share/ifmem/signing.key"
    key.parent.mkdir(parents=True)
    os.link(tmp_path / "keys" / "signing.key", key)
    lf.build(db, signer, 9)
    config = tmp_path / "ifmem.toml"
    config.write_text('[log]\ncompress = "none"\n')
    result = CliRunner().invoke(app, ["log", "seal", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert (got["first_seq"], got["last_seq"]) == (1, 9)
    assert got["segment"].endswith("segments/events-000000000001-000000000009.db")
    assert verify_log(db).ok


@pytest.mark.parametrize("command", [["log", "seal"], ["log", "prune", "--before", "5"]])
def test_sealing_or_pruning_a_log_that_is_not_there_makes_none(
    tmp_path: Path, command: list[str]
) -> None:
    db = db_in(tmp_path)
    result = CliRunner().invoke(app, [*command, "--db", str(db)])
    assert result.exit_code == 1, result.output
    assert "no such file" in result.stderr
    assert not db.parent.exists()  # nothing made that `audit verify` would call a log


def test_sealing_without_the_signing_key_says_so(tmp_path: Path, signer: Signer) -> None:
    db = db_in(tmp_path)
    lf.build(db, signer, 9)  # the key in tmp_path/keys, not where the CLI looks
    result = CliRunner().invoke(app, ["log", "seal", "--db", str(db)])
    assert result.exit_code == 1, result.output
    assert "signing key" in result.stderr and "first start" in result.stderr


def test_sealing_is_refused_while_a_daemon_holds_the_log(tmp_path: Path, signer: Signer) -> None:
    db = db_in(tmp_path)
    lf.build(db, signer, 5)
    with segments.locked(db), pytest.raises(LogLockedError):
        maintenance.seal_files(db, signer, None, compress=False)
    assert [r[0] for r in all_rows(db)] == [1, 2, 3, 4, 5]
    assert not (db.parent / "segments").exists()


_KILLED_SEAL = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from ifmemd.log import maintenance, segments
    from ifmemd.log.keys import load_signer

    step = sys.argv[3]
    def kill(name):
        if name == step:
            os.kill(os.getpid(), signal.SIGKILL)
    segments.after_step = kill
    maintenance.seal_files(
        Path(sys.argv[1]), load_signer(Path(sys.argv[2])), None, compress=True
    )
    """
)


@pytest.mark.parametrize("step", STEPS)
def test_a_seal_killed_at_any_step_loses_nothing(tmp_path: Path, signer: Signer, step: str) -> None:
    db = db_in(tmp_path)
    lf.build(db, signer, 25)
    before = all_rows(db)
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_SEAL, str(db), str(tmp_path / "keys/signing.key"), step],
        capture_output=True,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()

    # Readers see every event, daemon or not, before anything is repaired.
    assert all_rows(db)[:25] == before
    # What the next writer does first: finish or undo the seal.
    segments.recover(db, signer)
    assert not db.with_name("events.db.new").exists()
    found = segments.list_segments(db)
    if step == "checkpointed":
        assert found == []  # nothing moved: the old live file is still the live file
    else:
        [segment] = found
        assert (segment.first, segment.last) == (1, 25)
        assert segment.path.stat().st_mode & 0o777 == 0o400
        assert segment.compressed == (step == "compressed")
        leftovers = [p for p in segment.path.parent.iterdir() if p != segment.path]
        assert leftovers == []
    append(db, signer, 4, 300)
    rows = all_rows(db)
    assert rows[:25] == before
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
    report = verify_log(db)
    assert report.ok, report.failure
    # A plain segment a kill left behind is compressed by the next seal or start.
    maintenance.seal_files(db, signer, None, compress=True)
    assert verify_log(db).ok


def test_a_half_built_live_file_is_discarded_and_built_again(
    tmp_path: Path, signer: Signer
) -> None:
    db = db_in(tmp_path)
    lf.build(db, signer, 8)
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_SEAL, str(db), str(tmp_path / "keys/signing.key"), "moved"],
        capture_output=True,
    )
    assert done.returncode == -signal.SIGKILL
    # As if killed while SQLite wrote the continuation under its temporary name.
    db.with_name("events.db.new").write_bytes(b"SQLite format 3\x00" + bytes(100))
    db.with_name("events.db.new-journal").write_bytes(bytes(512))
    assert not db.exists()
    assert segments.recover(db, signer)
    assert sorted(os.listdir(db.parent)) == ["events.db", "segments"]
    with EventLog.open_readonly(db) as live:
        first = live.first_row()
        assert first is not None and (first.seq, first.kind) == (9, "log.sealed")
    assert verify_log(db).ok
