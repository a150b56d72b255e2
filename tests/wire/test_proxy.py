"""`ifmem proxy` against a real daemon: byte-for-byte relay, many requests on one connection.

The proxy runs as the installed command, as SSH would run it, with pipes for
stdin and stdout.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import daemonproc as dp
import pytest


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[dp.DaemonProc]:
    with dp.factory(tmp_path) as made:
        yield made()


def ifmem() -> str:
    return str(Path(sys.executable).with_name("ifmem"))


@contextlib.contextmanager
def proxy(socket_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A running `ifmem proxy`, killed and reaped (pipes closed) at the end."""
    with subprocess.Popen(
        [ifmem(), "proxy", "--socket", str(socket_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as p:
        try:
            yield p
        finally:
            p.kill()


def send(stdin: IO[bytes], *messages: dict[str, Any]) -> None:
    stdin.write(b"".join(json.dumps(m).encode() + b"\n" for m in messages))
    stdin.flush()


def read(stdout: IO[bytes]) -> dict[str, Any]:
    line = stdout.readline()
    assert line, "the proxy closed its output"
    return json.loads(line)


def test_proxy_relays_pipelined_requests_and_exits_at_end_of_input(
    daemon: dp.DaemonProc,
) -> None:
    with proxy(daemon.socket_path) as p:
        assert p.stdin is not None and p.stdout is not None
        send(p.stdin, {"proto": "ifmem", "min": 1, "max": 1})
        assert read(p.stdout) == {"proto": "ifmem", "version": 1}
        questions = ["lighthouse beacon", "valve opened", "glacier"]
        send(
            p.stdin,
            *({"id": f"q{i}", "op": "ask", "question": q} for i, q in enumerate(questions)),
            {"id": "st", "op": "status"},
        )
        # Input ends with the requests still in flight: every one is answered all the same.
        p.stdin.close()
        replies = {r["id"]: r for r in (read(p.stdout) for _ in range(4))}
        assert p.stdout.read() == b""
        assert p.wait(10) == 0
    assert replies["st"]["result"]["pid"] == daemon.pid
    assert replies["q0"]["result"]["passages"][0]["path"].endswith("beacon.md")
    assert replies["q1"]["result"]["passages"][0]["path"].endswith("valve.py")
    assert replies["q2"]["result"]["passages"][0]["path"].endswith("glacier.md")


def test_one_connection_serves_requests_beside_a_subscription(daemon: dp.DaemonProc) -> None:
    """Requests on a connection do not wait for the ones before them to finish:
    a subscription never finishes, and a status sent after it is answered."""
    with proxy(daemon.socket_path) as p:
        assert p.stdin is not None and p.stdout is not None
        send(p.stdin, {"proto": "ifmem", "min": 1, "max": 1})
        read(p.stdout)
        send(p.stdin, {"id": "sub", "op": "subscribe", "kinds": ["query.answered"]})
        assert read(p.stdout)["result"]["subscribed"] is True
        send(p.stdin, {"id": "st", "op": "status"})
        assert read(p.stdout)["id"] == "st"
        send(p.stdin, {"id": "q", "op": "ask", "question": "glacier"})
        got = [read(p.stdout), read(p.stdout)]
        assert {("event" in m, m["id"]) for m in got} == {(True, "sub"), (False, "q")}


def test_proxy_without_a_daemon_exits_3(tmp_path: Path) -> None:
    out = subprocess.run(
        [ifmem(), "proxy", "--socket", str(tmp_path / "none.sock")],
        input=b"",
        capture_output=True,
        timeout=30,
    )
    assert out.returncode == 3
    assert out.stdout == b""
    assert b"cannot reach ifmemd" in out.stderr


def test_proxy_never_imports_typer_or_anyio(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        f"sys.argv = ['ifmem', 'proxy', '--socket', {str(tmp_path / 'none.sock')!r}]\n"
        "try:\n"
        "    from ifmem.entry import main; main()\n"
        "except SystemExit as e:\n"
        "    assert e.code == 3, e.code\n"
        "heavy = sorted(m for m in ('typer', 'click', 'pydantic', 'apsw', 'nacl', 'anyio')"
        " if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_a_client_that_sends_bad_lines_and_leaves_does_not_stop_the_daemon(
    daemon: dp.DaemonProc,
) -> None:
    """The daemon answers each bad line with an error, while reading the next ones:
    a client gone by then must cost only its own connection."""
    for _ in range(5):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(daemon.socket_path))
            s.sendall(b'{"proto":"ifmem","min":1,"max":1}\n')
            assert s.recv(100).startswith(b'{"proto"')
            s.sendall(b"not json\n" * 2000)
        # Closed unread: the daemon's error answers meet a broken pipe.
    assert daemon.status()["pid"] == daemon.pid
    assert daemon.running
