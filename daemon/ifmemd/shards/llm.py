"""What every model-backed shard shares: its key, its retries, its citations, its tokens.

Nothing here imports a model SDK, so the daemon and the coordinator may use
it (for the call deadline) without paying for one. The backends themselves
(`ifmemd.shards.claude`, `ifmemd.shards.openai_chat`) are imported only inside the shard
process of a shard that uses them.

A model's answer is only as good as its citations: every citation must map
back to an exact `path:start-end` of the shard's corpus. One that maps to
nothing is kept apart as *unverified* and makes the whole answer unverified;
it is never shown as if it were a source.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ifmemd.errors import IfmemError
from ifmemd.shards.chunker import Chunk
from ifmemd.system.privatefile import NotPrivateError, read_private

BYTES_PER_TOKEN = 4
ANTHROPIC_KEY_ENV = "ANTHROPIC_API_KEY"
OPENAI_KEY_ENV = "OPENAI_API_KEY"
ANSWER_MAX_TOKENS = 1024
# Backoff between attempts: 0.5 s, 1 s, 2 s … at most 8 s, with jitter, unless
# the server says how long to wait (retry-after), which is honoured up to a minute.
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 8.0
RETRY_AFTER_CAP_S = 60.0
# Rate limited (429), overloaded (529) and other server errors (5xx) pass;
# a bad request or a bad key (4xx) will not get better by asking again.
RETRYABLE_STATUSES = frozenset({408, 409, 429})
TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
# Refresh a cache this long (as a fraction of its TTL) before it would expire.
WARM_MARGIN = 0.1
_MARKER = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")

T = TypeVar("T")


class ModelError(IfmemError):
    """Raised when a model call fails for good: refused, or still failing after every retry."""

    def __init__(self, operation: str, reason: str, attempts: int = 1) -> None:
        self.operation = operation
        self.reason = reason
        self.attempts = attempts
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"{operation}: {reason}{tries}")


class CorpusOverBudgetError(IfmemError):
    """Raised when a shard's corpus does not fit the token budget it may send to its model."""

    def __init__(self, shard: str, tokens: int, budget: int, source: str) -> None:
        self.shard = shard
        self.tokens = tokens
        self.budget = budget
        parts = -(-tokens // budget)
        super().__init__(
            f"shard {shard!r}: corpus is {tokens:,} tokens ({source}), over its budget of "
            f"{budget:,} (max_tokens); not loaded. Split it into {parts} or more shards of at "
            f"most {budget:,} tokens each (one [[shard]] per directory or file pattern), or "
            f"raise max_tokens if the model's context window allows"
        )


class BackendMissingError(IfmemError):
    """Raised when a shard's backend needs a package that is not installed."""

    def __init__(self, backend: str, package: str, extra: str) -> None:
        self.backend = backend
        self.package = package
        super().__init__(
            f'backend = "{backend}" needs the {package} package, which is not installed: '
            f"pip install 'ifmem[{extra}]'"
        )


class ApiKeyError(IfmemError):
    """Raised when a model-backed shard has no API key or its key file is not private."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"API key {where}: {reason}")


# --- the key --------------------------------------------------------------------


def read_api_key(env_var: str, key_file: str | None, *, required: bool = True) -> str | None:
    """The API key: from `env_var` if set, else from `key_file`.

    A named key file is refused when group or others may read it, like the
    signing key, whether or not the environment also holds a key. The key
    itself never appears in an error.
    """
    from_file: str | None = None
    if key_file is not None:
        try:
            data = read_private(key_file)
        except FileNotFoundError as e:
            raise ApiKeyError(key_file, f"cannot open: {e.strerror}") from e
        except NotPrivateError as e:
            raise ApiKeyError(key_file, e.reason) from e
        from_file = data.decode("utf-8", "replace").strip() or None
        if from_file is None:
            raise ApiKeyError(key_file, "the file is empty")
    key = os.environ.get(env_var) or from_file
    if key is None and required:
        raise ApiKeyError(
            "missing",
            f"set {env_var} in the daemon's environment or name a 0600 file with api_key_file",
        )
    return key


def redact(text: str, secret: str | None) -> str:
    """`text` with every occurrence of `secret` blotted out (errors can echo requests)."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "[redacted]")
    return text


# --- tokens ---------------------------------------------------------------------


def estimate_tokens(text: str) -> int:
    """A token count from the size alone (UTF-8 bytes / 4), for when no API can count."""
    return -(-len(text.encode("utf-8", "surrogatepass")) // BYTES_PER_TOKEN)


@dataclass(frozen=True, slots=True)
class Usage:
    """What one model call was billed for, in tokens, as the API reported it."""

    input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    output_tokens: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "output_tokens": self.output_tokens,
        }

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.cache_creation_input_tokens + other.cache_creation_input_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
            self.output_tokens + other.output_tokens,
        )


# --- retries --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Failure:
    """How a backend judges one failed attempt."""

    retryable: bool
    reason: str
    retry_after: float | None = None


def status_retryable(status: int) -> bool:
    """Whether an HTTP status is worth another attempt (429, 529, other 5xx, 408, 409)."""
    return status in RETRYABLE_STATUSES or status >= 500


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds only), if given."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except (TypeError, ValueError):
            continue
        if seconds >= 0:
            return min(seconds, RETRY_AFTER_CAP_S)
    return None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long one attempt may take, and how many more are made after a retryable failure."""

    timeout: float = 60.0
    max_retries: int = 3

    def deadline(self) -> float:
        """The longest a call with every retry may take; callers wait this long, no more."""
        return call_deadline(self.timeout, self.max_retries)

    def backoff(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """The pause before retry number `attempt` (0-based): exponential, capped, jittered."""
        ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * (2**attempt))
        return ceiling * (0.5 + 0.5 * rng())


def call_deadline(timeout: float, max_retries: int) -> float:
    """Every attempt's timeout plus the longest backoff between them, in seconds."""
    return timeout * (max_retries + 1) + BACKOFF_CAP_S * max_retries


def call_with_retries(
    operation: str,
    call: Callable[[], T],
    classify: Callable[[Exception], Failure | None],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Run `call`, retrying what `classify` calls retryable; raise `ModelError` in the end.

    Error handling: an exception `classify` does not recognise (None)
    propagates as it is; a non-retryable failure raises at once; a retryable
    one is retried after the server's retry-after or our backoff, unless that
    wait would run past the policy's deadline.
    """
    started = clock()
    attempt = 0
    while True:
        try:
            return call()
        except Exception as e:
            failure = classify(e)
            if failure is None:
                raise
            attempts = attempt + 1
            if not failure.retryable:
                raise ModelError(operation, failure.reason, attempts) from e
            if attempt >= policy.max_retries:
                raise ModelError(operation, f"{failure.reason}; giving up", attempts) from e
            wait = (
                failure.retry_after if failure.retry_after is not None else policy.backoff(attempt)
            )
            if clock() - started + wait + policy.timeout > policy.deadline():
                raise ModelError(
                    operation,
                    f"{failure.reason}; retry-after {wait:g} s is past the deadline",
                    attempts,
                ) from e
            sleep(wait)
            attempt += 1


# --- keep-warm ------------------------------------------------------------------


def warm_due(now: float, last_question: float | None, last_touch: float | None, ttl: str) -> bool:
    """Whether to refresh a prompt cache now.

    Only while questions come in: the last one is less than one TTL old. And
    only just before the cache (last written or read at `last_touch`; every
    read renews it) would expire. So after a quiet TTL, warming stops.
    """
    if last_question is None or last_touch is None:
        return False
    seconds = TTL_SECONDS[ttl]
    if now - last_question >= seconds:
        return False
    return now >= last_touch + seconds * (1 - WARM_MARGIN)


# --- citations ------------------------------------------------------------------


def lines_of(chunk: Chunk, start: int, end: int) -> tuple[int, int] | None:
    """The lines of `chunk` that characters `start`..`end` (end exclusive) cover.

    Leading and trailing whitespace of the range is not counted, so a cited
    range that ends with its line's newline does not spill onto the next
    line. None when the range is out of the chunk or holds only whitespace.
    """
    text = chunk.text
    if not 0 <= start < end <= len(text):
        return None
    piece = text[start:end]
    lead = len(piece) - len(piece.lstrip())
    trail = len(piece) - len(piece.rstrip())
    first, last = start + lead, end - trail - 1
    if first > last:
        return None
    return (
        chunk.start_line + text.count("\n", 0, first),
        chunk.start_line + text.count("\n", 0, last),
    )


def same_text(a: str, b: str) -> bool:
    """Equal but for runs of whitespace."""
    return a.split() == b.split()


@dataclass(slots=True)
class Answer:
    """A model's answer: its text, the citations that map to the corpus, and those that do not.

    The answer is verified only when it cites something and every citation
    maps to an exact passage.
    """

    text: str
    model: str
    usage: Usage
    citations: list[dict[str, Any]] = field(default_factory=list)
    unverified: list[dict[str, Any]] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return bool(self.citations) and not self.unverified

    def add_citation(
        self, path: str, start_line: int, end_line: int, cited_text: str, n: int | None = None
    ) -> int:
        """Record a verified citation (once per passage); its number in the answer.

        `n` is the number the answer's text already uses for it, if any (`[n]`
        references to numbered passages); otherwise citations are numbered in order.
        """
        for c in self.citations:
            if (c["path"], c["start_line"], c["end_line"]) == (path, start_line, end_line):
                return int(c["n"])
        if n is None:
            n = len(self.citations) + 1
        self.citations.append(
            {
                "n": n,
                "citation": f"{path}:{start_line}-{end_line}",
                "path": path,
                "start_line": start_line,
                "end_line": end_line,
                "cited_text": cited_text,
            }
        )
        return n

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "model": self.model,
            "verified": self.verified,
            "citations": self.citations,
            "unverified": self.unverified,
            "usage": self.usage.to_json(),
        }


def numbered_passages(chunks: Sequence[Chunk], budget: int, overhead: str) -> list[Chunk]:
    """The leading `chunks` that fit `budget` tokens together with `overhead` text."""
    used = estimate_tokens(overhead)
    kept: list[Chunk] = []
    for chunk in chunks:
        cost = estimate_tokens(passage_block(len(kept) + 1, chunk))
        if used + cost > budget:
            break
        kept.append(chunk)
        used += cost
    return kept


def passage_block(n: int, chunk: Chunk) -> str:
    return f"[{n}] {chunk.citation}\n{chunk.text.rstrip()}\n"


def markers(text: str) -> list[int]:
    """Every `[n]` (or `[n, m]`) reference in `text`, in order, as numbers."""
    return [int(n) for m in _MARKER.finditer(text) for n in m[1].split(",")]


# --- synthesis ------------------------------------------------------------------

SYNTHESIS_SYSTEM = (
    "You merge answers that different memory shards gave to one question into a single, "
    "concise answer. Each answer cites its sources with markers like [3]. Keep every "
    "marker next to the claim it supports, exactly as written; never invent a marker."
)


def synthesis_prompt(
    question: str, answers: Sequence[dict[str, Any]]
) -> tuple[str, list[dict[str, Any]]]:
    """The user text of a synthesis call and the union of every answer's citations,
    renumbered so each marker names one passage across all answers."""
    union: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    parts = [f"Question: {question}\n"]
    for answer in answers:
        renumber: dict[int, int] = {}
        for c in answer.get("citations", []):
            g = index.get(c["citation"])
            if g is None:
                g = index[c["citation"]] = len(union) + 1
                union.append({**c, "n": g, "shard": answer["shard"]})
            renumber[int(c["n"])] = g

        def swap(m: re.Match[str], renumber: dict[int, int] = renumber) -> str:
            nums = [renumber.get(int(n)) for n in m[1].split(",")]
            return "".join(f"[{n}]" for n in nums if n is not None)

        parts.append(f"Answer from shard {answer['shard']}:\n{_MARKER.sub(swap, answer['text'])}\n")
    parts.append("Write the merged answer now, keeping every marker.")
    return "\n".join(parts), union


def finish_synthesis(text: str, union: list[dict[str, Any]]) -> tuple[str, list[int]]:
    """The merged text with any dropped citation put back, and the invented markers removed.

    Returns the text and the numbers of markers the model invented.
    """
    known = {c["n"] for c in union}
    invented = sorted({n for n in markers(text) if n not in known})
    if invented:

        def keep(m: re.Match[str]) -> str:
            nums = [int(n) for n in m[1].split(",") if int(n) in known]
            return "".join(f"[{n}]" for n in nums)

        text = _MARKER.sub(keep, text)
    dropped = [n for n in sorted(known) if n not in set(markers(text))]
    if dropped:
        text = text.rstrip() + "\n\nAlso cited: " + " ".join(f"[{n}]" for n in dropped)
    return text, invented
