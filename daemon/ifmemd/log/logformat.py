"""The event log's byte format: the contract an independent auditor implements.

Everything here is pure and fixed by ifmem-log(5): the schema, the canonical
JSON of a body, the hash of a row and the id of a key. Change nothing here
without changing the format number and the man page.
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

FORMAT = "1"
APPLICATION_ID = 0x69666D31  # b"ifm1": lets `file`, and us, tell an ifmem log from any SQLite file
DOMAIN = b"ifmem-event-v1\x00"
CHECKPOINT_DOMAIN = b"ifmem-checkpoint-v1\x00"
ZERO_HASH = bytes(32)
LOG_ID_BYTES = 16

_SEQ_TS = struct.Struct(">Qq")
_SEQ = struct.Struct(">Q")

SCHEMA = """
CREATE TABLE events(
    seq INTEGER PRIMARY KEY,
    ts_ns INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    prev BLOB NOT NULL,
    hash BLOB NOT NULL,
    key_id TEXT NOT NULL,
    sig BLOB NOT NULL
);
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE keys(key_id TEXT PRIMARY KEY, public_key BLOB NOT NULL);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'ifmem events are append-only: UPDATE refused'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'ifmem events are append-only: DELETE refused'); END;
CREATE TRIGGER events_no_replace BEFORE INSERT ON events
    WHEN EXISTS (SELECT 1 FROM events WHERE seq = NEW.seq)
    BEGIN SELECT RAISE(ABORT, 'ifmem events are append-only: REPLACE refused'); END;
"""


# One encoder, reused: json.dumps with options builds a new one every call.
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def canonical_json(obj: Any) -> bytes:
    """Return the one byte string a body is stored and hashed as.

    Sorted keys, no spaces, UTF-8 without escaping non-ASCII, no NaN or
    infinities (they are not JSON).
    """
    return _CANONICAL.encode(obj).encode("utf-8")


def event_hash(log_id: bytes, seq: int, ts_ns: int, kind: bytes, body: bytes, prev: bytes) -> bytes:
    """BLAKE2b-256 of one row, chained to the previous row's hash by `prev`."""
    return hashlib.blake2b(
        b"".join((DOMAIN, log_id, _SEQ_TS.pack(seq, ts_ns), kind, b"\x00", body, prev)),
        digest_size=32,
    ).digest()


def checkpoint_message(log_id: bytes, seq: int, hash_: bytes) -> bytes:
    """The bytes a checkpoint's signature covers."""
    return b"".join((CHECKPOINT_DOMAIN, log_id, _SEQ.pack(seq), hash_))


def key_id_of(public_key: bytes) -> str:
    """A key's id: the first 16 hex characters of the BLAKE2b-256 of the raw public key."""
    return hashlib.blake2b(public_key, digest_size=32).hexdigest()[:16]
