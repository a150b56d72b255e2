"""The state is a fold over the log: `apply` is pure, `replay` (fast `fold`) equals it,
snapshots only shorten replay, old event versions are upcast on read."""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ifmemd.errors import ChainError, UnknownEventError
from ifmemd.log import snapshot
from ifmemd.log.eventlog import EventLog, Record
from ifmemd.log.events import decode
from ifmemd.log.keys import Signer
from ifmemd.log.logformat import canonical_json
from ifmemd.log.replay import checked_events, replay
from ifmemd.log.state import Event, State, apply
from logfactory import encode

SIGNER = Signer.generate()

# Each example writes a real log; keep the count modest so the file stays fast.
PROPERTY = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Few names, so that forgets, answers and shard transitions hit earlier events.
ids = st.sampled_from(["a", "b", "c", "d"])
shards = st.sampled_from(["docs", "code", "working"])
small = st.integers(min_value=0, max_value=10**6)
text = st.text(max_size=30)

# Remember/forget may carry the client's request id (`rid`), recorded as answered.
rids = st.one_of(st.just({}), st.builds(lambda r: {"rid": r}, st.sampled_from(["r1", "r2", "a"])))

EVENTS = st.one_of(
    st.builds(
        lambda m, t, r: ("memory.remembered", {"memory_id": m, "text": t, **r}), ids, text, rids
    ),
    st.builds(lambda m, r: ("memory.forgotten", {"memory_id": m, **r}), ids, rids),
    st.builds(
        lambda q, t, s: ("query.received", {"qid": q, "question": t, "shards": s}),
        ids,
        text,
        st.lists(shards, max_size=3),
    ),
    st.builds(
        lambda q: ("query.answered", {"qid": q, "passages": [], "missing": [], "results": []}),
        ids,
    ),
    st.builds(lambda q, t: ("query.failed", {"qid": q, "reason": t}), ids, text),
    st.builds(lambda q, t: ("query.abandoned", {"qid": q, "reason": t}), ids, text),
    st.builds(lambda s, p: ("shard.spawned", {"shard": s, "pid": p}), shards, small),
    st.builds(
        lambda s, f, n, k, d: (
            "shard.ready",
            {"shard": s, "files": f, "lines": n, "tokens": k, "digest": d, "load_ms": 3},
        ),
        shards,
        small,
        small,
        small,
        st.text(alphabet="0123456789abcdef", min_size=8, max_size=8),
    ),
    # Logs written before heartbeat rounds hold one row per heartbeat.
    st.builds(
        lambda s, r: ("shard.heartbeat", {"shard": s, "rss_bytes": r, "served": 1, "uptime_s": 2}),
        shards,
        small,
    ),
    st.builds(
        lambda heard, silent: (
            "shard.heartbeats",
            {
                "beats": {s: [[1 << 20, 1, 2.5]] for s in heard},
                "silent": [s for s in silent if s not in heard],
            },
        ),
        st.lists(shards, max_size=3, unique=True),
        st.lists(shards, max_size=2, unique=True),
    ),
    st.builds(lambda s, c: ("shard.exited", {"shard": s, "code": c}), shards, small),
    st.builds(
        lambda s, r: ("shard.restarting", {"shard": s, "delay_s": 0.5, "restarts": r}),
        shards,
        small,
    ),
    st.builds(lambda s, t: ("shard.failed", {"shard": s, "reason": t}), shards, text),
    st.builds(lambda p: ("daemon.started", {"pid": p, "version": "0.1.0"}), small),
)

# Several batches, so that rows of one log carry different timestamps.
BATCHES = st.lists(st.lists(EVENTS, min_size=1, max_size=8), min_size=1, max_size=6)


@contextlib.contextmanager
def fresh_log() -> Iterator[EventLog]:
    with tempfile.TemporaryDirectory() as d, EventLog.open(Path(d) / "events.db", SIGNER) as log:
        yield log


def append_all(log: EventLog, batches: list[list[tuple[str, dict[str, Any]]]]) -> list[Record]:
    records: list[Record] = []
    for batch in batches:
        records += log.append_batch([(kind, encode(kind, fields)) for kind, fields in batch])
    return records


def one_by_one(records: list[Record], start: State | None = None) -> State:
    return functools.reduce(
        lambda state, r: apply(
            state, Event(r.seq, r.ts_ns, r.kind, decode(r.seq, r.kind, r.body)), r.hash
        ),
        records,
        start or State(),
    )


@PROPERTY
@given(batches=BATCHES)
def test_replay_equals_applying_events_one_by_one(batches: list[list[Any]]) -> None:
    with fresh_log() as log:
        records = append_all(log, batches)
        result = replay(log)
    expected = one_by_one(records)
    assert result.state == expected
    assert result.state.to_json() == expected.to_json()
    assert (result.state.seq, result.state.hash) == (records[-1].seq, records[-1].hash)
    assert result.replayed == len(records)
    assert sum(result.state.counts.values()) == len(records)


@PROPERTY
@given(batches=BATCHES, data=st.data())
def test_snapshot_plus_tail_equals_full_replay(
    batches: list[list[Any]], data: st.DataObject
) -> None:
    with fresh_log() as log, tempfile.TemporaryDirectory() as d:
        records = append_all(log, batches)
        at = data.draw(st.integers(min_value=0, max_value=len(records)), label="snapshot seq")
        path = Path(d) / "snapshot.json"
        snapshot.save(path, log.log_id, replay(log, upto=at).state)
        full = replay(log)
        from_snapshot = replay(log, snapshot_path=path)
        upto = data.draw(st.integers(min_value=at, max_value=len(records)), label="upto")
        partial = replay(log, snapshot_path=path, upto=upto)
    assert from_snapshot.snapshot_note == ""
    assert from_snapshot.from_snapshot == at
    assert from_snapshot.replayed == len(records) - at
    assert from_snapshot.state == full.state
    assert partial.from_snapshot == at
    assert partial.state == one_by_one(records[:upto])


@PROPERTY
@given(batches=BATCHES)
def test_apply_never_changes_its_input(batches: list[list[Any]]) -> None:
    with fresh_log() as log:
        records = append_all(log, batches)
    state = State()
    for r in records:
        before = copy.deepcopy(state)
        before_json = json.dumps(state.to_json())
        event = Event(r.seq, r.ts_ns, r.kind, decode(r.seq, r.kind, r.body))
        event_before = copy.deepcopy(event)
        after = apply(state, event, r.hash)
        assert state == before
        assert json.dumps(state.to_json()) == before_json
        assert event == event_before
        # A new state never shares a mutable map with the old one.
        for name in ("memories", "shards", "pending", "answered", "counts"):
            assert getattr(after, name) is not getattr(state, name)
        # Same input, same output: apply keeps no hidden state.
        assert apply(before, event, r.hash) == after
        state = after


def test_fold_of_a_known_history() -> None:
    with fresh_log() as log:
        append_all(
            log,
            [
                [("daemon.started", {"pid": 1, "version": "0"})],
                [
                    ("memory.remembered", {"memory_id": "a", "text": "alpha"}),
                    ("memory.remembered", {"memory_id": "b", "text": "beta", "rid": "r9"}),
                    ("memory.forgotten", {"memory_id": "a"}),
                    ("query.received", {"qid": "q1", "question": "?", "shards": []}),
                    ("query.received", {"qid": "q2", "question": "??", "shards": []}),
                    ("query.answered", {"qid": "q1", "passages": [], "missing": [], "results": []}),
                    ("shard.spawned", {"shard": "docs", "pid": 42}),
                    ("shard.restarting", {"shard": "docs", "delay_s": 1, "restarts": 2}),
                ],
            ],
        )
        state = replay(log).state
    assert state.runs == 1
    assert list(state.memories) == ["b"]
    assert state.memories["b"].text == "beta"
    assert list(state.pending) == ["q2"]
    assert state.answered == {"r9": 3, "q1": 7}
    assert state.shards["docs"].status == "restarting"
    assert state.shards["docs"].pid == 42
    assert state.shards["docs"].restarts == 2
    assert state.counts["query.received"] == 2


# -- upcasting -------------------------------------------------------------------


def test_v1_heartbeat_is_upcast_on_read_and_never_rewritten(log: EventLog) -> None:
    v1 = canonical_json({"shard": "docs", "rss_kb": 1536, "served": 3, "uptime_s": 9, "v": 1})
    [record] = log.append_batch([("shard.heartbeat", v1)])
    [(event, _hash)] = list(checked_events(log, 0, bytes(32)))
    assert event.data == {
        "shard": "docs",
        "rss_bytes": 1536 * 1024,
        "served": 3,
        "uptime_s": 9,
        "v": 2,
    }
    assert decode(record.seq, record.kind, record.body) == event.data
    state = replay(log).state
    assert state.shards["docs"].last_heartbeat_ns == record.ts_ns
    assert state.counts == {"shard.heartbeat": 1}
    # The stored row still holds the v1 bytes.
    assert log.record(1).body == v1
    # A v2 heartbeat written today is read as is.
    log.append_batch(
        [
            (
                "shard.heartbeat",
                encode(
                    "shard.heartbeat", {"shard": "docs", "rss_bytes": 5, "served": 1, "uptime_s": 1}
                ),
            )
        ]
    )
    assert [e.data["rss_bytes"] for e, _ in checked_events(log, 0, bytes(32))] == [1536 * 1024, 5]


def test_a_version_newer_than_known_is_refused(log: EventLog) -> None:
    log.append_batch(
        [("memory.remembered", encode("memory.remembered", {"memory_id": "a", "text": "x"}))]
    )
    body = canonical_json({"shard": "docs", "rss_bytes": 1, "served": 1, "uptime_s": 1, "v": 3})
    log.append_batch([("shard.heartbeat", body)])
    with pytest.raises(
        UnknownEventError, match=r"event 2 \(shard\.heartbeat\): version 3 is newer"
    ) as info:
        replay(log)
    assert info.value.seq == 2


@pytest.mark.parametrize(
    ("kind", "body", "why"),
    [
        ("no.such.kind", b'{"v":1}', "kind unknown"),
        ("memory.forgotten", b'{"memory_id":"a"}', "bad version None"),
        ("memory.forgotten", b"[1,2]", "not a JSON object"),
        ("memory.forgotten", b'{"memory_id":', "not JSON"),
    ],
)
def test_undecodable_rows_are_named(log: EventLog, kind: str, body: bytes, why: str) -> None:
    log.append_batch([(kind, body)])
    with pytest.raises(UnknownEventError, match=why) as info:
        replay(log)
    assert info.value.seq == 1


# -- snapshots that must not be trusted ------------------------------------------


@pytest.fixture
def history(log: EventLog) -> tuple[EventLog, State]:
    for i in range(10):
        log.append_batch(
            [
                (
                    "memory.remembered",
                    encode("memory.remembered", {"memory_id": f"m{i}", "text": str(i)}),
                )
            ]
        )
    return log, replay(log).state


def test_a_valid_snapshot_is_used(history: tuple[EventLog, State], tmp_path: Path) -> None:
    log, full = history
    path = tmp_path / "snap.json"
    snapshot.save(path, log.log_id, replay(log, upto=6).state)
    result = replay(log, snapshot_path=path)
    assert (result.from_snapshot, result.replayed, result.snapshot_note) == (6, 4, "")
    assert result.state == full


def _save_doc(path: Path, mutate: Any, log: EventLog, at: int) -> None:
    snapshot.save(path, log.log_id, replay(log, upto=at).state)
    doc = json.loads(path.read_text())
    mutate(doc)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("name", "prepare", "note"),
    [
        (
            "another log",
            lambda p, log: snapshot.save(p, bytes(16), replay(log, upto=5).state),
            "snapshot belongs to another log",
        ),
        (
            "wrong hash",
            lambda p, log: _save_doc(
                p, lambda d: d["state"].__setitem__("hash", "ab" * 32), log, 5
            ),
            "the log's hash at seq 5 differs from the snapshot's",
        ),
        (
            "beyond the head",
            lambda p, log: _save_doc(p, lambda d: d["state"].__setitem__("seq", 99), log, 10),
            "the log has no seq 99",
        ),
        (
            "corrupt json",
            lambda p, log: p.write_text('{"format": "ifmem-sn'),
            "unreadable snapshot",
        ),
        ("not a snapshot", lambda p, log: p.write_text("[1, 2]"), "not an ifmem snapshot"),
        (
            "older projection",
            lambda p, log: _save_doc(p, lambda d: d.__setitem__("projection", 0), log, 5),
            "projection version 0",
        ),
        (
            "seq not an integer",
            lambda p, log: _save_doc(p, lambda d: d["state"].__setitem__("seq", "5"), log, 5),
            "malformed snapshot: seq '5'",
        ),
        (
            "malformed state",
            lambda p, log: _save_doc(p, lambda d: d["state"].pop("memories"), log, 5),
            "malformed snapshot",
        ),
    ],
)
def test_an_unusable_snapshot_is_ignored(
    history: tuple[EventLog, State], tmp_path: Path, name: str, prepare: Any, note: str
) -> None:
    log, full = history
    path = tmp_path / "snap.json"
    prepare(path, log)
    result = replay(log, snapshot_path=path)
    assert note in result.snapshot_note, name
    assert result.from_snapshot == 0
    assert result.replayed == 10
    assert result.state == full


def test_a_snapshot_after_upto_is_ignored(history: tuple[EventLog, State], tmp_path: Path) -> None:
    log, _ = history
    path = tmp_path / "snap.json"
    snapshot.save(path, log.log_id, replay(log, upto=8).state)
    result = replay(log, snapshot_path=path, upto=4)
    assert "after --upto 4" in result.snapshot_note
    assert result.state.seq == 4
    assert sorted(result.state.memories) == ["m0", "m1", "m2", "m3"]


def test_a_missing_snapshot_says_so(history: tuple[EventLog, State], tmp_path: Path) -> None:
    log, full = history
    result = replay(log, snapshot_path=tmp_path / "absent.json")
    assert result.snapshot_note == "no snapshot"
    assert result.state == full


# -- a damaged chain -------------------------------------------------------------


def _tamper(path: Path, *sql: str) -> None:
    conn = apsw.Connection(str(path))
    try:
        conn.execute("DROP TRIGGER events_no_update; DROP TRIGGER events_no_delete")
        for statement in sql:
            conn.execute(statement)
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("sql", "seq", "why"),
    [
        ("UPDATE events SET body = replace(body, '\"4\"', '\"X\"') WHERE seq = 5", 5, "modified"),
        ("DELETE FROM events WHERE seq = 7", 7, "seq 7 is missing"),
        ("UPDATE events SET prev = zeroblob(32) WHERE seq = 3", 3, "prev does not match"),
    ],
)
def test_replay_of_a_damaged_chain_names_the_seq(
    history: tuple[EventLog, State], tmp_path: Path, sql: str, seq: int, why: str
) -> None:
    log, _ = history
    _tamper(log.path, sql)
    with pytest.raises(ChainError, match=why) as info:
        replay(log)
    assert info.value.seq == seq
    assert f"damaged at seq {seq}" in str(info.value)
    # A snapshot standing before the damage does not hide it.
    path = tmp_path / "snap.json"
    snapshot.save(path, log.log_id, replay(log, upto=2).state)
    with pytest.raises(ChainError) as again:
        replay(log, snapshot_path=path)
    assert again.value.seq == seq


def test_the_answer_window_evicts_the_oldest_current_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ifmemd.log.state as state_mod

    monkeypatch.setattr(state_mod, "ANSWER_WINDOW", 3)
    qids = ["a", "b", "c", "a", "d", "e", "b", "f"]  # "a" and "b" answered again later
    events = [
        (state_mod.Event(seq, 0, "query.answered", {"qid": q, "passages": [], "missing": []}), b"")
        for seq, q in enumerate(qids, 1)
    ]
    folded = state_mod.fold(state_mod.State(), events)
    stepped = state_mod.State()
    for e, h in events:
        stepped = state_mod.apply(stepped, e, h)
    # The newest three ids, in the order last answered, each with its last seq.
    assert list(folded.answered.items()) == [("e", 6), ("b", 7), ("f", 8)]
    assert list(stepped.answered.items()) == list(folded.answered.items())
