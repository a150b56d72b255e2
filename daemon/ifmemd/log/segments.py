"""Sealed segments: the live log file closed, moved aside, made read-only, maybe compressed.

Layout (ifmem-log(5)): the live file `events.db`; sealed segments beside it in
`segments/events-<first>-<last>.db` (seqs as 12 digits, mode 0400), or
`.db.zst` when compressed. A new live file continues the same `log_id` and
chain: `meta.first_seq` says where it starts, and its first row, `log.sealed`,
links to the sealed segment's last hash.

Sealing, step by step; `after_step` names each step as it is done, so a test
can kill the process there:

  checkpointed  a signed checkpoint of the head is published and the -wal is
                folded into the file; the file is closed
  moved         events.db is renamed to segments/events-F-L.db, both folders fsynced
  read-only     the segment is made 0400
  continued     the new live file is built as events.db.new (its `log.sealed`
                row signed), fsynced and renamed to events.db
  compressed    (zstd) the segment is written to .db.zst.tmp, fsynced, renamed
                to .db.zst, and the plain .db unlinked

A kill before "moved" leaves events.db the live file, as if nothing happened.
After it and before "continued" there is no events.db: `recover` (run by
the daemon, and by `ifmem log seal|prune`, before opening the log) builds the
continuation from the last segment; readers meanwhile see the segments alone.
Leftover events.db.new or *.zst.tmp files are unfinished work and deleted; a
.db beside its .db.zst is removed (the .zst was renamed into place only once
whole). Nothing that was committed is ever lost: the rename is the one step
that moves committed rows, and it is atomic.

Why zstandard (python-zstandard), which DESIGN.md names: a sealed segment is
JSON bodies plus 128 random bytes of hash and signature a row; zstd at level 3
compresses the JSON several times over at hundreds of MB/s, and its streaming
API decompresses a segment to a temporary file without holding it in memory
(bench/logsize.py measures the ratio).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import zstandard

from ifmemd.errors import LogLockedError, NothingToPruneError, StoreError
from ifmemd.log import checkpoint as cp
from ifmemd.log.eventlog import EventLog, Record
from ifmemd.log.events import encode
from ifmemd.log.keys import Signer
from ifmemd.system import durable

SEGMENTS_DIR = "segments"
_NAME = re.compile(r"events-(\d{12})-(\d{12})\.db(\.zst)?")
ZSTD_LEVEL = 3
_COPY_CHUNK = 1 << 20
# How often a held log folder is tried again (`locked`).
LOCK_RETRY_S = 0.05

# Called with each step's name once it is done (tests kill the process there).
after_step: Callable[[str], None] = lambda step: None  # noqa: E731


@dataclass(frozen=True, slots=True)
class Segment:
    """One sealed segment file: the seqs its name says it holds, and where it is."""

    first: int
    last: int
    path: Path

    @property
    def compressed(self) -> bool:
        return self.path.suffix == ".zst"

    @property
    def name(self) -> str:
        return self.path.name


def segment_name(first: int, last: int) -> str:
    return f"events-{first:012d}-{last:012d}.db"


def segments_dir(live: Path) -> Path:
    return live.parent / SEGMENTS_DIR


def list_segments(live: Path) -> list[Segment]:
    """The sealed segments beside the live file `live`, by seq (as their names say).

    A segment found both plain and compressed (a compression cut short) is
    listed once, plain: the .zst may be a leftover `recover` will remove.
    """
    folder = segments_dir(live)
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise StoreError("list sealed segments", folder, e.strerror or str(e)) from e
    found: dict[tuple[int, int], Segment] = {}
    for name in names:
        m = _NAME.fullmatch(name)
        if m is None:
            continue
        key = (int(m[1]), int(m[2]))
        if key in found and not found[key].compressed:
            continue
        found[key] = Segment(key[0], key[1], folder / name)
    return [found[k] for k in sorted(found)]


# -- one process at a time -------------------------------------------------------


@contextlib.contextmanager
def locked(live: Path, *, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the log's folder (created if missing) alone: the daemon that writes the
    log holds it while it runs, `ifmem log seal|prune` while it works on the files.
    One held elsewhere is tried again for up to `wait_s` seconds (a seal takes
    moments), then refused with LogLockedError.
    """
    try:
        durable.ensure_private_dir(live.parent)
        fd = os.open(live.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise StoreError("lock event log", live.parent, e.strerror or str(e)) from e
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as e:
                if time.monotonic() >= deadline:
                    raise LogLockedError(live) from e
                time.sleep(LOCK_RETRY_S)
        yield
    finally:
        os.close(fd)


# -- sealing ---------------------------------------------------------------------


def seal(log: EventLog, checkpoints_path: Path | None) -> tuple[EventLog, Segment, Record]:
    """Seal the writable live `log`; returns the new live log, the segment, and the
    new file's first row (`log.sealed`), which the caller hands to its readers.

    `log` is closed whatever happens; on a failure before the move it is still
    the live file (reopen it). Every other connection to the live file must be
    closed first, or folding its -wal may be refused.
    """
    signer = log.signer
    if signer is None:
        raise StoreError("seal event log", log.path, "log was opened read-only")
    live = log.path
    first = log.first_seq
    if log.head_seq < first:
        log.close()
        raise StoreError("seal event log", live, "the live file holds no events")
    head = (log.head_seq, log.head_hash, log.head_ts)
    log_id, keys = log.log_id, log.public_keys()
    try:
        checkpoint = cp.Checkpoint.make(signer, log_id, head[0], head[1])
        cp.publish(checkpoint, checkpoints_path)
        log.fold_wal()
    finally:
        log.close()
    after_step("checkpointed")
    segment = Segment(first, head[0], segments_dir(live) / segment_name(first, head[0]))
    try:
        durable.ensure_private_dir(segment.path.parent)
        os.rename(live, segment.path)
        durable.fsync_dir(segment.path.parent)
        durable.fsync_dir(live.parent)
    except OSError as e:
        raise StoreError("seal event log", live, f"move to {segment.path}: {e.strerror}") from e
    # The -wal is empty (folded above) and the -shm describes it: both belong to
    # the moved file, and must not be taken for the new live file's.
    for side in ("-wal", "-shm"):
        live.with_name(live.name + side).unlink(missing_ok=True)
    after_step("moved")
    _make_readonly(segment.path)
    after_step("read-only")
    record = _continue(live, signer, segment, log_id, keys, head, log.clock())
    after_step("continued")
    new = EventLog.open(live, signer)
    new.clock = log.clock
    return new, segment, record


def _make_readonly(path: Path) -> None:
    try:
        os.chmod(path, 0o400)
    except OSError as e:
        raise StoreError("seal event log", path, f"make read-only: {e.strerror}") from e


def _continue(
    live: Path,
    signer: Signer,
    segment: Segment,
    log_id: bytes,
    keys: dict[str, bytes],
    head: tuple[int, bytes, int],
    now: int | None = None,
) -> Record:
    fields = {"segment": segment_name(segment.first, segment.last)}
    fields |= {"first_seq": segment.first, "last_seq": segment.last}
    body = encode("log.sealed", fields)
    try:
        EventLog.create_continuation(
            live, signer, log_id=log_id, keys=keys, head=head, first=("log.sealed", body), now=now
        )
    except OSError as e:
        raise StoreError("create live log file", live, e.strerror or str(e)) from e
    with EventLog.open_readonly(live) as new:
        record = new.first_row()
    assert record is not None  # create_continuation wrote it
    return record


def compress(segment: Segment) -> Segment:
    """Compress a plain sealed segment to .db.zst (0400) and remove the plain file."""
    if segment.compressed:
        return segment
    target = segment.path.with_name(segment.path.name + ".zst")
    tmp = target.with_name(target.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        fd = durable.os_open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out, segment.path.open("rb") as src:
            zstandard.ZstdCompressor(level=ZSTD_LEVEL).copy_stream(src, out)
            out.flush()
            durable.fsync(out.fileno())
        os.chmod(tmp, 0o400)
        after_step("compressing")
        os.rename(tmp, target)
        durable.fsync_dir(target.parent)
        segment.path.unlink()
        durable.fsync_dir(target.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StoreError("compress sealed segment", segment.path, e.strerror or str(e)) from e
    after_step("compressed")
    return Segment(segment.first, segment.last, target)


def decompress_to(segment: Segment, folder: Path) -> Path:
    """A plain copy of a compressed segment in `folder` (0600), for reading."""
    out_path = folder / segment.path.name.removesuffix(".zst")
    try:
        fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out, segment.path.open("rb") as src:
            zstandard.ZstdDecompressor().copy_stream(src, out, write_size=_COPY_CHUNK)
    except (OSError, zstandard.ZstdError) as e:
        out_path.unlink(missing_ok=True)
        why = e.strerror if isinstance(e, OSError) else f"not valid zstd data: {e}"
        raise StoreError("decompress sealed segment", segment.path, str(why)) from e
    return out_path


# -- recovery --------------------------------------------------------------------


def recover(live: Path, signer: Signer | None) -> bool:
    """Finish or undo a seal or compression a crash cut short; True if anything was done.

    Without a `signer` (a reader) only what needs no new row is done; a missing
    live file after a move is then left for the daemon to continue.
    """
    acted = False
    for leftover in (
        live.with_name(live.name + ".new"),
        live.with_name(live.name + ".new-journal"),
    ):
        if leftover.exists():
            leftover.unlink()
            acted = True
    folder = segments_dir(live)
    if folder.is_dir():
        for path in folder.glob("events-*.db.zst.tmp"):
            path.unlink()
            acted = True
        for path in folder.glob("events-*.db"):
            if _NAME.fullmatch(path.name) and path.with_name(path.name + ".zst").exists():
                path.unlink()
                acted = True
        for segment in list_segments(live):
            if segment.path.stat().st_mode & 0o777 != 0o400:
                _make_readonly(segment.path)
                acted = True
    if not live.exists() and signer is not None:
        found = list_segments(live)
        if found:
            _continue_after(live, signer, found[-1])
            acted = True
    if acted:
        durable.fsync_dir(live.parent)
    return acted


def _continue_after(live: Path, signer: Signer, segment: Segment) -> None:
    """Build the live file a seal did not get to (killed after the move)."""
    with EventLog.open_readonly(segment.path, immutable=True) as sealed:
        head = (sealed.head_seq, sealed.head_hash, sealed.head_ts)
        log_id, keys, first = sealed.log_id, sealed.public_keys(), sealed.first_seq
    # The name came from the seal that moved it; the rows are the truth.
    _continue(live, signer, Segment(first, head[0], segment.path), log_id, keys, head)


# -- pruning ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrunePlan:
    """The sealed segments `ifmem log prune` deletes, and the anchor it records first."""

    doomed: tuple[Segment, ...]
    first_kept_seq: int
    prev_hash: bytes  # the hash of the last row deleted: what the oldest kept row links to

    def fields(self) -> dict[str, object]:
        """The body of the `log.pruned` event."""
        return {"first_kept_seq": self.first_kept_seq, "prev_hash": self.prev_hash.hex()}


def plan_prune(
    found: list[Segment],
    first_row_after: Callable[[Segment], Record],
    *,
    before_seq: int | None = None,
    before_ns: int | None = None,
) -> PrunePlan:
    """Which of the sealed segments `found` (oldest first) hold only rows before
    `before_seq`, or only rows written before `before_ns`: always a run from
    the oldest, so that what is left has no hole. `first_row_after(s)` is the
    first row of the part after segment `s` (a segment, or the live file):
    its `prev` is `s`'s last hash, and its time bounds `s`'s last row's.

    Raises NothingToPruneError if no segment qualifies.
    """
    doomed: list[Segment] = []
    after: Record | None = None
    for segment in found:
        if before_seq is not None and segment.last >= before_seq:
            break
        following = first_row_after(segment)
        if before_ns is not None and following.ts_ns >= before_ns:
            # The seal that ended it came at or after the date: some of its
            # rows may not be older than that.
            break
        doomed.append(segment)
        after = following
    if not doomed or after is None:
        raise NothingToPruneError(before_seq, before_ns, found[0].name if found else None)
    return PrunePlan(tuple(doomed), after.seq, after.prev)


def delete_pruned(plan: PrunePlan) -> None:
    """Delete the plan's segments, oldest first (call once `log.pruned` is durable).

    A crash midway leaves the oldest of them: still a log without a hole, which
    `audit verify` accepts under the same anchor, and which a second prune
    finishes.
    """
    for segment in plan.doomed:
        try:
            segment.path.unlink(missing_ok=True)
        except OSError as e:
            raise StoreError("prune sealed segment", segment.path, e.strerror or str(e)) from e
    if plan.doomed:
        durable.fsync_dir(plan.doomed[0].path.parent)
