"""Logs written before two-events-per-ask and heartbeat rounds still verify, replay and show.

They hold one `shard.answered` row per shard answer (v1 `query.answered` after
them) and one `shard.heartbeat` row per heartbeat. They are read through
upcasts and never rewritten; new logs never get those kinds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ifmem.main import app
from ifmemd.errors import UnknownEventError
from ifmemd.log import events
from ifmemd.log.eventlog import EventLog
from ifmemd.log.keys import Signer
from ifmemd.log.logformat import canonical_json
from ifmemd.log.replay import replay
from ifmemd.log.verify import verify_log
from logfactory import encode
from typer.testing import CliRunner

USAGE = {
    "input_tokens": 120,
    "cache_creation_input_tokens": 3000,
    "cache_read_input_tokens": 0,
    "output_tokens": 40,
}


def old_log(path: Path, signer: Signer) -> None:
    """A log as ifmem wrote it before: per-shard rows, v1 answers, v1 and v2 heartbeats."""
    heartbeat_v1 = canonical_json(
        {"shard": "docs", "rss_kb": 2048, "served": 0, "uptime_s": 1.0, "v": 1}
    )
    answered_v1 = canonical_json(
        {"qid": "q1", "question": "wick?", "passages": [], "missing": [], "v": 1}
    )
    with EventLog.open(path, signer) as log:
        log.append_batch(
            [
                ("daemon.started", encode("daemon.started", {"pid": 1, "version": "0.1.0"})),
                ("shard.heartbeat", heartbeat_v1),
                (
                    "shard.heartbeat",
                    encode(
                        "shard.heartbeat",
                        {"shard": "code", "rss_bytes": 5, "served": 1, "uptime_s": 2.0},
                    ),
                ),
                (
                    "query.received",
                    encode("query.received", {"qid": "q1", "question": "wick?", "shards": []}),
                ),
                (
                    "shard.answered",
                    encode(
                        "shard.answered",
                        {
                            "qid": "q1",
                            "shard": "docs",
                            "ms": 3.5,
                            "mode": "model",
                            "model": "claude-x",
                            **USAGE,
                            "passages": [
                                {"path": "a.md", "start_line": 1, "end_line": 2, "score": 1.0}
                            ],
                        },
                    ),
                ),
                ("query.answered", answered_v1),
            ]
        )


def test_new_logs_cannot_write_the_old_kinds() -> None:
    for kind in ("shard.answered", "shard.heartbeat"):
        with pytest.raises(UnknownEventError, match="older versions"):
            events.encode(kind, {"qid": "q", "shard": "s", "passages": []})


def test_an_old_log_verifies_replays_and_shows(tmp_path: Path, signer: Signer) -> None:
    db = tmp_path / "events.db"
    old_log(db, signer)
    stored = db.read_bytes()

    assert verify_log(db).ok
    with EventLog.open_readonly(db) as log:
        state = replay(log).state
        beats = [r.ts_ns for r in log.records() if r.kind == "shard.heartbeat"]
        answered = log.record(6)
        assert answered is not None
        # v1 answers are upcast: they read as v2 with no results of their own.
        body = events.decode(6, "query.answered", answered.body)
        assert body["v"] == 2 and body["results"] == []
    assert state.shards["docs"].last_heartbeat_ns == beats[0]
    assert state.shards["code"].last_heartbeat_ns == beats[1]
    assert state.pending == {} and "q1" in state.answered

    runner = CliRunner()
    shown = runner.invoke(app, ["log", "--db", str(db)])
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert [line.split()[2] for line in lines] == [
        "daemon.started",
        "shard.heartbeat",
        "shard.heartbeat",
        "query.received",
        "shard.answered",
        "query.answered",
    ]
    assert "rss_kb=2048" in lines[1]

    stats = runner.invoke(app, ["stats", "--json", "--db", str(db)])
    assert stats.exit_code == 0, stats.output
    [row] = json.loads(stats.stdout)["shards"]
    assert (row["shard"], row["model"], row["calls"]) == ("docs", "claude-x", 1)
    assert {f: row[f] for f in USAGE} == USAGE
    # Nothing was rewritten.
    assert db.read_bytes() == stored
