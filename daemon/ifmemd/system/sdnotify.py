"""systemd integration without libsystemd: sd_notify(3) and socket activation.

`notify("READY=1")` sends a datagram to `$NOTIFY_SOCKET` (a path, or an
abstract socket when it starts with `@`); without the variable it does
nothing, so the daemon behaves the same in the foreground. `listen_fds()`
returns the sockets systemd passed (`LISTEN_PID`, `LISTEN_FDS`, from fd 3).
"""

from __future__ import annotations

import os
import socket

SD_LISTEN_FDS_START = 3


def notify(*lines: str) -> bool:
    """Send `KEY=value` lines to systemd; False when not run under a notify service."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.sendall("\n".join(lines).encode())
        except OSError:
            # systemd went away or the socket is gone: nothing to tell.
            return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when not asked for."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1e6 / 2
    except ValueError:
        return None


def listen_fds() -> list[socket.socket]:
    """Sockets passed by systemd socket activation, for this process only."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    # Unset them so a child (a shard) never thinks the sockets are its own.
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)
    socks = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        os.set_inheritable(fd, False)
        socks.append(socket.socket(fileno=fd))
    return socks
