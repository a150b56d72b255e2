"""The client commands against a real daemon: in-process through CliRunner, and a few for real."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import daemonproc as dp
import pytest
from ifmem.main import app
from typer.testing import CliRunner, Result

CITATION = re.compile(r"^(\d+)\. (/\S+):(\d+)-(\d+)  \[(\w+)\]$", re.MULTILINE)
CLIENT_COMMANDS = [
    ["ask", "anything"],
    ["remember", "a note"],
    ["forget", "abc123"],
    ["status"],
    ["reload"],
    ["stop"],
]


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[dp.DaemonFactory]:
    with dp.factory(tmp_path) as made:
        yield made


@pytest.fixture
def daemon(daemons: dp.DaemonFactory) -> dp.DaemonProc:
    return daemons()


def ifmem(d: dp.DaemonProc | Path, *args: str) -> Result:
    socket = d if isinstance(d, Path) else d.socket_path
    return CliRunner().invoke(app, [*args, "--socket", str(socket)])


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result.stdout


def test_ask_prints_path_line_citations(daemon: dp.DaemonProc) -> None:
    out = ok(ifmem(daemon, "ask", "lighthouse beacon fog"))
    cites = CITATION.findall(out)
    assert cites, out
    rank, path, start, end, shard = cites[0]
    assert rank == "1" and shard == "docs"
    assert path.endswith("/beacon.md")
    lines = Path(path).read_text().splitlines()
    assert 1 <= int(start) <= int(end) <= len(lines)
    assert "lighthouse" in "\n".join(lines[int(start) - 1 : int(end)])
    assert "lighthouse beacon" in out  # the snippet


def test_ask_json_and_shard_and_k(daemon: dp.DaemonProc) -> None:
    result = json.loads(
        ok(ifmem(daemon, "ask", "valve pump", "--shard", "code", "-k", "1", "--json"))
    )
    assert result["shards"] == ["code"]
    assert len(result["passages"]) == 1
    p = result["passages"][0]
    assert p["citation"] == f"{p['path']}:{p['start_line']}-{p['end_line']}"
    assert p["shard"] == "code"
    assert result["missing"] == [] and result["replayed"] is False


def test_ask_with_no_match_says_so(daemon: dp.DaemonProc) -> None:
    assert "no passage matches." in ok(ifmem(daemon, "ask", "xylophone", "--shard", "code"))


def test_ask_an_unknown_shard_fails(daemon: dp.DaemonProc) -> None:
    result = ifmem(daemon, "ask", "valve", "--shard", "nope")
    assert result.exit_code == 1
    assert "nope" in result.stderr and "not_found" in result.stderr


def test_remember_forget_and_status(daemon: dp.DaemonProc) -> None:
    out = ok(ifmem(daemon, "remember", "the spare key is under the blue flowerpot"))
    m = re.fullmatch(r"remembered as memory:([0-9a-f]+)\n", out)
    assert m, out
    mid = m[1]
    found = json.loads(ok(ifmem(daemon, "ask", "blue flowerpot", "--shard", "working", "--json")))
    assert [p["citation"] for p in found["passages"]] == [f"memory:{mid}:1-1"]

    status = ok(ifmem(daemon, "status"))
    assert f"pid {daemon.pid}" in status
    assert "memories 1" in status
    rows = {line.split()[0]: line.split()[1] for line in status.splitlines()[4:] if line.strip()}
    assert rows == {"docs": "ready", "code": "ready", "working": "ready"}
    as_json = json.loads(ok(ifmem(daemon, "status", "--json")))
    assert as_json["memories"] == 1 and as_json["pid"] == daemon.pid

    assert ok(ifmem(daemon, "forget", mid)) == f"forgot memory:{mid}\n"
    again = ifmem(daemon, "forget", mid)
    assert again.exit_code == 1
    assert "not_found" in again.stderr
    assert json.loads(ok(ifmem(daemon, "status", "--json")))["memories"] == 0


def test_reload(daemons: dp.DaemonFactory) -> None:
    d = daemons()
    out = ok(ifmem(d, "reload"))
    assert out == "kept: docs, code, working\n"
    d.config_path.write_text(
        dp.config_text(
            {
                "docs": [str(daemons.corpus["docs"] / "alpha.md")],
                "code": [str(daemons.corpus["code"] / "*.py")],
            }
        )
    )
    assert ok(ifmem(d, "reload")) == "restarted: docs\nkept: code, working\n"
    d.config_path.write_text("[daemon]\nheartbeat_interval = -1\n")
    bad = ifmem(d, "reload")
    assert bad.exit_code == 1
    assert f"{d.config_path}:2:" in bad.stderr
    assert "nothing changed" in bad.stderr
    changes = json.loads(ok(ifmem(d, "status", "--json")))
    assert [s["name"] for s in changes["shards"]] == ["docs", "code", "working"]


@pytest.mark.parametrize("command", CLIENT_COMMANDS, ids=lambda c: c[0])
def test_no_daemon_exits_3_and_says_how_to_start_one(tmp_path: Path, command: list[str]) -> None:
    nowhere = tmp_path / "run" / "nobody-here.sock"
    result = CliRunner().invoke(app, [*command, "--socket", str(nowhere)])
    assert result.exit_code == 3, (result.output, result.exception)
    assert "ifmem daemon" in result.stderr
    assert str(nowhere) in result.stderr


@pytest.mark.parametrize("seconds", ["nan", "inf", "1e300", "0.05"])
@pytest.mark.parametrize("command", [["ask", "q"], ["mcp"]], ids=lambda c: c[0])
def test_a_timeout_that_cannot_be_waited_is_a_usage_error(
    tmp_path: Path, seconds: str, command: list[str]
) -> None:
    result = CliRunner().invoke(app, [*command, "--timeout", seconds])
    assert result.exit_code == 2, result.output
    assert "must be from 0.1 to 86400 seconds" in result.output


def test_a_stale_socket_file_is_unreachable_too(tmp_path: Path) -> None:
    import socket

    stale = tmp_path / "run" / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(stale))  # bound, never listening, then closed: what a crash leaves
    result = CliRunner().invoke(app, ["status", "--socket", str(stale)])
    assert result.exit_code == 3
    assert "ifmem daemon" in result.stderr


def test_stop_returns_once_the_daemon_is_gone(daemon: dp.DaemonProc) -> None:
    shards = daemon.live_shards()
    assert len(shards) == 3
    assert ok(ifmem(daemon, "stop")) == "ifmemd stopped\n"
    # By the time `stop` returns, everything the daemon does on the way out is done:
    # its shards are gone and its last words are in the log.
    assert not any(dp.pid_alive(p) for p in shards)
    kinds = [k for _, k, _ in daemon.events()]
    assert kinds[-2:] == ["daemon.stopping", "checkpoint"], kinds[-6:]
    assert daemon.proc is not None
    assert daemon.proc.wait(timeout=5) == 0
    assert not daemon.socket_path.exists()
    # ...so a new daemon can start on the same log and socket at once.
    daemon.start()
    assert ok(ifmem(daemon, "ask", "glacier", "-k", "1")).startswith("1. ")


def test_the_installed_command(daemon: dp.DaemonProc, tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("ifmem")
    if not exe.exists():
        pytest.skip("ifmem is not installed next to this Python")
    run = subprocess.run(
        [str(exe), "ask", "quick fox", "--socket", str(daemon.socket_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stderr
    assert CITATION.search(run.stdout)[2].endswith("/alpha.md")
    gone = subprocess.run(
        [str(exe), "status", "--socket", str(tmp_path / "none.sock")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert gone.returncode == 3
    assert "ifmem daemon" in gone.stderr


def test_a_real_ask_imports_only_what_it_needs(daemon: dp.DaemonProc) -> None:
    # `ifmem ask` must cost at most 3x a bare `python -c pass` (issue 13): each
    # of these would cost it milliseconds (bench/README.md, "Real text").
    code = (
        "import sys\n"
        f"sys.argv = ['ifmem', 'ask', '--socket', {str(daemon.socket_path)!r}, 'lighthouse']\n"
        "from ifmem.entry import main\n"
        "main()\n"
        "slow = ('json', 're', 'argparse', 'pathlib', 'typing', 'socket', 'enum', 'contextlib',"
        " 'platformdirs', 'typer', 'anyio', 'apsw')\n"
        "print('imported:', *sorted(m for m in slow if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "beacon.md" in out.stdout
    assert out.stdout.splitlines()[-1] == "imported:"
