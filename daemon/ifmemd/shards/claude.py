"""The `anthropic` backend: a shard's whole corpus in Claude's context, cached, with citations.

Imported only by the shard process of a shard with `backend = "anthropic"`;
the daemon and the CLI never load the SDK.

Every request is the same prefix followed by the question: a system prompt,
then one `document` block per chunk of the corpus (plain text, titled with the
chunk's `path:start-end`, citations enabled), the last one carrying
`cache_control`. The first question writes that prefix to the prompt cache;
every later one within its TTL reads it back at a tenth of the price.

Why documents and not `search_result` blocks: a plain-text document gets
`char_location` citations, which we narrow to the exact lines the cited
characters cover. A search result is cited by whole content blocks, so line
precision would need one block per line, and search results are meant for
retrieved, per-question content, whereas this corpus is fixed and cached.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import anthropic

from ifmemd.shards.chunker import Chunk
from ifmemd.shards.llm import (
    ANSWER_MAX_TOKENS,
    ANTHROPIC_KEY_ENV,
    SYNTHESIS_SYSTEM,
    Answer,
    CorpusOverBudgetError,
    Failure,
    ModelError,
    RetryPolicy,
    Usage,
    call_with_retries,
    estimate_tokens,
    finish_synthesis,
    lines_of,
    parse_retry_after,
    redact,
    same_text,
    status_retryable,
    synthesis_prompt,
)

API_KEY_ENV = ANTHROPIC_KEY_ENV
COUNT_TIMEOUT_S = 10.0
WARM_QUESTION = "Reply with the single word: ready."

SYSTEM_PROMPT = (
    "You are the memory shard {name!r}{about}. The documents hold its whole corpus; each "
    "title is the file and line range it comes from. Answer the question from these "
    "documents only, citing the passages you rely on. If they do not hold the answer, say "
    "so in one sentence."
)


class ClaudeBackend:
    """One shard's view of Claude: its cached corpus prefix, its client, its counters."""

    def __init__(self, name: str, description: str, settings: dict[str, Any], api_key: str) -> None:
        self.name = name
        self.model: str = settings["model"]
        self.budget: int = int(settings["max_tokens"])
        self.ttl: str = settings.get("cache_ttl", "5m")
        self.policy = RetryPolicy(float(settings["timeout"]), int(settings["max_retries"]))
        self._key = api_key
        self.client = anthropic.Anthropic(
            api_key=api_key,
            base_url=settings.get("base_url") or None,
            timeout=self.policy.timeout,
            max_retries=0,  # we retry ourselves: one policy for every backend, and counted
        )
        about = f" ({description})" if description else ""
        self.system = SYSTEM_PROMPT.format(name=name, about=about)

        self.chunks: list[Chunk] = []
        self.documents: list[dict[str, Any]] = []
        self.tokens = 0
        self._lock = threading.Lock()
        self.last_question: float | None = None
        self.last_touch: float | None = None

    # -- the corpus ---------------------------------------------------------------

    def close(self) -> None:
        """Close the client's connection pool."""
        self.client.close()

    def load(self, chunks: Sequence[Chunk], *, count: bool = True) -> dict[str, Any]:
        """Take a new corpus; count it and refuse it when it is over the budget.

        Returns what `shard.ready` adds: tokens, and whether the API counted them.
        """
        # The API refuses blank documents; they hold nothing to cite anyway.
        kept = [c for c in chunks if c.text.strip()]
        documents = [_document(c) for c in kept]
        if documents:
            documents[-1] = {**documents[-1], "cache_control": self._cache_control()}
        tokens, source, warning = self._count(documents, count)
        if tokens > self.budget:
            raise CorpusOverBudgetError(self.name, tokens, self.budget, source)
        with self._lock:
            self.chunks, self.documents, self.tokens = kept, documents, tokens
            self.last_touch = None  # a new prefix: nothing of it is cached yet
        ready: dict[str, Any] = {"tokens": tokens, "token_source": source, "model": self.model}
        if warning:
            ready["warning"] = warning
        return ready

    def _cache_control(self) -> dict[str, str]:
        control = {"type": "ephemeral"}
        if self.ttl != "5m":
            control["ttl"] = self.ttl
        return control

    def _count(self, documents: list[dict[str, Any]], ask_api: bool) -> tuple[int, str, str]:
        """(tokens, "api" or "estimate", why it is an estimate) of the cached prefix."""
        estimate = estimate_tokens(self.system) + sum(
            estimate_tokens(d["source"]["data"]) + estimate_tokens(d["title"]) for d in documents
        )
        if not documents or not ask_api:
            return estimate, "estimate", ""
        try:
            counted = self.client.messages.count_tokens(
                model=self.model,
                system=self.system,
                messages=[{"role": "user", "content": [*documents, _text("?")]}],
                timeout=min(COUNT_TIMEOUT_S, self.policy.timeout),
            )
        except anthropic.AnthropicError as e:
            why = redact(f"count_tokens failed ({_describe(e)}); estimated as bytes/4", self._key)
            return estimate, "estimate", why
        return int(counted.input_tokens), "api", ""

    def _snapshot(self) -> tuple[list[Chunk], list[dict[str, Any]]]:
        with self._lock:
            return self.chunks, self.documents

    # -- calls --------------------------------------------------------------------

    def _create(self, operation: str, content: list[dict[str, Any]], **kw: Any) -> Any:
        def call() -> Any:
            return self.client.messages.create(
                model=self.model,
                max_tokens=kw.get("max_tokens", ANSWER_MAX_TOKENS),
                system=kw.get("system", self.system),
                messages=[{"role": "user", "content": content}],
            )

        try:
            return call_with_retries(operation, call, self._classify, self.policy)
        except ModelError as e:
            raise ModelError(e.operation, redact(e.reason, self._key), e.attempts) from None

    def _classify(self, e: Exception) -> Failure | None:
        if isinstance(e, anthropic.APIStatusError):
            return Failure(
                status_retryable(e.status_code),
                _describe(e),
                parse_retry_after(e.response.headers),
            )
        if isinstance(e, anthropic.APIConnectionError):  # also timeouts
            return Failure(True, _describe(e))
        if isinstance(e, anthropic.AnthropicError):
            return Failure(False, _describe(e))
        return None

    def ask(self, question: str) -> Answer:
        """Answer `question` from the cached corpus; citations checked against it."""
        chunks, documents = self._snapshot()
        self.last_question = time.monotonic()
        if not documents:
            return Answer("This shard's corpus is empty.", self.model, Usage())
        message = self._create(f"ask {self.model}", [*documents, _text(question)])
        self.last_touch = time.monotonic()
        return self._read(message, chunks, len(documents))

    def warm(self) -> Usage:
        """Read the cached prefix once more so it lives another TTL; what that cost."""
        _, documents = self._snapshot()
        message = self._create(
            f"keep-warm {self.model}", [*documents, _text(WARM_QUESTION)], max_tokens=1
        )
        self.last_touch = time.monotonic()
        return _usage(message.usage)

    def synthesize(self, question: str, answers: list[dict[str, Any]]) -> dict[str, Any]:
        """Merge shard answers into one that keeps every citation (no corpus sent)."""
        prompt, union = synthesis_prompt(question, answers)
        message = self._create(f"synthesize {self.model}", [_text(prompt)], system=SYNTHESIS_SYSTEM)
        raw = "".join(b.text for b in message.content if getattr(b, "type", "") == "text")
        text, invented = finish_synthesis(raw, union)
        return {
            "text": text,
            "citations": union,
            "invented": invented,
            "model": message.model or self.model,
            "usage": _usage(message.usage).to_json(),
        }

    def _read(self, message: Any, chunks: list[Chunk], count: int) -> Answer:
        answer = Answer("", message.model or self.model, _usage(message.usage))
        parts: list[str] = []
        for block in message.content:
            if getattr(block, "type", "") != "text":
                continue
            parts.append(block.text)
            marks = []
            for c in block.citations or []:
                found = _locate(c, chunks, count)
                if isinstance(found, str):
                    answer.unverified.append(_unverified(c, found))
                    marks.append("[?]")
                else:
                    path, start, end = found
                    marks.append(f"[{answer.add_citation(path, start, end, c.cited_text)}]")
            parts.append("".join(marks))
        answer.text = "".join(parts).strip()
        return answer


def _document(chunk: Chunk) -> dict[str, Any]:
    return {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": chunk.text},
        "title": chunk.citation,
        "citations": {"enabled": True},
    }


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _usage(usage: Any) -> Usage:
    return Usage(
        int(usage.input_tokens or 0),
        int(getattr(usage, "cache_creation_input_tokens", 0) or 0),
        int(getattr(usage, "cache_read_input_tokens", 0) or 0),
        int(usage.output_tokens or 0),
    )


def _describe(e: Exception) -> str:
    if isinstance(e, anthropic.APIStatusError):
        kind = ""
        body = e.body if isinstance(e.body, dict) else {}
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        kind = str(error.get("type", "")) if error else ""
        message = str(error.get("message", "")) if error else ""
        return " ".join(p for p in (str(e.status_code), kind, message[:200]) if p)
    if isinstance(e, anthropic.APITimeoutError):
        return "request timed out"
    if isinstance(e, anthropic.APIConnectionError):
        return f"cannot connect ({e.__cause__ or e})"
    return f"{type(e).__name__}: {e}"


def _locate(c: Any, chunks: list[Chunk], count: int) -> tuple[str, int, int] | str:
    """The passage a citation points at, or why it points at none."""
    kind = getattr(c, "type", "")
    if kind != "char_location":
        return f"a {kind or 'untyped'} citation, not a character range of this shard's corpus"
    i = c.document_index
    if not isinstance(i, int) or not 0 <= i < count:
        return f"document_index {i} is not one of the {count} documents sent"
    chunk = chunks[i]
    lines = lines_of(chunk, c.start_char_index, c.end_char_index)
    if lines is None:
        return (
            f"characters {c.start_char_index}-{c.end_char_index} are not text of {chunk.citation}"
        )
    if not same_text(chunk.text[c.start_char_index : c.end_char_index], c.cited_text or ""):
        return f"the cited text is not what {chunk.citation} holds at those characters"
    title = getattr(c, "document_title", None)
    if title is not None and title != chunk.citation:
        return f"document title {title!r} is not {chunk.citation!r}"
    return chunk.path, lines[0], lines[1]


def _unverified(c: Any, reason: str) -> dict[str, Any]:
    return {
        "type": getattr(c, "type", None),
        "document_index": getattr(c, "document_index", None),
        "start_char_index": getattr(c, "start_char_index", None),
        "end_char_index": getattr(c, "end_char_index", None),
        "cited_text": (getattr(c, "cited_text", "") or "")[:300],
        "reason": reason,
    }
