"""A local stand-in for the parts of the Anthropic Messages API that ifmem uses.

A small threaded `http.server` on 127.0.0.1, driven by the real `anthropic`
SDK through `base_url`. It is test equipment: nothing in the product imports
it. It speaks:

- `POST /v1/messages`: answers with text blocks whose `citations` point at real
  `document` blocks of the request (the document and line sharing the most
  words with the question; deterministic), and bills prompt caching the way
  the API does: the prefix up to and including the last block with
  `cache_control` is looked up by its hash; the first time it is written
  (`cache_creation_input_tokens`), later within its TTL it is read
  (`cache_read_input_tokens`), every read renewing the TTL.
- `POST /v1/messages/count_tokens`.
- Errors on demand (`fail_next(429, retry_after=0)`, 529, 500…), slow replies
  (`delay`), a slow token counter (`count_delay`, as a real API round trip on
  a big corpus is; `counts_open` cleared holds every count until it is set
  again), and answers whose citations point at nothing (`citation_mode`).

Tokens are counted as UTF-8 bytes / 4, rounded up, per text field.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_WORD = re.compile(r"[a-z0-9]{3,}")


def tokens(text: str) -> int:
    return -(-len(text.encode("utf-8")) // 4) if text else 0


def words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def block_tokens(block: dict[str, Any]) -> int:
    if block.get("type") == "document":
        source = block.get("source", {})
        return tokens(str(source.get("data", ""))) + tokens(str(block.get("title") or ""))
    if block.get("type") == "text":
        return tokens(str(block.get("text", "")))
    return tokens(json.dumps(block, sort_keys=True))


@dataclass
class Call:
    """One request the server received, and what it answered."""

    path: str
    body: dict[str, Any]
    api_key: str | None
    status: int
    usage: dict[str, int] = field(default_factory=dict)

    @property
    def documents(self) -> list[dict[str, Any]]:
        blocks = [b for m in self.body.get("messages", []) for b in _content(m)]
        return [b for b in blocks if b.get("type") == "document"]

    @property
    def system(self) -> str:
        system = self.body.get("system", "")
        if isinstance(system, list):
            return "".join(b.get("text", "") for b in system)
        return str(system)


def _content(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content", [])
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content)


class FakeAnthropic:
    """The server and its state; use as a context manager, point `base_url` at `url`."""

    def __init__(self, *, api_key: str | None = None, min_cache_tokens: int = 0) -> None:
        self.api_key = api_key  # when set, any other key gets a 401
        self.min_cache_tokens = min_cache_tokens
        self.lock = threading.Lock()
        self.calls: list[Call] = []
        self.cache: dict[str, float] = {}  # prefix hash -> expiry (on `now()`)
        self.failures: deque[tuple[int, float | None]] = deque()
        self.delay = 0.0
        self.count_delay = 0.0
        self.counts_open = threading.Event()
        self.counts_open.set()
        self.citation_mode = "valid"  # "valid" | "bogus" | "none"
        self.offset = 0.0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.fake = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeAnthropic:
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- control ------------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        """Move the cache's clock forward (to expire entries without waiting)."""
        self.offset += seconds

    def fail_next(self, status: int, times: int = 1, retry_after: float | None = None) -> None:
        """The next `times` POST /v1/messages get `status` (with retry-after, if given)."""
        with self.lock:
            self.failures.extend([(status, retry_after)] * times)

    def messages(self, status: int | None = 200) -> list[Call]:
        """The /v1/messages calls received (only those answered with `status`, if given)."""
        with self.lock:
            return [
                c
                for c in self.calls
                if c.path == "/v1/messages" and (status is None or c.status == status)
            ]

    def totals(self) -> dict[str, int]:
        """Usage summed over every answered /v1/messages call."""
        total = dict.fromkeys(
            (
                "input_tokens",
                "cache_creation_input_tokens",
                "cache_read_input_tokens",
                "output_tokens",
            ),
            0,
        )
        for c in self.messages():
            for k in total:
                total[k] += c.usage.get(k, 0)
        return total

    # -- the API ------------------------------------------------------------------

    def count_tokens(self, body: dict[str, Any]) -> dict[str, Any]:
        blocks = _system_blocks(body) + [b for m in body["messages"] for b in _content(m)]
        return {"input_tokens": sum(block_tokens(b) for b in blocks)}

    def create(self, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
        blocks = _system_blocks(body) + [b for m in body["messages"] for b in _content(m)]
        breakpoint_at = max(
            (i for i, b in enumerate(blocks) if b.get("cache_control")), default=None
        )
        total = sum(block_tokens(b) for b in blocks)
        usage = {"cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        if breakpoint_at is not None:
            prefix = blocks[: breakpoint_at + 1]
            prefix_tokens = sum(block_tokens(b) for b in prefix)
            ttl = TTL_SECONDS[prefix[-1]["cache_control"].get("ttl", "5m")]
            if prefix_tokens >= self.min_cache_tokens:
                key = _prefix_key(body.get("model", ""), prefix)
                with self.lock:
                    now = self.now()
                    hit = self.cache.get(key, 0.0) > now
                    self.cache[key] = now + ttl
                field_name = "cache_read_input_tokens" if hit else "cache_creation_input_tokens"
                usage[field_name] = prefix_tokens
                total -= prefix_tokens
        content = self._answer(body)
        output = sum(tokens(b["text"]) for b in content)
        usage |= {"input_tokens": total, "output_tokens": min(output, body["max_tokens"])}
        message = {
            "id": f"msg_{hashlib.sha256(json.dumps(body).encode()).hexdigest()[:24]}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
        return message, usage

    def _answer(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        blocks = [b for m in body["messages"] for b in _content(m)]
        documents = [b for b in blocks if b.get("type") == "document"]
        question = " ".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        if not documents or self.citation_mode == "none":
            return [{"type": "text", "text": f"No documents cite this: {question[:60]}"}]
        asked = words(question)
        best = max(
            range(len(documents)),
            key=lambda i: (len(asked & words(documents[i]["source"]["data"])), -i),
        )
        text = documents[best]["source"]["data"]
        start, end = _best_line(text, asked)
        citation = {
            "type": "char_location",
            "cited_text": text[start:end],
            "document_index": best,
            "document_title": documents[best].get("title"),
            "start_char_index": start,
            "end_char_index": end,
        }
        if self.citation_mode == "bogus":
            citation |= {"document_index": len(documents) + 7}
        return [
            {"type": "text", "text": "According to the corpus, ", "citations": None},
            {"type": "text", "text": text[start:end].strip(), "citations": [citation]},
        ]


def _system_blocks(body: dict[str, Any]) -> list[dict[str, Any]]:
    system = body.get("system")
    if system is None:
        return []
    if isinstance(system, str):
        return [{"type": "text", "text": system}]
    return list(system)


def _prefix_key(model: str, prefix: list[dict[str, Any]]) -> str:
    data = json.dumps({"model": model, "prefix": prefix}, sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()


def _best_line(text: str, asked: set[str]) -> tuple[int, int]:
    """The character range of the line (without its newline) sharing most words with `asked`."""
    best, best_score, pos = (0, len(text)), -1, 0
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\n")
        score = len(asked & words(body))
        if body.strip() and score > best_score:
            best, best_score = (pos, pos + len(body)), score
        pos += len(line)
    return best


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ThreadingHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _send(self, status: int, obj: dict[str, Any], headers: dict[str, str] | None = None):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        kind = ERROR_TYPES.get(status, "api_error")
        self._send(status, {"type": "error", "error": {"type": kind, "message": message}}, headers)

    def do_POST(self) -> None:
        fake: FakeAnthropic = self.server.fake  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        # SDKs send the key as x-api-key or as a bearer token; either is accepted.
        bearer = self.headers.get("Authorization", "")
        key = self.headers.get("x-api-key") or (
            bearer[len("Bearer ") :] if bearer.startswith("Bearer ") else None
        )
        path = self.path.split("?")[0]
        call = Call(path, body, key, 200)
        with fake.lock:
            fake.calls.append(call)
        if fake.api_key is not None and key != fake.api_key:
            call.status = 401
            self._error(401, "invalid x-api-key")
            return
        if path == "/v1/messages/count_tokens":
            fake.counts_open.wait()
            if fake.count_delay:
                time.sleep(fake.count_delay)
            self._send(200, fake.count_tokens(body))
            return
        if path != "/v1/messages":
            call.status = 404
            self._error(404, f"no route {path}")
            return
        with fake.lock:
            failure = fake.failures.popleft() if fake.failures else None
        if fake.delay:
            time.sleep(fake.delay)
        if failure is not None:
            status, retry_after = failure
            call.status = status
            headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else {}
            self._error(status, f"simulated {status}", headers)
            return
        problem = _invalid(body)
        if problem:
            call.status = 400
            self._error(400, problem)
            return
        message, usage = fake.create(body)
        call.usage = usage
        self._send(200, message)


def _invalid(body: dict[str, Any]) -> str:
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            return f"{name}: field required"
    breakpoints = 0
    for m in body["messages"]:
        for b in _content(m):
            breakpoints += bool(b.get("cache_control"))
            if b.get("type") == "document":
                source = b.get("source", {})
                if source.get("type") != "text" or not str(source.get("data", "")).strip():
                    return "document: a non-empty text source is required"
    if breakpoints > 4:
        return "at most 4 blocks may have cache_control"
    return ""
