"""Signed checkpoints: the line format, reading them back from files and journals, and
what `verify_log` proves with them."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import logfactory as lf
import pytest
from hypothesis import given
from hypothesis import strategies as st
from ifmemd.errors import CheckpointError
from ifmemd.log import checkpoint as cp
from ifmemd.log.eventlog import EventLog
from ifmemd.log.keys import Signer
from ifmemd.log.logformat import CHECKPOINT_DOMAIN, checkpoint_message
from ifmemd.log.verify import CHECKPOINT, verify_log
from ifmemd.log.writer import LogWriter

LINE = re.compile(
    r"^ifmem-checkpoint-v1 (?P<log_id>[0-9a-f]{32}) (?P<seq>[1-9][0-9]*) "
    r"(?P<hash>[0-9a-f]{64}) (?P<key_id>[0-9a-f]{16}) (?P<sig>[0-9a-f]{128})$"
)


@pytest.fixture
def db(tmp_path: Path, signer: Signer) -> Path:
    path = tmp_path / "data" / "events.db"
    lf.build(path, signer, 8)
    return path


def head_checkpoint(db: Path, signer: Signer) -> cp.Checkpoint:
    """A checkpoint of the log's head, published nowhere."""
    with EventLog.open(db, signer) as log:
        return cp.Checkpoint.make(signer, log.log_id, log.head_seq, log.head_hash)


# -- the line --------------------------------------------------------------------------------


def test_line_format(db: Path, signer: Signer) -> None:
    c = head_checkpoint(db, signer)
    m = LINE.match(c.line())
    assert m is not None, c.line()
    assert m["log_id"] == lf.log_id_of(db).hex()
    assert int(m["seq"]) == 8
    assert m["key_id"] == signer.key_id
    with EventLog.open_readonly(db) as log:
        assert m["hash"] == log.head_hash.hex()
    # The signature covers the documented message, and nothing else.
    message = CHECKPOINT_DOMAIN + c.log_id + (8).to_bytes(8, "big") + c.hash
    assert checkpoint_message(c.log_id, 8, c.hash) == message
    assert c.sig == signer.sign(message)
    assert c.signature_holds(signer.public_key)
    assert not c.signature_holds(Signer.generate().public_key)


@given(
    log_id=st.binary(min_size=16, max_size=16),
    seq=st.integers(min_value=1, max_value=2**63 - 1),
    hash_=st.binary(min_size=32, max_size=32),
)
def test_line_round_trips(log_id: bytes, seq: int, hash_: bytes) -> None:
    signer = Signer.from_seed(bytes(range(32)))
    c = cp.Checkpoint.make(signer, log_id, seq, hash_)
    assert LINE.match(c.line())
    parsed = cp.parse_line(c.line(), "test:1")
    assert parsed == c
    assert parsed.signature_holds(signer.public_key)


@pytest.mark.parametrize("field", ["seq", "hash", "sig", "key_id"])
def test_tampered_line_does_not_hold(db: Path, signer: Signer, field: str) -> None:
    c = head_checkpoint(db, signer)
    parts = c.line().split()
    index = {"seq": 2, "hash": 3, "key_id": 4, "sig": 5}[field]
    if field == "seq":
        parts[index] = str(int(parts[index]) - 1)
    else:
        parts[index] = ("1" if parts[index][0] != "1" else "2") + parts[index][1:]
    tampered = cp.parse_line(" ".join(parts), "test:1")
    assert tampered != c
    # The signature covers log_id, seq and hash; a changed key_id names a key the log lacks.
    assert tampered.signature_holds(signer.public_key) == (field == "key_id")
    report = verify_log(db, jobs=1, checkpoints=[tampered])
    assert report.failure is not None
    assert report.failure.reason == CHECKPOINT
    assert report.failure.seq == tampered.seq
    # The untampered line holds.
    assert verify_log(db, jobs=1, checkpoints=[c]).ok


def test_checkpoint_signed_by_a_key_the_log_does_not_hold(db: Path, signer: Signer) -> None:
    stranger = Signer.generate()
    with EventLog.open_readonly(db) as log:
        c = cp.Checkpoint.make(stranger, log.log_id, log.head_seq, log.head_hash)
    report = verify_log(db, jobs=1, checkpoints=[c])
    assert report.failure is not None
    assert (report.failure.seq, report.failure.reason) == (8, CHECKPOINT)
    # Pinning the keys with --pubkey applies to checkpoints too.
    pinned = verify_log(
        db, jobs=1, checkpoints=[c], pubkeys=[signer.public_key, stranger.public_key]
    )
    assert pinned.ok


def test_checkpoint_with_the_wrong_hash(db: Path, signer: Signer) -> None:
    with EventLog.open_readonly(db) as log:
        other_row = log.record(4)
        assert other_row is not None
        c = cp.Checkpoint.make(signer, log.log_id, 5, other_row.hash)
    report = verify_log(db, jobs=1, checkpoints=[c])
    assert report.failure is not None
    assert (report.failure.seq, report.failure.reason) == (5, CHECKPOINT)
    assert "differs" in report.failure.detail


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("ifmem-checkpoint-v1", "expected"),
        ("ifmem-checkpoint-v1 a b c d e f", "expected"),
        ("ifmem-checkpoint-v1 zz 1 00 k 00", "malformed"),
        (f"ifmem-checkpoint-v1 {'00' * 16} one {'00' * 32} k {'00' * 64}", "malformed"),
        (f"ifmem-checkpoint-v1 {'00' * 15} 1 {'00' * 32} k {'00' * 64}", "wrong length"),
        (f"ifmem-checkpoint-v1 {'00' * 16} 1 {'00' * 31} k {'00' * 64}", "wrong length"),
        (f"ifmem-checkpoint-v1 {'00' * 16} 1 {'00' * 32} k {'00' * 63}", "wrong length"),
        (f"ifmem-checkpoint-v1 {'00' * 16} 0 {'00' * 32} k {'00' * 64}", "wrong length"),
        (f"ifmem-checkpoint-v2 {'00' * 16} 1 {'00' * 32} k {'00' * 64}", "expected"),
    ],
)
def test_malformed_line_is_refused(line: str, message: str) -> None:
    with pytest.raises(CheckpointError, match=message) as caught:
        cp.parse_line(line, "somewhere:7")
    assert "somewhere:7" in str(caught.value)


# -- files -----------------------------------------------------------------------------------


def test_publish_appends_to_the_file_and_stderr(
    db: Path, signer: Signer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "state" / "ifmem" / "checkpoints"
    first = head_checkpoint(db, signer)
    cp.publish(first, path)
    with EventLog.open(db, signer) as log:
        log.append_batch(lf.items(2))
    second = head_checkpoint(db, signer)
    cp.publish(second, path)
    assert path.read_text() == f"{first.line()}\n{second.line()}\n"
    assert capsys.readouterr().err == f"{first.line()}\n{second.line()}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert cp.read_file(path) == [first, second]
    report = verify_log(db, jobs=1, checkpoints=cp.read_file(path))
    assert report.ok
    assert report.checkpoints == 2


def test_publish_without_a_file_prints_only(
    db: Path, signer: Signer, capsys: pytest.CaptureFixture[str]
) -> None:
    c = head_checkpoint(db, signer)
    cp.publish(c, None)
    assert capsys.readouterr().err == c.line() + "\n"


def test_writer_checkpoint_of_an_empty_log_is_none(log: EventLog, tmp_path: Path) -> None:
    path = tmp_path / "checkpoints"
    assert LogWriter(log, checkpoints_path=path).write_checkpoint() is None
    assert not path.exists()


def test_writer_checkpoint_is_the_head(log: EventLog, tmp_path: Path) -> None:
    records = log.append_batch(lf.items(5))
    path = tmp_path / "checkpoints"
    c = LogWriter(log, checkpoints_path=path).write_checkpoint()
    assert c is not None
    assert (c.log_id, c.seq, c.hash) == (log.log_id, 5, records[-1].hash)
    assert cp.read_file(path) == [c]


def test_journal_prefixes_are_skipped(db: Path, signer: Signer, tmp_path: Path) -> None:
    c = head_checkpoint(db, signer)
    path = tmp_path / "journal.txt"
    path.write_text(
        "-- Journal begins at Sat 2026-05-09 07:00:00 UTC. --\n"
        "May 09 07:35:25 host ifmemd[4242]: ifmemd: serving 2 shards\n"
        f"May 09 07:35:26 host ifmemd[4242]: {c.line()}\n"
        f"2026-05-09T07:35:27+0000 host ifmemd[4242]: {c.line()}\n"
        f"{c.line()}\n"
        f"   {c.line()}   \n"
        "May 09 07:35:28 host systemd[1]: Stopped ifmem.service.\n"
    )
    found = cp.read_file(path)
    assert found == [c, c, c, c]
    report = verify_log(db, jobs=1, checkpoints=found)
    assert report.ok
    assert report.checkpoints == 4


def test_lines_of_another_log_are_ignored(db: Path, signer: Signer, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    lf.build(other, Signer.generate(), 20)
    with EventLog.open_readonly(other) as log:
        theirs = cp.Checkpoint.make(Signer.generate(), log.log_id, 20, log.head_hash)
    mine = head_checkpoint(db, signer)
    path = tmp_path / "checkpoints"
    path.write_text(f"{theirs.line()}\n{mine.line()}\n{theirs.line()}\n")
    report = verify_log(db, jobs=1, checkpoints=cp.read_file(path))
    assert report.ok
    # Only this log's line vouches for it.
    assert report.checkpoints == 1


def test_a_file_with_only_other_logs_lines_proves_nothing(db: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    other_signer = Signer.generate()
    lf.build(other, other_signer, 3)
    theirs = head_checkpoint(other, other_signer)
    report = verify_log(db, jobs=1, checkpoints=[theirs])
    assert report.failure is not None
    assert report.failure.reason == CHECKPOINT
    assert "no checkpoint in the file belongs to this log" in report.failure.detail
    assert report.checkpoints == 0


@pytest.mark.parametrize(
    "content",
    ["", "\n\n", "May 09 07:35:25 host ifmemd[4242]: ifmemd: started\n"],
    ids=["empty", "blank", "noise"],
)
def test_a_file_without_checkpoint_lines_is_an_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "checkpoints"
    path.write_text(content)
    with pytest.raises(CheckpointError, match="holds no checkpoint line") as caught:
        cp.read_file(path)
    assert str(path) in str(caught.value)


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="No such file"):
        cp.read_file(tmp_path / "nope")


def test_a_malformed_line_names_its_line_number(db: Path, signer: Signer, tmp_path: Path) -> None:
    c = head_checkpoint(db, signer)
    path = tmp_path / "checkpoints"
    path.write_text(f"{c.line()}\nnoise\n{c.line()[:-2]}\n")
    with pytest.raises(CheckpointError, match=re.escape(f"{path}:3")):
        cp.read_file(path)
