"""Every `ifmem` command stops quietly when the reader of its stdout goes away.

Through the real installed command, with a real pipe: `ifmem ask … | head`
must end as `git log | head` does (status 141, death by SIGPIPE, or 0), never
with a BrokenPipeError traceback or a failure status.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import daemonproc as dp
import pytest

QUIET_STATUSES = {0, 128 + signal.SIGPIPE, -signal.SIGPIPE}


def ifmem_command() -> list[str]:
    script = Path(sys.executable).with_name("ifmem")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ifmem"]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dp.DaemonProc]:
    with dp.factory(tmp_path_factory.mktemp("pipes")) as made:
        yield made()


def run_into_closed_pipe(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `ifmem argv` with stdout a pipe whose reader is already gone."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [*ifmem_command(), *argv],
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=60,
        )
    finally:
        os.close(write_end)


COMMANDS = {
    # the fast path (cli/ifmem/fast.py)
    "ask": ["ask", "lighthouse beacon"],
    "ask --json": ["ask", "--json", "lighthouse beacon"],
    "status": ["status"],
    "remember": ["remember", "a note for the closed pipe"],
    # typer
    "reload": ["reload"],
    "help": ["--help"],
    "ask --help": ["ask", "--help"],
    "version": ["--version"],
    "log": ["log", "--db", "{db}"],
    "log --json": ["log", "--json", "--db", "{db}"],
    "replay": ["replay", "--db", "{db}"],
    "stats": ["stats", "--db", "{db}"],
    "audit verify": ["audit", "verify", "--db", "{db}"],
    "doctor": ["doctor"],
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_stops_quietly_on_a_closed_stdout(daemon: dp.DaemonProc, name: str) -> None:
    argv = [a.format(db=daemon.db_path) for a in COMMANDS[name]]
    env = {**os.environ, "IFMEM_SOCKET": str(daemon.socket_path)}
    done = run_into_closed_pipe(argv, env)
    assert done.returncode in QUIET_STATUSES, (done.returncode, done.stderr)
    assert done.stderr == ""


def test_log_follow_into_head_ends_without_new_events(daemon: dp.DaemonProc) -> None:
    """`ifmem log --follow | head -1`: ends once head has gone, even while the log is quiet."""
    env = {**os.environ, "IFMEM_SOCKET": str(daemon.socket_path)}
    with subprocess.Popen(
        [*ifmem_command(), "log", "--follow", "--kind", "daemon.*", "--db", str(daemon.db_path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    ) as follower:
        assert follower.stdout is not None and follower.stderr is not None
        assert b"daemon.started" in follower.stdout.readline()
        # What `head -1` does after its line; no daemon.* event comes after it.
        follower.stdout.close()
        try:
            code = follower.wait(timeout=10)
        except subprocess.TimeoutExpired:
            follower.kill()
            follower.wait()
            pytest.fail("`ifmem log --follow` kept running after its reader had gone")
        assert code in QUIET_STATUSES, (code, follower.stderr.read())
        assert follower.stderr.read() == b""
