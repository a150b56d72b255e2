"""The Unix-socket server: accept, check the peer, shake hands, serve NDJSON requests.

Who is calling is decided once, at accept: the peer's uid (SO_PEERCRED) must
be the daemon's own, whatever the socket file's mode says; every refusal is
recorded as `client.denied`. A connection's requests are served concurrently
(at most `MAX_INFLIGHT_PER_CONNECTION` at once) and answered as they finish,
each echoing its id: a remote shard multiplexes many asks over one SSH
connection. A subscription streams its events beside them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import stat
import sys
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import SocketAttribute, SocketListener, SocketStream

from ifmemd.errors import IfmemError
from ifmemd.system import durable
from ifmemd.wire import protocol
from ifmemd.wire.framing import LineReader, send_message, server_handshake
from ifmemd.wire.peercred import AccessDenied, Peer, check_stream

# Running out of file descriptors or buffers is temporary: wait and accept again.
ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
ACCEPT_BACKOFF_S = 0.1
LISTEN_BACKLOG = 512
HANDSHAKE_TIMEOUT_S = 10.0
# A client sending faster than it is answered waits (is not read) past this many.
MAX_INFLIGHT_PER_CONNECTION = 256

Handler = Callable[["Connection", protocol.Request], Awaitable[Any]]


class SocketInUseError(IfmemError):
    """Raised when another daemon already answers on the socket path."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"bind {path}: another ifmemd is already listening there; "
            "stop it (`ifmem stop`) or use another --socket"
        )


class UnsafeSocketDirError(IfmemError):
    """Raised when the socket's directory is not private to the daemon's user."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"socket directory {path}: {reason}")


class ReplyTooLongError(IfmemError):
    """Raised by `Connection.send` after telling the client, under the request's
    id, that what it asked for does not fit in a line: nothing more is sent for it."""


class OpError(IfmemError):
    """Raised by a request handler to answer with a protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


def bind_socket(path: Path) -> socket.socket:
    """A listening Unix socket at `path`, inside a 0700 directory, created 0600.

    The mode is set by the umask at bind time, never by chmod afterwards, so
    there is no moment when the socket is open to others.
    """
    directory = path.parent
    durable.ensure_private_dir(directory)
    st = directory.stat()
    if st.st_uid != os.getuid():
        raise UnsafeSocketDirError(directory, f"owned by uid {st.st_uid}, not {os.getuid()}")
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise UnsafeSocketDirError(
            directory, f"mode {stat.S_IMODE(st.st_mode):04o}; run `chmod 700 {directory}`"
        )
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # a stale socket from a daemon that died
        else:
            raise SocketInUseError(path)
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    sock.listen(LISTEN_BACKLOG)
    return sock


class Connection:
    """One accepted client: its peer, its stream, and a lock for whole-line sends.

    An answer nearly always fits in the socket's buffer at once: `send` writes
    it with one `send()` on the raw socket and returns without yielding to
    the event loop (anyio's stream costs a checkpoint, a loop turn, per send).
    Only a line that does not fit waits, holding the lock, for the stream to
    take the rest: a line is never interleaved with another.
    """

    def __init__(self, stream: SocketStream, peer: Peer) -> None:
        self.stream = stream
        self.peer = peer
        self.reader = LineReader(stream)
        self._send_lock = anyio.Lock()
        self._socket = stream.extra(SocketAttribute.raw_socket)
        # The subscriptions streaming to this client, and whether it has gone.
        self._subscriptions: set[anyio.CancelScope] = set()
        self._gone = False

    def hung_up(self) -> bool:
        """Whether the client closed its socket, not only its sending side (as
        `nc -N` does, still reading): a stream socket then polls as hung up."""
        poller = select.poll()
        poller.register(self._socket, select.POLLHUP)
        return any(events & select.POLLHUP for _, events in poller.poll(0))

    def gone(self) -> None:
        """The client has gone: end its subscriptions, now and any still to start.
        Otherwise each would hold a client slot until an event of its kinds came."""
        self._gone = True
        for scope in self._subscriptions:
            scope.cancel()

    async def stream_to(self, subscription: Callable[[], Awaitable[None]]) -> None:
        """Run `subscription` until it ends or the client goes (`gone`)."""
        if self._gone:
            return
        with anyio.CancelScope() as scope:
            self._subscriptions.add(scope)
            try:
                await subscription()
            finally:
                self._subscriptions.discard(scope)

    async def send(self, obj: dict[str, Any]) -> None:
        """Send `obj` as one line; raises `ReplyTooLongError` if it cannot be one."""
        try:
            data = protocol.encode(obj)
        except protocol.ProtocolError as e:
            # The reason is short: the client learns why, with the id it waits on.
            refusal = protocol.error_response(e.request_id, e.code, e.reason)
            await self._send(protocol.encode(refusal))
            raise ReplyTooLongError(e.reason) from e
        await self._send(data)

    async def _send(self, data: bytes) -> None:
        if self._send_lock.locked():
            # Another line is waiting for room: queue behind it, in order.
            async with self._send_lock:
                await self.stream.send(data)
            return
        try:
            sent = self._socket.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as e:
            raise anyio.BrokenResourceError from e
        if sent == len(data):
            return
        async with self._send_lock:  # free: nothing awaited since the check above
            await self.stream.send(data[sent:])


class Server:
    """Accepts connections and dispatches their requests to `handler`."""

    def __init__(
        self,
        listener: SocketListener,
        handler: Handler,
        on_denied: Callable[[Peer | None, str], Awaitable[None]],
        max_clients: int,
    ) -> None:
        self.listener = listener
        self.handler = handler
        self.on_denied = on_denied
        self.max_clients = max_clients
        self.clients = 0
        self.busy = 0  # requests being handled now
        self._idle = anyio.Event()
        self._idle.set()
        self._accepting = anyio.CancelScope()

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED):
        """Accept connections until cancelled.

        Error handling: accept errors in ACCEPT_CAPACITY_ERRNOS (out of fds or
        memory) are reported and retried after ACCEPT_BACKOFF_S; any other
        error propagates and stops the server. A connection's own errors end
        only that connection, which is closed in `finally` whatever happens.
        """
        async with anyio.create_task_group() as tg:
            task_status.started()
            with self._accepting:
                while True:
                    try:
                        stream = await self.listener.accept()
                    except (OSError, anyio.BrokenResourceError) as e:
                        # anyio raises the socket's error as the cause of a BrokenResourceError.
                        cause = e if isinstance(e, OSError) else e.__cause__
                        if not isinstance(cause, OSError) or cause.errno not in (
                            ACCEPT_CAPACITY_ERRNOS
                        ):
                            raise
                        print(f"ifmemd: accept: {cause.strerror}; retrying", file=sys.stderr)
                        await anyio.sleep(ACCEPT_BACKOFF_S)
                        continue
                    tg.start_soon(self._connection, stream)

    def stop_accepting(self) -> None:
        """Accept no new connection; the ones open go on until cancelled."""
        self._accepting.cancel()

    async def _connection(self, stream: SocketStream) -> None:
        self.clients += 1
        try:
            await self._serve_connection(stream)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the client went away
        except protocol.ConnectionClosedError:
            pass
        finally:
            self.clients -= 1
            with anyio.CancelScope(shield=True):
                await stream.aclose()

    async def _serve_connection(self, stream: SocketStream) -> None:
        try:
            peer = check_stream(stream, os.getuid())  # fails closed: unidentified is denied
        except AccessDenied as e:
            await self.on_denied(e.peer, e.reason)
            await send_message(stream, protocol.server_hello_error(protocol.DENIED, str(e)))
            return
        if self.clients > self.max_clients:
            await send_message(
                stream,
                protocol.server_hello_error(
                    protocol.UNAVAILABLE, f"too many clients (max_clients = {self.max_clients})"
                ),
            )
            return
        conn = Connection(stream, peer)
        try:
            # A client that connects and says nothing must not hold a slot forever.
            with anyio.fail_after(HANDSHAKE_TIMEOUT_S):
                await server_handshake(conn.reader, stream)
        except TimeoutError:
            return
        except protocol.ProtocolError:
            return  # server_handshake has answered with the error
        room = anyio.Semaphore(MAX_INFLIGHT_PER_CONNECTION)
        # When the client's input ends, even cut mid-line, the requests in flight
        # still finish (the task group waits for them): an ask is recorded whole,
        # and answered if the client still reads.
        async with anyio.create_task_group() as tg:
            while True:
                try:
                    request = protocol.parse_request(await conn.reader.read_message())
                except protocol.ProtocolError as e:
                    # A client gone meanwhile: the next read finds the end.
                    with suppress_disconnect(), contextlib.suppress(ReplyTooLongError):
                        await conn.send(protocol.error_response(e.request_id, e.code, e.reason))
                    continue
                except anyio.BrokenResourceError:
                    conn.gone()
                    break
                except (anyio.EndOfStream, protocol.ConnectionClosedError):
                    if conn.hung_up():
                        conn.gone()
                    break
                await room.acquire()
                tg.start_soon(self._dispatch_one, conn, request, room)

    async def _dispatch_one(
        self, conn: Connection, request: protocol.Request, room: anyio.Semaphore
    ) -> None:
        try:
            with suppress_disconnect(), contextlib.suppress(ReplyTooLongError):
                await self._dispatch(conn, request)
        finally:
            room.release()

    async def _dispatch(self, conn: Connection, request: protocol.Request) -> None:
        if request.op == protocol.SUBSCRIBE:
            # A subscription streams until the client or the daemon goes away:
            # it is not a request in flight that a stopping daemon waits for.
            async def subscription() -> None:
                try:
                    await self.handler(conn, request)
                except OpError as e:
                    await conn.send(protocol.error_response(request.id, e.code, str(e)))

            await conn.stream_to(subscription)
            return
        self.busy += 1
        if self.busy == 1:
            self._idle = anyio.Event()
        result: Any = None
        try:
            try:
                result = await self.handler(conn, request)
                response = protocol.ok_response(request.id, result)
            except OpError as e:
                response = protocol.error_response(request.id, e.code, str(e))
            except IfmemError as e:
                response = protocol.error_response(request.id, protocol.INTERNAL, str(e))
            except Exception as e:
                # A bug behind one request must not take the daemon and every other
                # client down with it: report it to the journal, answer `internal`.
                traceback.print_exception(e, file=sys.stderr)
                response = protocol.error_response(
                    request.id, protocol.INTERNAL, f"{request.op}: internal error: {e!r}"
                )
            if result is not None or response.get("ok") is False:
                await conn.send(response)
        finally:
            # A request counts as in flight until its answer is sent, so a
            # stopping daemon still delivers the answer to `ifmem stop` itself.
            self.busy -= 1
            if self.busy == 0:
                self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait for in-flight requests to finish; False if some were still running."""
        with anyio.move_on_after(timeout):
            await self._idle.wait()
            return True
        return self.busy == 0


async def listener_from(sock: socket.socket) -> SocketListener:
    sock.setblocking(False)
    return await SocketListener.from_socket(sock)


def suppress_disconnect() -> contextlib.AbstractContextManager[None]:
    """Ignore a client that went away while we were writing to it."""
    return contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError)
