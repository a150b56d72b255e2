"""Who is on the other end of a Unix socket, decided once, at accept.

The kernel records the credentials of the process that connected
(`SO_PEERCRED`); they cannot be forged by the peer. `peer_of_stream` reads them
into an immutable `Peer`, and `authorize` lets through only the daemon's own
user. Every refusal is an `AccessDenied` that says why, and anything that
prevents identifying the peer is a refusal too: access fails closed.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Final

import anyio
from anyio.abc import SocketAttribute, SocketStream

from ifmemd.errors import IfmemError

_UCRED: Final = struct.Struct("3i")  # struct ucred { pid_t pid; uid_t uid; gid_t gid; }


@dataclass(frozen=True, slots=True)
class Peer:
    """The credentials the kernel recorded for the process at the other end of a connection."""

    uid: int
    gid: int
    pid: int

    def __str__(self) -> str:
        return f"uid {self.uid} (gid {self.gid}, pid {self.pid})"


class PeerCredError(IfmemError):
    """Raised when the credentials of a connection's peer cannot be read."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"read peer credentials: {reason}")


class AccessDenied(IfmemError):
    """Raised when a peer may not use the daemon; `peer` is None when it could not be identified."""

    def __init__(self, peer: Peer | None, reason: str) -> None:
        self.peer = peer
        self.reason = reason
        who = str(peer) if peer is not None else "an unidentified peer"
        super().__init__(f"refused connection from {who}: {reason}")


def peer_of_socket(sock: socket.socket) -> Peer:
    """Read `SO_PEERCRED` from a connected Unix stream socket."""
    if sock.family != socket.AF_UNIX:
        raise PeerCredError(f"not a Unix socket (family {sock.family!r})")
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        raise PeerCredError("SO_PEERCRED is not available on this platform")
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, option, _UCRED.size)
    except OSError as e:
        raise PeerCredError(f"getsockopt(SO_PEERCRED): {e.strerror or e}") from e
    pid, uid, gid = _UCRED.unpack(raw)
    return Peer(uid=uid, gid=gid, pid=pid)


def peer_of_stream(stream: SocketStream) -> Peer:
    """Read the peer credentials of an accepted anyio socket stream."""
    try:
        sock = stream.extra(SocketAttribute.raw_socket)
    except anyio.TypedAttributeLookupError as e:
        raise PeerCredError("the stream has no underlying socket") from e
    return peer_of_socket(sock)


def authorize(peer: Peer, allowed_uid: int) -> None:
    """Let `peer` through only if it runs as `allowed_uid`; otherwise raise `AccessDenied`."""
    if peer.uid != allowed_uid:
        raise AccessDenied(peer, f"only uid {allowed_uid}, the daemon's own user, may connect")


def check_stream(stream: SocketStream, allowed_uid: int) -> Peer:
    """Identify and authorize the peer of an accepted stream, in one step that fails closed.

    Returns the `Peer` on success; raises `AccessDenied` both when the peer is
    someone else and when it cannot be identified at all.
    """
    try:
        peer = peer_of_stream(stream)
    except PeerCredError as e:
        raise AccessDenied(None, e.reason) from e
    authorize(peer, allowed_uid)
    return peer
