"""The event log's on-disk format, checked as an auditor would: with stdlib sqlite3,
hashlib and nacl, never with ifmem's own hashing code (DESIGN.md, "The event log")."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import logfactory as lf
import pytest
from ifmemd.errors import StoreError
from ifmemd.log.eventlog import WAL_AUTOCHECKPOINT_PAGES, EventLog
from ifmemd.log.events import encode
from ifmemd.log.keys import Signer
from ifmemd.log.verify import verify_log
from nacl.signing import VerifyKey

# The documented values, written out here rather than imported, so a change in
# the library that breaks the contract fails this file.
APPLICATION_ID = int.from_bytes(b"ifm1", "big")
DOMAIN = b"ifmem-event-v1\x00"


def doc_hash(log_id: bytes, seq: int, ts_ns: int, kind: str, body: bytes, prev: bytes) -> bytes:
    """hash = BLAKE2b-256(domain ‖ log_id ‖ seq u64 BE ‖ ts_ns i64 BE ‖ kind ‖ 0 ‖ body ‖ prev)."""
    message = (
        DOMAIN
        + log_id
        + struct.pack(">Q", seq)
        + struct.pack(">q", ts_ns)
        + kind.encode("utf-8")
        + b"\x00"
        + body
        + prev
    )
    return hashlib.blake2b(message, digest_size=32).digest()


def doc_key_id(public_key: bytes) -> str:
    return hashlib.blake2b(public_key, digest_size=32).hexdigest()[:16]


@contextlib.contextmanager
def auditor(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only stdlib connection: what an auditor without ifmem would use."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        yield conn
    finally:
        conn.close()


def remember(log: EventLog, *items: tuple[str, str]) -> None:
    log.append_batch(
        [
            ("memory.remembered", encode("memory.remembered", {"memory_id": m, "text": t}))
            for m, t in items
        ]
    )


def all_rows(path: Path) -> list[tuple[Any, ...]]:
    with auditor(path) as db:
        return db.execute(
            "SELECT seq, ts_ns, kind, CAST(body AS BLOB), prev, hash, key_id, sig, typeof(body)"
            " FROM events ORDER BY seq"
        ).fetchall()


def test_schema_is_exactly_the_documented_one(log: EventLog) -> None:
    with auditor(log.path) as db:
        columns = {
            table: [(name, decl, pk) for _cid, name, decl, _nn, _dflt, pk in rows]
            for table in ("events", "meta", "keys")
            for rows in [db.execute(f"PRAGMA table_info({table})").fetchall()]
        }
        triggers = {
            name: (tbl, sql)
            for name, tbl, sql in db.execute(
                "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger'"
            )
        }
    assert columns["events"] == [
        ("seq", "INTEGER", 1),
        ("ts_ns", "INTEGER", 0),
        ("kind", "TEXT", 0),
        ("body", "TEXT", 0),
        ("prev", "BLOB", 0),
        ("hash", "BLOB", 0),
        ("key_id", "TEXT", 0),
        ("sig", "BLOB", 0),
    ]
    assert columns["meta"] == [("key", "TEXT", 1), ("value", "TEXT", 0)]
    assert columns["keys"] == [("key_id", "TEXT", 1), ("public_key", "BLOB", 0)]
    assert {tbl for tbl, _ in triggers.values()} == {"events"}
    sql = " ".join(s for _, s in triggers.values()).upper()
    assert "BEFORE UPDATE ON EVENTS" in sql
    assert "BEFORE DELETE ON EVENTS" in sql
    assert "BEFORE INSERT ON EVENTS" in sql  # REPLACE INTO would bypass the delete trigger


def test_pragmas_application_id_wal_and_full_sync(log: EventLog) -> None:
    remember(log, ("m1", "x"))
    with auditor(log.path) as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert log._conn.pragma("wal_autocheckpoint") == WAL_AUTOCHECKPOINT_PAGES
    header = log.path.read_bytes()[:100]
    assert header[68:72] == b"ifm1"  # application_id, big-endian, in the file header
    assert header[18:20] == b"\x02\x02"  # WAL read/write versions
    # synchronous is per connection: the writer's own must be FULL (2).
    assert log._conn.pragma("synchronous") == 2


def test_meta_and_keys(log: EventLog, signer: Signer) -> None:
    with auditor(log.path) as db:
        meta = dict(db.execute("SELECT key, value FROM meta"))
        keys = db.execute("SELECT key_id, public_key, typeof(public_key) FROM keys").fetchall()
    assert set(meta) == {"log_id", "format"}
    assert re.fullmatch(r"[0-9a-f]{32}", meta["log_id"])
    assert meta["format"] == "1"
    assert bytes.fromhex(meta["log_id"]) == log.log_id
    assert keys == [(doc_key_id(signer.public_key), signer.public_key, "blob")]
    assert len(signer.public_key) == 32
    assert signer.public_key == Signer.from_seed(signer.seed).public_key


def test_two_logs_get_different_ids(tmp_path: Path, signer: Signer) -> None:
    with (
        EventLog.open(tmp_path / "a.db", signer) as a,
        EventLog.open(tmp_path / "b.db", signer) as b,
    ):
        assert a.log_id != b.log_id


def test_rows_follow_the_documented_hash_chain_and_signatures(
    log: EventLog, signer: Signer
) -> None:
    remember(log, ("m1", "first"))
    remember(log, ("m2", "second"), ("m3", "third"), ("m4", "fourth"))
    log.append_batch([("daemon.started", encode("daemon.started", {"pid": 7, "version": "0"}))])
    rows = all_rows(log.path)
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
    verify_key = VerifyKey(signer.public_key)
    prev = bytes(32)
    for seq, ts_ns, kind, body, row_prev, row_hash, key_id, sig, body_type in rows:
        assert body_type == "text"
        assert row_prev == prev
        assert row_hash == doc_hash(log.log_id, seq, ts_ns, kind, body, prev)
        assert key_id == doc_key_id(signer.public_key)
        assert len(sig) == 64
        assert verify_key.verify(row_hash, sig) == row_hash
        prev = row_hash
    ts = [r[1] for r in rows]
    assert ts == sorted(ts)
    assert log.head_seq == 5
    assert log.head_hash == prev


def test_body_is_stored_as_canonical_json_bytes(log: EventLog) -> None:
    fields = {
        "text": 'café — 日本語 🧠 "q" \\ \n',
        "memory_id": "m1",
        "extra": {"b": 1, "a": [2, 1]},
    }
    [record] = log.append_batch([("memory.remembered", encode("memory.remembered", fields))])
    [(_, _, _, body, *_rest)] = all_rows(log.path)
    expected = (
        '{"extra":{"a":[2,1],"b":1},"memory_id":"m1",'
        '"text":"café — 日本語 🧠 \\"q\\" \\\\ \\n","v":1}'
    ).encode()
    assert body == expected
    assert record.body == expected
    assert b"\\u" not in body  # non-ASCII kept as UTF-8, never escaped
    assert json.loads(body) == {**fields, "v": 1}


def test_hash_covers_the_stored_bytes_not_a_reserialisation(log: EventLog) -> None:
    # A body that is valid JSON but not canonical is still hashed as stored.
    body = b'{"v":1, "memory_id":"m1","text":"t"}'
    [record] = log.append_batch([("memory.remembered", body)])
    [row] = all_rows(log.path)
    assert row[3] == body
    assert row[5] == doc_hash(log.log_id, 1, row[1], "memory.remembered", body, bytes(32))
    assert record.hash == row[5]


def test_reopen_keeps_head_and_chain(tmp_path: Path, signer: Signer) -> None:
    path = tmp_path / "data" / "events.db"
    with EventLog.open(path, signer) as first:
        remember(first, ("m1", "a"), ("m2", "b"))
        log_id, head_seq, head_hash = first.log_id, first.head_seq, first.head_hash
    with EventLog.open(path, signer) as again:
        assert (again.log_id, again.head_seq, again.head_hash) == (log_id, head_seq, head_hash)
        [record] = again.append_batch(
            [("memory.forgotten", encode("memory.forgotten", {"memory_id": "m1"}))]
        )
    assert record.seq == 3
    assert record.prev == head_hash
    rows = all_rows(path)
    assert [r[0] for r in rows] == [1, 2, 3]
    assert rows[2][4] == rows[1][5]
    assert rows[2][5] == doc_hash(log_id, 3, rows[2][1], rows[2][2], rows[2][3], rows[1][5])
    with EventLog.open_readonly(path) as ro:
        assert (ro.log_id, ro.head_seq, ro.head_hash) == (log_id, 3, record.hash)


def test_a_new_key_is_added_and_old_keys_kept(tmp_path: Path, signer: Signer) -> None:
    path = tmp_path / "events.db"
    other = Signer.generate()
    with EventLog.open(path, signer) as log:
        remember(log, ("m1", "a"))
    with EventLog.open(path, other) as log:
        remember(log, ("m2", "b"))
    with auditor(path) as db:
        keys = dict(db.execute("SELECT key_id, public_key FROM keys"))
    assert keys == {
        doc_key_id(signer.public_key): signer.public_key,
        doc_key_id(other.public_key): other.public_key,
    }
    rows = all_rows(path)
    assert [r[6] for r in rows] == [doc_key_id(signer.public_key), doc_key_id(other.public_key)]
    for row in rows:
        VerifyKey(keys[row[6]]).verify(row[5], row[7])


def test_triggers_refuse_update_and_delete(log: EventLog) -> None:
    remember(log, ("m1", "a"), ("m2", "b"))
    before = all_rows(log.path)
    with contextlib.closing(sqlite3.connect(log.path)) as db:
        with pytest.raises(sqlite3.DatabaseError, match="append-only: UPDATE refused"):
            db.execute("UPDATE events SET body = '{}' WHERE seq = 1")
        with pytest.raises(sqlite3.DatabaseError, match="append-only: DELETE refused"):
            db.execute("DELETE FROM events WHERE seq = 2")
        db.rollback()
    assert all_rows(log.path) == before


def test_read_only_log_refuses_appends(log: EventLog) -> None:
    remember(log, ("m1", "a"))
    with EventLog.open_readonly(log.path) as ro:
        with pytest.raises(StoreError, match="read-only"):
            remember(ro, ("m2", "b"))
        assert [r.seq for r in ro.records()] == [1]


def test_a_bulk_batch_signed_on_two_threads_verifies(tmp_path: Path, signer: Signer) -> None:
    path = tmp_path / "bulk.db"
    records = lf.build(path, signer, 2_500, batch=2_500)  # over the two-thread threshold
    assert [r.seq for r in records] == list(range(1, 2_501))
    assert verify_log(path, jobs=1).ok
