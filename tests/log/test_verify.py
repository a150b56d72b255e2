"""`ifmem audit verify`: every way an attacker with write access can alter the log is caught,
at the right seq and for the right reason.

The probes act as that attacker: they open the SQLite file with APSW, drop the
append-only triggers and edit rows (`logfactory.tamper`). Library-level tests
call `verify_log` in-process; CLI tests go through typer's CliRunner, and one
through the installed `ifmem` command.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
import logfactory as lf
import pytest
from ifmem.main import app
from ifmemd.errors import LogMissingError, NotAnEventLogError
from ifmemd.log import verify
from ifmemd.log.checkpoint import Checkpoint, read_file
from ifmemd.log.eventlog import EventLog
from ifmemd.log.keys import Signer
from ifmemd.log.verify import (
    BAD_SIGNATURE,
    CHECKPOINT,
    DUPLICATED,
    FOREIGN,
    GAP,
    MODIFIED,
    RENUMBERED,
    REORDERED,
    TRUNCATED,
    UNKNOWN_KEY,
    Failure,
    verify_log,
)
from ifmemd.log.writer import LogWriter
from ifmemd.system import paths
from typer.testing import CliRunner

N = 10  # rows in the standard test log


@pytest.fixture
def db(tmp_path: Path, signer: Signer) -> Path:
    """A valid log of N varied events, appended in batches of 3 (so timestamps differ)."""
    path = tmp_path / "data" / "events.db"
    lf.build(path, signer, N)
    return path


def failure(path: Path, **kwargs: object) -> Failure:
    """The failure verify_log reports; the test fails if the log verifies."""
    kwargs.setdefault("jobs", 1)
    report = verify_log(path, **kwargs)  # type: ignore[arg-type]
    assert report.failure is not None, f"tampered log verified: {report}"
    assert not report.ok
    return report.failure


def write_checkpoint(db: Path, signer: Signer, checkpoints: Path) -> Checkpoint:
    """Publish a checkpoint of the log's current head the way the daemon does."""
    with EventLog.open(db, signer) as log:
        made = LogWriter(log, checkpoints_path=checkpoints).write_checkpoint()
    assert made is not None
    return made


# -- the intact log and the triggers ------------------------------------------------------


def test_intact_log_verifies(db: Path) -> None:
    report = verify_log(db, jobs=1)
    assert report.ok
    assert report.failure is None
    assert (report.rows, report.head_seq, report.checkpoints) == (N, N, 0)
    assert report.log_id == lf.log_id_of(db)


def test_empty_log_verifies(tmp_path: Path, signer: Signer) -> None:
    path = tmp_path / "empty.db"
    EventLog.open(path, signer).close()
    report = verify_log(path, jobs=1)
    assert report.ok
    assert (report.rows, report.head_seq) == (0, 0)


def test_triggers_refuse_update_and_delete(db: Path) -> None:
    conn = apsw.Connection(str(db))
    try:
        with pytest.raises(apsw.ConstraintError, match="append-only: UPDATE refused"):
            conn.execute("UPDATE events SET ts_ns = ts_ns + 1 WHERE seq = 3")
        with pytest.raises(apsw.ConstraintError, match="append-only: DELETE refused"):
            conn.execute("DELETE FROM events WHERE seq = ?", (N,))
        with pytest.raises(apsw.ConstraintError, match="append-only: DELETE refused"):
            conn.execute("DELETE FROM events")
        with pytest.raises(apsw.ConstraintError, match=r"append-only: (UPDATE|REPLACE) refused"):
            conn.execute(
                "INSERT INTO events SELECT * FROM events WHERE seq = 2 "
                "ON CONFLICT(seq) DO UPDATE SET body = '{}'"
            )
    finally:
        conn.close()
    report = verify_log(db, jobs=1)
    assert report.ok
    assert report.rows == N


_REPLACE = (
    "REPLACE INTO events SELECT seq, ts_ns, kind, '{\"v\":1}', prev, hash, key_id, sig "
    "FROM events WHERE seq = 3"
)


def test_triggers_refuse_replace(db: Path) -> None:
    conn = apsw.Connection(str(db))
    try:
        assert conn.pragma("recursive_triggers") == 0  # as in the sqlite3 shell
        with pytest.raises(apsw.ConstraintError, match="append-only"):
            conn.execute(_REPLACE)
    finally:
        conn.close()


def test_rewrite_by_replace_is_caught(db: Path) -> None:
    # Whatever the triggers let through, the verifier is the guarantee.
    conn = apsw.Connection(str(db))
    try:
        conn.execute(_REPLACE)
        replaced = True
    except apsw.ConstraintError:
        replaced = False  # refused by a trigger, as it should be
    finally:
        conn.close()
    report = verify_log(db, jobs=1)
    if replaced:
        assert report.failure is not None
        assert (report.failure.seq, report.failure.reason) == (3, MODIFIED)
    else:
        assert report.ok


# -- mutation probes -----------------------------------------------------------------------


def _flip_body(body: bytes) -> bytes:
    """The body with one byte in its middle changed."""
    i = len(body) // 2
    return body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1 :]


@pytest.mark.parametrize("seq", [1, 5, N])
@pytest.mark.parametrize(
    ("column", "change"),
    [
        ("body", _flip_body),
        ("ts_ns", lambda ts: ts + 1),
        ("kind", lambda kind: "memory.forgotten" if kind != "memory.forgotten" else "checkpoint"),
    ],
    ids=["body", "ts_ns", "kind"],
)
def test_changed_column_is_modified(
    db: Path, seq: int, column: str, change: Callable[[Any], Any]
) -> None:
    index = {"ts_ns": 1, "kind": 2, "body": 3}[column]
    with lf.tamper(db) as conn:
        values = list(lf.row(conn, seq))
        values[index] = change(values[index])
        lf.replace_row(conn, seq, tuple(values))
    f = failure(db)
    assert (f.seq, f.reason) == (seq, MODIFIED)


@pytest.mark.parametrize("seq", [1, 4, N - 1])
def test_deleted_row_is_a_gap(db: Path, seq: int) -> None:
    with lf.tamper(db) as conn:
        conn.execute("DELETE FROM events WHERE seq = ?", (seq,))
    f = failure(db)
    assert (f.seq, f.reason) == (seq, GAP)
    assert f"seq {seq + 1}" in f.detail


def test_deleted_rows_report_the_first(db: Path) -> None:
    with lf.tamper(db) as conn:
        conn.execute("DELETE FROM events WHERE seq BETWEEN 3 AND 6")
    f = failure(db)
    assert (f.seq, f.reason) == (3, GAP)
    assert "seq 7" in f.detail


@pytest.mark.parametrize(("i", "j"), [(2, 7), (4, 5), (1, N)])
def test_swapped_rows_are_reordered(db: Path, i: int, j: int) -> None:
    with lf.tamper(db) as conn:
        row_i, row_j = lf.row(conn, i), lf.row(conn, j)
        lf.replace_row(conn, i, row_j)
        lf.replace_row(conn, j, row_i)
    f = failure(db)
    assert (f.seq, f.reason) == (i, REORDERED)
    assert f"signed as seq {j}" in f.detail


@pytest.mark.parametrize("k", [1, 6, N])
def test_duplicated_row(db: Path, k: int) -> None:
    with lf.tamper(db) as conn:
        lf.insert(conn, (N + 1, *lf.row(conn, k)[1:]))
    f = failure(db)
    assert (f.seq, f.reason) == (N + 1, DUPLICATED)
    assert f"seq {k}" in f.detail


@pytest.mark.parametrize("k", [1, 3, N])
def test_renumbered_row(db: Path, k: int) -> None:
    with lf.tamper(db) as conn:
        lf.replace_row(conn, N + 100, lf.row(conn, k))
        conn.execute("DELETE FROM events WHERE seq = ?", (k,))
    f = failure(db)
    assert (f.seq, f.reason) == (k, RENUMBERED)
    assert f"stored as seq {N + 100}" in f.detail


def test_truncated_tail_is_caught_only_by_a_checkpoint(
    db: Path, signer: Signer, tmp_path: Path
) -> None:
    checkpoints = tmp_path / "checkpoints"
    write_checkpoint(db, signer, checkpoints)
    with lf.tamper(db) as conn:
        conn.execute("DELETE FROM events WHERE seq > ?", (N - 3,))
    # Without a checkpoint a shorter log is a valid log: this is why checkpoints exist.
    alone = verify_log(db, jobs=1)
    assert alone.ok
    assert (alone.rows, alone.head_seq) == (N - 3, N - 3)
    f = failure(db, checkpoints=read_file(checkpoints))
    assert (f.seq, f.reason) == (N - 2, TRUNCATED)
    assert f"seq {N}" in f.detail


def test_truncated_to_nothing_is_caught_by_a_checkpoint(
    db: Path, signer: Signer, tmp_path: Path
) -> None:
    checkpoints = tmp_path / "checkpoints"
    write_checkpoint(db, signer, checkpoints)
    with lf.tamper(db) as conn:
        conn.execute("DELETE FROM events")
    assert verify_log(db, jobs=1).ok
    f = failure(db, checkpoints=read_file(checkpoints))
    assert (f.seq, f.reason) == (1, TRUNCATED)


def test_checkpoint_below_the_cut_still_holds(db: Path, signer: Signer, tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    write_checkpoint(db, signer, checkpoints)  # at seq N
    with lf.tamper(db) as conn:
        conn.execute("DELETE FROM events WHERE seq > 5")
    early = tmp_path / "early"
    write_checkpoint(db, signer, early)  # at seq 5
    report = verify_log(db, jobs=1, checkpoints=read_file(early))
    assert report.ok
    assert report.checkpoints == 1


def test_rewritten_tail_fails_the_checkpoint(db: Path, signer: Signer, tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    write_checkpoint(db, signer, checkpoints)
    with lf.tamper(db) as conn:
        conn.execute("DELETE FROM events WHERE seq > ?", (N - 3,))
    # The attacker holds the daemon's key and re-appends a different, valid tail.
    with EventLog.open(db, signer) as log:
        log.append_batch(lf.items(6, start=50))
    assert verify_log(db, jobs=1).ok
    f = failure(db, checkpoints=read_file(checkpoints))
    assert (f.seq, f.reason) == (N, CHECKPOINT)


@pytest.mark.parametrize("same_key", [True, False], ids=["same-key", "other-key"])
@pytest.mark.parametrize("k", [1, 5, N])
def test_row_spliced_from_another_log(
    db: Path, signer: Signer, tmp_path: Path, same_key: bool, k: int
) -> None:
    other_signer = signer if same_key else Signer.generate()
    other = tmp_path / "other.db"
    lf.build(other, other_signer, N)
    with lf.tamper(other) as conn:
        stolen = lf.row(conn, k)
    with lf.tamper(db) as conn:
        # Correctly signed, with a key the attacked log holds.
        lf.add_key(conn, other_signer)
        lf.replace_row(conn, k, stolen)
    f = failure(db)
    assert (f.seq, f.reason) == (k, FOREIGN)
    assert "validly signed" in f.detail


@pytest.mark.parametrize("same_key", [True, False], ids=["same-key", "other-key"])
def test_row_from_another_log_appended(
    db: Path, signer: Signer, tmp_path: Path, same_key: bool
) -> None:
    other_signer = signer if same_key else Signer.generate()
    other = tmp_path / "other.db"
    lf.build(other, other_signer, N + 2)
    with lf.tamper(other) as conn:
        stolen = lf.row(conn, N + 1)
    with lf.tamper(db) as conn:
        lf.add_key(conn, other_signer)
        lf.insert(conn, stolen)
    f = failure(db)
    assert (f.seq, f.reason) == (N + 1, FOREIGN)


def test_row_from_another_log_with_a_key_it_does_not_hold(db: Path, tmp_path: Path) -> None:
    stranger = Signer.generate()
    other = tmp_path / "other.db"
    lf.build(other, stranger, N)
    with lf.tamper(other) as conn:
        stolen = lf.row(conn, 5)
    with lf.tamper(db) as conn:
        lf.replace_row(conn, 5, stolen)
    f = failure(db)
    assert (f.seq, f.reason) == (5, FOREIGN)
    assert stranger.key_id in f.detail


def test_modified_row_resigned_with_unknown_key(db: Path) -> None:
    attacker = Signer.generate()
    log_id = lf.log_id_of(db)
    with lf.tamper(db) as conn:
        values = list(lf.row(conn, 4))
        values[3] = _flip_body(values[3])
        values[5] = lf.rehash(log_id, tuple(values))
        values[6] = attacker.key_id
        values[7] = attacker.sign(values[5])
        lf.replace_row(conn, 4, tuple(values))
    f = failure(db)
    assert (f.seq, f.reason) == (4, UNKNOWN_KEY)
    assert attacker.key_id in f.detail


def test_modified_row_resigned_without_rehashing(db: Path) -> None:
    attacker = Signer.generate()
    with lf.tamper(db) as conn:
        lf.add_key(conn, attacker)  # a key the log holds...
        values = list(lf.row(conn, 4))
        values[3] = _flip_body(values[3])
        values[6] = attacker.key_id
        values[7] = attacker.sign(values[5])  # ...signing the old hash
        lf.replace_row(conn, 4, tuple(values))
    f = failure(db)
    assert (f.seq, f.reason) == (4, MODIFIED)


@pytest.mark.parametrize("garbage", ["random", "zeros", "other-row"])
def test_valid_hash_with_bad_signature(db: Path, garbage: str) -> None:
    with lf.tamper(db) as conn:
        values = list(lf.row(conn, 6))
        values[7] = {
            "random": os.urandom(64),
            "zeros": bytes(64),
            "other-row": lf.row(conn, 5)[7],  # the right key, the wrong message
        }[garbage]
        lf.replace_row(conn, 6, tuple(values))
    f = failure(db)
    assert (f.seq, f.reason) == (6, BAD_SIGNATURE)


def test_short_signature_is_bad(db: Path) -> None:
    with lf.tamper(db) as conn:
        conn.execute("UPDATE events SET sig = substr(sig, 1, 63) WHERE seq = 2")
    f = failure(db)
    assert (f.seq, f.reason) == (2, BAD_SIGNATURE)


def test_row_rehashed_and_resigned_with_an_inserted_key_breaks_the_chain(
    db: Path, signer: Signer
) -> None:
    # The keys table is inside the file: an attacker can add their own key.
    # Row 4 then verifies on its own, but row 5 no longer chains to it.
    attacker = Signer.generate()
    log_id = lf.log_id_of(db)
    with lf.tamper(db) as conn:
        lf.add_key(conn, attacker)
        values = list(lf.row(conn, 4))
        values[3] = _flip_body(values[3])
        values[5] = lf.rehash(log_id, tuple(values))
        values[6] = attacker.key_id
        values[7] = attacker.sign(values[5])
        lf.replace_row(conn, 4, tuple(values))
    f = failure(db)
    assert (f.seq, f.reason) == (5, MODIFIED)
    assert "prev" in f.detail
    # Pinning the daemon's key names the row the attacker signed.
    f = failure(db, pubkeys=[signer.public_key])
    assert (f.seq, f.reason) == (4, UNKNOWN_KEY)


def test_rewritten_log_with_inserted_key_needs_pubkey_or_checkpoint(
    db: Path, signer: Signer, tmp_path: Path
) -> None:
    checkpoints = tmp_path / "checkpoints"
    write_checkpoint(db, signer, checkpoints)
    attacker = Signer.generate()
    log_id = lf.log_id_of(db)
    with lf.tamper(db) as conn:
        lf.add_key(conn, attacker)
        prev = lf.row(conn, 3)[5]
        for seq in range(4, N + 1):
            values = list(lf.row(conn, seq))
            if seq == 4:
                values[3] = _flip_body(values[3])
            values[4] = prev
            values[5] = prev = lf.rehash(log_id, tuple(values))
            values[6] = attacker.key_id
            values[7] = attacker.sign(values[5])
            lf.replace_row(conn, seq, tuple(values))
    # Consistent with its own keys table, the rewritten log verifies...
    assert verify_log(db, jobs=1).ok
    # ...but not against the daemon's pinned key, nor against a checkpoint.
    f = failure(db, pubkeys=[signer.public_key])
    assert (f.seq, f.reason) == (4, UNKNOWN_KEY)
    f = failure(db, checkpoints=read_file(checkpoints))
    assert (f.seq, f.reason) == (N, CHECKPOINT)


def test_pubkey_of_another_key_is_unknown_key_at_seq_1(db: Path, signer: Signer) -> None:
    f = failure(db, pubkeys=[Signer.generate().public_key])
    assert (f.seq, f.reason) == (1, UNKNOWN_KEY)
    assert signer.key_id in f.detail
    assert verify_log(db, jobs=1, pubkeys=[signer.public_key]).ok


def test_rotated_keys(tmp_path: Path) -> None:
    old, new = Signer.generate(), Signer.generate()
    path = tmp_path / "rotated.db"
    with EventLog.open(path, old) as log:
        log.append_batch(lf.items(4))
    with EventLog.open(path, new) as log:
        log.append_batch(lf.items(4, start=4))
    assert verify_log(path, jobs=1).ok  # the keys table holds both
    assert verify_log(path, jobs=1, pubkeys=[old.public_key, new.public_key]).ok
    f = failure(path, pubkeys=[old.public_key])
    assert (f.seq, f.reason) == (5, UNKNOWN_KEY)
    with lf.tamper(path) as conn:
        conn.execute("DELETE FROM keys WHERE key_id = ?", (new.key_id,))
    f = failure(path)
    assert (f.seq, f.reason) == (5, UNKNOWN_KEY)


def test_signatures_false_skips_only_signatures(db: Path) -> None:
    with lf.tamper(db) as conn:
        conn.execute("UPDATE events SET sig = zeroblob(64) WHERE seq = 3")
    assert verify_log(db, jobs=1, signatures=False).ok
    assert failure(db).reason == BAD_SIGNATURE
    with lf.tamper(db) as conn:
        conn.execute("UPDATE events SET ts_ns = ts_ns + 1 WHERE seq = 7")
    f = failure(db, signatures=False)
    assert (f.seq, f.reason) == (7, MODIFIED)


# A column stored as another SQLite type than the format's is an edit; the
# verifier must say so, not crash on it.
@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("ts_ns", "yesterday"),
        ("ts_ns", 1.5),
        ("ts_ns", b"\x00" * 8),
        ("kind", b"memory.remembered"),
        ("prev", "0" * 32),
        ("hash", "0" * 32),
        ("sig", "s" * 64),
        ("key_id", b"0123456789abcdef"),
    ],
    ids=[
        "ts_ns-text",
        "ts_ns-real",
        "ts_ns-blob",
        "kind-blob",
        "prev-text",
        "hash-text",
        "sig-text",
        "key_id-blob",
    ],
)
def test_column_stored_with_the_wrong_type_is_modified(
    db: Path, column: str, value: object
) -> None:
    with lf.tamper(db) as conn:
        conn.execute(f"UPDATE events SET {column} = ? WHERE seq = 4", (value,))
    f = failure(db)
    assert (f.seq, f.reason) == (4, MODIFIED)
    assert column in f.detail


@pytest.mark.parametrize("column", ["kind", "key_id"])
def test_text_column_with_invalid_utf8_is_modified(db: Path, column: str) -> None:
    with lf.tamper(db) as conn:
        conn.execute(
            f"UPDATE events SET {column} = CAST(? AS TEXT) WHERE seq = 4", (b"memory\xff",)
        )
    f = failure(db)
    assert (f.seq, f.reason) == (4, MODIFIED)


def test_wrong_type_after_an_earlier_fault_does_not_crash_classify(db: Path) -> None:
    with lf.tamper(db) as conn:
        conn.execute("UPDATE events SET ts_ns = ts_ns + 1 WHERE seq = 3")
        conn.execute("UPDATE events SET hash = 'x' WHERE seq = 4")
        conn.execute("UPDATE events SET kind = CAST(? AS TEXT) WHERE seq = 7", (b"\xff",))
    f = failure(db)
    assert (f.seq, f.reason) == (3, MODIFIED)


def test_public_key_stored_as_text_does_not_crash(db: Path, signer: Signer) -> None:
    with lf.tamper(db) as conn:
        conn.execute("UPDATE keys SET public_key = 'not a key' WHERE key_id = ?", (signer.key_id,))
    f = failure(db)
    assert f.seq == 1


# -- byte-flip sweep -----------------------------------------------------------------------

_FLIP_FIELDS = {
    # field: (SQL to store a value, reason a flip must be reported as)
    "body-text": ("UPDATE events SET body = CAST(? AS TEXT) WHERE seq = ?", MODIFIED),
    "body-blob": ("UPDATE events SET body = ? WHERE seq = ?", MODIFIED),
    "prev": ("UPDATE events SET prev = ? WHERE seq = ?", MODIFIED),
    "hash": ("UPDATE events SET hash = ? WHERE seq = ?", MODIFIED),
    "sig": ("UPDATE events SET sig = ? WHERE seq = ?", BAD_SIGNATURE),
}
_FIELD_INDEX = {"body-text": 3, "body-blob": 3, "prev": 4, "hash": 5, "sig": 7}


def test_every_flipped_byte_is_detected(tmp_path: Path, signer: Signer) -> None:
    """Like systemd's journal verifier test: flip each stored byte in turn, verify, restore."""
    path = tmp_path / "flip.db"
    lf.build(path, signer, len(lf.EVENTS))
    restore_sql = "UPDATE events SET body = CAST(? AS TEXT) WHERE seq = ?"
    missed: list[str] = []
    wrong: list[str] = []
    flips = 0
    with lf.tamper(path) as conn:
        for seq in range(1, len(lf.EVENTS) + 1):
            original = lf.row(conn, seq)
            for field, (sql, reason) in _FLIP_FIELDS.items():
                stored = bytes(original[_FIELD_INDEX[field]])
                for i in range(len(stored)):
                    flipped = stored[:i] + bytes([stored[i] ^ 0x01]) + stored[i + 1 :]
                    conn.execute(sql, (flipped, seq))
                    report = verify_log(path, jobs=1)
                    flips += 1
                    where = f"{field}[{i}] of seq {seq}"
                    if report.failure is None:
                        missed.append(where)
                    elif (report.failure.seq, report.failure.reason) != (seq, reason):
                        wrong.append(f"{where}: {report.failure}")
                restore = restore_sql if field.startswith("body") else sql
                conn.execute(restore, (stored, seq))
                # The restore really restores: otherwise every later flip "fails" for free.
                assert verify_log(path, jobs=1).ok, f"restoring {field} of seq {seq}"
    assert flips > 1500
    assert missed == []
    assert wrong == []


def test_body_stored_as_blob_with_the_same_bytes_verifies(db: Path) -> None:
    # The verifier hashes CAST(body AS BLOB): the stored bytes, whatever their SQLite type.
    with lf.tamper(db) as conn:
        conn.execute("UPDATE events SET body = CAST(body AS BLOB) WHERE seq = 2")
        assert conn.execute("SELECT typeof(body) FROM events WHERE seq = 2").fetchone() == ("blob",)
    assert verify_log(db, jobs=1).ok


# -- the multiprocess path -----------------------------------------------------------------

BIG = 130


@pytest.fixture
def big(tmp_path: Path, signer: Signer, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A log above a lowered PARALLEL_MIN_ROWS, so jobs=2 takes the process pool."""
    monkeypatch.setattr(verify, "PARALLEL_MIN_ROWS", 50)
    path = tmp_path / "big.db"
    lf.build(path, signer, BIG, batch=20)
    return path


def _chunks() -> list[tuple[int, int]]:
    chunks = verify._ranges(BIG, 2 * 8)
    assert len(chunks) > 2
    return chunks


def test_parallel_verifies_a_good_log(big: Path) -> None:
    progress: list[tuple[int, int]] = []
    report = verify_log(big, jobs=2, progress=lambda done, total: progress.append((done, total)))
    assert report.ok
    assert (report.rows, report.head_seq) == (BIG, BIG)
    # The progress callback is only ever called by the process pool: proof it ran.
    assert len(progress) == len(_chunks())
    assert progress[-1] == (BIG, BIG)
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)


def test_parallel_opens_of_a_freshly_closed_log_do_not_race(
    tmp_path: Path, signer: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With no connection left, the WAL index must be rebuilt by the first
    # opener; workers racing for that got "database is locked" (and, as
    # StoreError does not unpickle, a BrokenProcessPool).
    # The race is timing-dependent; 20 rounds with 4 workers lost it ~95% of the time.
    monkeypatch.setattr(verify, "PARALLEL_MIN_ROWS", 50)
    for i in range(20):
        path = tmp_path / f"fresh{i}.db"
        lf.build(path, signer, BIG, batch=20)
        assert verify_log(path, jobs=4).ok


def test_parallel_reports_a_fault_in_the_second_half(big: Path) -> None:
    with lf.tamper(big) as conn:
        conn.execute("UPDATE events SET ts_ns = ts_ns + 1 WHERE seq = 100")
    f = failure(big, jobs=2)
    assert (f.seq, f.reason) == (100, MODIFIED)


def test_parallel_first_failure_wins(big: Path) -> None:
    with lf.tamper(big) as conn:
        conn.execute("UPDATE events SET sig = zeroblob(64) WHERE seq = 110")
        conn.execute("UPDATE events SET ts_ns = ts_ns + 1 WHERE seq = 31")
    f = failure(big, jobs=2)
    assert (f.seq, f.reason) == (31, MODIFIED)
    assert failure(big, jobs=1) == f


@pytest.mark.parametrize("where", ["end", "start"])
def test_parallel_gap_at_a_chunk_boundary(big: Path, where: str) -> None:
    lo, hi = _chunks()[3]
    seq = hi if where == "end" else lo
    with lf.tamper(big) as conn:
        conn.execute("DELETE FROM events WHERE seq = ?", (seq,))
    f = failure(big, jobs=2)
    assert (f.seq, f.reason) == (seq, GAP)
    assert failure(big, jobs=1) == f


@pytest.mark.parametrize(
    "mutation",
    [
        "UPDATE events SET seq = seq + 1000 WHERE seq = 77",
        "INSERT INTO events SELECT 131, ts_ns, kind, body, prev, hash, key_id, sig "
        "FROM events WHERE seq = 64",
        "UPDATE events SET body = body || ' ' WHERE seq = 90",
        "DELETE FROM events WHERE seq > 120",
    ],
    ids=["renumbered", "duplicated", "modified", "truncated"],
)
def test_parallel_and_serial_agree(big: Path, mutation: str) -> None:
    with lf.tamper(big) as conn:
        conn.execute(mutation)
    assert verify_log(big, jobs=2) == verify_log(big, jobs=1)


# -- the CLI -------------------------------------------------------------------------------

runner = CliRunner()


def audit(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, ["audit", "verify", *map(str, args)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_cli_ok(db: Path) -> None:
    code, out, err = audit("--db", db)
    assert code == 0, err
    assert out.startswith("ok:")
    assert f"{N} events verified" in out
    assert lf.log_id_of(db).hex() in out


def test_cli_default_db_is_the_data_dir_log(signer: Signer) -> None:
    lf.build(paths.log_path(), signer, 3)
    code, out, err = audit("-j", "1")
    assert code == 0, err
    assert str(paths.log_path()) in out


def test_cli_reports_the_first_bad_seq(db: Path) -> None:
    with lf.tamper(db) as conn:
        conn.execute("DELETE FROM events WHERE seq = 6")
    code, out, _ = audit("--db", db)
    assert code == 1
    assert out.startswith("FAILED:")
    assert "seq 6" in out
    assert GAP in out


def test_cli_json(db: Path, signer: Signer) -> None:
    code, out, _ = audit("--db", db, "--json")
    assert code == 0
    good = json.loads(out)
    assert good == {
        "ok": True,
        "db": str(db),
        "log_id": lf.log_id_of(db).hex(),
        "rows": N,
        "head_seq": N,
        "checkpoints": 0,
        "segments": 0,
        "first_seq": 1,
        "pruned_at": None,
        "failure": None,
    }
    with lf.tamper(db) as conn:
        conn.execute("UPDATE events SET kind = 'daemon.stopping' WHERE seq = 2")
    code, out, _ = audit("--db", db, "--json")
    assert code == 1
    bad = json.loads(out)
    assert bad["ok"] is False
    assert bad["failure"]["seq"] == 2
    assert bad["failure"]["reason"] == MODIFIED
    assert bad["failure"]["detail"]


def test_cli_checkpoint(db: Path, signer: Signer, tmp_path: Path) -> None:
    checkpoints = tmp_path / "state" / "checkpoints"
    write_checkpoint(db, signer, checkpoints)
    code, out, err = audit("--db", db, "--checkpoint", checkpoints)
    assert code == 0, err
    assert "1 checkpoint(s) hold" in out
    with lf.tamper(db) as conn:
        conn.execute("DELETE FROM events WHERE seq = ?", (N,))
    code, out, _ = audit("--db", db)
    assert code == 0
    code, out, _ = audit("--db", db, "--checkpoint", checkpoints)
    assert code == 1
    assert f"seq {N}" in out
    assert TRUNCATED in out


def test_cli_checkpoint_files_combine(db: Path, signer: Signer, tmp_path: Path) -> None:
    first, second = tmp_path / "cp1", tmp_path / "cp2"
    write_checkpoint(db, signer, first)
    with EventLog.open(db, signer) as log:
        log.append_batch(lf.items(2))
    write_checkpoint(db, signer, second)
    code, out, err = audit("--db", db, "--checkpoint", first, "--checkpoint", second)
    assert code == 0, err
    assert "2 checkpoint(s) hold" in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("", "holds no checkpoint line"),
        ("just journal noise\n", "holds no checkpoint line"),
        ("ifmem-checkpoint-v1 zz 1 00 k 00\n", "malformed"),
    ],
    ids=["missing", "empty", "noise", "malformed"],
)
def test_cli_bad_checkpoint_file(
    db: Path, tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "checkpoints"
    if content is not None:
        path.write_text(content)
    code, out, err = audit("--db", db, "--checkpoint", path)
    assert code == 1
    assert out == ""
    assert err.startswith("ifmem: checkpoint")
    assert message in err.lower()


def test_cli_missing_db(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    code, out, err = audit("--db", missing)
    assert code == 1
    assert out == ""
    assert str(missing) in err
    assert "no such file" in err
    assert "Traceback" not in err


def test_cli_not_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are not the rows you are looking for\n" * 100)
    code, _, err = audit("--db", path)
    assert code == 1
    assert "not an ifmem event log" in err
    assert "not an SQLite database" in err


def test_cli_sqlite_but_not_an_ifmem_log(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    conn = apsw.Connection(str(path))
    conn.execute("CREATE TABLE events(seq INTEGER PRIMARY KEY, x TEXT)")
    conn.close()
    code, _, err = audit("--db", path)
    assert code == 1
    assert "not an ifmem event log" in err
    assert "application_id" in err


def test_cli_ifmem_application_id_without_tables(tmp_path: Path) -> None:
    path = tmp_path / "hollow.db"
    conn = apsw.Connection(str(path))
    conn.pragma("application_id", 0x69666D31)
    conn.execute("CREATE TABLE unrelated(x)")
    conn.close()
    code, _, err = audit("--db", path)
    assert code == 1
    assert "not an ifmem event log" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("key", ["abc", "zz" * 32, "00" * 31, "00" * 33])
def test_cli_bad_pubkey_is_a_usage_error(db: Path, key: str) -> None:
    code, out, err = audit("--db", db, "--pubkey", key)
    assert code == 2
    assert out == ""
    assert "64 hexadecimal characters" in err


def test_cli_pubkey(db: Path, signer: Signer) -> None:
    code, _, err = audit("--db", db, "--pubkey", signer.public_key.hex())
    assert code == 0, err
    code, out, _ = audit("--db", db, "--pubkey", Signer.generate().public_key.hex())
    assert code == 1
    assert "seq 1" in out
    assert UNKNOWN_KEY in out


def test_unreadable_logs_raise_named_errors(tmp_path: Path) -> None:
    # What the CLI maps to exit 1: the library's own errors, never APSW's.
    with pytest.raises(LogMissingError):
        verify_log(tmp_path / "nope.db")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(8192))
    with pytest.raises(NotAnEventLogError):
        verify_log(garbage)


def _installed_ifmem() -> str:
    found = shutil.which("ifmem", path=str(Path(sys.executable).parent))
    assert found is not None, "the ifmem command is not installed in this venv"
    return found


def test_installed_command(db: Path, signer: Signer, tmp_path: Path) -> None:
    ifmem = _installed_ifmem()
    checkpoints = tmp_path / "checkpoints"
    write_checkpoint(db, signer, checkpoints)
    good = subprocess.run(
        [ifmem, "audit", "verify", "--db", str(db), "--checkpoint", str(checkpoints), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["ok"] is True
    with lf.tamper(db) as conn:
        conn.execute("UPDATE events SET ts_ns = 0 WHERE seq = 3")
    bad = subprocess.run(
        [ifmem, "audit", "verify", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 1
    assert "seq 3" in bad.stdout
    assert MODIFIED in bad.stdout


def test_store_errors_survive_pickling() -> None:
    # A StoreError raised in a verify worker process must arrive whole, not as
    # an opaque BrokenProcessPool.
    import pickle

    from ifmemd.errors import LogMissingError, NotAnEventLogError, StoreError

    for err in (
        StoreError("append event", "/x/events.db", "disk full"),
        NotAnEventLogError("/x/y.db", "wrong application_id"),
        LogMissingError("/x/z.db"),
    ):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err)
