"""Snapshots of the projected state, so start-up replays only the log's tail.

A snapshot records the log it belongs to and the `seq` and `hash` it stands
on. It is derived data: one that does not match the log (another log, a hash
the log does not hold at that seq, an older projection) is ignored, never
trusted, and may be deleted at any time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ifmemd.log.chain import LogChain
from ifmemd.log.eventlog import EventLog
from ifmemd.log.state import PROJECTION_VERSION, State
from ifmemd.system import durable

FORMAT_TAG = "ifmem-snapshot-v1"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state with the log position it stands on."""

    log_id: bytes
    state: State


def save(path: Path, log_id: bytes, state: State) -> None:
    """Write a snapshot durably (replacing the previous one)."""
    doc = {
        "format": FORMAT_TAG,
        "projection": PROJECTION_VERSION,
        "log_id": log_id.hex(),
        "state": state.to_json(),
    }
    durable.ensure_private_dir(path.parent)
    durable.write_atomic(path, json.dumps(doc, separators=(",", ":")).encode())


def load(path: Path) -> tuple[Snapshot | None, str]:
    """The snapshot at `path` and "", or None and why it cannot be used."""
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None, "no snapshot"
    except (OSError, ValueError) as e:
        return None, f"unreadable snapshot: {e}"
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_TAG:
        return None, "not an ifmem snapshot"
    if doc.get("projection") != PROJECTION_VERSION:
        return None, f"projection version {doc.get('projection')} is not {PROJECTION_VERSION}"
    try:
        snap = Snapshot(bytes.fromhex(doc["log_id"]), State.from_json(doc["state"]))
    except (KeyError, TypeError, ValueError) as e:
        return None, f"malformed snapshot: {e}"
    # Replay counts on from this seq: anything but an int would crash it.
    if type(snap.state.seq) is not int or snap.state.seq < 0:
        return None, f"malformed snapshot: seq {snap.state.seq!r} is not a position in a log"
    return snap, ""


def usable(snap: Snapshot, log: EventLog | LogChain) -> str:
    """ "" when `snap` stands on a row this log holds, else why it does not."""
    if snap.log_id != log.log_id:
        return "snapshot belongs to another log"
    if snap.state.seq == 0:
        return ""
    record = log.record(snap.state.seq)
    if record is None:
        return f"the log has no seq {snap.state.seq}"
    if record.hash != snap.state.hash:
        return f"the log's hash at seq {snap.state.seq} differs from the snapshot's"
    return ""
