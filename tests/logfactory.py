"""Build real event logs for tests, and tamper with them as an attacker with file access would.

Logs are written through the real API (`EventLog.append_batch` with bodies from
`events.encode`), so a test that checks the verifier checks it against the
bytes the daemon really writes. `tamper` opens the SQLite file with APSW
directly and drops the append-only triggers first, which is all it takes for
someone who can write the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apsw
from ifmemd.log import events
from ifmemd.log.eventlog import EventLog, Record
from ifmemd.log.keys import Signer
from ifmemd.log.logformat import canonical_json, event_hash

# Varied kinds and bodies: nested lists, numbers, non-ASCII text.
EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("daemon.started", {"pid": 4242, "version": "0.1.0"}),
    ("memory.remembered", {"memory_id": "m1", "text": "hello"}),
    ("query.received", {"qid": "q1", "question": "why?", "shards": ["docs", "code"]}),
    (
        "query.answered",
        {
            "qid": "q1",
            "passages": [],
            "missing": ["code"],
            "results": [{"shard": "docs", "ms": 1.5, "passages": [{"path": "a.md", "line": 3}]}],
        },
    ),
    ("memory.remembered", {"memory_id": "m2", "text": "naïve café ☕"}),
    ("memory.forgotten", {"memory_id": "m1"}),
    ("daemon.stopping", {"reason": "test over"}),
]


def encode(kind: str, fields: dict[str, Any]) -> bytes:
    """`events.encode`, and for kinds only older ifmem wrote (`shard.answered`,
    `shard.heartbeat`) the body it wrote: an old-format log, as tests need one."""
    etype = events.REGISTRY[kind]
    if etype.legacy:
        return canonical_json({**fields, "v": etype.version})
    return events.encode(kind, fields)


def items(n: int, start: int = 0) -> list[tuple[str, bytes]]:
    """`n` encoded events cycling through EVENTS; `start` shifts the ids so logs differ."""
    out = []
    for i in range(start, start + n):
        kind, fields = EVENTS[i % len(EVENTS)]
        if "memory_id" in fields:
            fields = {**fields, "memory_id": f"m{i}"}
        if "qid" in fields:
            fields = {**fields, "qid": f"q{i}"}
        out.append((kind, events.encode(kind, fields)))
    return out


def build(path: Path, signer: Signer, n: int = len(EVENTS), *, batch: int = 3) -> list[Record]:
    """Create the log at `path` holding `n` events, appended in batches of `batch`."""
    all_items = items(n)
    records: list[Record] = []
    with EventLog.open(path, signer) as log:
        for i in range(0, n, batch):
            records += log.append_batch(all_items[i : i + batch])
    return records


def log_id_of(path: Path) -> bytes:
    with EventLog.open_readonly(path) as log:
        return log.log_id


@contextmanager
def tamper(path: Path) -> Iterator[apsw.Connection]:
    """An APSW connection to the log with the append-only triggers dropped."""
    conn = apsw.Connection(str(path))
    try:
        conn.execute("DROP TRIGGER IF EXISTS events_no_update")
        conn.execute("DROP TRIGGER IF EXISTS events_no_delete")
        yield conn
    finally:
        conn.close()


def row(conn: apsw.Connection, seq: int) -> tuple[Any, ...]:
    """The stored row at `seq`: (seq, ts_ns, kind, body bytes, prev, hash, key_id, sig)."""
    found = conn.execute(
        "SELECT seq, ts_ns, kind, CAST(body AS BLOB), prev, hash, key_id, sig "
        "FROM events WHERE seq = ?",
        (seq,),
    ).fetchone()
    assert found is not None, f"no row at seq {seq}"
    return tuple(found)


def insert(conn: apsw.Connection, values: tuple[Any, ...]) -> None:
    """Insert a full row (seq, ts_ns, kind, body, prev, hash, key_id, sig), body stored as TEXT."""
    seq, ts_ns, kind, body, prev, hash_, key_id, sig = values
    conn.execute(
        "INSERT INTO events(seq, ts_ns, kind, body, prev, hash, key_id, sig) "
        "VALUES(?, ?, ?, CAST(? AS TEXT), ?, ?, ?, ?)",
        (seq, ts_ns, kind, bytes(body), prev, hash_, key_id, sig),
    )


def replace_row(conn: apsw.Connection, seq: int, values: tuple[Any, ...]) -> None:
    """Store `values` (all but their seq) at `seq`."""
    conn.execute("DELETE FROM events WHERE seq = ?", (seq,))
    insert(conn, (seq, *values[1:]))


def add_key(conn: apsw.Connection, signer: Signer) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO keys(key_id, public_key) VALUES(?, ?)",
        (signer.key_id, signer.public_key),
    )


def rehash(log_id: bytes, values: tuple[Any, ...]) -> bytes:
    """The hash `values` should carry at its own seq, in the log `log_id`."""
    seq, ts_ns, kind, body, prev, _hash, _key_id, _sig = values
    return event_hash(log_id, seq, ts_ns, kind.encode(), bytes(body), bytes(prev))
