"""What an answered question leaves in the log, with many questions at once.

Group commit mixes the events of concurrent questions in one transaction; the
events of each question must still be whole and in order: its
`query.received`, then its `query.answered`, which holds exactly the passages
the client got and one result per shard that answered. Two events an ask.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import daemonproc as dp
import pytest
from ifmemd.log import snapshot
from ifmemd.log.eventlog import EventLog
from ifmemd.log.replay import replay

CLIENTS = 8
ASKS = 12
QUESTIONS = ["lighthouse beacon", "valve opened", "glacier", "shard restarts", "nothing zzz"]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[dp.DaemonProc]:
    with dp.factory(tmp_path) as made:
        yield made()


def test_concurrent_questions_leave_whole_ordered_records(daemon: dp.DaemonProc) -> None:
    got: dict[str, dict] = {}
    errors: list[BaseException] = []

    def asker(c: int) -> None:
        try:
            with daemon.client() as client:
                for i in range(ASKS):
                    rid = f"c{c}-{i}"
                    got[rid] = client.request(
                        "ask", request_id=rid, question=QUESTIONS[(c + i) % len(QUESTIONS)]
                    )
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=asker, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(got) == CLIENTS * ASKS

    received = {b["qid"]: seq for seq, _, b in daemon.events("query.received")}
    answered = {b["qid"]: (seq, b) for seq, _, b in daemon.events("query.answered")}
    for rid, reply in got.items():
        seq, body = answered[rid]
        assert reply["seq"] == seq
        assert received[rid] < seq
        assert body["passages"] == reply["passages"]
        assert "results" not in reply
        # One result per shard that answered, inside the answer: no other event.
        assert sorted(r["shard"] for r in body["results"]) == sorted(reply["shards"])
        fields = body["passage_fields"]
        assert fields[:5] == ["path", "start_line", "end_line", "score", "coverage"]
        assert "snippet" not in fields
        for r in body["results"]:
            assert r["ms"] >= 0
            for row in r["passages"]:
                p = dict(zip(fields, row, strict=True))
                assert p["start_line"] <= p["end_line"] and p["path"]
        # Every passage the client got is among the shards' results.
        got_back = {(p[0], p[1], p[2]) for r in body["results"] for p in r["passages"]}
        assert {(p["path"], p["start_line"], p["end_line"]) for p in reply["passages"]} <= got_back
    kinds = {kind for _, kind, _ in daemon.events()}
    assert "shard.answered" not in kinds


def test_the_live_state_is_the_replay_of_the_log(daemon: dp.DaemonProc) -> None:
    # The daemon advances its state from the fields it appended, not by parsing
    # back the bodies it wrote; at stop it saves that state as a snapshot, which
    # must equal a replay of the log from scratch.
    with daemon.client() as client:
        kept = client.request("remember", text="the lighthouse beacon is serviced in May")
        gone = client.request("remember", text="a note to forget")
        client.request("forget", memory_id=gone["memory_id"])
        for i, question in enumerate(QUESTIONS):
            client.request("ask", request_id=i, question=question)
            client.request("ask", request_id=f"s{i}", question=question, shards=["working"])
        assert kept["memory_id"]
    assert daemon.stop() == 0
    snap, why = snapshot.load(daemon.root / "home/.local/state/ifmem/snapshot.json")
    assert snap is not None, why
    with EventLog.open_readonly(daemon.db_path) as log:
        replayed = replay(log, upto=snap.state.seq).state
    assert snap.state.to_json() == replayed.to_json()
    assert list(snap.state.memories) == [kept["memory_id"]]
