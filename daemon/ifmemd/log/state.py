"""The daemon's state as a fold over the event log.

`apply(state, event) -> state` is pure: it never changes its input. `fold`
applies many events at once through the same handlers on a private mutable
copy, which is what replay uses (copying maps per event would make replay
quadratic); a property test holds the two equal.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ifmemd.log.logformat import ZERO_HASH

PROJECTION_VERSION = 1
# How many answered query ids are remembered for idempotent retries. A client
# retries within seconds of a crash; older ids fall out, oldest first.
ANSWER_WINDOW = 65536


@dataclass(frozen=True, slots=True)
class Event:
    """A decoded event: its position, time, kind and its body upcast to the current version."""

    seq: int
    ts_ns: int
    kind: str
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Memory:
    """One remembered item of working memory."""

    memory_id: str
    text: str
    seq: int
    ts_ns: int


@dataclass(frozen=True, slots=True)
class ShardState:
    """What the log last said about a shard."""

    name: str
    status: str
    pid: int | None = None
    restarts: int = 0
    files: int = 0
    lines: int = 0
    tokens: int = 0
    digest: str = ""
    last_heartbeat_ns: int = 0


@dataclass(frozen=True, slots=True)
class PendingQuery:
    """A query that was received and has no final answer yet."""

    qid: str
    seq: int
    question: str


@dataclass(frozen=True, slots=True)
class State:
    """Everything the daemon knows, as of the event at `seq` whose hash is `hash`."""

    seq: int = 0
    hash: bytes = ZERO_HASH
    runs: int = 0
    memories: Mapping[str, Memory] = field(default_factory=dict)
    shards: Mapping[str, ShardState] = field(default_factory=dict)
    pending: Mapping[str, PendingQuery] = field(default_factory=dict)
    # request id -> seq of the event that answered it (query ids, remember/forget ids)
    answered: Mapping[str | int, int] = field(default_factory=dict)
    counts: Mapping[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON view (snapshots, `ifmem replay --json`)."""
        return {
            "seq": self.seq,
            "hash": self.hash.hex(),
            "runs": self.runs,
            "memories": [
                {"memory_id": m.memory_id, "text": m.text, "seq": m.seq, "ts_ns": m.ts_ns}
                for m in self.memories.values()
            ],
            "shards": [_shard_json(s) for s in self.shards.values()],
            "pending": [
                {"qid": p.qid, "seq": p.seq, "question": p.question} for p in self.pending.values()
            ],
            "answered": [[qid, seq] for qid, seq in self.answered.items()],
            "counts": dict(sorted(self.counts.items())),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> State:
        return cls(
            seq=data["seq"],
            hash=bytes.fromhex(data["hash"]),
            runs=data["runs"],
            memories={m["memory_id"]: Memory(**m) for m in data["memories"]},
            shards={s["name"]: ShardState(**s) for s in data["shards"]},
            pending={p["qid"]: PendingQuery(**p) for p in data["pending"]},
            answered={qid: seq for qid, seq in data["answered"]},
            counts=dict(data["counts"]),
        )


def _shard_json(s: ShardState) -> dict[str, Any]:
    return {
        "name": s.name,
        "status": s.status,
        "pid": s.pid,
        "restarts": s.restarts,
        "files": s.files,
        "lines": s.lines,
        "tokens": s.tokens,
        "digest": s.digest,
        "last_heartbeat_ns": s.last_heartbeat_ns,
    }


class _Draft:
    """A mutable working copy of a State, used inside `apply` and `fold`."""

    __slots__ = ("answer_order", "answered", "counts", "memories", "pending", "runs", "shards")

    def __init__(self, state: State) -> None:
        self.runs = state.runs
        self.memories = dict(state.memories)
        self.shards = dict(state.shards)
        self.pending = dict(state.pending)
        self.answered = dict(state.answered)
        self.counts = dict(state.counts)
        # (rid, seq) in the order answered, stale entries included: evicting
        # the oldest id from the front of the dict itself would walk over
        # every deleted slot there (27 µs an eviction on a full window).
        self.answer_order: deque[tuple[str | int, int]] = deque(self.answered.items())

    def freeze(self, seq: int, hash_: bytes) -> State:
        return State(
            seq,
            hash_,
            self.runs,
            self.memories,
            self.shards,
            self.pending,
            self.answered,
            self.counts,
        )

    def shard(self, name: str) -> ShardState:
        return self.shards.get(name) or ShardState(name, "unknown")


def _started(d: _Draft, e: Event) -> None:
    d.runs += 1


def _spawned(d: _Draft, e: Event) -> None:
    name = e.data["shard"]
    d.shards[name] = replace(d.shard(name), status="starting", pid=e.data["pid"])


def _ready(d: _Draft, e: Event) -> None:
    x = e.data
    d.shards[x["shard"]] = replace(
        d.shard(x["shard"]),
        status="ready",
        files=x["files"],
        lines=x["lines"],
        tokens=x["tokens"],
        digest=x["digest"],
    )


def _heartbeat(d: _Draft, e: Event) -> None:
    name = e.data["shard"]
    d.shards[name] = replace(d.shard(name), last_heartbeat_ns=e.ts_ns)


def _heartbeats(d: _Draft, e: Event) -> None:
    for name in e.data["beats"]:
        d.shards[name] = replace(d.shard(name), last_heartbeat_ns=e.ts_ns)


def _status(status: str) -> Callable[[_Draft, Event], None]:
    def handler(d: _Draft, e: Event) -> None:
        name = e.data["shard"]
        shard = replace(d.shard(name), status=status)
        if status == "restarting":
            shard = replace(shard, restarts=e.data["restarts"])
        d.shards[name] = shard

    return handler


def _received(d: _Draft, e: Event) -> None:
    qid = e.data["qid"]
    d.pending[qid] = PendingQuery(qid, e.seq, e.data["question"])


def _finished(d: _Draft, e: Event) -> None:
    qid = e.data["qid"]
    d.pending.pop(qid, None)
    _answered(d, qid, e.seq)


def _answered(d: _Draft, rid: str | int, seq: int) -> None:
    d.answered.pop(rid, None)
    d.answered[rid] = seq
    d.answer_order.append((rid, seq))
    if len(d.answered) > ANSWER_WINDOW:
        # The oldest entry still current is the dict's first key: drop it.
        while True:
            old, old_seq = d.answer_order.popleft()
            if d.answered.get(old) == old_seq:
                del d.answered[old]
                break


def _remembered(d: _Draft, e: Event) -> None:
    mid = e.data["memory_id"]
    d.memories[mid] = Memory(mid, e.data["text"], e.seq, e.ts_ns)
    if e.data.get("rid") is not None:
        _answered(d, e.data["rid"], e.seq)


def _forgotten(d: _Draft, e: Event) -> None:
    d.memories.pop(e.data["memory_id"], None)
    if e.data.get("rid") is not None:
        _answered(d, e.data["rid"], e.seq)


HANDLERS: dict[str, Callable[[_Draft, Event], None]] = {
    "daemon.started": _started,
    "shard.spawned": _spawned,
    "shard.ready": _ready,
    "shard.heartbeat": _heartbeat,
    "shard.heartbeats": _heartbeats,
    "shard.exited": _status("exited"),
    "shard.restarting": _status("restarting"),
    "shard.failed": _status("failed"),
    "query.received": _received,
    "query.answered": _finished,
    "query.failed": _finished,
    "query.abandoned": _finished,
    "memory.remembered": _remembered,
    "memory.forgotten": _forgotten,
}


def _step(d: _Draft, e: Event) -> None:
    d.counts[e.kind] = d.counts.get(e.kind, 0) + 1
    handler = HANDLERS.get(e.kind)
    if handler is not None:
        handler(d, e)


def reads_body(kind: str) -> bool:
    """Whether applying an event of `kind` reads its body (other kinds are only counted)."""
    return kind in HANDLERS


def apply(state: State, event: Event, hash_: bytes = ZERO_HASH) -> State:
    """The state after `event`; `state` is left unchanged."""
    draft = _Draft(state)
    _step(draft, event)
    return draft.freeze(event.seq, hash_)


class Projection:
    """The live state of a running daemon, advanced as events commit.

    Holds one private mutable draft, so advancing costs only the event's own
    change; `state()` hands out an immutable copy (for snapshots and replies).
    """

    def __init__(self, start: State) -> None:
        self._draft = _Draft(start)
        self.seq = start.seq
        self.hash = start.hash

    def advance(self, event: Event, hash_: bytes) -> None:
        _step(self._draft, event)
        self.seq, self.hash = event.seq, hash_

    def state(self) -> State:
        return _Draft(self._draft.freeze(self.seq, self.hash)).freeze(self.seq, self.hash)

    # Read-only views of the draft for the daemon's hot paths; not to be mutated.
    @property
    def memories(self) -> Mapping[str, Memory]:
        return self._draft.memories

    @property
    def answered(self) -> Mapping[str, int]:
        return self._draft.answered

    @property
    def pending(self) -> Mapping[str, PendingQuery]:
        return self._draft.pending


def fold(state: State, events: Iterable[tuple[Event, bytes]]) -> State:
    """Apply `(event, hash)` pairs in order; equal to applying them one by one."""
    projection = Projection(state)
    for event, h in events:
        projection.advance(event, h)
    return projection.state() if projection.seq != state.seq else state
