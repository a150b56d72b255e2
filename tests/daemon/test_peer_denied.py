"""Another user is refused by SO_PEERCRED even when file modes would let them in.

The test runs as root and connects as uid 65534 through `setpriv`. The socket
and its directory are opened up (0666, 0755) after the daemon is listening, so
the connection itself succeeds: only the peer check stands between that user
and the daemon. The socket directory is a fresh one under /tmp, whose parents
anyone may traverse.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import daemonproc as dp
import pytest

NOBODY = 65534
# A system Python the other user can run (the venv's may live under root's home).
SYSTEM_PYTHON = next(
    (p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.access(p, os.X_OK)), None
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or SYSTEM_PYTHON is None,
    reason="needs root, setpriv and a system python3 to act as another user",
)

# Stdlib only: connect, send the hello, print what comes back until the daemon closes.
PROBE = textwrap.dedent(
    """
    import json, os, socket, sys
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect(sys.argv[1])
    except OSError as e:
        print(json.dumps({"connect_error": e.errno}))
        sys.exit(0)
    try:
        s.sendall(b'{"proto":"ifmem","min":1,"max":1}\\n')
    except OSError:
        pass
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except OSError:
        pass
    print(json.dumps({"uid": os.getuid(), "pid": os.getpid(), "reply": data.decode()}))
    """
)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[dp.DaemonProc]:
    with dp.factory(tmp_path) as made:
        yield made()


def probe_as_nobody(socket_path: Path) -> dict:
    out = subprocess.run(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            SYSTEM_PYTHON,
            "-I",
            "-c",
            PROBE,
            str(socket_path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        cwd="/",
    )
    return json.loads(out.stdout)


def test_another_uid_is_refused_even_with_an_open_socket_and_recorded(
    daemon: dp.DaemonProc,
) -> None:
    # As started, the socket's 0700 directory keeps others from even connecting.
    assert "connect_error" in probe_as_nobody(daemon.socket_path)

    daemon.socket_dir.chmod(0o755)
    daemon.socket_path.chmod(0o666)
    result = probe_as_nobody(daemon.socket_path)
    assert "connect_error" not in result, "the test must reach the peer check"
    assert result["uid"] == NOBODY
    lines = result["reply"].splitlines()
    assert len(lines) == 1, result
    reply = json.loads(lines[0])
    assert reply["proto"] == "ifmem"
    assert "version" not in reply
    assert reply["error"]["code"] == "denied"
    assert str(NOBODY) in reply["error"]["message"]

    # Recorded with who it was.
    denied = dp.wait_for(
        lambda: daemon.events("client.denied"), 5.0, "client.denied", daemon.diagnostics
    )
    assert len(denied) == 1
    body = denied[0][2]
    assert body["uid"] == NOBODY
    assert body["gid"] == NOBODY
    assert body["pid"] == result["pid"]
    assert body["reason"]

    # The daemon's own user is still served, on the same, now open, socket.
    status = daemon.status()
    assert status["pid"] == daemon.pid
    assert all(s["status"] == "ready" for s in status["shards"])
    assert daemon.request("ask", question="glacier")["passages"]
