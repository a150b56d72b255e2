"""A shard's passages in SQLite: the files they came from, their text, their FTS5 index.

One schema serves both the working-memory shard (in memory) and file shards,
whose index lives on disk under the cache directory
(`~/.cache/ifmem/shards/<name>/index.db`), so a start, a restart after a
crash and a reload open it and re-read only the files that changed. Its pages
come from the kernel's page cache, not from the shard's heap: a search reads
the posting lists it needs and the text of its `k` winners, nothing else.

    file     one row per file the shard looked at: its stat signature (size,
             mtime, ctime, inode), the BLAKE2b-256 of its bytes, its lines and
             bytes, or why it was skipped (binary, unreadable…)
    chunk    the passages: file, line range and exact text; ids are never
             reused (AUTOINCREMENT), so a rowid always names one version's text
    passage  the FTS5 index of the chunks (contentless: the text is in `chunk`),
             each indexed with its context (file name, headings) before it
    definition  which names each chunk defines (`rerank.defined_names`), worked
             out once when the chunk is stored: a search looks the question's
             names up here instead of holding every text to scan
    vector   a shard with `semantic = true`: each chunk's vector
             (`ifmemd.shards.semantic`)
    vector_queue  the chunks still without a vector, with the text to encode:
             a file shard stores a chunk at once and encodes it later
             (`fill_vectors`, on its writer thread), because a sentence
             encoder makes ~20 vectors a second a core: a first build would
             otherwise keep the shard from answering for minutes, an edit
             from being searchable for seconds
    dir      every directory the last full walk listed, with its mtime (0: list
             it again): one whose mtime is unchanged has the same entries, so a
             start lists only the directories that changed (git's untracked cache)
    rule_file  the ignore files the walk read, with their stat signature
    meta     format, the chunking code's fingerprint, the model of the vectors
             ("" for none), and the selection (paths, rules) the dir table was
             made for

The index is derived data. A file that is missing, truncated, corrupt, of
another format, built by other chunking code, or with other vectors than the
shard asks for (`semantic` turned on or off) is deleted and built anew:
`open_store` says why in `Store.rebuilt`, and never fails for that reason.
Writes are WAL transactions, so a shard killed mid-batch leaves the last
committed state, which the next scan brings up to date.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Self

import apsw

from ifmemd.errors import IfmemError
from ifmemd.shards import chunker, rerank
from ifmemd.shards.chunker import Chunk
from ifmemd.system import privatefile

# Bump when the schema or what a row means changes; an index of another format is rebuilt.
FORMAT = 6
APPLICATION_ID = 0x69666D78  # "ifmx"
INDEX_FILE = "index.db"
TOKENIZER = "porter unicode61"
# Pages of 8 KiB (SQLite's default is 4): a first build of the standard library
# inserts 12% faster, and the file is 3% smaller (format 4; 5 adds the vector table,
# 6 the vector queue).
PAGE_SIZE = 8192
# The page cache SQLite keeps in the heap, per connection (KiB when negative).
CACHE_KIB = 16 * 1024
BUSY_TIMEOUT_MS = 5_000
# FTS5's own default: as it writes, it merges a level's segments once 4 are there.
AUTOMERGE = 4
_SQLITE_HEADER = b"SQLite format 3\x00"
_CORPUS_DOMAIN = b"ifmem-corpus-v2\x00"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS file(
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    dev INTEGER NOT NULL,
    racy INTEGER NOT NULL,
    digest TEXT NOT NULL,
    lines INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    skipped TEXT
);
CREATE TABLE IF NOT EXISTS chunk(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file INTEGER NOT NULL,
    start_line INTEGER NOT NULL,
    end_line INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunk_file ON chunk(file);
CREATE TABLE IF NOT EXISTS definition(
    name TEXT NOT NULL,
    chunk INTEGER NOT NULL,
    PRIMARY KEY(name, chunk)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS definition_chunk ON definition(chunk);
CREATE TABLE IF NOT EXISTS vector(chunk INTEGER PRIMARY KEY, v BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS vector_queue(chunk INTEGER PRIMARY KEY, text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dir(path TEXT PRIMARY KEY, mtime_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rule_file(path TEXT PRIMARY KEY, signature TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS file_inode ON file(ino);
CREATE VIRTUAL TABLE IF NOT EXISTS passage USING fts5(
    body, tokenize='{TOKENIZER}', content='', contentless_delete=1
);
"""


class IndexStoreError(IfmemError):
    """Raised when a shard's index file cannot be created or written at all."""

    def __init__(self, operation: str, path: Path | str, reason: str) -> None:
        self.operation = operation
        self.path = Path(path)
        self.reason = reason
        super().__init__(
            f"{operation}: {path}: {reason}; the shard keeps its index in memory until restarted"
        )


@dataclass(frozen=True, slots=True)
class FileState:
    """What the index knows of one file: its stat signature, digest and size, or why skipped.

    `racy` marks a file whose mtime was too close to when it was read to
    prove a later write changed it (git's "racily clean" entries): it is
    re-read on the next look instead of being trusted.
    """

    path: str
    size: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    ino: int = 0
    dev: int = 0
    racy: bool = False
    digest: str = ""
    lines: int = 0
    bytes: int = 0
    skipped: str | None = None

    @classmethod
    def of(cls, path: str, st: os.stat_result, **fields: object) -> Self:
        return cls(
            path,
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
            st.st_ino,
            st.st_dev,
            **fields,  # type: ignore[arg-type]
        )

    def unchanged(self, st: os.stat_result) -> bool:
        """Whether `st` proves the file is as it was when read (then it is not opened)."""
        return not self.racy and (
            self.size,
            self.mtime_ns,
            self.ctime_ns,
            self.ino,
            self.dev,
        ) == (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)

    def row(self) -> tuple[object, ...]:
        return (
            self.path,
            self.size,
            self.mtime_ns,
            self.ctime_ns,
            self.ino,
            self.dev,
            int(self.racy),
            self.digest,
            self.lines,
            self.bytes,
            self.skipped,
        )


_FILE_COLUMNS = "path, size, mtime_ns, ctime_ns, ino, dev, racy, digest, lines, bytes, skipped"
_UPSERT_FILE = (
    f"INSERT INTO file({_FILE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT(path) DO UPDATE SET size=excluded.size, mtime_ns=excluded.mtime_ns, "
    "ctime_ns=excluded.ctime_ns, ino=excluded.ino, dev=excluded.dev, racy=excluded.racy, "
    "digest=excluded.digest, lines=excluded.lines, bytes=excluded.bytes, "
    "skipped=excluded.skipped RETURNING id"
)


@dataclass(frozen=True, slots=True)
class Totals:
    """Size of what a shard holds, as reported in `shard.ready`."""

    files: int
    lines: int
    bytes: int


def code_fingerprint() -> str:
    """Names the code that derives passages: an index built by other chunking code is rebuilt."""
    h = hashlib.blake2b(f"format {FORMAT}; {TOKENIZER}\x00".encode(), digest_size=16)
    h.update(Path(chunker.__file__).read_bytes())
    h.update(rerank.DEFINES.pattern.encode())
    return h.hexdigest()


def file_digest(data: bytes) -> str:
    """BLAKE2b-256 (hex) of a file's bytes: the version a passage was cut from."""
    return hashlib.blake2b(data, digest_size=32).hexdigest()


def create_schema(db: apsw.Connection) -> None:
    db.execute(SCHEMA)


# Texts → their vectors as stored (`semantic.Embedder.blobs`).
Embed = Callable[[Sequence[str]], list[bytes]]


class Passages(NamedTuple):
    """What the index stores of one file's text: its passages and the names they define.

    `rows` are (start_line, end_line, text, context) of each chunk, in file
    order; `names` are (chunk's position in `rows`, name), each chunk's names
    sorted. Plain tuples: a first build sends them from the process that
    reads and cuts the files (`ifmemd.shards.readahead`).
    """

    rows: list[tuple[int, int, str, str]]
    names: list[tuple[int, str]]

    @classmethod
    def of(cls, chunks: list[Chunk]) -> Passages:
        """The passages of chunks cut elsewhere, each chunk's names found in its text."""
        rows = [(c.start_line, c.end_line, c.text, c.context) for c in chunks]
        names = [(i, n) for i, c in enumerate(chunks) for n in sorted(rerank.defined_names(c.text))]
        return cls(rows, names)


def cut(path: str, text: str) -> Passages:
    """One file's passages (`chunker.chunk_text`) and their definitions, found in one
    pass over the whole text (`rerank.definitions`) rather than one per passage."""
    rows = chunker.chunk_rows(path, text)
    found = rerank.definitions(text)
    names: list[tuple[int, str]] = []
    if found:
        lines = [line for line, _ in found]
        for i, (start, end, _, _) in enumerate(rows):
            lo = bisect.bisect_left(lines, start)
            hi = bisect.bisect_right(lines, end, lo)
            if lo < hi:
                names.extend((i, name) for name in sorted({n for _, n in found[lo:hi]}))
    return Passages(rows, names)


def replace_file(
    db: apsw.Connection, state: FileState, chunks: list[Chunk], embed: Embed | None = None
) -> None:
    """Make `state` and `chunks` what the index holds of one file (in the caller's transaction).

    `embed`: a shard ranking by meaning stores each chunk's vector too.
    """
    replace_files(db, [(state, Passages.of(chunks))], embed)


def replace_files(
    db: apsw.Connection,
    files: list[tuple[FileState, Passages]],
    embed: Embed | None = None,
    *,
    queue_vectors: bool = False,
) -> None:
    """`replace_file` for many files at once (in the caller's transaction).

    `queue_vectors`: the chunks' vectors are to be made later (`fill_vectors`).
    """
    # Removing passages never lowers the sequence: the new ids can be known first,
    # and each row built once, in the form its table takes it.
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'chunk'").fetchone()
    next_id = (row[0] if row else 0) + 1
    chunks: list[tuple[int, int, int, int, str]] = []
    searched: list[tuple[int, str]] = []
    names: list[tuple[str, int]] = []
    for state, passages in files:
        remove_passages(db, state.path)
        file_id = db.execute(_UPSERT_FILE, state.row()).fetchone()[0]
        rows = passages.rows
        chunks.extend(
            (i, file_id, start, end, text) for i, (start, end, text, _) in enumerate(rows, next_id)
        )
        searched.extend(
            (i, searched_text(text, ctx)) for i, (_, _, text, ctx) in enumerate(rows, next_id)
        )
        names.extend((name, next_id + i) for i, name in passages.names)
        next_id += len(rows)
    if not chunks:
        return
    db.executemany(
        "INSERT INTO chunk(id, file, start_line, end_line, body) VALUES (?,?,?,?,?)", chunks
    )
    db.executemany("INSERT INTO passage(rowid, body) VALUES (?, ?)", searched)
    db.executemany("INSERT INTO definition(name, chunk) VALUES (?, ?)", names)
    if queue_vectors:
        db.executemany("INSERT INTO vector_queue(chunk, text) VALUES (?, ?)", searched)
    elif embed is not None:
        _store_vectors(db, searched, embed)


def _store_vectors(db: apsw.Connection, searched: list[tuple[int, str]], embed: Embed) -> None:
    blobs = embed([text for _, text in searched])
    db.executemany(
        "INSERT INTO vector(chunk, v) VALUES (?, ?)",
        ((i, blob) for (i, _), blob in zip(searched, blobs, strict=True)),
    )


def fill_vectors(db: apsw.Connection, embed: Embed, limit: int) -> int:
    """Make the vectors of up to `limit` queued chunks, oldest first; return how many.

    Oldest first, and new chunks have higher ids (AUTOINCREMENT): vectors are
    stored in increasing chunk id, which is how a reader takes in only the
    new ones (`Index._passage_vectors`). The encoding runs outside any
    transaction; only this connection's thread writes the index, so the
    chunks read are still there to store.
    """
    queued = db.execute(
        "SELECT chunk, text FROM vector_queue ORDER BY chunk LIMIT ?", (limit,)
    ).fetchall()
    if not queued:
        return 0
    with db:
        _store_vectors(db, queued, embed)
        db.executemany("DELETE FROM vector_queue WHERE chunk = ?", ((i,) for i, _ in queued))
    return len(queued)


def queued_vectors(db: apsw.Connection) -> int:
    """How many chunks are still without their vector."""
    return db.execute("SELECT count(*) FROM vector_queue").fetchone()[0]


def searched_text(text: str, context: str) -> str:
    """What the index holds of a chunk: its context (file, headings), then its text."""
    return f"{context}\n{text}" if context else text


def merge(db: apsw.Connection) -> None:
    """Merge the FTS5 index into one b-tree per term: queries read each posting list whole."""
    db.execute("INSERT INTO passage(passage) VALUES ('optimize')")


@contextlib.contextmanager
def bulk(db: apsw.Connection) -> Iterator[None]:
    """Build a new index faster: a rollback journal instead of WAL while nothing reads
    it, and FTS5's segments left unmerged until the build's `merge`.

    WAL writes every page twice (the log, then the checkpoint); a first build
    only adds pages, which a rollback journal does not copy. A shard killed
    meanwhile leaves a hot journal, rolled back at the next open. The only
    connection must be `db`; WAL is back when the block ends.

    FTS5 merges segments as it writes (automerge), only for the final
    `merge` to merge them all again: a quarter of its insert time on the
    standard library. A build killed before the block ends leaves it off;
    `open_store` turns it back on.
    """
    try:
        db.execute("PRAGMA journal_mode = DELETE")
        _set_automerge(db, 0)
        yield
    finally:
        _set_automerge(db, AUTOMERGE)
        db.execute("PRAGMA journal_mode = WAL")


def _set_automerge(db: apsw.Connection, value: int) -> None:
    db.execute("INSERT INTO passage(passage, rank) VALUES ('automerge', ?)", (value,))


def _automerge(db: apsw.Connection) -> int:
    row = db.execute("SELECT v FROM passage_config WHERE k = 'automerge'").fetchone()
    return AUTOMERGE if row is None else int(row[0])


def update_stat(db: apsw.Connection, state: FileState) -> None:
    """Record a new stat signature for a file whose bytes did not change."""
    db.execute(
        "UPDATE file SET size=?, mtime_ns=?, ctime_ns=?, ino=?, dev=?, racy=? WHERE path=?",
        (state.size, state.mtime_ns, state.ctime_ns, state.ino, state.dev, int(state.racy),
         state.path),
    )  # fmt: skip


def remove_passages(db: apsw.Connection, path: str) -> int:
    """Drop the passages of `path` (its file row stays); return how many there were."""
    row = db.execute("SELECT id FROM file WHERE path = ?", (path,)).fetchone()
    if row is None:
        return 0
    ids = [r[0] for r in db.execute("SELECT id FROM chunk WHERE file = ?", row)]
    if ids:
        db.executemany("DELETE FROM passage WHERE rowid = ?", ((i,) for i in ids))
        db.executemany("DELETE FROM definition WHERE chunk = ?", ((i,) for i in ids))
        db.executemany("DELETE FROM vector WHERE chunk = ?", ((i,) for i in ids))
        db.executemany("DELETE FROM vector_queue WHERE chunk = ?", ((i,) for i in ids))
        db.execute("DELETE FROM chunk WHERE file = ?", row)
    return len(ids)


def remove_file(db: apsw.Connection, path: str) -> int:
    """Forget `path` and its passages; return how many passages it had."""
    removed = remove_passages(db, path)
    db.execute("DELETE FROM file WHERE path = ?", (path,))
    return removed


def file_states(db: apsw.Connection) -> dict[str, FileState]:
    """Every file the index holds or skipped, by path."""
    return {
        row[0]: FileState(row[0], *row[1:6], bool(row[6]), *row[7:])
        for row in db.execute(f"SELECT {_FILE_COLUMNS} FROM file")
    }


def file_states_of(db: apsw.Connection, paths: list[str]) -> dict[str, FileState]:
    """What the index knows of `paths` (those it knows), by path."""
    found = {}
    for path in paths:
        row = db.execute(f"SELECT {_FILE_COLUMNS} FROM file WHERE path = ?", (path,)).fetchone()
        if row is not None:
            found[path] = FileState(row[0], *row[1:6], bool(row[6]), *row[7:])
    return found


def corpus_digest(db: apsw.Connection) -> str:
    """BLAKE2b-256 (hex) over every indexed file's path and digest, in path order."""
    h = hashlib.blake2b(_CORPUS_DOMAIN, digest_size=32)
    for path, digest in db.execute(
        "SELECT path, digest FROM file WHERE skipped IS NULL ORDER BY path"
    ):
        encoded = path.encode("utf-8", "surrogateescape")
        h.update(len(encoded).to_bytes(8, "big"))
        h.update(encoded)
        h.update(bytes.fromhex(digest))
    return h.hexdigest()


def record_walk(
    db: apsw.Connection,
    selection: str,
    dirs: dict[str, int],
    rule_files: dict[str, str],
    *,
    whole: bool,
) -> None:
    """Remember the directories a walk listed and the ignore files it read (in a transaction).

    `whole`: a walk of everything, which replaces what was remembered.
    """
    if whole:
        db.execute("DELETE FROM dir")
        db.execute("DELETE FROM rule_file")
    db.executemany("INSERT OR REPLACE INTO dir(path, mtime_ns) VALUES (?, ?)", dirs.items())
    db.executemany(
        "INSERT OR REPLACE INTO rule_file(path, signature) VALUES (?, ?)", rule_files.items()
    )
    db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('selection', ?)", (selection,))


def forget_walk(db: apsw.Connection) -> None:
    """Distrust the remembered walk (a new one is under way)."""
    db.execute("DELETE FROM meta WHERE key = 'selection'")


def walked(db: apsw.Connection, selection: str) -> tuple[dict[str, int], dict[str, str]] | None:
    """The directories and ignore files remembered for `selection`, or None if none are."""
    row = db.execute("SELECT value FROM meta WHERE key = 'selection'").fetchone()
    if row is None or row[0] != selection:
        return None
    dirs = dict(db.execute("SELECT path, mtime_ns FROM dir").fetchall())
    rules = dict(db.execute("SELECT path, signature FROM rule_file").fetchall())
    return dirs, rules


def totals(db: apsw.Connection) -> Totals:
    files, lines, size = db.execute(
        "SELECT count(*), coalesce(sum(lines), 0), coalesce(sum(bytes), 0) FROM file "
        "WHERE skipped IS NULL"
    ).fetchone()
    return Totals(files, lines, size)


@dataclass
class Store:
    """An open on-disk index: its path, its connection, and why it was rebuilt (if it was)."""

    path: Path
    db: apsw.Connection
    rebuilt: str = ""  # why an existing index was thrown away, or ""
    fresh: bool = False  # created empty now: the first load builds everything

    def connect(self) -> apsw.Connection:
        """Another connection to the same index (a reader beside the writer)."""
        return _connect(self.path)

    def close(self) -> None:
        self.db.close()


def memory_db() -> apsw.Connection:
    """A fresh in-memory index (working memory, tests)."""
    db = apsw.Connection(":memory:")
    create_schema(db)
    return db


def open_store(directory: Path, vectors: str = "") -> Store:
    """Open (or create, or rebuild) the index in `directory`; never fails for a bad index file.

    `vectors` names the model of the passages' vectors ("": none are kept).
    Raises IndexStoreError only when the directory or a new file cannot be made at all.
    """
    path = directory / INDEX_FILE
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise IndexStoreError("create index directory", directory, e.strerror or str(e)) from e
    reason = ""
    if path.exists():
        try:
            db = _connect(path)
            reason = _why_unusable(path, db, vectors)
            if not reason:
                if _automerge(db) != AUTOMERGE:
                    _set_automerge(db, AUTOMERGE)  # a first build killed before its end
                return Store(path, db)
            db.close()
        except apsw.Error as e:
            reason = f"cannot be opened ({e})"
        discard(path)
    try:
        # The passages are the user's text: the file is 0600 whatever the umask
        # (SQLite gives its -wal and -shm the file's mode), like the event log.
        privatefile.create_private(path)
    except OSError as e:
        raise IndexStoreError("create index", path, e.strerror or str(e)) from e
    try:
        db = _connect(path, new=True)
        with db:
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {FORMAT}")
            create_schema(db)
            db.execute("INSERT INTO meta(key, value) VALUES ('code', ?)", (code_fingerprint(),))
            db.execute("INSERT INTO meta(key, value) VALUES ('vectors', ?)", (vectors,))
    except apsw.Error as e:
        raise IndexStoreError("create index", path, str(e)) from e
    return Store(path, db, rebuilt=reason, fresh=True)


def _connect(path: Path, *, new: bool = False) -> apsw.Connection:
    db = apsw.Connection(str(path))
    db.set_busy_timeout(BUSY_TIMEOUT_MS)
    if new:
        # Only an empty file takes a page size, and only before it is in WAL mode.
        db.execute(f"PRAGMA page_size = {PAGE_SIZE}")
    db.execute("PRAGMA journal_mode = WAL")
    # A crash of the machine may lose the last batches, never consistency; and
    # the index is derived data, re-checked against the files at every start.
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    # Reads through the kernel's page cache, not mapped into this process (RSS).
    db.execute("PRAGMA mmap_size = 0")
    return db


def _why_unusable(path: Path, db: apsw.Connection, vectors: str) -> str:
    """Why an existing index file cannot be used as it is, or "" if it can."""
    if db.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
        return "not an ifmem shard index"
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version != FORMAT:
        return f"format {version}, this ifmem uses {FORMAT}"
    # Settle any WAL a crash left, so the main file's header speaks for the whole.
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    expected = _header_pages(path) * db.execute("PRAGMA page_size").fetchone()[0]
    actual = path.stat().st_size
    if expected != actual:
        return f"truncated or damaged ({actual} bytes, its header says {expected})"
    row = db.execute("SELECT value FROM meta WHERE key = 'code'").fetchone()
    if row is None or row[0] != code_fingerprint():
        return "built by another version of the chunker"
    row = db.execute("SELECT value FROM meta WHERE key = 'vectors'").fetchone()
    held = row[0] if row else ""
    if held != vectors:
        return f"its passage vectors are {held or 'none'}, the shard asks for {vectors or 'none'}"
    return ""


def _header_pages(path: Path) -> int:
    with path.open("rb") as f:
        header = f.read(100)
    if len(header) < 100 or not header.startswith(_SQLITE_HEADER):
        return -1
    return int.from_bytes(header[28:32], "big")


def discard(path: Path) -> None:
    """Delete an index file and its WAL (the next open builds it anew)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        candidate = Path(f"{path}{suffix}")
        try:
            if stat.S_ISREG(candidate.lstat().st_mode):
                candidate.unlink()
        except FileNotFoundError:
            continue
