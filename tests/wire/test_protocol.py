"""The v1 wire protocol: messages, handshake, request validation, and the blocking client
against a small real anyio server on a real Unix socket."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.from_thread import start_blocking_portal
from ifmemd.errors import IfmemError
from ifmemd.wire import protocol
from ifmemd.wire.framing import LineReader, send_message, server_handshake
from ifmemd.wire.protocol import (
    BAD_HANDSHAKE,
    BAD_JSON,
    BAD_REQUEST,
    BAD_RESPONSE,
    DENIED,
    INTERNAL,
    LINE_TOO_LONG,
    MAX_LINE,
    UNKNOWN_OP,
    UNSUPPORTED_VERSION,
    Client,
    ConnectionClosedError,
    DaemonTimeoutError,
    DaemonUnreachableError,
    ProtocolError,
    RemoteError,
    Request,
)

# --- messages ----------------------------------------------------------------


def test_constants() -> None:
    assert (protocol.PROTO, protocol.VERSION, MAX_LINE) == ("ifmem", 1, 1 << 20)
    assert protocol.OPS == (
        "ask",
        "remember",
        "forget",
        "status",
        "reload",
        "stop",
        "subscribe",
        "seal",
        "prune",
    )
    assert {BAD_JSON, LINE_TOO_LONG, DENIED, INTERNAL} <= protocol.ERROR_CODES


def test_errors_are_ifmem_errors() -> None:
    for cls in (
        ProtocolError,
        RemoteError,
        DaemonUnreachableError,
        ConnectionClosedError,
        DaemonTimeoutError,
    ):
        assert issubclass(cls, IfmemError)
        assert cls.__doc__ and cls.__doc__.startswith("Raised when")


def test_encode_is_compact_json_and_a_newline() -> None:
    assert protocol.encode({"id": "a", "ok": True, "result": [1, "é"]}) == (
        b'{"id":"a","ok":true,"result":[1,"\\u00e9"]}\n'
    )


def test_encode_decode_round_trip() -> None:
    msg = {"id": 7, "op": "remember", "text": "line one\nline two ☃ \U0001f600"}
    line = protocol.encode(msg)
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    assert protocol.decode_line(line[:-1]) == msg


def test_encode_refuses_an_oversized_message() -> None:
    with pytest.raises(ProtocolError) as info:
        protocol.encode({"id": "q1", "ok": True, "result": "x" * MAX_LINE})
    assert info.value.code == LINE_TOO_LONG
    assert info.value.request_id == "q1"


def test_encode_survives_a_lone_surrogate_from_a_peer() -> None:
    echoed = protocol.decode_line(b'{"id":"\\ud800"}')
    assert protocol.encode(echoed) == b'{"id":"\\ud800"}\n'


@pytest.mark.parametrize(
    ("line", "code", "fragment"),
    [
        (b'{"id":1', BAD_JSON, "not valid JSON"),
        (b"\xff\xfe", BAD_JSON, "not valid UTF-8 (byte 0)"),
        (b'{"x":NaN}', BAD_JSON, "NaN is not valid JSON"),
        (b'{"x":Infinity}', BAD_JSON, "Infinity"),
        (b"[" * 100_000 + b"]" * 100_000, BAD_JSON, "nested too deeply"),
        (b"[1,2]", BAD_REQUEST, "expected a JSON object, got an array"),
        (b'"hi"', BAD_REQUEST, "got a string"),
        (b"null", BAD_REQUEST, "got null"),
    ],
)
def test_decode_line_rejects(line: bytes, code: str, fragment: str) -> None:
    with pytest.raises(ProtocolError) as info:
        protocol.decode_line(line)
    assert info.value.code == code
    assert fragment in str(info.value)


# --- handshake ---------------------------------------------------------------


def test_hellos() -> None:
    assert protocol.client_hello() == {"proto": "ifmem", "min": 1, "max": 1}
    assert protocol.server_hello(1) == {"proto": "ifmem", "version": 1}
    assert protocol.server_hello_error(DENIED, "no") == {
        "proto": "ifmem",
        "error": {"code": DENIED, "message": "no"},
    }


@pytest.mark.parametrize(
    "hello",
    [
        {"proto": "ifmem", "min": 1, "max": 1},
        {"proto": "ifmem", "min": 1, "max": 5},
        {"proto": "ifmem", "min": 1, "max": 1, "client": "ifmem-cli/0.1"},
    ],
)
def test_negotiate_picks_version_one(hello: dict[str, Any]) -> None:
    assert protocol.negotiate(hello) == 1


@pytest.mark.parametrize(
    ("hello", "code", "fragment"),
    [
        ({"min": 1, "max": 1}, BAD_HANDSHAKE, "got proto=None"),
        ({"proto": "IFMEM", "min": 1, "max": 1}, BAD_HANDSHAKE, "first line must be a hello"),
        ({"proto": "ifmem", "max": 1}, BAD_HANDSHAKE, "min must be a positive integer"),
        ({"proto": "ifmem", "min": 1, "max": "1"}, BAD_HANDSHAKE, "max must be"),
        ({"proto": "ifmem", "min": True, "max": 1}, BAD_HANDSHAKE, "min must be"),
        ({"proto": "ifmem", "min": 0, "max": 1}, BAD_HANDSHAKE, "min must be"),
        ({"proto": "ifmem", "min": 3, "max": 2}, BAD_HANDSHAKE, "min (3) is greater than max (2)"),
        ({"proto": "ifmem", "min": 2, "max": 4}, UNSUPPORTED_VERSION, "speaks versions 2..4"),
    ],
)
def test_negotiate_refuses(hello: dict[str, Any], code: str, fragment: str) -> None:
    with pytest.raises(ProtocolError) as info:
        protocol.negotiate(hello)
    assert info.value.code == code
    assert fragment in info.value.reason


def test_check_server_hello() -> None:
    assert protocol.check_server_hello({"proto": "ifmem", "version": 1}) == 1
    with pytest.raises(RemoteError) as info:
        protocol.check_server_hello(protocol.server_hello_error(DENIED, "not yours"))
    assert (info.value.code, info.value.message) == (DENIED, "not yours")
    for bad in ({"proto": "ifmem", "version": 2}, {"version": 1}, {"proto": "ifmem"}):
        with pytest.raises(ProtocolError) as perr:
            protocol.check_server_hello(bad)
        assert perr.value.code == BAD_RESPONSE


# --- requests ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (
            {"id": "r1", "op": "ask", "question": "why?"},
            Request("r1", "ask", {"question": "why?"}),
        ),
        (
            {"id": 3, "op": "ask", "question": "q", "shards": ["docs"], "k": 100},
            Request(3, "ask", {"question": "q", "shards": ["docs"], "k": 100}),
        ),
        ({"id": 0, "op": "remember", "text": "t"}, Request(0, "remember", {"text": "t"})),
        (
            {"id": "f", "op": "forget", "memory_id": "m1"},
            Request("f", "forget", {"memory_id": "m1"}),
        ),
        ({"id": "s", "op": "status"}, Request("s", "status", {})),
        ({"id": "s", "op": "reload"}, Request("s", "reload", {})),
        ({"id": "s", "op": "stop"}, Request("s", "stop", {})),
        ({"id": "s", "op": "subscribe"}, Request("s", "subscribe", {})),
        (
            {"id": "s", "op": "subscribe", "kinds": ["query.answered"], "since_seq": 0},
            Request("s", "subscribe", {"kinds": ["query.answered"], "since_seq": 0}),
        ),
    ],
)
def test_parse_request_accepts(obj: dict[str, Any], expected: Request) -> None:
    assert protocol.parse_request(obj) == expected
    assert protocol.parse_request(
        protocol.make_request(expected.op, expected.id, **expected.args)
    ) == (expected)


@pytest.mark.parametrize(
    ("obj", "code", "fragment", "rid"),
    [
        ({"op": "status"}, BAD_REQUEST, "request has no id", None),
        ({"id": None, "op": "status"}, BAD_REQUEST, "request has no id", None),
        ({"id": "", "op": "status"}, BAD_REQUEST, "1 to 256 characters", None),
        ({"id": "x" * 257, "op": "status"}, BAD_REQUEST, "1 to 256 characters", None),
        ({"id": 1.5, "op": "status"}, BAD_REQUEST, "string or an integer, not a number", None),
        ({"id": True, "op": "status"}, BAD_REQUEST, "not a boolean", None),
        ({"id": ["a"], "op": "status"}, BAD_REQUEST, "not an array", None),
        ({"id": "a"}, BAD_REQUEST, "request has no op", "a"),
        ({"id": "a", "op": 3}, BAD_REQUEST, "op must be a string", "a"),
        ({"id": "a", "op": "dance"}, UNKNOWN_OP, "unknown op 'dance'; known ops: ask,", "a"),
        ({"id": "a", "op": "ask"}, BAD_REQUEST, "ask: missing required argument 'question'", "a"),
        ({"id": "a", "op": "ask", "question": 5}, BAD_REQUEST, "question must be a string", "a"),
        (
            {"id": "a", "op": "ask", "question": "  "},
            BAD_REQUEST,
            "question must not be empty",
            "a",
        ),
        (
            {"id": "a", "op": "ask", "question": "é" * (32 * 1024 + 1)},
            BAD_REQUEST,
            "question is 65538 bytes; the limit is 65536",
            "a",
        ),
        (
            {"id": "a", "op": "ask", "question": "q", "k": 0},
            BAD_REQUEST,
            "k must be an integer from 1 to 100",
            "a",
        ),
        ({"id": "a", "op": "ask", "question": "q", "k": 101}, BAD_REQUEST, "from 1 to 100", "a"),
        ({"id": "a", "op": "ask", "question": "q", "k": True}, BAD_REQUEST, "from 1 to 100", "a"),
        ({"id": "a", "op": "ask", "question": "q", "k": 2.0}, BAD_REQUEST, "from 1 to 100", "a"),
        (
            {"id": "a", "op": "ask", "question": "q", "shards": "docs"},
            BAD_REQUEST,
            "shards must be a list",
            "a",
        ),
        (
            {"id": "a", "op": "ask", "question": "q", "shards": ["ok", 1]},
            BAD_REQUEST,
            "shards[1] must be a string",
            "a",
        ),
        (
            {"id": "a", "op": "ask", "question": "q", "shard": ["docs"]},
            BAD_REQUEST,
            "ask: unknown argument 'shard' (known: question, shards, k)",
            "a",
        ),
        ({"id": "a", "op": "remember"}, BAD_REQUEST, "missing required argument 'text'", "a"),
        ({"id": "a", "op": "remember", "text": ""}, BAD_REQUEST, "text must not be empty", "a"),
        ({"id": "a", "op": "remember", "text": "\ud800"}, BAD_REQUEST, "lone surrogate", "a"),
        (
            {"id": "a", "op": "forget", "memory_id": 4},
            BAD_REQUEST,
            "memory_id must be a string",
            "a",
        ),
        (
            {"id": "a", "op": "status", "verbose": True},
            BAD_REQUEST,
            "unknown argument 'verbose' (known: none)",
            "a",
        ),
        (
            {"id": "a", "op": "subscribe", "since_seq": -1},
            BAD_REQUEST,
            "since_seq must be a non-negative",
            "a",
        ),
        (
            {"id": "a", "op": "subscribe", "kinds": [""]},
            BAD_REQUEST,
            "kinds[0] must not be empty",
            "a",
        ),
    ],
)
def test_parse_request_rejects(obj: dict[str, Any], code: str, fragment: str, rid: object) -> None:
    with pytest.raises(ProtocolError) as info:
        protocol.parse_request(obj)
    assert info.value.code == code
    assert fragment in info.value.reason
    assert info.value.request_id == rid


def test_responses_and_events() -> None:
    assert protocol.ok_response("a", {"n": 1}) == {"id": "a", "ok": True, "result": {"n": 1}}
    assert protocol.error_response(None, BAD_JSON, "bad") == {
        "id": None,
        "ok": False,
        "error": {"code": BAD_JSON, "message": "bad"},
    }
    assert protocol.event_message(5, {"seq": 1}) == {"id": 5, "event": {"seq": 1}}


def test_protocol_module_does_not_import_anyio() -> None:
    code = "import sys, ifmemd.wire.protocol; sys.exit('anyio' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- the blocking client against a real server -------------------------------


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # pytest's tmp_path can exceed the 108-byte limit of a Unix socket path.
    path = Path(tempfile.mkdtemp(prefix="ifm-", dir="/tmp"))
    yield path
    shutil.rmtree(path)


Handler = Callable[[anyio.abc.SocketStream], Awaitable[None]]


class TinyDaemon:
    """Speaks protocol v1 like ifmemd: answers repeated ids from its record, streams events."""

    def __init__(self) -> None:
        self.answers: dict[Any, dict[str, Any]] = {}
        self.seen: list[Any] = []
        self.dropped: set[Any] = set()

    async def handle(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            reader = LineReader(stream)
            try:
                await server_handshake(reader, stream)
                while True:
                    try:
                        req = protocol.parse_request(await reader.read_message())
                    except ProtocolError as e:
                        await send_message(
                            stream, protocol.error_response(e.request_id, e.code, e.reason)
                        )
                        continue
                    self.seen.append(req.id)
                    if not await self.dispatch(stream, req):
                        return
            except (
                ProtocolError,
                ConnectionClosedError,
                anyio.EndOfStream,
                anyio.BrokenResourceError,
            ):
                return

    async def dispatch(self, stream: anyio.abc.SocketStream, req: Request) -> bool:
        if req.id in self.answers:
            await send_message(stream, self.answers[req.id])
            return True
        if req.op == "ask" and req.args["question"] == "hang":
            await anyio.sleep_forever()
        if req.op == "ask" and req.args["question"] == "crash once" and req.id not in self.dropped:
            self.dropped.add(req.id)
            return False  # like a daemon dying before it answers
        if req.op == "subscribe":
            await send_message(stream, protocol.ok_response(req.id, {"subscribed": True}))
            for seq in (1, 2, 3):
                await send_message(
                    stream, protocol.event_message(req.id, {"seq": seq, "kind": "x"})
                )
            return False
        if req.op == "ask" and req.args["question"] == "boom":
            answer = protocol.error_response(req.id, INTERNAL, "shard 'docs' crashed")
        else:
            answer = protocol.ok_response(
                req.id, {"op": req.op, "args": req.args, "n": len(self.answers)}
            )
        self.answers[req.id] = answer
        await send_message(stream, answer)
        return True


@contextmanager
def serving(path: Path, handler: Handler) -> Iterator[None]:
    """Run an anyio Unix-socket server with `handler` in a background thread."""

    async def serve(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with await anyio.create_unix_listener(path) as listener:
            task_status.started()
            await listener.serve(handler)

    with start_blocking_portal() as portal:
        future, _ = portal.start_task(serve)
        try:
            yield
        finally:
            future.cancel()


@pytest.fixture
def daemon(sock_dir: Path) -> Iterator[tuple[Path, TinyDaemon]]:
    path = sock_dir / "ifmem.sock"
    tiny = TinyDaemon()
    with serving(path, tiny.handle):
        yield path, tiny


def test_client_handshakes_and_requests(daemon: tuple[Path, TinyDaemon]) -> None:
    path, _ = daemon
    with Client(path, timeout=5) as client:
        assert client.version == 1
        result = client.request("ask", question="what?", shards=["docs"], k=3)
        assert result["args"] == {"question": "what?", "shards": ["docs"], "k": 3}
        assert client.request("status")["op"] == "status"
    assert client.closed


def test_client_generates_unique_uuid_ids(daemon: tuple[Path, TinyDaemon]) -> None:
    path, tiny = daemon
    with Client(path, timeout=5) as client:
        for _ in range(3):
            client.request("status")
    assert len(set(tiny.seen)) == 3
    assert all(isinstance(i, str) and len(i) == 32 and int(i, 16) >= 0 for i in tiny.seen)


def test_client_resending_an_id_gets_the_recorded_answer(daemon: tuple[Path, TinyDaemon]) -> None:
    path, tiny = daemon
    with Client(path, timeout=5) as client:
        first = client.request("remember", request_id="mem-1", text="buy milk")
    with Client(path, timeout=5) as client:
        again = client.request("remember", request_id="mem-1", text="buy milk")
        other = client.request("remember", request_id=42, text="other")
    assert first == again
    assert other["n"] == 1
    assert tiny.seen == ["mem-1", "mem-1", 42]


def test_client_error_answer_raises_remote_error(daemon: tuple[Path, TinyDaemon]) -> None:
    path, _ = daemon
    with Client(path, timeout=5) as client:
        with pytest.raises(RemoteError) as info:
            client.request("ask", question="boom")
        assert (info.value.code, info.value.op) == (INTERNAL, "ask")
        assert str(info.value) == "ask: shard 'docs' crashed (internal)"
        with pytest.raises(RemoteError) as info:
            client.request("dance")
        assert info.value.code == UNKNOWN_OP
        with pytest.raises(RemoteError) as info:
            client.request("ask", question="q", k=0)
        assert info.value.code == BAD_REQUEST
        # The connection survives error answers.
        assert client.request("status")["op"] == "status"


def test_client_refuses_to_send_an_oversized_line(daemon: tuple[Path, TinyDaemon]) -> None:
    path, _ = daemon
    with Client(path, timeout=5) as client:
        with pytest.raises(ProtocolError) as info:
            client.request("remember", text="x" * MAX_LINE)
        assert info.value.code == LINE_TOO_LONG
        assert client.request("status")["op"] == "status"


def test_client_iter_events(daemon: tuple[Path, TinyDaemon]) -> None:
    path, tiny = daemon
    events = []
    with Client(path, timeout=5) as client, pytest.raises(ConnectionClosedError):
        for event in client.iter_events(kinds=["x"], since_seq=0, request_id="sub"):
            events.append(event)
    assert events == [{"seq": 1, "kind": "x"}, {"seq": 2, "kind": "x"}, {"seq": 3, "kind": "x"}]
    assert tiny.seen == ["sub"]


def test_client_iter_events_error_answer(daemon: tuple[Path, TinyDaemon]) -> None:
    path, _ = daemon
    with Client(path, timeout=5) as client, pytest.raises(RemoteError) as info:
        next(client.iter_events(since_seq=-1))
    assert info.value.code == BAD_REQUEST


def test_client_timeout_names_the_retryable_id(daemon: tuple[Path, TinyDaemon]) -> None:
    path, _ = daemon
    client = Client(path, timeout=0.2)
    with pytest.raises(DaemonTimeoutError) as info:
        client.request("ask", question="hang", request_id="q-7")
    assert (
        str(info.value) == "ask: no answer from ifmemd within 0.2 s; retrying with id 'q-7' is safe"
    )
    assert client.closed


def test_client_retries_share_one_timeout(daemon: tuple[Path, TinyDaemon]) -> None:
    path, tiny = daemon
    client = Client(path, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(DaemonTimeoutError):
        client.request("ask", question="hang", request_id="q-8", retries=2, retry_delay=0.1)
    # Each attempt waited what was left of the one timeout (not 0.5 s apiece):
    # the first took it all, and no retry had enough time left to be made.
    assert time.monotonic() - started < 0.5 + 0.4
    assert tiny.seen == ["q-8"]


def test_client_connection_dropped_before_answer(daemon: tuple[Path, TinyDaemon]) -> None:
    path, _ = daemon
    with Client(path, timeout=5) as client:
        with pytest.raises(
            ConnectionClosedError, match="closed the connection before answering ask"
        ):
            client.request("ask", question="crash once", request_id="c1")
        assert client.closed


def test_client_retries_under_the_same_id(daemon: tuple[Path, TinyDaemon]) -> None:
    path, tiny = daemon
    with Client(path, timeout=5) as client:
        result = client.request(
            "ask", question="crash once", request_id="c2", retries=2, retry_delay=0.01
        )
    assert result["args"] == {"question": "crash once"}
    assert tiny.seen == ["c2", "c2"]


def test_unreachable_when_no_socket(sock_dir: Path) -> None:
    path = sock_dir / "missing.sock"
    with pytest.raises(DaemonUnreachableError) as info:
        Client(path, timeout=1)
    assert info.value.path == path
    assert str(info.value) == (
        f"cannot reach ifmemd at {path}: No such file or directory; "
        "start it with `ifmem daemon` or `systemctl --user start ifmem`"
    )
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_unreachable_when_nobody_listens(sock_dir: Path) -> None:
    path = sock_dir / "stale.sock"
    # A socket file left behind by a dead daemon: bound, never listening.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))
    with pytest.raises(DaemonUnreachableError, match="Connection refused; start it with"):
        Client(path, timeout=1)


def test_handshake_refused_raises_remote_error(sock_dir: Path) -> None:
    path = sock_dir / "s"

    async def refuse(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await send_message(stream, protocol.server_hello_error(DENIED, "uid 1000 only"))

    with serving(path, refuse), pytest.raises(RemoteError) as info:
        Client(path, timeout=5)
    assert (info.value.code, info.value.op) == (DENIED, "handshake")


def test_refusal_is_read_even_when_our_hello_hits_a_closed_socket(
    sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon may refuse and hang up before the hello is sent: report its reason, not EPIPE."""
    path = sock_dir / "s"
    hung_up = threading.Event()

    async def refuse(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await send_message(stream, protocol.server_hello_error(DENIED, "uid 1000 only"))
        hung_up.set()

    real_encode = protocol.encode

    def encode_after_hangup(obj: dict[str, Any]) -> bytes:
        if "proto" in obj:
            assert hung_up.wait(10)
        return real_encode(obj)

    monkeypatch.setattr(protocol, "encode", encode_after_hangup)
    with serving(path, refuse), pytest.raises(RemoteError) as info:
        Client(path, timeout=5)
    assert str(info.value) == "handshake: uid 1000 only (denied)"


def test_hangup_without_a_reason_is_connection_closed(sock_dir: Path) -> None:
    path = sock_dir / "s"

    async def hang_up(stream: anyio.abc.SocketStream) -> None:
        await stream.aclose()

    with serving(path, hang_up), pytest.raises(ConnectionClosedError):
        Client(path, timeout=5)


def test_not_an_ifmem_daemon(sock_dir: Path) -> None:
    path = sock_dir / "s"

    async def http(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.send(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    with serving(path, http), pytest.raises(ProtocolError) as info:
        Client(path, timeout=5)
    assert info.value.code == BAD_RESPONSE


def test_answer_for_another_id_is_a_protocol_error(sock_dir: Path) -> None:
    path = sock_dir / "s"

    async def confused(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            reader = LineReader(stream)
            await server_handshake(reader, stream)
            await reader.read_line()
            await send_message(stream, protocol.ok_response("someone-else", None))
            await reader.read_line()

    with serving(path, confused), Client(path, timeout=5) as client:
        with pytest.raises(ProtocolError, match="answer for id 'someone-else'"):
            client.request("status", request_id="mine")
        assert client.closed


def test_null_id_error_is_the_answer_to_the_request_in_flight(sock_dir: Path) -> None:
    path = sock_dir / "s"

    async def unreadable(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            reader = LineReader(stream)
            await server_handshake(reader, stream)
            await reader.read_line()
            await send_message(stream, protocol.error_response(None, BAD_JSON, "garbled"))
            await reader.read_line()

    with serving(path, unreadable), Client(path, timeout=5) as client:
        with pytest.raises(RemoteError) as info:
            client.request("status")
        assert info.value.code == BAD_JSON


def test_raw_wire_transcript(daemon: tuple[Path, TinyDaemon]) -> None:
    """The exact bytes a non-Python client would see."""
    path, _ = daemon
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(b'{"proto":"ifmem","min":1,"max":1}\n{"id":"a","op":"nope"}\nnot json\n')
        f = s.makefile("rb")
        assert json.loads(f.readline()) == {"proto": "ifmem", "version": 1}
        assert json.loads(f.readline()) == {
            "id": "a",
            "ok": False,
            "error": {
                "code": UNKNOWN_OP,
                "message": "unknown op 'nope'; known ops: "
                "ask, remember, forget, status, reload, stop, subscribe, seal, prune",
            },
        }
        bad = json.loads(f.readline())
        assert (bad["id"], bad["ok"], bad["error"]["code"]) == (None, False, BAD_JSON)
        f.close()
