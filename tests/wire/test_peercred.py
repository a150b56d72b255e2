"""SO_PEERCRED identification and the uid check, with real sockets and a real foreign user."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from ifmemd.errors import IfmemError
from ifmemd.wire.peercred import (
    AccessDenied,
    Peer,
    PeerCredError,
    authorize,
    check_stream,
    peer_of_socket,
    peer_of_stream,
)

NOBODY = 65534
SETPRIV = shutil.which("setpriv")
# The venv's interpreter may live where `nobody` cannot read; the system one is world-readable.
SYSTEM_PYTHON = "/usr/bin/python3"

# Connects, says hello, then waits for the server to hang up.
CLIENT_SCRIPT = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(20)
s.connect(sys.argv[1])
s.sendall(b"hi")
s.recv(1)
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A world-writable socket directory that another user can reach (unlike pytest's tmp_path)."""
    path = Path(tempfile.mkdtemp(prefix="ifm-", dir="/tmp"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path)


def _as_nobody(socket_path: Path) -> list[str]:
    return [
        str(SETPRIV),
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        SYSTEM_PYTHON,
        "-c",
        CLIENT_SCRIPT,
        str(socket_path),
    ]


needs_root_and_setpriv = pytest.mark.skipif(
    os.geteuid() != 0 or SETPRIV is None or not os.access(SYSTEM_PYTHON, os.X_OK),
    reason="needs root, setpriv and /usr/bin/python3 to run a client as nobody",
)


def test_peer_is_frozen_and_readable() -> None:
    peer = Peer(uid=1000, gid=100, pid=42)
    with pytest.raises(AttributeError):
        peer.uid = 0  # type: ignore[misc]
    assert str(peer) == "uid 1000 (gid 100, pid 42)"


def test_errors_are_ifmem_errors() -> None:
    for cls in (AccessDenied, PeerCredError):
        assert issubclass(cls, IfmemError)
        assert cls.__doc__ and cls.__doc__.startswith("Raised when")


def test_socketpair_peer_is_this_process() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert peer_of_socket(a) == Peer(uid=os.getuid(), gid=os.getgid(), pid=os.getpid())


def test_peer_of_a_client_process(open_dir: Path) -> None:
    path = open_dir / "s"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()
        server.settimeout(20)
        child = subprocess.Popen([sys.executable, "-c", CLIENT_SCRIPT, str(path)])
        try:
            conn, _ = server.accept()
            with conn:
                assert conn.recv(2) == b"hi"
                assert peer_of_socket(conn) == Peer(os.getuid(), os.getgid(), child.pid)
        finally:
            assert child.wait(timeout=20) == 0


@needs_root_and_setpriv
def test_foreign_uid_is_seen_and_refused(open_dir: Path) -> None:
    path = open_dir / "s"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        path.chmod(0o666)
        server.listen()
        server.settimeout(20)
        child = subprocess.Popen(_as_nobody(path))
        try:
            conn, _ = server.accept()
            with conn:
                assert conn.recv(2) == b"hi"
                peer = peer_of_socket(conn)
        finally:
            assert child.wait(timeout=20) == 0
    assert peer == Peer(uid=NOBODY, gid=NOBODY, pid=child.pid)
    with pytest.raises(AccessDenied) as info:
        authorize(peer, allowed_uid=os.getuid())
    assert info.value.peer == peer
    assert str(info.value) == (
        f"refused connection from uid {NOBODY} (gid {NOBODY}, pid {child.pid}): "
        f"only uid {os.getuid()}, the daemon's own user, may connect"
    )


def test_authorize_lets_the_same_uid_through() -> None:
    authorize(Peer(uid=1000, gid=1000, pid=1), allowed_uid=1000)


@pytest.mark.parametrize("uid", [0, 999, 1001, -1, NOBODY])
def test_authorize_refuses_every_other_uid(uid: int) -> None:
    with pytest.raises(AccessDenied, match="only uid 1000"):
        authorize(Peer(uid=uid, gid=1000, pid=1), allowed_uid=1000)


def test_non_unix_socket_is_refused() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
        pytest.raises(PeerCredError, match="not a Unix socket"),
    ):
        peer_of_socket(tcp)


def test_getsockopt_failure_is_translated() -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.close()  # a closed socket has no fd: getsockopt fails with EBADF
    with pytest.raises(PeerCredError, match=r"getsockopt\(SO_PEERCRED\)") as info:
        peer_of_socket(sock)
    assert isinstance(info.value.__cause__, OSError)


@pytest.mark.anyio
async def test_stream_peer_and_check(open_dir: Path) -> None:
    path = open_dir / "s"
    async with (
        await anyio.create_unix_listener(path) as listener,
        await anyio.connect_unix(path) as client,
        await listener.accept() as server_side,
    ):
        me = Peer(os.getuid(), os.getgid(), os.getpid())
        assert peer_of_stream(server_side) == me
        assert peer_of_stream(client) == me
        assert check_stream(server_side, os.getuid()) == me
        with pytest.raises(AccessDenied) as info:
            check_stream(server_side, os.getuid() + 1)
        assert info.value.peer == me


@pytest.mark.anyio
async def test_unidentifiable_stream_fails_closed() -> None:
    send, receive = anyio.create_memory_object_stream[bytes](1)
    with send, receive:
        with pytest.raises(PeerCredError, match="no underlying socket"):
            peer_of_stream(receive)  # type: ignore[arg-type]
        with pytest.raises(AccessDenied) as info:
            check_stream(receive, os.getuid())  # type: ignore[arg-type]
    assert info.value.peer is None
    assert str(info.value) == (
        "refused connection from an unidentified peer: the stream has no underlying socket"
    )


@needs_root_and_setpriv
@pytest.mark.anyio
async def test_foreign_uid_over_anyio_is_refused(open_dir: Path) -> None:
    path = open_dir / "s"
    async with (
        await anyio.create_unix_listener(path, mode=0o666) as listener,
        await anyio.open_process(_as_nobody(path)) as child,
    ):
        with anyio.fail_after(20):
            async with await listener.accept() as stream:
                assert await stream.receive(2) == b"hi"
                with pytest.raises(AccessDenied) as info:
                    check_stream(stream, os.getuid())
        assert await child.wait() == 0
    assert info.value.peer == Peer(NOBODY, NOBODY, child.pid)
