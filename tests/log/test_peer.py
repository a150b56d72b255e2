"""`audit verify --peer`: a quoted remote answer holds only if the remote's signed log backs it.

Two logs built in-process with two keys: the peer (the remote host's) answers
a question; the local one records that answer's quote. Each test changes one
thing about the quote, as a local daemon that lied about its remote would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ifmemd.log import events, maintenance
from ifmemd.log.eventlog import EventLog
from ifmemd.log.keys import load_or_create_signer
from ifmemd.log.peer import cross_check, quotes

PASSAGES = [
    {"path": "/srv/docs/beacon.md", "start_line": 1, "end_line": 4, "score": 0.02},
    {"path": "/srv/docs/fog.md", "start_line": 7, "end_line": 9, "score": 0.01},
]


def append(path: Path, key: Path, *entries: tuple[str, dict[str, Any]]) -> list[Any]:
    with EventLog.open(path, load_or_create_signer(key)) as log:
        return log.append_batch([(kind, events.encode(kind, body)) for kind, body in entries])


@pytest.fixture
def peer(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """The remote's log, answering one question; and the quote of that answer."""
    path = tmp_path / "peer" / "events.db"
    path.parent.mkdir()
    records = append(
        path,
        tmp_path / "peer" / "key",
        ("query.received", {"qid": "team.1", "question": "beacon", "shards": ["docs"]}),
        ("query.answered", {"qid": "team.1", "passages": PASSAGES, "missing": [], "results": []}),
    )
    with EventLog.open_readonly(path) as log:
        log_id = log.log_id.hex()
    return path, {"log_id": log_id, "seq": records[1].seq, "hash": records[1].hash.hex()}


def local_log(tmp_path: Path, quote: dict[str, Any], passages: list[dict[str, Any]]) -> Path:
    path = tmp_path / "local" / "events.db"
    path.parent.mkdir(exist_ok=True)
    # As the daemon logs it: each shard's passages as arrays of `passage_fields`' values.
    fields = ["path", "start_line", "end_line", "score"]
    rows = [[p[f] for f in fields] for p in passages]
    result = {"shard": "team", "ms": 3.0, "passages": rows, "remote": quote}
    answered = {
        "qid": "q1",
        "passages": passages,
        "missing": [],
        "results": [result],
        "passage_fields": fields,
    }
    append(path, tmp_path / "local" / "key", ("query.answered", answered))
    return path


def prefixed(passages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**p, "path": "build-host:" + p["path"]} for p in passages]


def test_a_true_quote_holds(tmp_path: Path, peer: tuple[Path, dict[str, Any]]) -> None:
    path, quote = peer
    local = local_log(tmp_path, quote, prefixed(PASSAGES))
    with EventLog.open_readonly(local) as log:
        [found] = list(quotes(log))
    assert (found.shard, found.qid, found.seq) == ("team", "q1", quote["seq"])
    report = cross_check(local, path)
    assert report.ok and report.checked == 1 and not report.mismatches


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"hash": "00" * 32}, "hash 0000000000000000… quoted, the peer's row has"),
        ({"seq": 1}, "the peer's row is a query.received, not a query.answered"),
        ({"seq": 99}, "the peer log has no such row"),
    ],
)
def test_a_false_quote_is_named(
    tmp_path: Path, peer: tuple[Path, dict[str, Any]], change: dict[str, Any], reason: str
) -> None:
    path, quote = peer
    local = local_log(tmp_path, quote | change, prefixed(PASSAGES))
    report = cross_check(local, path)
    assert not report.ok
    [mismatch] = report.mismatches
    assert reason in mismatch.reason
    assert str(mismatch).startswith("local seq 1 (question 'q1', shard 'team') quotes remote seq")


@pytest.mark.parametrize(
    "passages",
    [
        prefixed(PASSAGES[:1]),  # one left out
        prefixed(PASSAGES[::-1]),  # reordered
        prefixed([{**PASSAGES[0], "end_line": 5}, PASSAGES[1]]),  # another line range
        prefixed([{**PASSAGES[0], "path": "/srv/docs/other.md"}, PASSAGES[1]]),
    ],
)
def test_passages_other_than_the_peer_answered_are_named(
    tmp_path: Path, peer: tuple[Path, dict[str, Any]], passages: list[dict[str, Any]]
) -> None:
    path, quote = peer
    report = cross_check(local_log(tmp_path, quote, passages), path)
    [mismatch] = report.mismatches
    assert mismatch.reason == "the passages recorded here are not the ones the peer answered"


def test_quotes_of_another_log_are_not_checked_against_this_one(
    tmp_path: Path, peer: tuple[Path, dict[str, Any]]
) -> None:
    path, quote = peer
    local = local_log(tmp_path, quote | {"log_id": "ab" * 16}, prefixed(PASSAGES))
    report = cross_check(local, path)
    assert report.ok and report.checked == 0


def test_quotes_are_found_and_checked_across_sealed_segments(
    tmp_path: Path, peer: tuple[Path, dict[str, Any]]
) -> None:
    """Both logs sealed (one compressed): the quote is still found and still holds."""
    path, quote = peer
    local = local_log(tmp_path, quote, prefixed(PASSAGES))
    maintenance.seal_files(
        local, load_or_create_signer(tmp_path / "local" / "key"), None, compress=False
    )
    maintenance.seal_files(
        path, load_or_create_signer(tmp_path / "peer" / "key"), None, compress=True
    )
    report = cross_check(local, path)
    assert report.checked == 1 and report.ok, report.to_json()
