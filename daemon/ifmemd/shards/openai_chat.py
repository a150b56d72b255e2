"""The `openai` backend: any server that speaks OpenAI chat completions (Ollama, llama.cpp,
vLLM…), over the standard library's HTTP client.

Local models have small contexts and no citations API, so a question gets the
shard's best passages for it (its own full-text search), numbered and within
the token budget, and the model must cite them as `[n]`. Every reference is
checked against the numbers sent: one outside them is unverified.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from ifmemd.shards.chunker import Chunk
from ifmemd.shards.llm import (
    ANSWER_MAX_TOKENS,
    OPENAI_KEY_ENV,
    SYNTHESIS_SYSTEM,
    Answer,
    Failure,
    ModelError,
    RetryPolicy,
    Usage,
    call_with_retries,
    finish_synthesis,
    markers,
    numbered_passages,
    parse_retry_after,
    passage_block,
    redact,
    status_retryable,
    synthesis_prompt,
)

API_KEY_ENV = OPENAI_KEY_ENV
MAX_ERROR_BODY = 2000

SYSTEM_PROMPT = (
    "You are the memory shard {name!r}{about}. Answer the question using only the numbered "
    "passages given. After every claim, cite the passage it comes from by its number in "
    "square brackets, like [2]. If the passages do not hold the answer, say so."
)


class _HTTPStatus(Exception):
    def __init__(self, status: int, reason: str, headers: Any) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers


class OpenAIBackend:
    """One shard's view of an OpenAI-compatible server."""

    def __init__(
        self, name: str, description: str, settings: dict[str, Any], api_key: str | None
    ) -> None:
        self.name = name
        self.model: str = settings["model"]
        self.budget: int = int(settings["max_tokens"])
        self.url = str(settings["base_url"]).rstrip("/") + "/chat/completions"
        self.policy = RetryPolicy(float(settings["timeout"]), int(settings["max_retries"]))
        self._key = api_key
        about = f" ({description})" if description else ""
        self.system = SYSTEM_PROMPT.format(name=name, about=about)
        self.last_question: float | None = None
        self.last_touch: float | None = None

    def close(self) -> None:
        """Nothing to release: every request opens and closes its own connection."""

    def load(self, chunks: Sequence[Chunk], *, count: bool = True) -> dict[str, Any]:
        """Nothing is sent ahead: passages go with each question, within the budget."""
        return {"model": self.model}

    def _post(self, operation: str, system: str, user: str, max_tokens: int) -> dict[str, Any]:
        body = json.dumps(
            {
                "model": self.model,
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": user},
                ],
                "max_tokens": max_tokens,
                "temperature": 0,
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"

        def call() -> dict[str, Any]:
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.policy.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as e:
                detail = e.read(MAX_ERROR_BODY).decode("utf-8", "replace")
                raise _HTTPStatus(e.code, _error_message(detail) or str(e.reason), e.headers) from e

        try:
            return call_with_retries(operation, call, self._classify, self.policy)
        except ModelError as e:
            raise ModelError(e.operation, redact(e.reason, self._key), e.attempts) from None

    def _classify(self, e: Exception) -> Failure | None:
        if isinstance(e, _HTTPStatus):
            return Failure(
                status_retryable(e.status), f"{e.status} {e.reason}", parse_retry_after(e.headers)
            )
        if isinstance(e, TimeoutError | socket.timeout):
            return Failure(True, "request timed out")
        if isinstance(e, urllib.error.URLError | ConnectionError | http.client.HTTPException):
            return Failure(True, f"cannot connect ({getattr(e, 'reason', e)})")
        if isinstance(e, ValueError):  # not JSON
            return Failure(False, f"the server's reply is not JSON ({e})")
        return None

    def ask(self, question: str, candidates: Sequence[Chunk]) -> Answer:
        """Answer from the `candidates` (best first) that fit the budget; `[n]` refs checked."""
        self.last_question = time.monotonic()
        tail = f"\nQuestion: {question}\nAnswer, citing passages as [n]."
        passages = numbered_passages(candidates, self.budget, self.system + tail)
        user = (
            "Passages:\n\n"
            + "\n".join(passage_block(n, c) for n, c in enumerate(passages, 1))
            + tail
        )
        reply = self._post(f"ask {self.model}", self.system, user, ANSWER_MAX_TOKENS)
        self.last_touch = time.monotonic()
        text = _content(reply)
        answer = Answer("", str(reply.get("model") or self.model), _usage(reply))
        for n in markers(text):
            if 1 <= n <= len(passages):
                c = passages[n - 1]
                answer.add_citation(c.path, c.start_line, c.end_line, c.text[:300], n)
            elif not any(u["n"] == n for u in answer.unverified):
                answer.unverified.append(
                    {
                        "n": n,
                        "reason": f"[{n}] is not one of the {len(passages)} passages sent",
                    }
                )
        answer.text = text.strip()
        return answer

    def synthesize(self, question: str, answers: list[dict[str, Any]]) -> dict[str, Any]:
        prompt, union = synthesis_prompt(question, answers)
        reply = self._post(f"synthesize {self.model}", SYNTHESIS_SYSTEM, prompt, ANSWER_MAX_TOKENS)
        text, invented = finish_synthesis(_content(reply), union)
        return {
            "text": text,
            "citations": union,
            "invented": invented,
            "model": str(reply.get("model") or self.model),
            "usage": _usage(reply).to_json(),
        }


def _content(reply: dict[str, Any]) -> str:
    try:
        return str(reply["choices"][0]["message"]["content"] or "")
    except (KeyError, IndexError, TypeError) as e:
        raise ModelError("read reply", f"no choices[0].message.content in the reply ({e})") from e


def _usage(reply: dict[str, Any]) -> Usage:
    usage = reply.get("usage") or {}
    prompt = int(usage.get("prompt_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    return Usage(
        input_tokens=max(0, prompt - cached),
        cache_read_input_tokens=cached,
        output_tokens=int(usage.get("completion_tokens") or 0),
    )


def _error_message(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:200]
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("message", ""))[:200]
    if isinstance(error, str):
        return error[:200]
    return ""
