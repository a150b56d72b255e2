"""The auditor: verify every row of a log, and say which is the first bad one and why.

Each row must hash (with this log's `log_id`) to its stored hash, link to the
previous row's hash, carry a key the log (or the auditor, `--pubkey`) knows,
and a valid Ed25519 signature by it; seqs run 1, 2, 3… without gaps. A
checkpoint proves the log still holds a (seq, hash) it once had, which is how
a truncated tail is caught.

Signature checks dominate (≈50 µs a row), so the seq range is split across
processes, one per core; each reports the first failure in its range and the
lowest one wins. When a row fails, `classify` looks at the whole log once more
to name the cause: modified, bad signature, unknown key, gap, reordered,
duplicated, renumbered, or a row from another log.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ifmemd.log import checkpoint as cp
from ifmemd.log.chain import LogChain
from ifmemd.log.eventlog import EventLog
from ifmemd.log.keys import verify as verify_sig
from ifmemd.log.logformat import ZERO_HASH, event_hash

# Reasons, as printed and as `--json` reports them.
MODIFIED = "modified"
BAD_SIGNATURE = "bad signature"
UNKNOWN_KEY = "unknown key"
GAP = "gap"
REORDERED = "reordered"
DUPLICATED = "duplicated"
RENUMBERED = "renumbered"
FOREIGN = "row from another log"
TRUNCATED = "truncated"
CHECKPOINT = "checkpoint mismatch"

# Below this many rows, spawning processes costs more than it saves.
PARALLEL_MIN_ROWS = 20000


@dataclass(frozen=True, slots=True)
class Failure:
    """The first row that does not hold, and why."""

    seq: int
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.reason}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Report:
    """What `audit verify` found."""

    path: Path
    log_id: bytes
    rows: int
    head_seq: int
    checkpoints: int
    failure: Failure | None
    segments: int = 0
    first_seq: int = 1  # verified from here: above 1 once segments were pruned
    pruned_at: int | None = None  # the seq of the `log.pruned` that vouches for it

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def pruned_note(self) -> str:
        """ "verified from seq N; seq 1–N-1 pruned at seq M", or "" for a whole log."""
        if self.pruned_at is None:
            return ""
        n = self.first_seq
        return f"verified from seq {n}; seq 1\u2013{n - 1} pruned at seq {self.pruned_at}"

    def to_json(self) -> dict[str, Any]:
        f = self.failure
        return {
            "ok": self.ok,
            "db": str(self.path),
            "log_id": self.log_id.hex(),
            "rows": self.rows,
            "head_seq": self.head_seq,
            "checkpoints": self.checkpoints,
            "segments": self.segments,
            "first_seq": self.first_seq,
            "pruned_at": self.pruned_at,
            "failure": None
            if f is None
            else {"seq": f.seq, "reason": f.reason, "detail": f.detail},
        }


@dataclass(frozen=True, slots=True)
class _RowFault:
    """A cheap first finding in a scan, classified later against the whole log."""

    seq: int  # the expected seq at the point of failure
    stored_seq: int | None  # the seq of the row that was there (None: log ended)
    check: str  # which check failed: seq, type, text, hash, link, key, sig


def _scan(
    path: str,
    lo: int,
    hi: int,
    keys: Mapping[str, bytes],
    signatures: bool,
    sealed: bool = False,
    first_prev: bytes | None = None,
) -> tuple[int, _RowFault | None]:
    """Check rows lo..hi (inclusive) of the file at `path`; returns rows seen and the
    first fault. `first_prev` is the hash row `lo` must link to when the row
    before it is not in this file (the end of the previous part, a prune anchor)."""
    with EventLog.open_readonly(Path(path), immutable=sealed) as log:
        log_id = log.log_id
        prev: bytes | None = ZERO_HASH
        if first_prev is not None:
            prev = first_prev
        elif lo > 1:
            before = _readable(log, lo - 2, lo - 1)
            prev = before[0][5] if before and _misstored(before[0]) is None else None
        expected = lo
        seen = 0
        try:
            for row in log.rows(lo - 1, hi):
                seq, ts_ns, kind, body, row_prev, row_hash, key_id, sig = row
                seen += 1
                if seq != expected:
                    return seen, _RowFault(expected, seq, "seq")
                if _misstored(row) is not None:
                    return seen, _RowFault(seq, seq, "type")
                if event_hash(log_id, seq, ts_ns, kind.encode(), body, row_prev) != row_hash:
                    return seen, _RowFault(seq, seq, "hash")
                if row_prev != prev:
                    return seen, _RowFault(seq, seq, "link")
                public = keys.get(key_id)
                if public is None:
                    return seen, _RowFault(seq, seq, "key")
                if signatures and not verify_sig(public, row_hash, sig):
                    return seen, _RowFault(seq, seq, "sig")
                prev = row_hash
                expected += 1
        except UnicodeDecodeError:
            # Only an edit of the file puts invalid UTF-8 in a TEXT column; the
            # driver refuses to decode the next row, which is the first bad one.
            return seen, _RowFault(expected, None, "text")
        if expected <= hi:
            # Rows missing at the end of a range that stops short of the head
            # are a gap, not the end of the log.
            return seen, _RowFault(expected, None, "seq")
        return seen, None


_SQL_TYPES = {int: "an integer", float: "a real", str: "text", bytes: "a blob", type(None): "null"}
_COLUMN_TYPES = (
    ("seq", int),
    ("ts_ns", int),
    ("kind", str),
    ("body", bytes),
    ("prev", bytes),
    ("hash", bytes),
    ("key_id", str),
    ("sig", bytes),
)


def _misstored(row: tuple[Any, ...]) -> str | None:
    """Name a column stored as a type the format does not allow (only an edit does that)."""
    for (name, want), value in zip(_COLUMN_TYPES, row, strict=True):
        if type(value) is not want:
            return f"{name} is stored as {_SQL_TYPES.get(type(value), type(value).__name__)}"
    return None


def _readable(log: EventLog, after: int = -(2**62), upto: int | None = None) -> list[Any]:
    """Rows after < seq <= upto in seq order, up to the first one the driver cannot decode."""
    out = []
    try:
        for row in log.rows(after, upto):
            out.append(row)
    except UnicodeDecodeError:
        pass  # reported by the scan when it reaches that row
    return out


def _ranges(head: int, parts: int) -> list[tuple[int, int]]:
    step = -(-head // parts)
    return [(lo, min(lo + step - 1, head)) for lo in range(1, head + 1, step)]


@dataclass(frozen=True, slots=True)
class _Part:
    """One file of the log as the verifier reads it: a sealed segment or the live file."""

    name: str  # as reported: the segment's file name, or the live file's
    path: str  # a plain SQLite file (a temporary copy of a compressed segment)
    sealed: bool
    log: EventLog
    first: int  # the seq of its first row (0: it has none)
    last: int


def verify_log(
    path: Path,
    *,
    checkpoints: Iterable[cp.Checkpoint] = (),
    pubkeys: Iterable[bytes] = (),
    jobs: int | None = None,
    signatures: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Verify the log whose live file is `path`, its sealed segments included;
    `pubkeys`, if given, replace the log's own keys table."""
    from ifmemd.log.logformat import key_id_of

    # The chain's files stay open while the workers open them: with a
    # connection holding the WAL index, their read-only opens need no recovery,
    # which would make them race for it and fail with "database is locked".
    with LogChain.open(path) as chain:
        log_id = chain.log_id
        keys = {key_id_of(k): k for k in pubkeys} or chain.public_keys()
        checkpoints = list(checkpoints)
        parts = _parts(chain)
        head = max((p.last for p in parts), default=0)
        failure, start_prev, pruned_at = _check_layout(chain, parts, log_id)
        first_seq = next((p.first for p in parts if p.first), 1)
        rows = 0
        if failure is None:
            failure, rows = _scan_parts(parts, start_prev, keys, jobs, signatures, progress)
        if failure is None and pruned_at is not None:
            failure = _check_anchor(chain, pruned_at)
        if failure is None:
            failure = _check_checkpoints(chain, checkpoints, keys, head, first_seq)
    # Lines of other logs in the file are skipped, so they vouch for nothing here.
    mine = sum(1 for c in checkpoints if c.log_id == log_id)
    segments_n = sum(1 for p in parts if p.sealed)
    return Report(path, log_id, rows, head, mine, failure, segments_n, first_seq, pruned_at)


def _parts(chain: LogChain) -> list[_Part]:
    """The log's files with the seqs each should hold: a segment what its name
    says, the live file from its `meta.first_seq` to its head."""
    parts = []
    for segment in chain.segments:
        log = chain.part(segment)
        path = str(chain.readable_path(segment))
        parts.append(_Part(segment.name, path, True, log, segment.first, segment.last))
    live = chain.live
    if live is not None and live.head_seq:
        parts.append(
            _Part(live.path.name, str(live.path), False, live, live.first_seq, live.head_seq)
        )
    return parts


def _check_layout(
    chain: LogChain, parts: list[_Part], log_id: bytes
) -> tuple[Failure | None, bytes, int | None]:
    """Check that the files fit together: each belongs to this log, holds what its
    name says, and starts where the one before it ended; a log that does not
    start at seq 1 needs a `log.pruned` anchor. Returns the first failure, the
    hash the oldest row must link to, and the seq of the anchor used."""
    for part in parts:
        if part.log.log_id != log_id:
            return (
                Failure(
                    part.first,
                    FOREIGN,
                    f"segment {part.name} belongs to log {part.log.log_id.hex()}, "
                    f"not to this log ({log_id.hex()})",
                ),
                ZERO_HASH,
                None,
            )
    for part in parts:
        first = part.log.first_row()
        held = (first.seq, part.log.head_seq) if first is not None else (0, 0)
        # Rows missing at either end are gaps, which the scan names; a file
        # holding none of the seqs its name says was renamed or moved.
        if part.sealed and (held[1] < part.first or held[0] > part.last):
            what = f"seq {held[0]}\u2013{held[1]}" if held[0] else "no rows"
            return (
                Failure(
                    part.first,
                    REORDERED,
                    f"segment {part.name} holds {what}, not the seqs its name says "
                    "(renamed or reordered)",
                ),
                ZERO_HASH,
                None,
            )
    held = [p for p in parts if p.first]
    for before, after in itertools.pairwise(held):
        if after.first > before.last + 1:
            return (
                Failure(
                    before.last + 1,
                    GAP,
                    f"seq {before.last + 1}\u2013{after.first - 1} are missing: no segment "
                    f"holds them between {before.name} and {after.name} (a segment removed?)",
                ),
                ZERO_HASH,
                None,
            )
        if after.first <= before.last:
            return (
                Failure(
                    after.first,
                    DUPLICATED,
                    f"{before.name} and {after.name} both hold seq {after.first}",
                ),
                ZERO_HASH,
                None,
            )
    if not held or held[0].first == 1:
        return None, ZERO_HASH, None
    oldest = held[0]
    for anchor in chain.kind_rows("log.pruned"):
        kept = anchor.data().get("first_kept_seq")
        # A prune killed midway leaves some of the segments it was deleting,
        # oldest last: rows it meant to drop may still be there, never fewer.
        if isinstance(kept, int) and oldest.first <= kept:
            first_row = oldest.log.first_row()
            return None, first_row.prev if first_row else ZERO_HASH, anchor.seq
    return (
        Failure(
            1,
            GAP,
            f"seq 1\u2013{oldest.first - 1} are missing and no log.pruned event vouches for "
            f"their removal (the oldest file is {oldest.name})",
        ),
        ZERO_HASH,
        None,
    )


def _check_anchor(chain: LogChain, at: int) -> Failure | None:
    """The `log.pruned` at seq `at` (verified with the rest) names the hash its
    first kept row links to: check that it does."""
    anchor = chain.record(at)
    assert anchor is not None
    body = anchor.data()
    kept = body["first_kept_seq"]
    row = chain.record(kept)
    if row is None or row.prev.hex() != body.get("prev_hash"):
        return Failure(
            kept,
            MODIFIED,
            f"the log.pruned at seq {at} says seq {kept} links to hash "
            f"{body.get('prev_hash')!r}; the row stored there does not",
        )
    return None


def _scan_parts(
    parts: list[_Part],
    start_prev: bytes,
    keys: Mapping[str, bytes],
    jobs: int | None,
    signatures: bool,
    progress: Callable[[int, int], None] | None,
) -> tuple[Failure | None, int]:
    """Check every row of every part; the first failure (classified) and rows seen."""
    held = [p for p in parts if p.first]
    total = sum(p.last - p.first + 1 for p in held)
    jobs = jobs or os.cpu_count() or 1
    # (part, lo, hi, the hash row lo links to when the row before it is in another part)
    chunks: list[tuple[_Part, int, int, bytes | None]] = []
    prev_last = start_prev
    for part in held:
        n = part.last - part.first + 1
        pieces = (
            1
            if total < PARALLEL_MIN_ROWS or jobs == 1
            else max(1, n * max(jobs * 8, total // 50000) // total)
        )
        for k, (lo, hi) in enumerate(_ranges(n, pieces)):
            lo, hi = lo + part.first - 1, hi + part.first - 1
            chunks.append((part, lo, hi, prev_last if k == 0 else None))
        prev_last = part.log.head_hash
    fault: tuple[_Part, _RowFault, bytes | None] | None = None
    rows = done = 0
    if jobs == 1 or total < PARALLEL_MIN_ROWS:
        for part, lo, hi, first_prev in chunks:
            seen, found = _scan(part.path, lo, hi, keys, signatures, part.sealed, first_prev)
            rows += seen
            if found is not None:
                fault = (part, found, first_prev)
                break
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [
                pool.submit(_scan, part.path, lo, hi, keys, signatures, part.sealed, first_prev)
                for part, lo, hi, first_prev in chunks
            ]
            for (part, lo, hi, first_prev), future in zip(chunks, futures, strict=True):
                seen, found = future.result()
                rows += seen
                done += hi - lo + 1
                if progress is not None:
                    progress(done, total)
                if found is not None:
                    fault = (part, found, first_prev)
                    for later in futures:
                        later.cancel()
                    break
    if fault is not None:
        part, found, first_prev = fault
        boundary = first_prev if found.seq == part.first else None
        failure = classify(part.log, found, keys, boundary)
        if part.sealed:
            failure = Failure(
                failure.seq, failure.reason, f"in segment {part.name}: {failure.detail}"
            )
        return failure, rows
    # Rows past a part's head would have been caught as gaps; count them.
    return None, max(rows, sum(_count(p.log) for p in held))


def _count(log: EventLog) -> int:
    return len(_readable(log))


def _check_checkpoints(
    log: LogChain,
    checkpoints: list[cp.Checkpoint],
    keys: Mapping[str, bytes],
    head: int,
    first_seq: int = 1,
) -> Failure | None:
    for c in checkpoints:
        if c.log_id != log.log_id:
            continue  # a checkpoints file may hold several logs' lines
        public = keys.get(c.key_id)
        if public is None or not c.signature_holds(public):
            return Failure(c.seq, CHECKPOINT, "the checkpoint's own signature does not hold")
        if c.seq < first_seq:
            continue  # it vouches for rows that were pruned
        if c.seq > head:
            return Failure(
                head + 1,
                TRUNCATED,
                f"the log ends at seq {head} but a checkpoint vouches for seq {c.seq}",
            )
        row = log.record(c.seq)
        if row is None or row.hash != c.hash:
            return Failure(
                c.seq, CHECKPOINT, "the log's hash at this seq differs from the checkpoint"
            )
    if checkpoints and not any(c.log_id == log.log_id for c in checkpoints):
        return Failure(0, CHECKPOINT, "no checkpoint in the file belongs to this log")
    return None


def _recompute(log_id: bytes, row: Any, seq: int) -> bytes:
    _s, ts_ns, kind, body, prev, _h, _k, _sig = row
    return event_hash(log_id, seq, ts_ns, kind.encode(), bytes(body), bytes(prev))


def classify(
    log: EventLog, fault: _RowFault, keys: Mapping[str, bytes], first_prev: bytes | None = None
) -> Failure:
    """Name the cause of a fault, looking at the whole file once more; `first_prev` is
    what the faulty row should link to when the row before it is in another file."""
    log_id = log.log_id
    k = fault.seq
    if fault.check == "text":
        return Failure(k, MODIFIED, "a TEXT column (kind or key_id) holds bytes that are not UTF-8")
    all_rows = _readable(log)
    by_seq = {r[0]: r for r in all_rows}
    if fault.check == "type":
        return Failure(k, MODIFIED, f"{_misstored(by_seq[k])}, which the format does not allow")
    # Only well-typed rows can be hashed; a misstored one is reported when the scan reaches it.
    typed = [r for r in all_rows if _misstored(r) is None]
    before = by_seq.get(k - 1)
    prev_hash = before[5] if before is not None and _misstored(before) is None else ZERO_HASH
    if first_prev is not None:
        prev_hash = first_prev
    by_hash: dict[bytes, list[int]] = {}
    for r in typed:
        by_hash.setdefault(r[5], []).append(r[0])

    def original_seq(row: Any) -> int | None:
        """The seq a row was signed at, if it hashes correctly at some seq of this log."""
        candidates = range(1, max(log.head_seq, row[0]) + 2)
        return next((s for s in candidates if _recompute(log_id, row, s) == bytes(row[5])), None)

    if fault.check == "seq":
        if fault.stored_seq is not None and fault.stored_seq < k:
            return Failure(k - 1, DUPLICATED, f"seq {fault.stored_seq} appears more than once")
        # A row that belongs at k may be stored elsewhere (renumbered).
        for r in typed:
            if r[4] == prev_hash and r[0] != k and _recompute(log_id, r, k) == r[5]:
                return Failure(k, RENUMBERED, f"the row signed as seq {k} is stored as seq {r[0]}")
        following = fault.stored_seq or next((r[0] for r in all_rows if r[0] > k), None)
        return Failure(k, GAP, f"seq {k} is missing (the next row is seq {following})")

    row = by_seq[k]
    stored_hash = bytes(row[5])
    if fault.check == "hash":
        copies = [s for s in by_hash.get(stored_hash, []) if s != k]
        if copies:
            return Failure(k, DUPLICATED, f"a copy of the row at seq {copies[0]}")
        signed_as = original_seq(row)
        if signed_as is not None:
            return Failure(k, REORDERED, f"the row stored at seq {k} was signed as seq {signed_as}")
        _s, ts_ns, kind, body, row_prev, _h, key_id, sig = row
        if event_hash(log_id, k, ts_ns, kind.encode(), body, prev_hash) == stored_hash:
            return Failure(k, MODIFIED, "its prev was altered (the rest hashes to its stored hash)")
        links_back = row_prev == prev_hash
        nxt = by_seq.get(k + 1)
        public = keys.get(key_id)
        signed = public is not None and verify_sig(public, stored_hash, sig)
        # An edited row keeps its place in the chain: the next row still links
        # to its stored hash. A row lifted from another log links to neither
        # neighbour, except at seq 1, where every log's prev is zero; there,
        # its own valid signature tells it from a row whose hash was garbled.
        if nxt is not None and nxt[4] == stored_hash:
            foreign = False
        elif nxt is None:
            foreign = not links_back
        else:
            foreign = not links_back or public is None or signed
        if foreign:
            how = "validly signed by a key this log holds" if signed else f"signed by {key_id!r}"
            return Failure(k, FOREIGN, f"{how}, but it is not part of this log's hash chain")
        return Failure(k, MODIFIED, "the row's content does not hash to its stored hash")
    if fault.check == "link":
        # Both rows hash and sign correctly, yet do not chain: one of them was
        # replaced by a row signed with a key the log holds (a moved row would
        # fail its hash, which covers its seq).
        return Failure(
            k,
            MODIFIED,
            "prev does not match the hash of the row before it; one of the two was "
            "replaced by a row signed with a key the log holds (try --pubkey)",
        )
    if fault.check == "key":
        return Failure(k, UNKNOWN_KEY, f"signed by key {row[6]!r}, which the log does not hold")
    return Failure(k, BAD_SIGNATURE, f"the signature does not verify with key {row[6]!r}")
