"""Bring a file shard's on-disk index up to date with its files, in small transactions.

`Updater.scan` compares every file the shard's paths name with what the index
holds: a file whose stat signature (size, mtime, ctime, inode) is unchanged is
not opened; a changed or new one is read, and re-chunked only if its bytes
differ (BLAKE2b-256); a vanished one is forgotten. `Updater.refresh` does the
same for the paths a watcher reported (a directory means all it holds, or held).

Work is committed in batches of a few files (`Batch`): each is one transaction
in which a file's old passages are replaced by its new ones, so a reader sees
a file either before or after, never half; and a shard killed mid-batch leaves
the last committed batch, which the next scan continues from.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import apsw

from ifmemd.errors import IfmemError
from ifmemd.shards import store
from ifmemd.shards.corpus import (
    DEFAULT_MAX_BYTES,
    Lister,
    Opener,
    Selection,
    Skipped,
    open_file,
    same_file_as,
)
from ifmemd.shards.ignore import ABSENT, EXCLUDE_FILE, IGNORE_FILES, signature
from ifmemd.shards.readahead import Read, ReadAhead, ReadAheadError, read_and_cut
from ifmemd.shards.store import FileState, Passages

# A file modified this close to when it was read may change again within the
# same mtime tick unseen (coarse timestamps; 2 s on FAT): such an entry is
# re-read on the next look rather than trusted (git's "racily clean").
RACY_NS = 2_000_000_000
# One transaction holds at most this many files or bytes of text.
BATCH_FILES = 64
BATCH_BYTES = 4 << 20
# The first build of an empty index commits less often: nobody reads it yet.
BUILD_BATCH_FILES = 500
BUILD_BATCH_BYTES = 16 << 20
# A scan reads files in a second process (`ReadAhead`) only when at least this
# many are to be read: its start (~80 ms of imports) costs more than a few save.
# Meanwhile this process reads the first few itself.
READAHEAD_FILES = 200
READ_HERE_FIRST = 64


class IndexUpdateError(IfmemError):
    """Raised when changes to a shard's files cannot be written to its index."""

    def __init__(self, operation: str, reason: str) -> None:
        self.operation = operation
        self.reason = reason
        super().__init__(f"{operation}: {reason}; the index keeps its last committed state")


@dataclass
class Batch:
    """One committed transaction: files whose text changed, files gone, files left out."""

    changed: list[dict[str, object]] = field(default_factory=list)  # {path, digest, lines}
    removed: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    files: int = 0  # files looked at
    text_bytes: int = 0

    def __bool__(self) -> bool:
        return bool(self.changed or self.removed or self.skipped)


class Updater:
    """Writes one shard's index (its own connection): scans and refreshes, batch by batch."""

    def __init__(
        self,
        db: apsw.Connection,
        selection: Selection,
        *,
        max_bytes: int | None = None,
        opener: Opener = open_file,
        clock: Callable[[], int] = time.time_ns,
        queue_vectors: bool = False,
    ) -> None:
        self.db = db
        # A shard ranking by meaning queues each new passage for its vector
        # (`store.fill_vectors`).
        self.queue_vectors = queue_vectors
        self.selection = selection
        self.max_bytes = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
        self.opener = opener
        self.clock = clock

    def fill_vectors(self, embed: store.Embed, limit: int) -> int:
        """Make up to `limit` queued vectors (`store.fill_vectors`); how many were made."""
        try:
            return store.fill_vectors(self.db, embed, limit)
        except apsw.Error as e:
            raise IndexUpdateError("make vectors", str(e)) from e

    def queued_vectors(self) -> int:
        """How many passages still wait for their vector."""
        try:
            return store.queued_vectors(self.db)
        except apsw.Error as e:
            raise IndexUpdateError("count queued vectors", str(e)) from e

    def scan(self, *, build: bool = False, readahead: bool = False) -> Iterator[Batch]:
        """Reconcile the whole index with the files; `build`: large batches (an empty index).

        `readahead`: when there are at least READAHEAD_FILES to read, they are
        read and cut in a second process while this one writes (`ReadAhead`,
        with the default opener and clock), or here if it cannot be started.
        """
        try:
            with self.db:
                # Until this walk is recorded, the last one's directories are not to be trusted.
                store.forget_walk(self.db)
        except apsw.Error as e:
            raise IndexUpdateError("update index", str(e)) from e
        pattern_skips: list[Skipped] = []
        dirs: dict[str, int] = {}
        rules = self.selection.rules
        if rules is not None:
            rules.forget()
        candidates = self.selection.candidates(pattern_skips, self._lister(dirs))
        known = store.file_states(self.db)
        seen: dict[tuple[int, int], str] = {}
        limits = (BUILD_BATCH_FILES, BUILD_BATCH_BYTES) if build else (BATCH_FILES, BATCH_BYTES)
        pending: list[_Work] = [_Remove(p) for p in sorted(known.keys() - candidates)]
        for path in sorted(candidates, key=_preference):
            work = self._look(path, known.get(path), seen)
            if work is not None:
                pending.append(work)
        reads = sum(isinstance(w, _Read) for w in pending)
        ahead = _start_readahead() if readahead and reads >= READAHEAD_FILES else None
        try:
            yield from self._apply(pending, Batch(skipped=pattern_skips), limits, ahead)
        except ReadAheadError as e:
            raise IndexUpdateError("build index", str(e)) from e
        finally:
            if ahead is not None:
                ahead.close()
        self._remember(dirs, whole=True)

    def catch_up(self) -> Iterator[Batch]:
        """Bring the index up to date after a time unwatched, listing only changed directories.

        A directory whose mtime is what the last walk saw holds the same
        entries, so only the files the index knows are stat-ed, and only
        changed directories listed. Without a remembered walk for these paths
        and rules, or when an ignore file changed, this is a full `scan`.
        """
        remembered = store.walked(self.db, self.selection.fingerprint)
        if remembered is None:
            yield from self.scan()
            return
        old_dirs, rule_files = remembered
        if any((_signature(path) or ABSENT) != sig for path, sig in rule_files.items()):
            yield from self.scan()
            return
        changed = [d for d, mtime in old_dirs.items() if _mtime(d) not in (mtime, None)]
        if any(
            os.path.lexists(rule) and rule not in rule_files
            for d in changed
            for rule in (os.path.join(d, name) for name in IGNORE_FILES)
        ):
            yield from self.scan()  # a new ignore file
            return
        skipped: list[Skipped] = []
        dirs: dict[str, int] = {}
        found: set[str] = set()
        for directory in changed:
            # Its own entries; below it, only directories the last walk did not list.
            found |= self.selection.under(
                directory, skipped, self._lister(dirs), lambda sub: sub not in old_dirs
            )
        known = store.file_states(self.db)
        seen: dict[tuple[int, int], str] = {}
        pending: list[_Work] = []
        new = sorted(found - known.keys(), key=_preference)
        for path in [*sorted(known), *new]:
            work = self._look(path, known.get(path), seen)
            if work is not None:
                pending.append(work)
        yield from self._apply(pending, Batch(skipped=skipped), (BATCH_FILES, BATCH_BYTES))
        self._remember(dirs, whole=False)

    def _lister(self, dirs: dict[str, int]) -> Lister:
        started = self.clock()

        def listed(path: str, st: os.stat_result) -> None:
            # Listed within its mtime tick: an entry added in the same tick would
            # leave the mtime as it is, so list it again next time (mtime 0).
            dirs[path] = 0 if st.st_mtime_ns >= started - RACY_NS else st.st_mtime_ns

        return listed

    def _remember(self, dirs: dict[str, int], *, whole: bool) -> None:
        rules = self.selection.rules
        read = {} if rules is None else dict(rules.read)
        try:
            with self.db:
                store.record_walk(self.db, self.selection.fingerprint, dirs, read, whole=whole)
        except apsw.Error as e:
            raise IndexUpdateError("update index", str(e)) from e

    def refresh(self, paths: Iterable[str]) -> Iterator[Batch]:
        """Re-check the files at or under `paths` (from a watcher), in small batches."""
        paths = set(paths)
        rules = self.selection.rules
        if rules is not None and any(
            os.path.basename(p) in IGNORE_FILES or p.endswith(os.sep + EXCLUDE_FILE) for p in paths
        ):
            # The rules changed: what they leave out may be anywhere.
            rules.forget()
            yield from self.scan()
            return
        skipped: list[Skipped] = []
        todo: dict[str, _Work | None] = {}
        for path in sorted(paths):
            for gone in self._known_under(path):
                todo.setdefault(gone, _Remove(gone))
            if _is_dir(path):
                if self._knows(path):
                    todo[path] = _Remove(path)  # a file once, a directory now
                for found in sorted(self.selection.under(path, skipped)):
                    todo[found] = None
            elif self.selection.matches(path):
                todo[path] = None
            elif self._knows(path):
                todo[path] = _Remove(path)
        pending: list[_Work] = []
        for path, work in todo.items():
            if work is None:
                work = self._look(path, self._state(path), None)
            if work is not None:
                pending.append(work)
        # A hard link left out as the same file as one removed now is that file's
        # only path left: looked at afresh, whatever its stat says.
        for removed in [w.path for w in pending if isinstance(w, _Remove)]:
            for twin in self._skipped_as_twin_of(removed):
                if twin not in todo and (work := self._look(twin, None, None)) is not None:
                    pending.append(work)
        yield from self._apply(pending, Batch(skipped=skipped), (BATCH_FILES, BATCH_BYTES))

    # -- looking at one file ------------------------------------------------------

    def _look(
        self, path: str, known: FileState | None, seen: dict[tuple[int, int], str] | None
    ) -> _Work | None:
        """What to do about one candidate file: nothing, re-stat, re-read or forget."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if os.path.islink(path):
                return _Skip(Skipped(path, "dangling symlink"), None)
            return _Remove(path) if known else None
        except OSError as e:
            return _Skip(Skipped(path, f"cannot read: {e.strerror or e}"), None)
        if stat.S_ISDIR(st.st_mode):
            # A file once, a directory now: what is under it is walked on its own.
            return _Remove(path) if known else None
        identity = (st.st_dev, st.st_ino)
        twin = self._twin(path, identity, seen)
        if twin:
            return _Skip(Skipped(path, same_file_as(twin)), st)
        if known is not None and known.unchanged(st):
            if known.skipped:
                # Still left out, for the same reason: say so again without opening it.
                return _Warn(Skipped(path, known.skipped))
            return None
        return _Read(path, known)

    def _twin(
        self, path: str, identity: tuple[int, int], seen: dict[tuple[int, int], str] | None
    ) -> str | None:
        """Another path already indexed for the same file (a hard link, a symlink), if any."""
        if seen is not None:
            twin = seen.setdefault(identity, path)
            return None if twin == path else twin
        rows = self.db.execute(
            "SELECT path FROM file WHERE dev = ? AND ino = ? AND path <> ? AND skipped IS NULL",
            (*identity, path),
        )
        # A renamed file's old path is still in the index until this batch removes it.
        return next((p for (p,) in rows if _identity(p) == identity), None)

    def _state(self, path: str) -> FileState | None:
        return store.file_states_of(self.db, [path]).get(path)

    def _skipped_as_twin_of(self, path: str) -> list[str]:
        """The files left out as the same file as `path`."""
        rows = self.db.execute("SELECT path FROM file WHERE skipped = ?", (same_file_as(path),))
        return [p for (p,) in rows]

    def _knows(self, path: str) -> bool:
        return self.db.execute("SELECT 1 FROM file WHERE path = ?", (path,)).fetchone() is not None

    def _known_under(self, path: str) -> list[str]:
        """Known files at or under `path` that are no longer there."""
        prefix = path.rstrip(os.sep) + os.sep
        rows = self.db.execute(
            "SELECT path FROM file WHERE path = ? OR (path >= ? AND path < ?)",
            (path, prefix, prefix[:-1] + chr(ord(os.sep) + 1)),
        )
        return [p for (p,) in rows if not os.path.lexists(p)]

    # -- committing ---------------------------------------------------------------

    def _apply(
        self,
        pending: list[_Work],
        batch: Batch,
        limits: tuple[int, int],
        ahead: ReadAhead | None = None,
    ) -> Iterator[Batch]:
        """Read what must be read, and write it in transactions of at most `limits`."""
        ready: list[_Ready] = []
        size = 0
        for item in self._prepared(pending, ahead):
            ready.append(item)
            size += item.size
            if len(ready) >= limits[0] or size >= limits[1]:
                yield self._write(ready, batch)
                batch, ready, size = Batch(), [], 0
        if ready or batch:
            yield self._write(ready, batch)

    def _write(self, items: list[_Ready], batch: Batch) -> Batch:
        replaced: _Replaced = []
        try:
            with self.db:
                for item in items:
                    item.apply(self.db, batch, replaced)
                store.replace_files(self.db, replaced, queue_vectors=self.queue_vectors)
        except apsw.Error as e:
            raise IndexUpdateError("update index", str(e)) from e
        return batch

    def _prepared(self, pending: list[_Work], ahead: ReadAhead | None) -> Iterator[_Ready]:
        """Each piece of work made ready, in order; files read by `ahead` if given,
        but for the first READ_HERE_FIRST, read here while it starts."""
        if ahead is None:
            for work in pending:
                yield work.prepare(self)
            return
        paths = [w.path for w in pending if isinstance(w, _Read)][READ_HERE_FIRST:]
        reads = ahead.read(paths, self.max_bytes)
        here = READ_HERE_FIRST
        for work in pending:
            if isinstance(work, _Read) and here <= 0:
                yield self._ready(next(reads), work.known)
            else:
                here -= isinstance(work, _Read)
                yield work.prepare(self)

    def _read(self, path: str, known: FileState | None) -> _Ready:
        digest = known.digest if known is not None and not known.skipped else ""
        outcome = read_and_cut(path, self.max_bytes, self.opener, self.clock, digest)
        return self._ready(outcome, known)

    def _ready(self, outcome: Read | Skipped, known: FileState | None) -> _Ready:
        if isinstance(outcome, Skipped):
            return _Skip(outcome, _stat_or_none(outcome.path)).prepare(self)
        state = FileState.of(
            outcome.path,
            outcome.stat,
            racy=outcome.stat.st_mtime_ns >= outcome.started_ns - RACY_NS,
            digest=outcome.digest,
            lines=outcome.lines,
            bytes=outcome.bytes,
        )
        if known is not None and not known.skipped and known.digest == outcome.digest:
            return _Indexed(state, None)
        return _Indexed(state, outcome.passages)


def _start_readahead() -> ReadAhead | None:
    try:
        return ReadAhead.start()
    except OSError:
        return None  # no process to spare (EAGAIN, ENOMEM…): read here, only slower


def _stat_or_none(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _mtime(path: str) -> int | None:
    st = _stat_or_none(path)
    return None if st is None else st.st_mtime_ns


def _signature(path: str) -> str | None:
    st = _stat_or_none(path)
    return None if st is None else signature(st)


def _identity(path: str) -> tuple[int, int] | None:
    st = _stat_or_none(path)
    return None if st is None else (st.st_dev, st.st_ino)


def _is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


def _preference(path: str) -> tuple[bool, int, str]:
    """Which of several paths to one file is kept: not a symlink, then the shortest."""
    return (os.path.islink(path), path.count(os.sep), path)


# -- units of work: looked at (cheap, stat only), then prepared (read), then applied --


_Replaced = list[tuple[FileState, Passages]]  # files whose passages a batch replaces


class _Ready:
    size = 0

    def apply(self, db: apsw.Connection, batch: Batch, replaced: _Replaced) -> None:
        raise NotImplementedError


class _Work:
    def prepare(self, updater: Updater) -> _Ready:
        raise NotImplementedError


@dataclass
class _Remove(_Work, _Ready):
    path: str

    def prepare(self, updater: Updater) -> _Ready:
        return self

    def apply(self, db: apsw.Connection, batch: Batch, replaced: _Replaced) -> None:
        store.remove_file(db, self.path)
        batch.removed.append(self.path)


@dataclass
class _Warn(_Work, _Ready):
    """A file still skipped for the reason recorded: nothing to write, only to say."""

    skipped: Skipped

    def prepare(self, updater: Updater) -> _Ready:
        return self

    def apply(self, db: apsw.Connection, batch: Batch, replaced: _Replaced) -> None:
        batch.skipped.append(self.skipped)


@dataclass
class _Skip(_Work, _Ready):
    """A file left out: its passages go, and its stat is kept so it is not reopened unchanged."""

    skipped: Skipped
    st: os.stat_result | None

    def prepare(self, updater: Updater) -> _Ready:
        return self

    def apply(self, db: apsw.Connection, batch: Batch, replaced: _Replaced) -> None:
        path = self.skipped.path
        had = db.execute(
            "SELECT 1 FROM file WHERE path = ? AND skipped IS NULL", (path,)
        ).fetchone()
        if self.st is None:
            store.remove_file(db, path)
        else:
            state = FileState.of(path, self.st, skipped=self.skipped.reason)
            store.replace_file(db, state, [])
        if had:
            batch.removed.append(path)
        batch.skipped.append(self.skipped)


@dataclass
class _Read(_Work):
    path: str
    known: FileState | None

    def prepare(self, updater: Updater) -> _Ready:
        return updater._read(self.path, self.known)


@dataclass
class _Indexed(_Ready):
    """A file read: its passages replaced if its bytes changed (`passages`), else only its stat."""

    state: FileState
    passages: Passages | None

    @property
    def size(self) -> int:  # type: ignore[override]
        return self.state.bytes

    def apply(self, db: apsw.Connection, batch: Batch, replaced: _Replaced) -> None:
        state = self.state
        batch.files += 1
        if self.passages is None:
            store.update_stat(db, state)
            return
        replaced.append((state, self.passages))
        batch.changed.append({"path": state.path, "digest": state.digest, "lines": state.lines})
        batch.text_bytes += state.bytes
