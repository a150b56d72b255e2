"""The append-only, hash-chained, signed event log in SQLite (APSW).

`EventLog` owns one SQLite file in the format of ifmem-log(5). A writable log
appends batches of events in one transaction each (the group-commit writer in
`writer.py` feeds it); a read-only log iterates rows for replay, `ifmem log`
and the auditor. Every APSW error is translated to `StoreError` here, at the
boundary, led by the operation that failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw
import apsw.bestpractice

from ifmemd.errors import LogMissingError, NotAnEventLogError, StoreError
from ifmemd.log.keys import Signer
from ifmemd.log.logformat import (
    APPLICATION_ID,
    FORMAT,
    LOG_ID_BYTES,
    SCHEMA,
    ZERO_HASH,
    event_hash,
)
from ifmemd.system import durable, privatefile

BUSY_TIMEOUT_MS = 5000
FOLD_BUSY_TIMEOUT_MS = 200
_COLUMNS = "seq, ts_ns, kind, CAST(body AS BLOB), prev, hash, key_id, sig"


@dataclass(frozen=True, slots=True)
class Record:
    """One stored row of the log, exactly as stored (body as its stored bytes)."""

    seq: int
    ts_ns: int
    kind: str
    body: bytes
    prev: bytes
    hash: bytes
    key_id: str
    sig: bytes

    def data(self) -> dict[str, Any]:
        """The body parsed as JSON (not upcast; see `events.decode`)."""
        return json.loads(self.body)

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly view of the row, for `ifmem log --json` and subscribers."""
        return {
            "seq": self.seq,
            "ts_ns": self.ts_ns,
            "kind": self.kind,
            "body": self.data(),
            "prev": self.prev.hex(),
            "hash": self.hash.hex(),
            "key_id": self.key_id,
            "sig": self.sig.hex(),
        }


def _row(row: tuple[Any, ...]) -> Record:
    seq, ts_ns, kind, body, prev, hash_, key_id, sig = row
    return Record(seq, ts_ns, kind, bytes(body), bytes(prev), bytes(hash_), key_id, bytes(sig))


def _open_reason(path: Path, e: apsw.Error) -> str:
    """SQLite's reason for failing to open `path`, with the cause it leaves out."""
    reason = str(e)
    if not isinstance(e, apsw.CantOpenError | apsw.ReadOnlyError):
        return reason
    # SQLite says only "unable to open database file": a WAL log also needs to
    # create its -wal and -shm files beside it, so name what stops that.
    folder = path.parent
    try:
        cause = _unwritable(folder)
    except OSError as err:
        return f"{reason} ({folder}: {err.strerror or err})"
    if cause is not None:
        return f"{reason} ({cause})"
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return f"{reason} (no permission to read and write {path})"
    return reason


def _unwritable(folder: Path) -> str | None:
    """Why no file can be created in `folder`, or None if nothing we can see stops it.

    Raises OSError if `folder` cannot be inspected.
    """
    if os.statvfs(folder).f_flag & os.ST_RDONLY:
        return f"{folder} is on a read-only file system"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"no permission to create files in {folder}"
    return None


def _has_wal(wal: Path) -> bool:
    """Whether `wal` may hold commits that are not in the main file yet.

    An empty -wal holds none (a TRUNCATE checkpoint leaves one); a -wal we
    cannot even stat might, so it counts.
    """
    try:
        return wal.stat().st_size > 0
    except FileNotFoundError:
        return False
    except OSError:
        return True


def _immutable_uri(path: Path) -> str:
    """An SQLite URI naming `path` with immutable=1 (sqlite.org/uri.html).

    Every byte but letters, digits, `/` and `_.-~` is %-escaped, so a path with
    a space, `?`, `#`, `%` or non-UTF-8 bytes names the same file; the empty
    authority (`file://` + absolute path) keeps a path starting `//` a path.
    """
    return "file://" + urllib.parse.quote(os.fsencode(path.absolute()), safe="/") + "?immutable=1"


def _wal_unreadable_reason(wal: Path, main: Path, cause: str) -> str:
    return (
        f"the log has a write-ahead file, {wal}, that may hold events not yet in "
        f"{main.name}, and SQLite cannot read it without write access to the folder "
        f"({cause}); copy {main.name} and {wal.name} together to a writable folder "
        "and open the copy there, or open the log where it was written"
    )


WAL_AUTOCHECKPOINT_PAGES = 256


def _configure(conn: apsw.Connection, writable: bool) -> None:
    # apsw.bestpractice, applied by hand and only after we know the file is
    # ours: its global hooks would switch a foreign database to WAL on open.
    apsw.bestpractice.connection_busy_timeout(conn, BUSY_TIMEOUT_MS)
    apsw.bestpractice.connection_dqs(conn)
    apsw.bestpractice.connection_recursive_triggers(conn)
    apsw.bestpractice.connection_enable_foreign_keys(conn)
    if writable:
        apsw.bestpractice.connection_wal(conn)
        conn.pragma("synchronous", "FULL")
        # A commit that grows the WAL file also waits for the file system's
        # own journal: ~0.3 ms against ~0.17 ms for one that overwrites
        # frames of an earlier cycle (ext4 on a virtio disk). The WAL is
        # deleted when the log closes, so with SQLite's default of 1,000
        # pages every daemon start spent its first ~2,000 commits growing
        # it. 256 pages (1 MiB) reach the steady state 4x sooner, and the
        # checkpoints, 4x more frequent, are 4x smaller (commit p99 fell too).
        conn.pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)


# Signing dominates an append (~20 µs each); libsodium releases the GIL, so a
# bulk append (a catch-up, a test) is signed on two threads at once. Smaller
# batches are not: a woken thread (~25-30 µs on a VM) loses the GIL to the
# one already signing, so the halves run one after the other, and the split
# cost the daemon ~5% of its asks/s (bench/README.md).
_PARALLEL_SIGN_MIN = 1000
_signing_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ifmem-sign")


def _sign_all(signer: Signer, hashes: list[bytes]) -> list[bytes]:
    if len(hashes) < _PARALLEL_SIGN_MIN:
        return [signer.sign(h) for h in hashes]
    half = len(hashes) // 2
    other = _signing_pool.submit(lambda: [signer.sign(h) for h in hashes[half:]])
    mine = [signer.sign(h) for h in hashes[:half]]
    return mine + other.result()


@contextlib.contextmanager
def _closed_on_error(conn: apsw.Connection, path: Path) -> Iterator[None]:
    """Close `conn` if opening fails; APSW errors become StoreError."""
    try:
        yield
    except apsw.Error as e:
        conn.close()
        raise StoreError("open event log", path, _open_reason(path, e)) from e
    except StoreError:
        conn.close()
        raise


class EventLog:
    """An open event log: its SQLite connection, `log_id`, head, and (if writable) signer."""

    def __init__(
        self, conn: apsw.Connection, path: Path, log_id: bytes, signer: Signer | None
    ) -> None:
        self._conn = conn
        self.path = path
        self.log_id = log_id
        self.signer = signer
        # Where rows get their ts_ns; a benchmark simulating months sets its own.
        self.clock: Callable[[], int] = time.time_ns
        self.head_seq, self.head_hash, self.head_ts = self._read_head()

    # -- opening -----------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, signer: Signer) -> EventLog:
        """Open the log at `path` for appending, creating it if it does not exist."""
        if not path.parent.exists():
            try:
                durable.ensure_private_dir(path.parent)
            except OSError as e:
                raise StoreError("create log directory", path.parent, e.strerror or str(e)) from e
        # SQLite would create the file 0644 (less the umask); it gives the -wal
        # and -shm the mode of the file it finds, so a 0600 file keeps all three private.
        try:
            privatefile.create_private(path)
        except OSError as e:
            raise StoreError("create event log", path, e.strerror or str(e)) from e
        flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
        conn = cls._connect(path, flags)
        with _closed_on_error(conn, path):
            log_id = cls._check_or_create(conn, path)
            _configure(conn, writable=True)
            with conn:
                conn.execute(
                    "INSERT OR IGNORE INTO keys(key_id, public_key) VALUES(?, ?)",
                    (signer.key_id, signer.public_key),
                )
            return cls(conn, path, log_id, signer)

    @classmethod
    def open_readonly(cls, path: Path, *, immutable: bool = False) -> EventLog:
        """Open an existing log for reading only (auditing, replay, `ifmem log`).

        `immutable` is for a sealed segment: a file nothing writes any more,
        read with no locks and no -shm beside it (its folder may be read-only).
        """
        if not path.exists():
            raise LogMissingError(path)
        if immutable:
            flags = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
            conn = cls._connect(path, flags, _immutable_uri(path))
        else:
            conn = cls._connect_readonly(path)
        with _closed_on_error(conn, path):
            log_id = cls._check(conn, path)
            _configure(conn, writable=False)
            return cls(conn, path, log_id, None)

    @classmethod
    def _connect_readonly(cls, path: Path) -> apsw.Connection:
        """A read-only connection to `path`, on read-only media too.

        Reading a WAL database needs its -shm file (and -wal), which SQLite
        creates beside it on the first read; in a folder we may not write to
        (a read-only mount, another user's folder) that fails. If the log has
        no -wal, its main file holds every commit, so it is opened
        immutable=1: no locks, no -shm. With a -wal, immutable would silently
        skip the commits in it, so that is refused with what to do instead.
        """
        conn = cls._connect(path, apsw.SQLITE_OPEN_READONLY)
        try:
            # Opening is lazy: the first read is what opens the -wal and -shm.
            conn.pragma("application_id")
        except (apsw.CantOpenError, apsw.ReadOnlyError) as e:
            conn.close()
            real = Path(os.path.realpath(path))  # SQLite puts the -wal beside a symlink's target
            try:
                cause = _unwritable(real.parent)
            except OSError:
                cause = None
            if cause is None:
                raise StoreError("open event log", path, _open_reason(path, e)) from e
            wal = real.with_name(real.name + "-wal")
            if _has_wal(wal):
                raise StoreError(
                    "open event log", path, _wal_unreadable_reason(wal, real, cause)
                ) from e
            # A running writer keeps a -wal; one that starts this very instant
            # (as the folder's owner, or through a writable mount of it) is
            # the one case the check above cannot see.
            flags = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
            return cls._connect(path, flags, _immutable_uri(real))
        except apsw.Error:
            pass  # not a database, corrupt, ...: `_check` reports it as it reads
        return conn

    @staticmethod
    def _connect(path: Path, flags: int, name: str | None = None) -> apsw.Connection:
        """Connect to `path`, or to the URI `name` for it (with SQLITE_OPEN_URI in `flags`)."""
        try:
            conn = apsw.Connection(name if name is not None else str(path), flags=flags)
            # Before the first read: a concurrent opener must wait, not fail BUSY.
            conn.set_busy_timeout(BUSY_TIMEOUT_MS)
            return conn
        except apsw.Error as e:
            raise StoreError("open event log", path, _open_reason(path, e)) from e

    @classmethod
    def _check(cls, conn: apsw.Connection, path: Path) -> bytes:
        """The log_id of an existing ifmem log; refuse anything else."""
        try:
            app_id = conn.pragma("application_id")
        except apsw.NotADBError as e:
            raise NotAnEventLogError(path, "not an SQLite database, or corrupt") from e
        if app_id != APPLICATION_ID:
            raise NotAnEventLogError(
                path, f"application_id is {app_id:#x}, an ifmem log has {APPLICATION_ID:#x}"
            )
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta"))
        except apsw.SQLError as e:
            raise NotAnEventLogError(path, f"no meta table: {e}") from e
        if meta.get("format") != FORMAT:
            raise NotAnEventLogError(
                path, f"format {meta.get('format')!r}; this ifmem reads format {FORMAT}"
            )
        try:
            log_id = bytes.fromhex(meta.get("log_id", ""))
        except ValueError:
            log_id = b""
        if len(log_id) != LOG_ID_BYTES:
            raise NotAnEventLogError(path, "meta.log_id is not 32 hex characters")
        return log_id

    @classmethod
    def _check_or_create(cls, conn: apsw.Connection, path: Path) -> bytes:
        try:
            app_id = conn.pragma("application_id")
            empty = conn.pragma("page_count") == 0
        except apsw.NotADBError as e:
            raise NotAnEventLogError(path, "not an SQLite database, or corrupt") from e
        if app_id == APPLICATION_ID or not empty:
            return cls._check(conn, path)
        log_id = os.urandom(LOG_ID_BYTES)
        with conn:
            conn.execute(SCHEMA)
            conn.execute(
                "INSERT INTO meta(key, value) VALUES('log_id', ?), ('format', ?)",
                (log_id.hex(), FORMAT),
            )
            conn.pragma("application_id", APPLICATION_ID)
        return log_id

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- appending ---------------------------------------------------------------

    @classmethod
    def create_continuation(
        cls,
        path: Path,
        signer: Signer,
        *,
        log_id: bytes,
        keys: dict[str, bytes],
        head: tuple[int, bytes, int],
        first: tuple[str, bytes],
        now: int | None = None,
    ) -> None:
        """Create the live file `path` continuing a sealed log at `head` (seq, hash, ts_ns).

        It holds `meta.first_seq` = seq + 1, the public keys `keys`, and its
        first row `first` (kind, body) linked to `head`'s hash. Built under a
        temporary name and renamed into place, so `path` never exists half made.
        """
        seq, prev, ts_floor = head
        tmp = path.with_name(path.name + ".new")
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            leftover.unlink(missing_ok=True)
        # SQLite creates files with the umask's mode: create it 0600 first.
        os.close(durable.os_open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        kind, body = first
        ts = max(time.time_ns() if now is None else now, ts_floor)
        row_hash = event_hash(log_id, seq + 1, ts, kind.encode(), body, prev)
        conn = cls._connect(tmp, apsw.SQLITE_OPEN_READWRITE)
        try:
            conn.pragma("synchronous", "FULL")
            with conn:
                conn.execute(SCHEMA)
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES('log_id', ?), ('format', ?), "
                    "('first_seq', ?)",
                    (log_id.hex(), FORMAT, str(seq + 1)),
                )
                conn.executemany(
                    "INSERT INTO keys(key_id, public_key) VALUES(?, ?)",
                    sorted({**keys, signer.key_id: signer.public_key}.items()),
                )
                conn.execute(
                    "INSERT INTO events(seq, ts_ns, kind, body, prev, hash, key_id, sig) "
                    "VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        seq + 1,
                        ts,
                        kind,
                        body.decode(),
                        prev,
                        row_hash,
                        signer.key_id,
                        signer.sign(row_hash),
                    ),
                )
                conn.pragma("application_id", APPLICATION_ID)
        except apsw.Error as e:
            raise StoreError("create live log file", tmp, str(e)) from e
        finally:
            conn.close()
        fd = durable.os_open(tmp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            durable.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        durable.fsync_dir(path.parent)

    def _read_head(self) -> tuple[int, bytes, int]:
        row = self._conn.execute(
            "SELECT seq, hash, ts_ns FROM events ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return 0, ZERO_HASH, 0
        return row[0], bytes(row[1]), row[2]

    @property
    def first_seq(self) -> int:
        """The seq this file starts at: 1, or `meta.first_seq` for a file continuing
        sealed segments."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'first_seq'").fetchone()
        try:
            return int(row[0]) if row is not None else 1
        except ValueError as e:
            raise NotAnEventLogError(self.path, f"meta.first_seq is {row[0]!r}") from e

    def first_row(self) -> Record | None:
        """The file's first row (its lowest seq), or None if it has none."""
        row = self._conn.execute(f"SELECT {_COLUMNS} FROM events ORDER BY seq LIMIT 1").fetchone()
        return _row(row) if row else None

    def fold_wal(self) -> None:
        """Copy every commit in the -wal into the file and empty the -wal (before sealing).

        Raises StoreError if a reader keeps that from finishing.
        """
        # Not the usual 5 s: the writer waits here, and a reader holding a read
        # open is better answered by sealing later than by stalling every append.
        self._conn.set_busy_timeout(FOLD_BUSY_TIMEOUT_MS)
        try:
            busy, _frames, _done = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except apsw.Error as e:
            raise StoreError("checkpoint the write-ahead log", self.path, str(e)) from e
        finally:
            self._conn.set_busy_timeout(BUSY_TIMEOUT_MS)
        if busy:
            raise StoreError(
                "checkpoint the write-ahead log",
                self.path,
                "a reader holds the log open mid-read; sealing is tried again later",
            )

    def kind_rows(self, kind: str) -> Iterator[Record]:
        """Every row of one kind, in seq order (a scan; for rare kinds like `log.pruned`)."""
        try:
            for row in self._conn.execute(
                f"SELECT {_COLUMNS} FROM events WHERE kind = ? ORDER BY seq", (kind,)
            ):
                yield _row(row)
        except apsw.Error as e:
            raise StoreError("read events", self.path, str(e)) from e

    def append_batch(self, items: Sequence[tuple[str, bytes]]) -> list[Record]:
        """Append `(kind, canonical body)` pairs in one transaction; return the rows.

        Returns only once the transaction is durable (WAL, synchronous=FULL).
        On failure nothing of the batch is stored and the head is unchanged.
        """
        signer = self.signer
        if signer is None:
            raise StoreError("append event", self.path, "log was opened read-only")
        for kind, body in items:
            # Bodies are stored as TEXT: a body that is not UTF-8 would fail
            # mid-transaction; refuse the batch before anything is signed.
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as e:
                raise StoreError("append event", self.path, f"{kind} body is not UTF-8") from e
        seq, prev = self.head_seq, self.head_hash
        # Timestamps never go backwards in the log, even if the clock does.
        ts = max(self.clock(), self.head_ts)
        hashes = []
        for kind, body in items:
            seq += 1
            prev = event_hash(self.log_id, seq, ts, kind.encode(), body, prev)
            hashes.append(prev)
        sigs = _sign_all(signer, hashes)
        seq, prev = self.head_seq, self.head_hash
        records = []
        for (kind, body), h, sig in zip(items, hashes, sigs, strict=True):
            seq += 1
            records.append(Record(seq, ts, kind, body, prev, h, signer.key_id, sig))
            prev = h
        try:
            with self._conn:
                self._conn.executemany(
                    "INSERT INTO events(seq, ts_ns, kind, body, prev, hash, key_id, sig) "
                    "VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (r.seq, r.ts_ns, r.kind, r.body.decode(), r.prev, r.hash, r.key_id, r.sig)
                        for r in records
                    ],
                )
        except apsw.FullError as e:
            raise StoreError("append event", self.path, "disk full") from e
        except apsw.Error as e:
            raise StoreError("append event", self.path, str(e)) from e
        if records:
            last = records[-1]
            self.head_seq, self.head_hash, self.head_ts = last.seq, last.hash, last.ts_ns
        return records

    # -- reading -----------------------------------------------------------------

    def records(self, after: int = 0, upto: int | None = None) -> Iterator[Record]:
        """Rows with `after < seq <= upto`, in seq order."""
        sql = f"SELECT {_COLUMNS} FROM events WHERE seq > ?"
        args: tuple[int, ...] = (after,)
        if upto is not None:
            sql += " AND seq <= ?"
            args = (after, upto)
        try:
            for row in self._conn.execute(sql + " ORDER BY seq", args):
                yield _row(row)
        except apsw.Error as e:
            raise StoreError("read events", self.path, str(e)) from e

    def rows(self, after: int = 0, upto: int | None = None) -> Iterator[tuple[Any, ...]]:
        """Raw row tuples (seq, ts_ns, kind, body, prev, hash, key_id, sig), for fast scans."""
        sql = f"SELECT {_COLUMNS} FROM events WHERE seq > ? AND seq <= ? ORDER BY seq"
        try:
            yield from self._conn.execute(sql, (after, upto if upto is not None else 2**63 - 1))
        except apsw.Error as e:
            raise StoreError("read events", self.path, str(e)) from e

    def record(self, seq: int) -> Record | None:
        """The row at `seq`, or None."""
        row = self._conn.execute(f"SELECT {_COLUMNS} FROM events WHERE seq = ?", (seq,)).fetchone()
        return _row(row) if row else None

    def public_keys(self) -> dict[str, bytes]:
        """Every public key the log names, by key_id."""
        # A key stored as anything but 32 raw bytes is no key: rows naming it fail as unknown.
        return {
            k: v
            for k, v in self._conn.execute("SELECT key_id, public_key FROM keys")
            if isinstance(v, bytes) and len(v) == 32
        }

    def refresh_head(self) -> None:
        """Re-read the head (for a read-only log that another process appends to)."""
        self.head_seq, self.head_hash, self.head_ts = self._read_head()

    def data_version(self) -> int:
        """Changes when another connection commits (cheap polling for `log --follow`)."""
        return self._conn.pragma("data_version")
