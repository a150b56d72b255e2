"""Rebuild the state from the log: snapshot, then the tail with its hash chain checked.

Start-up checks the chain of every row it replays (recomputing each hash and
its link to the previous one); signatures are the auditor's job
(`ifmem audit verify`), which uses every core. A log whose oldest segments
were pruned is replayed from the oldest row it still holds, unless a snapshot
stands later.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ifmemd.errors import ChainError
from ifmemd.log import snapshot as snapshots
from ifmemd.log.chain import LogChain
from ifmemd.log.eventlog import EventLog
from ifmemd.log.events import decode
from ifmemd.log.logformat import ZERO_HASH, event_hash
from ifmemd.log.state import Event, State, fold


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """The rebuilt state and how it was reached."""

    state: State
    from_snapshot: int  # seq the snapshot stood on (0: replayed from the start)
    replayed: int  # events replayed after it
    snapshot_note: str  # why no snapshot was used, if none was


def checked_events(
    log: EventLog | LogChain, after: int, prev: bytes, upto: int | None = None
) -> Iterator[tuple[Event, bytes]]:
    """Decoded events after `after`, checking each row's hash and link; raises ChainError."""
    log_id = log.log_id
    expected = after + 1
    for seq, ts_ns, kind, body, row_prev, row_hash, _key_id, _sig in log.rows(after, upto):
        if seq != expected:
            raise ChainError(expected, f"seq {expected} is missing (next row is {seq})")
        body = bytes(body)
        if row_prev != prev:
            raise ChainError(seq, "prev does not match the previous row's hash")
        if event_hash(log_id, seq, ts_ns, kind.encode(), body, prev) != row_hash:
            raise ChainError(seq, "the row does not hash to its stored hash (modified)")
        prev = bytes(row_hash)
        expected += 1
        yield Event(seq, ts_ns, kind, decode(seq, kind, body)), prev


def check_chain(log: EventLog, after: int = 0, prev: bytes | None = None) -> int:
    """Check the hash chain after `after` without decoding bodies; returns rows checked."""
    prev = ZERO_HASH if prev is None else prev
    log_id = log.log_id
    expected = after + 1
    for seq, ts_ns, kind, body, row_prev, row_hash, _key_id, _sig in log.rows(after):
        if seq != expected:
            raise ChainError(expected, f"seq {expected} is missing (next row is {seq})")
        if row_prev != prev:
            raise ChainError(seq, "prev does not match the previous row's hash")
        if event_hash(log_id, seq, ts_ns, kind.encode(), body, prev) != row_hash:
            raise ChainError(seq, "the row does not hash to its stored hash (modified)")
        prev = row_hash
        expected += 1
    return expected - after - 1


def replay(
    log: EventLog | LogChain, *, snapshot_path: Path | None = None, upto: int | None = None
) -> ReplayResult:
    """The state at `upto` (default: the head), from a usable snapshot if there is one."""
    start = State()
    used = 0  # the seq of the snapshot started from, if one was
    note = "no snapshot path given"
    if snapshot_path is not None:
        snap, note = snapshots.load(snapshot_path)
        if snap is not None:
            note = snapshots.usable(snap, log)
            if not note and upto is not None and snap.state.seq > upto:
                note = f"snapshot stands on seq {snap.state.seq}, after --upto {upto}"
            if not note:
                start, used = snap.state, snap.state.seq
    if isinstance(log, LogChain) and start.seq < log.first_seq - 1:
        # Pruned: what the deleted rows said is gone; the chain starts from the
        # hash the oldest kept row links to (the auditor checks it against
        # `log.pruned`).
        note = f"the log was pruned before seq {log.first_seq}; replayed from there" + (
            f" ({note})" if note else ""
        )
        start = State(seq=log.first_seq - 1, hash=log.first_prev)
    state = fold(start, checked_events(log, start.seq, start.hash, upto))
    return ReplayResult(state, used, state.seq - start.seq, note)
