"""The socket server of a real daemon: bad input, many clients, subscriptions, the ops.

Raw sockets send what a broken or hostile client would; every error must come
back with its code while the daemon keeps serving this and other connections.
"""

from __future__ import annotations

import json
import resource
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import daemonproc as dp
import pytest
from ifmemd.log.eventlog import EventLog
from ifmemd.log.verify import verify_log
from ifmemd.wire.protocol import MAX_LINE, MAX_MEMORY_BYTES, Client, RemoteError

CONCURRENT = 200


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server")


@pytest.fixture(scope="module")
def shared(module_tmp: Path) -> Iterator[dp.DaemonProc]:
    """One daemon for the whole module; tests must leave it serving."""
    # Enough descriptors for CONCURRENT clients here and as many connections there.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * CONCURRENT + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    with dp.factory(module_tmp) as made:
        yield made()


@pytest.fixture
def daemon(shared: dp.DaemonProc) -> Iterator[dp.DaemonProc]:
    assert shared.running, shared.diagnostics()
    yield shared
    # Whatever the test did, the daemon still answers a fresh client.
    assert shared.running, shared.diagnostics()
    assert shared.request("status")["pid"] == shared.pid


class Raw:
    """A bare connection: bytes in, decoded lines out."""

    def __init__(self, path: Path, hello: bool = True) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(path))
        self.buf = b""
        if hello:
            self.send({"proto": "ifmem", "min": 1, "max": 1})
            assert self.line() == {"proto": "ifmem", "version": 1}

    def send(self, obj: dict[str, Any] | bytes) -> None:
        data = obj if isinstance(obj, bytes) else json.dumps(obj).encode() + b"\n"
        self.sock.sendall(data)

    def line(self) -> dict[str, Any]:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"closed; had {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def subscribe(self, **args: Any) -> None:
        """Subscribe (request id "sub"), and read its acknowledgement."""
        self.send({"id": "sub", "op": "subscribe", **args})
        assert self.line()["result"]["subscribed"] is True

    def closed_by_peer(self) -> bool:
        return self.sock.recv(1) == b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def error_of(reply: dict[str, Any]) -> str:
    assert reply["ok"] is False, reply
    assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]
    return reply["error"]["code"]


def still_serves(raw: Raw, rid: str = "after") -> None:
    raw.send({"id": rid, "op": "status"})
    reply = raw.line()
    assert reply["id"] == rid and reply["ok"] is True, reply


# --- bad input -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"{not json\n", "bad_json"),
        (b"\xff\xfe\n", "bad_json"),
        (b"[1, 2, 3]\n", "bad_request"),
        (b'{"op": "status"}\n', "bad_request"),  # no id
        (b'{"id": true, "op": "status"}\n', "bad_request"),
    ],
)
def test_unreadable_requests_are_answered_and_the_connection_goes_on(
    daemon: dp.DaemonProc, line: bytes, code: str
) -> None:
    with Raw(daemon.socket_path) as raw:
        raw.send(line)
        reply = raw.line()
        assert reply["id"] is None
        assert error_of(reply) == code
        still_serves(raw)


@pytest.mark.parametrize(
    ("request_", "code", "words"),
    [
        ({"op": "dance"}, "unknown_op", "dance"),
        ({"op": 7}, "bad_request", "op"),
        ({}, "bad_request", "no op"),
        ({"op": "ask"}, "bad_request", "question"),
        ({"op": "ask", "question": "  "}, "bad_request", "empty"),
        ({"op": "ask", "question": "x", "k": 0}, "bad_request", "k"),
        ({"op": "ask", "question": "x", "colour": "red"}, "bad_request", "colour"),
        ({"op": "remember"}, "bad_request", "text"),
        ({"op": "forget"}, "bad_request", "memory_id"),
        ({"op": "status", "verbose": True}, "bad_request", "verbose"),
        ({"op": "subscribe", "since_seq": -1}, "bad_request", "since_seq"),
    ],
)
def test_invalid_requests_get_their_error_code_with_the_id(
    daemon: dp.DaemonProc, request_: dict[str, Any], code: str, words: str
) -> None:
    with Raw(daemon.socket_path) as raw:
        raw.send({"id": "r1", **request_})
        reply = raw.line()
        assert reply["id"] == "r1"
        assert error_of(reply) == code
        assert words in reply["error"]["message"]
        still_serves(raw)


# 800 KB of UTF-8 in the request, each character twelve bytes escaped in an
# answer: quoted back whole, the error would be too long for a line.
HUGE = "\U0001f600" * 200_000


@pytest.mark.parametrize(
    "request_",
    [
        {"op": HUGE},
        {"op": "status", HUGE: 1},
        {"op": "ask", "question": "x", "k": HUGE},
        {"op": "ask", "question": "x", "shards": [HUGE[:300]] * 700},
        {"op": "subscribe", "since_seq": HUGE},
        {"op": "prune", "before_seq": HUGE},
        {"op": "forget", "memory_id": HUGE},
    ],
)
def test_an_error_quotes_a_huge_value_in_part(
    daemon: dp.DaemonProc, request_: dict[str, Any]
) -> None:
    with Raw(daemon.socket_path) as raw:
        raw.send(json.dumps({"id": "huge", **request_}, ensure_ascii=False).encode() + b"\n")
        reply = raw.line()
        assert reply["id"] == "huge" and reply["ok"] is False
        assert len(reply["error"]["message"]) < 1000, reply["error"]["message"][:200]
        still_serves(raw)


def test_a_memory_is_refused_over_its_limit_and_sent_whole_at_it(daemon: dp.DaemonProc) -> None:
    with Raw(daemon.socket_path) as raw:
        over = "x" * (MAX_MEMORY_BYTES + 1)
        raw.send({"id": "over", "op": "remember", "text": over})
        reply = raw.line()
        assert error_of(reply) == "bad_request" and "limit" in reply["error"]["message"]
        # The longest a memory can be, escaped as much as it can be: its event
        # still fits in a line for a subscriber.
        raw.send({"id": "at", "op": "remember", "text": "\x01" * MAX_MEMORY_BYTES})
        memory_id = raw.line()["result"]["memory_id"]
        raw.subscribe(since_seq=0)
        while (event := raw.line()["event"])["body"].get("memory_id") != memory_id:
            pass
        assert event["body"]["text"] == "\x01" * MAX_MEMORY_BYTES
    daemon.request("forget", memory_id=memory_id)


def test_an_oversized_line_is_refused_and_the_next_line_is_served(daemon: dp.DaemonProc) -> None:
    with Raw(daemon.socket_path) as raw, daemon.client() as other:
        big = {"id": "big", "op": "ask", "question": "x" * (MAX_LINE + 100)}
        # Send from a thread: the daemon answers while we are still sending.
        sender = threading.Thread(target=raw.send, args=(big,))
        sender.start()
        # Another client is served while the big line streams in.
        assert other.request("status")["pid"] == daemon.pid
        reply = raw.line()
        sender.join(10)
        assert error_of(reply) == "line_too_long"
        still_serves(raw)


def test_a_line_just_under_the_limit_is_read(daemon: dp.DaemonProc) -> None:
    with Raw(daemon.socket_path) as raw:
        head = b'{"id":"near","op":"status","pad":"'
        line = head + b"x" * (MAX_LINE - len(head) - 2) + b'"}'
        assert len(line) == MAX_LINE
        raw.send(line + b"\n")
        reply = raw.line()
        # Read whole and parsed: refused for its unknown argument, not for its length.
        assert reply["id"] == "near"
        assert error_of(reply) == "bad_request"
        assert "pad" in reply["error"]["message"]


@pytest.mark.parametrize(
    ("hello", "code"),
    [
        ({"proto": "http", "min": 1, "max": 1}, "bad_handshake"),
        ({"id": 1, "op": "status"}, "bad_handshake"),  # a request before the hello
        ({"proto": "ifmem", "min": 2, "max": 5}, "unsupported_version"),
        ({"proto": "ifmem", "min": 0, "max": 0}, "bad_handshake"),
        ({"proto": "ifmem", "min": 3, "max": 1}, "bad_handshake"),
        (b"hello?\n", "bad_json"),
    ],
)
def test_a_bad_handshake_is_answered_with_an_error_and_the_connection_closed(
    daemon: dp.DaemonProc, hello: dict[str, Any] | bytes, code: str
) -> None:
    with Raw(daemon.socket_path, hello=False) as raw, daemon.client() as other:
        raw.send(hello)
        reply = raw.line()
        assert reply["proto"] == "ifmem"
        assert reply["error"]["code"] == code
        assert reply["error"]["message"]
        assert raw.closed_by_peer()
        assert other.request("status")["pid"] == daemon.pid


def test_a_hello_offering_a_range_gets_version_1(daemon: dp.DaemonProc) -> None:
    with Raw(daemon.socket_path, hello=False) as raw:
        raw.send({"proto": "ifmem", "min": 1, "max": 9})
        assert raw.line() == {"proto": "ifmem", "version": 1}
        still_serves(raw)


# --- many clients ----------------------------------------------------------------


def test_200_concurrent_connections_all_get_answers(daemon: dp.DaemonProc) -> None:
    connected = threading.Barrier(CONCURRENT + 1, timeout=60)
    answered = threading.Barrier(CONCURRENT + 1, timeout=60)
    results: dict[int, dict[str, Any]] = {}
    failures: list[str] = []

    def one(n: int) -> None:
        try:
            with Client(daemon.socket_path, timeout=30) as c:
                connected.wait()
                results[n] = c.request("ask", question=dp_questions[n % len(dp_questions)])
                answered.wait()
        except Exception as e:
            failures.append(f"{n}: {e!r}")
            connected.abort()
            answered.abort()

    dp_questions = ["lighthouse beacon", "valve", "pump water", "glacier"]
    threads = [threading.Thread(target=one, args=(n,)) for n in range(CONCURRENT)]
    for t in threads:
        t.start()
    try:
        connected.wait()
        # All of them are connected at once.
        assert daemon.request("status")["clients"] >= CONCURRENT + 1
        answered.wait()
    finally:
        for t in threads:
            t.join(60)
    assert failures == []
    assert len(results) == CONCURRENT
    for n, r in results.items():
        assert r["missing"] == [], r
        assert r["passages"], (n, r)
    assert len({r["qid"] for r in results.values()}) == CONCURRENT


def test_clients_that_leave_mid_answer_do_not_disturb_others(daemon: dp.DaemonProc) -> None:
    with daemon.client() as steady:
        for i in range(30):
            raw = Raw(daemon.socket_path)
            raw.send({"id": f"gone-{i}", "op": "ask", "question": "lighthouse beacon"})
            if i % 3 == 0:
                raw.send({"id": f"gone-sub-{i}", "op": "subscribe"})
            raw.close()
            answer = steady.request("ask", question="valve opened", shards=["code"])
            assert answer["passages"][0]["path"].endswith("valve.py")
        # A client that left mid-line is no different.
        with Raw(daemon.socket_path) as raw:
            raw.send(b'{"id": "half", "op": "ask", "quest')
        # Whatever a vanished client had asked, retrying its id gets one answer.
        for i in range(0, 30, 7):
            again = steady.request("ask", request_id=f"gone-{i}", question="lighthouse beacon")
            assert again["passages"][0]["path"].endswith("beacon.md")
    events = daemon.events("query.answered")
    counts: dict[str, int] = {}
    for _, _, body in events:
        counts[body["qid"]] = counts.get(body["qid"], 0) + 1
    assert all(counts.get(f"gone-{i}", 0) <= 1 for i in range(30))
    assert all(counts[f"gone-{i}"] == 1 for i in range(0, 30, 7))
    dp.wait_for(lambda: daemon.status()["clients"] == 1, 5.0, "gone clients to be let go")


def test_max_clients_refuses_one_more(daemons_tmp: Path) -> None:
    with dp.factory(daemons_tmp) as made:
        d = made(made.default_config(max_clients=3))
        clients = [d.client() for _ in range(3)]
        with pytest.raises(RemoteError) as caught:
            Client(d.socket_path, timeout=5)
        assert caught.value.code == "unavailable"
        assert "max_clients = 3" in caught.value.message
        clients[0].close()
        dp.wait_for(lambda: d._try_status() is not None, 5.0, "a slot to free up")


def test_out_of_descriptors_the_daemon_waits_to_accept_and_goes_on(daemons_tmp: Path) -> None:
    with dp.factory(daemons_tmp) as made:
        # max_clients above what the descriptors allow, as a config may well be.
        d = made(made.default_config(max_clients=1000), prefix=["prlimit", "--nofile=128"])
        with dp.descriptors_exhausted(d, 200):
            assert d.running, d.diagnostics()
        assert d.request("status")["pid"] == d.pid


def test_reload_applies_max_clients_and_checkpoint_every_at_once(daemons_tmp: Path) -> None:
    with dp.factory(daemons_tmp) as made:
        d = made(made.default_config(max_clients=8, checkpoint_every=1000))
        with d.client() as first, d.client() as second:
            d.config_path.write_text(made.default_config(max_clients=2, checkpoint_every=5))
            first.request("reload")
            # The two open connections stay; a third is refused under the new limit.
            assert second.request("status")["shards"]
            with pytest.raises(RemoteError) as caught:
                Client(d.socket_path, timeout=5).close()
            assert "max_clients = 2" in caught.value.message
            # A checkpoint is written within every 5 events from now on.
            head = first.request("status")["log"]["seq"]
            for i in range(12):
                first.request("remember", text=f"note {i}")
        checkpoints = [b for seq, _, b in d.events("checkpoint") if seq > head]
        assert len(checkpoints) >= 2


@pytest.fixture
def daemons_tmp(tmp_path: Path) -> Path:
    return tmp_path


# --- subscribe -----------------------------------------------------------------


def test_subscribe_streams_events_committed_after_it(daemon: dp.DaemonProc) -> None:
    with Raw(daemon.socket_path) as sub, daemon.client() as c:
        c.request("remember", text="before the subscription")
        sub.send(
            {"id": "s1", "op": "subscribe", "kinds": ["memory.remembered", "memory.forgotten"]}
        )
        ack = sub.line()
        assert ack["id"] == "s1" and ack["ok"] is True
        assert ack["result"]["subscribed"] is True
        mid = c.request("remember", text="subscribe sees me")["memory_id"]
        first = sub.line()
        assert first["id"] == "s1"
        event = first["event"]
        assert event["seq"] > ack["result"]["seq"]
        assert event["kind"] == "memory.remembered"
        assert event["body"]["memory_id"] == mid
        assert event["body"]["text"] == "subscribe sees me"
        assert len(event["hash"]) == 64 and event["sig"]
        c.request("forget", memory_id=mid)
        second = sub.line()["event"]
        assert second["kind"] == "memory.forgotten"
        assert second["seq"] > event["seq"]


def test_subscribe_since_seq_sends_the_backlog_then_live_events_once_each(
    daemon: dp.DaemonProc,
) -> None:
    with daemon.client() as c:
        before = c.request("status")["log"]["seq"]
        ids = [c.request("remember", text=f"backlog item {i}")["memory_id"] for i in range(3)]
        stop = threading.Event()

        def writer() -> None:
            with daemon.client() as w:
                i = 0
                while not stop.is_set() and i < 40:
                    w.request("remember", text=f"live item {i}")
                    i += 1

        with daemon.client() as sub:
            events = sub.iter_events(kinds=["memory.remembered"], since_seq=before, idle_timeout=5)
            thread = threading.Thread(target=writer)
            thread.start()
            try:
                got = [next(events) for _ in range(3 + 40)]
            finally:
                stop.set()
                thread.join(10)
    assert [e["body"]["memory_id"] for e in got[:3]] == ids
    seqs = [e["seq"] for e in got]
    assert seqs == sorted(set(seqs)), "an event repeated or out of order"
    assert all(s > before for s in seqs)
    assert [e["body"]["text"] for e in got[3:]] == [f"live item {i}" for i in range(40)]


def test_subscribe_backlog_from_zero_starts_at_seq_1(daemon: dp.DaemonProc) -> None:
    with daemon.client() as sub:
        events = sub.iter_events(since_seq=0, idle_timeout=5)
        first = next(events)
        assert first["seq"] == 1
        assert first["kind"] == "daemon.started"


def test_a_subscriber_that_closed_its_socket_is_let_go_without_an_event(
    daemon: dp.DaemonProc,
) -> None:
    with Raw(daemon.socket_path) as raw:
        raw.subscribe(kinds=["memory.remembered"])
        assert daemon.status()["clients"] == 2  # it, and the status request
    # No event of its kinds comes; it must not hold a client slot till one does.
    dp.wait_for(lambda: daemon.status()["clients"] == 1, 5.0, "the subscriber let go")


def test_a_subscriber_that_only_stopped_sending_still_gets_its_events(
    daemon: dp.DaemonProc,
) -> None:
    with Raw(daemon.socket_path) as raw:
        raw.subscribe(kinds=["memory.remembered"])
        raw.sock.shutdown(socket.SHUT_WR)  # as `nc -N` does, reading on
        memory = daemon.request("remember", text="read by a half-closed subscriber")
        assert raw.line()["event"]["body"]["memory_id"] == memory["memory_id"]
    daemon.request("forget", memory_id=memory["memory_id"])


# --- the ops -------------------------------------------------------------------


def test_a_shard_named_many_times_is_asked_and_recorded_once(daemon: dp.DaemonProc) -> None:
    answer = daemon.request("ask", question="valve opened", shards=["code", "docs"] * 500)
    assert answer["shards"] == ["code", "docs"]
    [body] = [b for _, _, b in daemon.events("query.answered") if b["qid"] == answer["qid"]]
    assert sorted(r["shard"] for r in body["results"]) == ["code", "docs"]


def test_remember_and_forget(daemon: dp.DaemonProc) -> None:
    with daemon.client() as c:
        r = c.request("remember", request_id="rem-1", text="the kettle is descaled monthly")
        assert r["citation"] == f"memory:{r['memory_id']}" and r["replayed"] is False
        again = c.request("remember", request_id="rem-1", text="the kettle is descaled monthly")
        assert again == {**r, "replayed": True}
        hits = c.request("ask", question="kettle descaled", shards=["working"])["passages"]
        assert [p["citation"].split(":")[:2] for p in hits] == [["memory", r["memory_id"]]]

        with pytest.raises(RemoteError) as caught:
            c.request("forget", memory_id="memory:000000000000")
        assert caught.value.code == "not_found"
        assert "000000000000" in caught.value.message

        gone = c.request("forget", request_id="fgt-1", memory_id=r["citation"])
        assert gone["memory_id"] == r["memory_id"] and gone["replayed"] is False
        assert c.request("forget", request_id="fgt-1", memory_id=r["memory_id"])["replayed"]
        with pytest.raises(RemoteError) as caught:
            c.request("forget", memory_id=r["memory_id"])
        assert caught.value.code == "not_found"
        assert c.request("ask", question="kettle descaled", shards=["working"])["passages"] == []
    remembered = [b for _, _, b in daemon.events("memory.remembered") if b.get("rid") == "rem-1"]
    forgotten = [b for _, _, b in daemon.events("memory.forgotten") if b.get("rid") == "fgt-1"]
    assert len(remembered) == 1 and len(forgotten) == 1


def test_a_request_id_reused_for_another_request_is_a_duplicate(daemon: dp.DaemonProc) -> None:
    with daemon.client() as c:
        first = c.request("ask", request_id="dup-q", question="glacier ice")
        assert first["replayed"] is False
        cases: list[tuple[str, dict[str, Any]]] = [
            ("ask", {"question": "something else entirely"}),
            ("remember", {"text": "not a question"}),
            ("forget", {"memory_id": "whatever"}),
        ]
        mid = c.request("remember", request_id="dup-m", text="a note")["memory_id"]
        cases += [
            ("ask", {"question": "a note"}),
            ("remember", {"text": "another note"}),
            ("forget", {"memory_id": mid}),
        ]
        c.request("forget", request_id="dup-f", memory_id=mid)
        other = c.request("remember", text="another")["memory_id"]
        cases += [("forget", {"memory_id": other}), ("ask", {"question": "q"})]
        rids = ["dup-q"] * 3 + ["dup-m"] * 3 + ["dup-f"] * 2
        status = daemon.status()
        before, memories = status["log"]["seq"], status["memories"]
        for rid, (op, args) in zip(rids, cases, strict=True):
            with pytest.raises(RemoteError) as caught:
                c.request(op, request_id=rid, **args)
            assert caught.value.code == "duplicate_id", (rid, op, args)
            assert rid in caught.value.message
        # Refusals change nothing: `other` is still remembered, nothing but heartbeats
        # was appended.
        assert daemon.status()["memories"] == memories
        kinds = {k for seq, k, _ in daemon.events() if seq > before}
        assert kinds <= {"shard.heartbeats"}, kinds
        hits = c.request("ask", question="another", shards=["working"])["passages"]
        assert f"memory:{other}" in [p["path"] for p in hits]
        # The original answer is still what the id replays to.
        again = c.request("ask", request_id="dup-q", question="glacier ice")
        assert again["replayed"] is True and again["seq"] == first["seq"]


@pytest.mark.parametrize(
    ("op", "args"),
    [("remember", {"text": "raced note"}), ("ask", {"question": "glacier ice"})],
)
def test_the_same_id_sent_concurrently_is_acted_on_once(
    daemon: dp.DaemonProc, op: str, args: dict[str, Any]
) -> None:
    # A client that timed out and resent while its first request was still running.
    rid = f"race-{op}"
    start = threading.Barrier(8, timeout=10)
    results: list[dict[str, Any]] = []

    def send() -> None:
        with Client(daemon.socket_path, timeout=10) as c:
            start.wait()
            results.append(c.request(op, request_id=rid, **args))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(results) == 8
    assert len({r["seq"] for r in results}) == 1, results
    assert sorted(r["replayed"] for r in results) == [False] + [True] * 7
    kind = "memory.remembered" if op == "remember" else "query.answered"
    acted = [b for _, _, b in daemon.events(kind) if rid in (b.get("rid"), b.get("qid"))]
    assert len(acted) == 1


def test_status_fields(daemon: dp.DaemonProc) -> None:
    status = daemon.status()
    assert status["pid"] == daemon.pid
    assert status["socket"] == str(daemon.socket_path)
    assert status["config"] == str(daemon.config_path)
    assert isinstance(status["version"], str) and status["version"]
    assert status["uptime_s"] >= 0
    assert status["clients"] >= 1
    assert isinstance(status["memories"], int)
    log = status["log"]
    assert log["path"] == str(daemon.db_path)
    assert len(log["log_id"]) == 32 and len(log["hash"]) == 64
    # The position reported is a committed row: its hash is the one in the file.
    with EventLog.open_readonly(daemon.db_path) as elog:
        record = elog.record(log["seq"])
        assert elog.log_id.hex() == log["log_id"]
    assert record is not None and record.hash.hex() == log["hash"]
    shards = {s["name"]: s for s in status["shards"]}
    assert list(shards) == ["docs", "code", "working"]
    assert (shards["docs"]["files"], shards["code"]["files"]) == (3, 2)
    assert shards["working"]["kind"] == "memory" and shards["docs"]["kind"] == "files"
    for s in shards.values():
        assert s["status"] == "ready"
        assert dp.pid_alive(s["pid"])
        assert s["backend"] == "local"
        assert s["rss_bytes"] > 0
        assert 0 <= s["heartbeat_age_s"] < dp.HEARTBEAT_TIMEOUT
        assert s["failure"] is None
        for key in ("lines", "tokens", "served", "restarts", "load_ms", "description"):
            assert key in s


def test_the_log_verifies_after_all_of_the_above(daemon: dp.DaemonProc) -> None:
    # Runs last in this module: everything the tests above did was logged soundly.
    time.sleep(0.05)
    assert verify_log(daemon.db_path).ok
