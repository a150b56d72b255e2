"""The model side of a shard process: its backend, its worker threads, its keep-warm loop.

Runs inside `python -m ifmemd.shards.shard` for shards whose backend is not
`local`. Model calls take seconds, so each runs in its own thread (at most
`MODEL_WORKERS` at once) and answers on the shard's stdout when done; the
shard's main loop keeps reading requests and searching its index meanwhile.

  supervisor → shard   {"op":"ask", rid, question, k}
                       {"op":"synthesize", rid, question, answers:[{shard,text,citations}]}
  shard → supervisor   {"type":"model_ready", model, tokens, token_source, load_ms}
                       (after `ready`: the SDK is imported and the corpus counted)
                       {"type":"answer", rid, text, model, verified, citations, unverified, usage}
                       {"type":"synthesis", rid, text, citations, invented, model, usage}
                       {"type":"warmed", model, usage}   (a keep-warm call, to be recorded)
                       {"type":"fatal", reason}          (cannot serve: no key, over budget)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ifmemd.shards.chunker import Chunk
from ifmemd.shards.llm import (
    ANTHROPIC_KEY_ENV,
    OPENAI_KEY_ENV,
    Answer,
    BackendMissingError,
    ModelError,
    Usage,
    read_api_key,
    redact,
    warm_due,
)

MODEL_WORKERS = 4
WARM_POLL_S = 1.0


class Sender(Protocol):
    def send(self, obj: dict[str, Any]) -> None: ...


class ModelRunner:
    """Owns one backend (`ClaudeBackend` or `OpenAIBackend`) and runs its calls."""

    def __init__(
        self,
        name: str,
        description: str,
        settings: dict[str, Any],
        out: Sender,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.name = name
        self.description = description
        self.backend_name: str = settings["backend"]
        self.model: str = settings["model"]
        self.out = out
        self.clock = clock
        self._slots = threading.BoundedSemaphore(MODEL_WORKERS)
        # The key is read here, at once: a refusal must not wait for the SDK, which
        # `load` imports (seconds, for anthropic) after the shard is ready.
        if self.backend_name == "anthropic":
            self._key = read_api_key(ANTHROPIC_KEY_ENV, settings.get("api_key_file"))
        else:
            self._key = read_api_key(OPENAI_KEY_ENV, settings.get("api_key_file"), required=False)
        self.needs_passages = self.backend_name == "openai"
        self.backend: Any = None
        # Set once a corpus is loaded into the backend: from then on it can answer.
        self.usable = threading.Event()
        self._loading = threading.Lock()
        self._stop = threading.Event()
        self._warmer: threading.Thread | None = None

    def _make_backend(self) -> Any:
        if self.backend_name == "anthropic":
            assert self._key is not None
            try:
                from ifmemd.shards import (
                    claude,  # the SDK is loaded here, in this shard's process only
                )
            except ImportError as e:
                raise BackendMissingError("anthropic", "anthropic", "anthropic") from e
            return claude.ClaudeBackend(self.name, self.description, self.settings, self._key)
        from ifmemd.shards import openai_chat

        return openai_chat.OpenAIBackend(self.name, self.description, self.settings, self._key)

    def redact(self, text: str) -> str:
        """`text` with the API key blanked out, fit for stderr and the log."""
        return redact(text, self._key)

    def close(self) -> None:
        """Stop keeping the cache warm and release the backend's connections."""
        self._stop.set()
        if self._warmer is not None:
            self._warmer.join(timeout=5)
        if self.backend is not None:
            self.backend.close()

    def load(self, chunks: Sequence[Chunk], *, count: bool = True) -> dict[str, Any]:
        """Hand the backend a new corpus; what `model_ready` reports about it.

        The first call builds the backend (importing its SDK: BackendMissingError
        if it is not installed). Raises CorpusOverBudgetError when the corpus is
        over budget. `count=False` estimates the tokens instead of asking the
        API, for the small, frequent changes of working memory.
        """
        with self._loading:
            if self.backend is None:
                self.backend = self._make_backend()
                if self.settings.get("keep_warm") and self.backend_name == "anthropic":
                    self._warmer = threading.Thread(
                        target=self._keep_warm, name="keep-warm", daemon=True
                    )
                    self._warmer.start()
            loaded = dict(self.backend.load(chunks, count=count))
            self.usable.set()
            return loaded

    def _spawn(self, rid: Any, work: Callable[[], dict[str, Any]]) -> None:
        def run() -> None:
            with self._slots:
                try:
                    reply = work()
                except ModelError as e:
                    reply = {"type": "error", "message": redact(str(e), self._key)}
                except Exception as e:  # a bug or a surprise from the SDK: say so, stay up
                    message = f"model call failed: {type(e).__name__}: {e}"
                    reply = {"type": "error", "message": redact(message, self._key)}
            self.out.send({**reply, "rid": rid})

        threading.Thread(target=run, name=f"model-{rid}", daemon=True).start()

    def ask(
        self, rid: Any, question: str, candidates: Sequence[Chunk], digests: dict[str, str]
    ) -> None:
        """Ask the model in a worker thread; its citations carry the `digests` (path →
        digest) of the file versions the model was given, for the log's auditor."""

        def work() -> dict[str, Any]:
            if self.needs_passages:
                answer: Answer = self.backend.ask(question, candidates)
            else:
                answer = self.backend.ask(question)
            for c in answer.citations:
                c["digest"] = digests.get(c["path"], "")
            return {"type": "answer", **answer.to_json()}

        self._spawn(rid, work)

    def synthesize(self, rid: Any, question: str, answers: list[dict[str, Any]]) -> None:
        self._spawn(
            rid, lambda: {"type": "synthesis", **self.backend.synthesize(question, answers)}
        )

    def _keep_warm(self) -> None:
        ttl = str(self.settings.get("cache_ttl", "5m"))
        while not self._stop.wait(WARM_POLL_S):
            backend = self.backend
            if not warm_due(self.clock(), backend.last_question, backend.last_touch, ttl):
                continue
            try:
                usage: Usage = backend.warm()
            except ModelError as e:
                # Try again at the next question, not in a tight loop.
                backend.last_touch = None
                self.out.send(
                    {
                        "type": "warning",
                        "path": f"model:{self.model}",
                        "reason": redact(f"keep-warm failed: {e}", self._key),
                    }
                )
                continue
            self.out.send({"type": "warmed", "model": self.model, "usage": usage.to_json()})
