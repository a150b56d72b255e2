"""A local stand-in for an OpenAI-compatible chat completions server (Ollama, llama.cpp, vLLM).

Test equipment only. `POST /v1/chat/completions` answers deterministically:
it finds the numbered passages (`[n] path:a-b`) in the user message and cites
the one sharing the most words with the question as `[n]`; `cite` overrides
the numbers cited (say `[99]`, which was never sent). Errors on demand with
`fail_next`, as in fake_anthropic.
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fake_anthropic import tokens, words

_HEAD = re.compile(r"^\[(\d+)\] \S+$")


class FakeOpenAI:
    def __init__(self, *, cached_tokens: int = 0) -> None:
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.failures: deque[tuple[int, float | None]] = deque()
        self.cite: list[int] | None = None
        self.cached_tokens = cached_tokens
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.fake = self  # type: ignore[attr-defined]

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> FakeOpenAI:
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fail_next(self, status: int, times: int = 1, retry_after: float | None = None) -> None:
        with self.lock:
            self.failures.extend([(status, retry_after)] * times)

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
        user = next((m["content"] for m in body["messages"] if m["role"] == "user"), "")
        passages = _passages(user.split("\nQuestion:", 1)[0])
        question = user.rsplit("Question:", 1)[-1]
        if self.cite is not None:
            cited = self.cite
        elif passages:
            asked = words(question)
            cited = [max(passages, key=lambda n: (len(asked & words(passages[n])), -n))]
        else:
            cited = []
        text = "From the passages: " + " ".join(
            f"{(passages.get(n) or 'something').strip().splitlines()[0]} [{n}]" for n in cited
        )
        prompt = tokens(system) + tokens(user)
        cached = min(self.cached_tokens, prompt)
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": tokens(text),
                "total_tokens": prompt + tokens(text),
                "prompt_tokens_details": {"cached_tokens": cached},
            },
        }


def _passages(text: str) -> dict[int, str]:
    """The numbered passages of a prompt: `[n] path:a-b` then its text, up to the next."""
    found: dict[int, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if m := _HEAD.match(line):
            current = found.setdefault(int(m[1]), [])
        elif current is not None:
            current.append(line)
    return {n: "\n".join(lines).strip() for n, lines in found.items()}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
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

    def do_POST(self) -> None:
        fake: FakeOpenAI = self.server.fake  # type: ignore[attr-defined]
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        with fake.lock:
            fake.requests.append(body)
            fake.headers.append(dict(self.headers))
            failure = fake.failures.popleft() if fake.failures else None
        if self.path != "/v1/chat/completions":
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        if failure is not None:
            status, retry_after = failure
            headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
            self._send(status, {"error": {"message": f"simulated {status}"}}, headers)
            return
        self._send(200, fake.complete(body))
