"""`ifmem proxy`: join this process's stdin and stdout to the local daemon's socket.

This is what another host's ifmemd runs over SSH (`ssh -T host ifmem proxy`) to
reach this host's daemon as a remote shard. The proxy only moves bytes: the
protocol, the handshake and every check stay the daemon's. Its socket peer is
this process, so the daemon's SO_PEERCRED check applies to the user SSH logged
in as: a key that logs in as another user reaches nothing.

Blocking stdlib only (one thread each way), so the command starts without
anyio or typer: every reconnect of a remote shard pays its start-up.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from ifmemd.wire.protocol import DaemonUnreachableError

CHUNK = 65536


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _pump_in(stdin_fd: int, sock: socket.socket) -> None:
    """stdin to the socket; at end of input, end the socket's sending side.

    The daemon then answers what is in flight and closes, which ends the proxy.
    """
    try:
        while data := os.read(stdin_fd, CHUNK):
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        # The daemon went away: the other direction sees it and ends the proxy.
        return


def run(path: Path | str, stdin_fd: int = 0, stdout_fd: int = 1) -> None:
    """Relay bytes between the fds and the daemon at `path` until the daemon closes.

    Raises DaemonUnreachableError when no daemon accepts the connection.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError as e:
        sock.close()
        raise DaemonUnreachableError(path, e.strerror or str(e)) from e
    with sock:
        threading.Thread(target=_pump_in, args=(stdin_fd, sock), daemon=True).start()
        try:
            while data := sock.recv(CHUNK):
                _write_all(stdout_fd, data)
        except BrokenPipeError:
            return  # whoever read our stdout (ssh) is gone: nothing to relay to
