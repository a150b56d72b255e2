"""`ifmem log` and `ifmem replay`: read the log with the daemon stopped."""

from __future__ import annotations

import itertools
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import apsw
import pytest
from freezegun import freeze_time
from ifmem.main import app
from ifmemd.log.eventlog import EventLog
from ifmemd.log.keys import Signer
from ifmemd.log.maintenance import seal_files
from logfactory import encode
from typer.testing import CliRunner

NOW = datetime.now(UTC)

# (kind, fields, how long before the test started it was written)
HISTORY: list[tuple[str, dict[str, Any], timedelta | None]] = [
    ("daemon.started", {"pid": 11, "version": "0.1.0"}, timedelta(hours=3)),
    ("shard.spawned", {"shard": "docs", "pid": 12}, timedelta(hours=3)),
    ("memory.remembered", {"memory_id": "m1", "text": "first memory"}, timedelta(hours=2)),
    (
        "shard.ready",
        {"shard": "docs", "files": 3, "lines": 40, "tokens": 900, "digest": "ab", "load_ms": 5},
        timedelta(minutes=30),
    ),
    ("memory.remembered", {"memory_id": "m2", "text": "café ☕"}, None),
    ("shard.heartbeat", {"shard": "docs", "rss_bytes": 1, "served": 2, "uptime_s": 3}, None),
    ("memory.forgotten", {"memory_id": "m1"}, None),
    ("query.received", {"qid": "q1", "question": "where?", "shards": ["docs"]}, None),
]

ROW = re.compile(r"^\s*(\d+)  (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)  (\S+)\s+(.*)$")


def append(db: Path, signer: Signer, kind: str, fields: dict[str, Any]) -> None:
    with EventLog.open(db, signer) as log:
        log.append_batch([(kind, encode(kind, fields))])


@pytest.fixture
def db(tmp_path: Path, signer: Signer) -> Path:
    path = tmp_path / "data" / "events.db"
    for kind, fields, ago in HISTORY:
        if ago is None:
            append(path, signer, kind, fields)
        else:
            with freeze_time(NOW - ago):
                append(path, signer, kind, fields)
    return path


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def seqs(output: str) -> list[int]:
    return [int(ROW.match(line).group(1)) for line in output.splitlines()]


def test_log_prints_one_text_row_per_event(db: Path) -> None:
    result = run("log", "--db", str(db))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == len(HISTORY)
    rows = [ROW.match(line) for line in lines]
    assert all(rows), lines
    assert [int(r.group(1)) for r in rows] == list(range(1, len(HISTORY) + 1))
    assert [r.group(3) for r in rows] == [kind for kind, _, _ in HISTORY]
    first = datetime.strptime(rows[0].group(2), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs(first - (NOW - timedelta(hours=3))) < timedelta(milliseconds=2)
    assert rows[4].group(4) == 'memory_id="m2" text="café ☕"'
    assert "v=" not in result.stdout


def test_log_json_lines_parse(db: Path) -> None:
    result = run("log", "--db", str(db), "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    with EventLog.open_readonly(db) as log:
        assert rows == [r.to_json() for r in log.records()]
    assert [r["body"] for r in rows] == [
        {**fields, "v": 2 if kind == "shard.heartbeat" else 1} for kind, fields, _ in HISTORY
    ]
    assert rows[0]["prev"] == "00" * 32
    for before, after in itertools.pairwise(rows):
        assert after["prev"] == before["hash"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--kind", "shard.*"], [2, 4, 6]),
        (["--kind", "memory.remembered", "--kind", "query.*"], [3, 5, 8]),
        (["--kind", "no.such"], []),
        (["--since", "1h"], [4, 5, 6, 7, 8]),
        (["--since", "10m"], [5, 6, 7, 8]),
        (["--since", (NOW - timedelta(hours=2, minutes=30)).isoformat()], [3, 4, 5, 6, 7, 8]),
        # A naive ISO time is UTC.
        (
            [
                "--since",
                (NOW - timedelta(hours=1)).replace(tzinfo=None).isoformat(timespec="seconds"),
            ],
            [4, 5, 6, 7, 8],
        ),
        (["--limit", "2"], [7, 8]),
        (["--kind", "shard.*", "--limit", "2"], [4, 6]),
        (["-n", "100"], [1, 2, 3, 4, 5, 6, 7, 8]),
    ],
)
def test_log_filters(db: Path, args: list[str], expected: list[int]) -> None:
    result = run("log", "--db", str(db), *args)
    assert result.exit_code == 0, result.output
    assert seqs(result.stdout) == expected


@pytest.mark.parametrize("bad", ["yesterday", "5 minutes", "-1h"])
def test_a_bad_since_is_a_usage_error(db: Path, bad: str) -> None:
    result = run("log", "--db", str(db), "--since", bad)
    assert result.exit_code == 2
    assert f"cannot read time {bad!r}" in result.stderr
    assert result.stdout == ""


def test_replay_upto_shows_the_state_then(db: Path) -> None:
    result = run("replay", "--db", str(db), "--upto", "3")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("state at seq 3 ")
    assert "memory:m1  first memory" in out
    assert "m2" not in out  # remembered at seq 5, after --upto 3
    assert "daemon runs: 1" in out

    now = run("replay", "--db", str(db))
    assert now.exit_code == 0, now.output
    assert now.stdout.startswith("state at seq 8 ")
    assert "memory:m2  café ☕" in now.stdout
    assert "memory:m1" not in now.stdout  # forgotten at seq 7
    assert "queries without an answer: 1" in now.stdout


def test_replay_json(db: Path) -> None:
    result = run("replay", "--db", str(db), "--upto", "4", "--json")
    assert result.exit_code == 0, result.output
    state = json.loads(result.stdout)
    assert state["seq"] == 4
    assert [m["memory_id"] for m in state["memories"]] == ["m1"]
    assert [(s["name"], s["status"], s["files"]) for s in state["shards"]] == [("docs", "ready", 3)]
    with EventLog.open_readonly(db) as log:
        assert state["hash"] == log.record(4).hash.hex()
    full = json.loads(run("replay", "--db", str(db), "--json").stdout)
    assert full["seq"] == 8
    assert [m["memory_id"] for m in full["memories"]] == ["m2"]
    assert [p["qid"] for p in full["pending"]] == ["q1"]


@pytest.mark.parametrize("command", ["log", "replay"])
def test_a_missing_log_exits_1(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "nowhere" / "events.db"
    result = run(command, "--db", str(missing))
    assert result.exit_code == 1
    assert str(missing) in result.stderr
    assert "no such file" in result.stderr
    assert not missing.exists()
    # Without --db, the default path in the (empty) data directory.
    result = run(command)
    assert result.exit_code == 1
    assert "events.db: no such file" in result.stderr


@pytest.mark.parametrize("command", ["log", "replay"])
def test_a_foreign_file_exits_1(tmp_path: Path, command: str) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("just some notes\n" * 100)
    result = run(command, "--db", str(path))
    assert result.exit_code == 1
    assert "not an ifmem event log" in result.stderr
    assert path.read_text() == "just some notes\n" * 100


@pytest.mark.parametrize(
    "args", [("replay", "--upto", str(2**63)), ("log", "-n", "99999999999999999999999")]
)
def test_a_number_past_what_the_log_holds_is_a_usage_error(db: Path, args: tuple[str, ...]) -> None:
    result = run(*args, "--db", str(db))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_replay_of_a_damaged_log_exits_1(db: Path) -> None:
    conn = apsw.Connection(str(db))
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("UPDATE events SET body = replace(body, 'first', 'FIRST') WHERE seq = 3")
    conn.close()
    result = run("replay", "--db", str(db))
    assert result.exit_code == 1
    assert "damaged at seq 3" in result.stderr
    # `--upto` before the damage still works: the prefix of the chain holds.
    assert run("replay", "--db", str(db), "--upto", "2").exit_code == 0


# -- --follow, through the real command ---------------------------------------------


def ifmem_command() -> list[str]:
    script = shutil.which("ifmem", path=str(Path(sys.executable).parent))
    if script is not None:
        return [script]
    return [sys.executable, "-c", "from ifmem.main import main; main()"]


@pytest.mark.parametrize("command", [("log",), ("replay",)])
def test_a_terminal_that_cannot_show_a_character_gets_it_escaped(
    db: Path, command: tuple[str, ...]
) -> None:
    done = subprocess.run(
        [*ifmem_command(), *command, "--db", str(db)],
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "latin-1"},
    )
    assert done.returncode == 0, done.stderr.decode("latin-1")
    assert "café \\u2615".encode("latin-1") in done.stdout  # é shown, ☕ escaped


def test_log_follow_prints_new_events(db: Path, signer: Signer) -> None:
    lines: queue.Queue[str] = queue.Queue()
    # Ctrl-C must reach the follower as from a terminal, even when this run
    # ignores SIGINT (started by nohup or as a background job): an ignored
    # signal stays ignored across exec, a handled one is reset to its default.
    ignored = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        follower = subprocess.Popen(
            [*ifmem_command(), "log", "--follow", "--kind", "memory.*", "--db", str(db)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    finally:
        signal.signal(signal.SIGINT, ignored)
    with follower:

        def read() -> None:
            assert follower.stdout is not None
            for line in follower.stdout:
                lines.put(line)

        threading.Thread(target=read, daemon=True).start()

        def next_line(timeout: float) -> str:
            try:
                return lines.get(timeout=timeout)
            except queue.Empty:
                follower.kill()
                _, err = follower.communicate()
                raise AssertionError(f"no line within {timeout} s; stderr: {err}") from None

        try:
            # The history first: the memory events only.
            assert [int(ROW.match(next_line(20)).group(1)) for _ in range(3)] == [3, 5, 7]
            append(
                db,
                signer,
                "shard.heartbeat",
                {"shard": "docs", "rss_bytes": 1, "served": 2, "uptime_s": 3},
            )
            append(db, signer, "memory.remembered", {"memory_id": "m3", "text": "live"})
            started = time.monotonic()
            line = next_line(5)
            assert time.monotonic() - started < 5
            row = ROW.match(line)
            assert row is not None, line
            assert (row.group(1), row.group(3)) == ("10", "memory.remembered")
            assert 'memory_id="m3" text="live"' in line
            append(db, signer, "memory.forgotten", {"memory_id": "m3"})
            assert ROW.match(next_line(5)).group(1) == "11"
            assert lines.empty()
            # A seal moves the live file into a segment: following goes on in the new one.
            seal_files(db, signer, None, compress=False)
            append(db, signer, "memory.remembered", {"memory_id": "m4", "text": "after the seal"})
            line = next_line(5)
            assert 'memory_id="m4"' in line, line
            assert int(ROW.match(line).group(1)) > 11
            assert lines.empty()
        finally:
            follower.send_signal(signal.SIGINT)
            try:
                follower.wait(10)
            except subprocess.TimeoutExpired:
                follower.kill()
                follower.wait()
        assert follower.returncode == 0, follower.stderr.read() if follower.stderr else ""
