"""The ifmem socket protocol, version 1: framing, handshake, requests, responses.

Clients and the daemon exchange newline-delimited JSON over a Unix socket, one
object a line, at most `MAX_LINE` bytes a line (the newline excluded). The first
line from the client is the handshake (`client_hello()`), the daemon answers
with the version it picked (`server_hello()`) or an error. Every later line from
the client is a request `{"id": …, "op": …, …args}`; the daemon answers each
with `ok_response()` or `error_response()`, echoing the id, and streams
`event_message()` lines on a subscription.

This module is deliberately stdlib-only (no anyio): the `ifmem` command imports
it to talk to the daemon and must start fast. The daemon's async reader lives in
`ifmemd.wire.framing`; both split lines with the same sans-IO `LineBuffer`.
"""

from __future__ import annotations

import _socket
import os
import time

from ifmemd.errors import IfmemError
from ifmemd.wire import jsonline

# Annotations only (never evaluated: `from __future__ import annotations`):
# typing, pathlib and socket (and json: see `jsonline`) would cost every
# `ifmem ask` process ~10 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path
    from typing import Any, Final

PROTO: Final = "ifmem"
VERSION: Final = 1
SUPPORTED_VERSIONS: Final = frozenset({1})
MAX_LINE: Final = 1 << 20
"""Largest line either side accepts, in bytes, not counting the newline."""

MAX_QUESTION_BYTES: Final = 64 * 1024
MAX_ID_LENGTH: Final = 256
MAX_K: Final = 100
MAX_SOURCE_BYTES: Final = 1024
"""Largest `source` a `remember` request may carry, in UTF-8 bytes."""
MAX_MEMORY_BYTES: Final = 128 * 1024
"""Largest `text` a `remember` request may carry, in UTF-8 bytes: its event, sent
to a subscriber with every character escaped (six bytes for a control character),
still fits in a line."""
SHOWN_CHARS: Final = 80
"""How much of a value a client sent an error message quotes back."""

# Ops.
ASK: Final = "ask"
REMEMBER: Final = "remember"
FORGET: Final = "forget"
STATUS: Final = "status"
RELOAD: Final = "reload"
STOP: Final = "stop"
SUBSCRIBE: Final = "subscribe"
SEAL: Final = "seal"
PRUNE: Final = "prune"
OPS: Final = (ASK, REMEMBER, FORGET, STATUS, RELOAD, STOP, SUBSCRIBE, SEAL, PRUNE)

# Error codes, as they appear in `error.code` on the wire.
BAD_JSON: Final = "bad_json"
LINE_TOO_LONG: Final = "line_too_long"
BAD_HANDSHAKE: Final = "bad_handshake"
UNSUPPORTED_VERSION: Final = "unsupported_version"
BAD_REQUEST: Final = "bad_request"
UNKNOWN_OP: Final = "unknown_op"
BAD_RESPONSE: Final = "bad_response"
INTERNAL: Final = "internal"
UNAVAILABLE: Final = "unavailable"
NOT_FOUND: Final = "not_found"
DUPLICATE_ID: Final = "duplicate_id"
DENIED: Final = "denied"
TIMEOUT: Final = "timeout"
ERROR_CODES: Final = frozenset(
    {
        BAD_JSON,
        LINE_TOO_LONG,
        BAD_HANDSHAKE,
        UNSUPPORTED_VERSION,
        BAD_REQUEST,
        UNKNOWN_OP,
        BAD_RESPONSE,
        INTERNAL,
        UNAVAILABLE,
        NOT_FOUND,
        DUPLICATE_ID,
        DENIED,
        TIMEOUT,
    }
)

RequestId = str | int

_START_HINT: Final = "start it with `ifmem daemon` or `systemctl --user start ifmem`"


class ProtocolError(IfmemError):
    """Raised when a line or message breaks the ifmem wire protocol.

    `code` is one of the wire error codes; `request_id` is the id of the
    offending request when it could be read, so the daemon can answer it.
    """

    def __init__(self, code: str, reason: str, request_id: RequestId | None = None) -> None:
        self.code = code
        self.reason = reason
        self.request_id = request_id
        super().__init__(f"protocol error ({code}): {reason}")


class RemoteError(IfmemError):
    """Raised when the daemon answers a request or the handshake with an error."""

    def __init__(self, code: str, message: str, op: str | None = None) -> None:
        self.code = code
        self.message = message
        self.op = op
        where = f"{op}: " if op else ""
        super().__init__(f"{where}{message} ({code})")


class DaemonUnreachableError(IfmemError):
    """Raised when no daemon accepts connections on the socket path."""

    def __init__(self, path: Path | str, reason: str) -> None:
        from pathlib import Path

        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot reach ifmemd at {path}: {reason}; {_START_HINT}")


class ConnectionClosedError(IfmemError):
    """Raised when the peer closes the connection in the middle of a line or before answering."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"connection closed: {reason}")


class DaemonTimeoutError(IfmemError):
    """Raised when the daemon does not answer within the client's timeout."""

    def __init__(self, op: str, timeout: float, request_id: RequestId | None) -> None:
        self.op = op
        self.timeout = timeout
        self.request_id = request_id
        retry = f"; retrying with id {request_id!r} is safe" if request_id is not None else ""
        super().__init__(f"{op}: no answer from ifmemd within {timeout:g} s{retry}")


# --- framing -----------------------------------------------------------------


class LineBuffer:
    """Splits a byte stream into lines, sans-IO, enforcing `MAX_LINE`.

    Feed received bytes with `feed()`, then call `next_line()` until it returns
    None. A line longer than the limit is dropped as it arrives (never held in
    memory whole) and reported by `next_line()` once its newline has been seen,
    so the next line is read normally. Each byte is scanned for a newline once.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._start = 0  # where the current line begins in _buf
        self._scanned = 0  # _buf[_start:_scanned] holds no newline
        self._discarding = False
        self._dropped = 0  # bytes of the oversized line dropped so far

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        if self._start:
            # Compact once per chunk, not once per line: a chunk may hold many lines.
            del self._buf[: self._start]
            self._scanned -= self._start
            self._start = 0
        self._buf += data

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line held or dropped so far."""
        return len(self._buf) - self._start + self._dropped

    def next_line(self) -> bytes | None:
        """Return the next complete line without its newline, or None if more bytes are needed.

        Raises `ProtocolError(LINE_TOO_LONG)` once a line over the limit has
        been read to its end and discarded.
        """
        nl = self._buf.find(b"\n", self._scanned)
        if nl < 0:
            if self._discarding or len(self._buf) - self._start > self.max_line:
                self._discarding = True
                self._dropped += len(self._buf) - self._start
                self._buf.clear()
                self._start = self._scanned = 0
            else:
                self._scanned = len(self._buf)
            return None
        length = nl - self._start + self._dropped
        line = bytes(self._buf[self._start : nl]) if length <= self.max_line else None
        self._start = self._scanned = nl + 1
        self._discarding = False
        self._dropped = 0
        if line is None:
            raise ProtocolError(
                LINE_TOO_LONG,
                f"line of {length} bytes exceeds the limit of {self.max_line} bytes; discarded",
            )
        return line

    def eof(self) -> None:
        """Declare the end of the stream; raise `ConnectionClosedError` if a line was cut short."""
        if self.pending:
            raise ConnectionClosedError(
                f"peer closed the connection after {self.pending} bytes of an unfinished line"
            )


def encode(obj: dict[str, Any]) -> bytes:
    """Serialise one message as compact JSON plus newline, refusing lines over `MAX_LINE`."""
    # ASCII-only output: a lone surrogate read from a peer can be echoed back safely.
    data = jsonline.dumps(obj, ascii=True).encode()
    if len(data) > MAX_LINE:
        raise ProtocolError(
            LINE_TOO_LONG,
            f"message of {len(data)} bytes exceeds the limit of {MAX_LINE} bytes",
            obj.get("id") if isinstance(obj.get("id"), str | int) else None,
        )
    return data + b"\n"


def decode_line(line: bytes) -> dict[str, Any]:
    """Parse one line (without its newline) into a JSON object, or raise `ProtocolError`."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError(BAD_JSON, f"line is not valid UTF-8 (byte {e.start})") from e
    try:
        obj = jsonline.loads(text)  # NaN and Infinity are refused
    except RecursionError as e:
        raise ProtocolError(BAD_JSON, "JSON nested too deeply") from e
    except ValueError as e:
        raise ProtocolError(BAD_JSON, f"line is not valid JSON: {e}") from e
    if not isinstance(obj, dict):
        raise ProtocolError(BAD_REQUEST, f"expected a JSON object, got {_json_type(obj)}")
    return obj


def _json_type(value: object) -> str:
    match value:
        case None:
            return "null"
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case str():
            return "a string"
        case list():
            return "an array"
        case dict():
            return "an object"
    return type(value).__name__


# --- handshake ---------------------------------------------------------------


def client_hello() -> dict[str, Any]:
    """The client's first line: the range of protocol versions it speaks."""
    return {"proto": PROTO, "min": min(SUPPORTED_VERSIONS), "max": max(SUPPORTED_VERSIONS)}


def server_hello(version: int) -> dict[str, Any]:
    """The daemon's answer to a hello it accepted."""
    return {"proto": PROTO, "version": version}


def server_hello_error(code: str, message: str) -> dict[str, Any]:
    """The daemon's answer to a hello it refused (or a connection it refuses outright)."""
    return {"proto": PROTO, "error": {"code": code, "message": message}}


def negotiate(hello: dict[str, Any]) -> int:
    """Pick the highest version both sides speak from a client hello, or raise `ProtocolError`."""
    expected = jsonline.dumps(client_hello())
    if hello.get("proto") != PROTO:
        raise ProtocolError(
            BAD_HANDSHAKE,
            f"first line must be a hello like {expected}, got proto={shown(hello.get('proto'))}",
        )
    lo, hi = hello.get("min"), hello.get("max")
    for name, value in (("min", lo), ("max", hi)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ProtocolError(
                BAD_HANDSHAKE, f"hello {name} must be a positive integer, got {shown(value)}"
            )
    assert isinstance(lo, int) and isinstance(hi, int)
    if lo > hi:
        raise ProtocolError(BAD_HANDSHAKE, f"hello min ({lo}) is greater than max ({hi})")
    common = [v for v in SUPPORTED_VERSIONS if lo <= v <= hi]
    if not common:
        ours = ", ".join(str(v) for v in sorted(SUPPORTED_VERSIONS))
        raise ProtocolError(
            UNSUPPORTED_VERSION, f"client speaks versions {lo}..{hi}; this ifmemd speaks {ours}"
        )
    return max(common)


def check_server_hello(reply: dict[str, Any]) -> int:
    """Return the version the daemon picked, or raise `RemoteError` / `ProtocolError`."""
    if reply.get("proto") != PROTO:
        raise ProtocolError(BAD_RESPONSE, f"not an ifmem daemon (hello reply {reply!r:.200})")
    if "error" in reply:
        code, message = _error_fields(reply["error"])
        raise RemoteError(code, message, "handshake")
    version = reply.get("version")
    if version not in SUPPORTED_VERSIONS:
        raise ProtocolError(
            BAD_RESPONSE, f"daemon picked version {version!r}, which was not offered"
        )
    assert isinstance(version, int)
    return version


# --- requests and responses --------------------------------------------------


def _fresh_id() -> str:
    """A random request id (128 bits, hex); `os.urandom`, as `uuid` costs ~2 ms to import."""
    return os.urandom(16).hex()


# A plain class, not a dataclass or a NamedTuple: `dataclasses` (and the
# `inspect` it pulls in) or `typing` would cost every `ifmem ask` process
# milliseconds of start-up.
class Request:
    """One validated client request: its id, its op and the op's arguments."""

    __slots__ = ("args", "id", "op")

    def __init__(self, id: RequestId, op: str, args: dict[str, Any]) -> None:
        self.id = id
        self.op = op
        self.args = args

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return (self.id, self.op, self.args) == (other.id, other.op, other.args)

    __hash__ = None  # type: ignore[assignment]  # `args` is a dict: unhashable, as a tuple of it is

    def __repr__(self) -> str:
        return f"Request(id={self.id!r}, op={self.op!r}, args={self.args!r})"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_text(value: object, what: str, rid: RequestId) -> str:
    if not isinstance(value, str):
        raise ProtocolError(BAD_REQUEST, f"{what} must be a string, not {_json_type(value)}", rid)
    if not value.strip():
        raise ProtocolError(BAD_REQUEST, f"{what} must not be empty", rid)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ProtocolError(
            BAD_REQUEST, f"{what} is not valid Unicode (lone surrogate)", rid
        ) from e
    return value


def shown(value: object) -> str:
    """`repr(value)` for an error message, cut to SHOWN_CHARS: an error that
    quoted a client's value whole could be longer than a line may be."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def _check_str_list(value: object, what: str, rid: RequestId) -> list[str]:
    if not isinstance(value, list):
        raise ProtocolError(
            BAD_REQUEST, f"{what} must be a list of strings, not {_json_type(value)}", rid
        )
    for i, item in enumerate(value):
        _check_text(item, f"{what}[{i}]", rid)
    return value


def _check_ask(args: dict[str, Any], rid: RequestId) -> None:
    question = _check_text(args.get("question"), "ask: question", rid)
    size = len(question.encode("utf-8"))
    if size > MAX_QUESTION_BYTES:
        raise ProtocolError(
            BAD_REQUEST, f"ask: question is {size} bytes; the limit is {MAX_QUESTION_BYTES}", rid
        )
    if "shards" in args:
        _check_str_list(args["shards"], "ask: shards", rid)
    if "k" in args:
        k = args["k"]
        if not _is_int(k) or not 1 <= k <= MAX_K:
            raise ProtocolError(
                BAD_REQUEST, f"ask: k must be an integer from 1 to {MAX_K}, got {shown(k)}", rid
            )


def _check_remember(args: dict[str, Any], rid: RequestId) -> None:
    text = _check_text(args.get("text"), "remember: text", rid)
    size = len(text.encode("utf-8"))
    if size > MAX_MEMORY_BYTES:
        raise ProtocolError(
            BAD_REQUEST, f"remember: text is {size} bytes; the limit is {MAX_MEMORY_BYTES}", rid
        )
    if "source" in args:
        source = _check_text(args["source"], "remember: source", rid)
        size = len(source.encode("utf-8"))
        if size > MAX_SOURCE_BYTES:
            raise ProtocolError(
                BAD_REQUEST,
                f"remember: source is {size} bytes; the limit is {MAX_SOURCE_BYTES}",
                rid,
            )


def _check_forget(args: dict[str, Any], rid: RequestId) -> None:
    memory_id = _check_text(args.get("memory_id"), "forget: memory_id", rid)
    if len(memory_id) > MAX_ID_LENGTH:
        raise ProtocolError(
            BAD_REQUEST, f"forget: memory_id must be at most {MAX_ID_LENGTH} characters", rid
        )


def _check_subscribe(args: dict[str, Any], rid: RequestId) -> None:
    if "kinds" in args:
        _check_str_list(args["kinds"], "subscribe: kinds", rid)
    if "since_seq" in args:
        seq = args["since_seq"]
        if not _is_int(seq) or seq < 0:
            raise ProtocolError(
                BAD_REQUEST,
                f"subscribe: since_seq must be a non-negative integer, got {shown(seq)}",
                rid,
            )


def _check_prune(args: dict[str, Any], rid: RequestId) -> None:
    bounds = [k for k in ("before_seq", "before_ns") if k in args]
    if len(bounds) != 1:
        raise ProtocolError(BAD_REQUEST, "prune: give exactly one of before_seq and before_ns", rid)
    value = args[bounds[0]]
    if not _is_int(value) or value < 1:
        raise ProtocolError(
            BAD_REQUEST, f"prune: {bounds[0]} must be a positive integer, got {shown(value)}", rid
        )


def _no_args(args: dict[str, Any], rid: RequestId) -> None:
    pass


# op -> (required args, optional args, checker)
_OP_ARGS: Final = {
    ASK: (("question",), ("shards", "k"), _check_ask),
    REMEMBER: (("text",), ("source",), _check_remember),
    FORGET: (("memory_id",), (), _check_forget),
    STATUS: ((), (), _no_args),
    RELOAD: ((), (), _no_args),
    STOP: ((), (), _no_args),
    SUBSCRIBE: ((), ("kinds", "since_seq"), _check_subscribe),
    SEAL: ((), (), _no_args),
    PRUNE: ((), ("before_seq", "before_ns"), _check_prune),
}


def parse_request(obj: dict[str, Any]) -> Request:
    """Validate a decoded request, or raise `ProtocolError` (with the id, when it was readable)."""
    rid = obj.get("id")
    if rid is None:
        raise ProtocolError(BAD_REQUEST, "request has no id")
    if isinstance(rid, str):
        if not rid or len(rid) > MAX_ID_LENGTH:
            raise ProtocolError(BAD_REQUEST, f"request id must be 1 to {MAX_ID_LENGTH} characters")
        try:
            rid.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ProtocolError(BAD_REQUEST, "request id is not valid Unicode") from e
    elif not _is_int(rid):
        raise ProtocolError(
            BAD_REQUEST, f"request id must be a string or an integer, not {_json_type(rid)}"
        )
    op = obj.get("op")
    if op is None:
        raise ProtocolError(BAD_REQUEST, "request has no op", rid)
    if not isinstance(op, str):
        raise ProtocolError(BAD_REQUEST, f"op must be a string, not {_json_type(op)}", rid)
    if op not in _OP_ARGS:
        raise ProtocolError(UNKNOWN_OP, f"unknown op {shown(op)}; known ops: {', '.join(OPS)}", rid)
    required, optional, check = _OP_ARGS[op]
    args = {k: v for k, v in obj.items() if k not in ("id", "op")}
    for name in required:
        if name not in args:
            raise ProtocolError(BAD_REQUEST, f"{op}: missing required argument {name!r}", rid)
    unknown = sorted(set(args) - set(required) - set(optional))
    if unknown:
        known = ", ".join((*required, *optional)) or "none"
        raise ProtocolError(
            BAD_REQUEST, f"{op}: unknown argument {shown(unknown[0])} (known: {known})", rid
        )
    check(args, rid)
    return Request(rid, op, args)


def make_request(op: str, request_id: RequestId, **args: Any) -> dict[str, Any]:
    """Build a request message; `parse_request` is its inverse."""
    return {"id": request_id, "op": op, **args}


def ok_response(request_id: RequestId | None, result: Any) -> dict[str, Any]:
    """The answer to a request that succeeded."""
    return {"id": request_id, "ok": True, "result": result}


def error_response(request_id: RequestId | None, code: str, message: str) -> dict[str, Any]:
    """The answer to a request that failed; `request_id` is None when the id was unreadable."""
    return {"id": request_id, "ok": False, "error": {"code": code, "message": message}}


def event_message(request_id: RequestId, event: dict[str, Any]) -> dict[str, Any]:
    """One committed event streamed to the subscription opened by request `request_id`."""
    return {"id": request_id, "event": event}


def _error_fields(error: object) -> tuple[str, str]:
    if not isinstance(error, dict):
        raise ProtocolError(BAD_RESPONSE, f"error must be an object, not {_json_type(error)}")
    code, message = error.get("code"), error.get("message")
    if not isinstance(code, str) or not isinstance(message, str):
        raise ProtocolError(BAD_RESPONSE, "error must have string code and message")
    return code, message


# --- blocking client ---------------------------------------------------------


_RECV_CHUNK: Final = 65536


class Client:
    """A blocking connection to ifmemd, for the CLI and scripts: connect, handshake, request.

    Connects and shakes hands on construction. Each request gets a fresh random
    id unless one is given; the daemon answers a repeated id with the answer it
    recorded, so resending the same id after a lost connection is safe.
    `timeout` bounds connecting and each wait for an answer (None: wait
    forever). On a timeout or a broken connection the client is closed.
    """

    def __init__(self, path: Path | str, timeout: float | None = 30.0) -> None:
        self.path = os.fspath(path)
        self.timeout = timeout
        self.version: int | None = None
        self._sock: _socket.socket | None = None
        self._lines = LineBuffer()
        self._connect()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        if self._sock is not None:
            sock, self._sock = self._sock, None
            sock.close()

    @property
    def closed(self) -> bool:
        return self._sock is None

    def _connect(self) -> None:
        # `_socket`, not `socket`: the wrapper class adds nothing used here and
        # its module imports enum and selectors.
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.path)
        except TimeoutError as e:
            sock.close()
            raise DaemonUnreachableError(
                self.path, f"connect timed out after {self.timeout:g} s"
            ) from e
        except OSError as e:
            sock.close()
            raise DaemonUnreachableError(self.path, e.strerror or str(e)) from e
        self._sock = sock
        self._lines = LineBuffer()
        shook_hands = False
        try:
            self.version = self._handshake(sock)
            shook_hands = True
        finally:
            if not shook_hands:
                self.close()

    def _handshake(self, sock: _socket.socket) -> int:
        try:
            sock.sendall(encode(client_hello()))
        except TimeoutError as e:
            raise DaemonTimeoutError("handshake", self.timeout or 0.0, None) from e
        except OSError as e:
            # A daemon that refuses a peer says why and hangs up, possibly before
            # our hello arrives: its reason is still there to read, and says more.
            try:
                reply = self._receive("handshake", None)
            except ConnectionClosedError:
                raise ConnectionClosedError(
                    f"handshake: send to ifmemd failed: {e.strerror or e}"
                ) from e
        else:
            reply = self._receive("handshake", None)
        return check_server_hello(reply)

    def _send(self, obj: dict[str, Any], op: str, request_id: RequestId | None) -> None:
        data = encode(obj)
        sock = self._require()
        try:
            sock.sendall(data)
        except TimeoutError as e:
            self.close()
            raise DaemonTimeoutError(op, self.timeout or 0.0, request_id) from e
        except OSError as e:
            self.close()
            raise ConnectionClosedError(f"{op}: send to ifmemd failed: {e.strerror or e}") from e

    def _receive(self, op: str, request_id: RequestId | None) -> dict[str, Any]:
        sock = self._require()
        while True:
            try:
                line = self._lines.next_line()
            except ProtocolError:
                self.close()
                raise
            if line is not None:
                try:
                    return decode_line(line)
                except ProtocolError as e:
                    self.close()
                    raise ProtocolError(BAD_RESPONSE, f"{op}: daemon sent {e.reason}") from e
            try:
                data = sock.recv(_RECV_CHUNK)
            except TimeoutError as e:
                waited = sock.gettimeout() or 0.0
                self.close()
                raise DaemonTimeoutError(op, waited, request_id) from e
            except OSError as e:
                self.close()
                raise ConnectionClosedError(
                    f"{op}: receive from ifmemd failed: {e.strerror or e}"
                ) from e
            if not data:
                self.close()
                raise ConnectionClosedError(f"ifmemd closed the connection before answering {op}")
            self._lines.feed(data)

    def _require(self) -> _socket.socket:
        if self._sock is None:
            raise ConnectionClosedError("the client is closed")
        return self._sock

    def _answer(self, reply: dict[str, Any], op: str, request_id: RequestId) -> Any:
        """Unpack a response to `request_id`, raising `RemoteError` for an error answer."""
        # With one request in flight, an error with a null id (e.g. our line was
        # unreadable) is still the answer to it.
        if reply.get("id") != request_id and not (
            reply.get("id") is None and reply.get("ok") is False
        ):
            self.close()
            raise ProtocolError(
                BAD_RESPONSE, f"{op}: answer for id {reply.get('id')!r}, expected {request_id!r}"
            )
        ok = reply.get("ok")
        if ok is True:
            return reply.get("result")
        if ok is False:
            code, message = _error_fields(reply.get("error"))
            raise RemoteError(code, message, op)
        self.close()
        raise ProtocolError(BAD_RESPONSE, f"{op}: answer has no boolean 'ok'")

    def request(
        self,
        op: str,
        *,
        request_id: RequestId | None = None,
        retries: int = 0,
        retry_delay: float = 0.5,
        **args: Any,
    ) -> Any:
        """Send one request and return its result, or raise `RemoteError` for an error answer.

        With `retries`, a connection that breaks or times out before the answer
        arrives is reopened and the request resent under the same id, at most
        that many times, `retry_delay` seconds apart. The client's `timeout`
        bounds them all together: a retry gets what is left of it, and none is
        made when too little is.
        """
        rid: RequestId = _fresh_id() if request_id is None else request_id
        message = make_request(op, rid, **args)
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        attempt = 0
        while True:
            try:
                if attempt and self._sock is None:
                    self._connect()
                    if deadline is not None:
                        self._require().settimeout(max(deadline - time.monotonic(), 0.001))
                self._send(message, op, rid)
                return self._answer(self._receive(op, rid), op, rid)
            except (ConnectionClosedError, DaemonTimeoutError, DaemonUnreachableError):
                late = deadline is not None and time.monotonic() + retry_delay >= deadline
                if attempt >= retries or late:
                    raise
                attempt += 1
                self.close()
                time.sleep(retry_delay)

    def iter_events(
        self,
        *,
        kinds: list[str] | None = None,
        since_seq: int | None = None,
        request_id: RequestId | None = None,
        idle_timeout: float | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Subscribe and yield committed events as they arrive.

        The subscription never ends normally: when the daemon stops, the
        iterator raises `ConnectionClosedError`. `idle_timeout` bounds the wait
        between events (None: wait forever); the subscription takes the
        connection over, so use a separate `Client` for requests.
        """
        rid: RequestId = _fresh_id() if request_id is None else request_id
        args: dict[str, Any] = {}
        if kinds is not None:
            args["kinds"] = kinds
        if since_seq is not None:
            args["since_seq"] = since_seq
        self._send(make_request(SUBSCRIBE, rid, **args), SUBSCRIBE, rid)
        acknowledged = False
        while True:
            reply = self._receive(SUBSCRIBE, rid)
            if "event" in reply and reply.get("id") == rid:
                event = reply["event"]
                if not isinstance(event, dict):
                    self.close()
                    raise ProtocolError(BAD_RESPONSE, "subscribe: event must be an object")
                if not acknowledged and self._sock is not None:
                    self._sock.settimeout(idle_timeout)
                    acknowledged = True
                yield event
                continue
            self._answer(reply, SUBSCRIBE, rid)
            if not acknowledged and self._sock is not None:
                self._sock.settimeout(idle_timeout)
                acknowledged = True
