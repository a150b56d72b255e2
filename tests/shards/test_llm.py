"""The backend-neutral parts of model shards: keys, retries, citations, keep-warm, synthesis."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ifmemd.shards.chunker import Chunk, chunk_text
from ifmemd.shards.llm import (
    Answer,
    ApiKeyError,
    CorpusOverBudgetError,
    Failure,
    ModelError,
    RetryPolicy,
    Usage,
    call_deadline,
    call_with_retries,
    finish_synthesis,
    lines_of,
    markers,
    numbered_passages,
    parse_retry_after,
    read_api_key,
    redact,
    status_retryable,
    synthesis_prompt,
    warm_due,
)

# --- the key --------------------------------------------------------------------


def _key_file(tmp_path: Path, mode: int, text: str = "sk-file-123456\n") -> Path:
    path = tmp_path / "api.key"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_key_from_a_private_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_KEY", raising=False)
    assert read_api_key("TEST_KEY", str(_key_file(tmp_path, 0o600))) == "sk-file-123456"


def test_the_environment_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_KEY", "sk-env-654321")
    assert read_api_key("TEST_KEY", str(_key_file(tmp_path, 0o600))) == "sk-env-654321"
    assert read_api_key("TEST_KEY", None) == "sk-env-654321"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_key_file_others_can_read_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int
) -> None:
    monkeypatch.setenv("TEST_KEY", "sk-env-654321")  # even when it would not be used
    path = _key_file(tmp_path, mode)
    with pytest.raises(ApiKeyError) as e:
        read_api_key("TEST_KEY", str(path))
    assert f"permissions {mode:04o} are too open" in str(e.value)
    assert f"chmod 600 {path}" in str(e.value)
    assert "sk-file" not in str(e.value)


def test_no_key_at_all_says_where_to_put_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_KEY", raising=False)
    with pytest.raises(ApiKeyError, match=r"set TEST_KEY .* api_key_file"):
        read_api_key("TEST_KEY", None)
    assert read_api_key("TEST_KEY", None, required=False) is None


def test_empty_and_missing_key_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_KEY", raising=False)
    with pytest.raises(ApiKeyError, match="empty"):
        read_api_key("TEST_KEY", str(_key_file(tmp_path, 0o600, "\n")))
    with pytest.raises(ApiKeyError, match="cannot open"):
        read_api_key("TEST_KEY", str(tmp_path / "nope"))


def test_redact() -> None:
    assert redact("bad key sk-abcdef in header", "sk-abcdef") == "bad key [redacted] in header"
    assert redact("text", None) == "text"


# --- retries --------------------------------------------------------------------


class Flaky(Exception):
    def __init__(self, status: int, retry_after: float | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.retry_after = retry_after


def classify(e: Exception) -> Failure | None:
    if isinstance(e, Flaky):
        return Failure(status_retryable(e.status), f"{e.status}", e.retry_after)
    return None


def run(outcomes: list, policy: RetryPolicy) -> tuple[object, list[float]]:
    slept: list[float] = []
    clock = [0.0]

    def sleep(s: float) -> None:
        slept.append(s)
        clock[0] += s

    def call() -> object:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    result = call_with_retries("ask m", call, classify, policy, sleep=sleep, clock=lambda: clock[0])
    return result, slept


@pytest.mark.parametrize("status", [429, 529, 500, 502, 503])
def test_retryable_statuses_are_retried(status: int) -> None:
    result, slept = run([Flaky(status), Flaky(status), "ok"], RetryPolicy(10, 3))
    assert result == "ok" and len(slept) == 2
    assert 0.25 <= slept[0] <= 0.5 and 0.5 <= slept[1] <= 1.0  # jittered exponential


def test_retry_after_is_honoured() -> None:
    result, slept = run([Flaky(429, 2.5), "ok"], RetryPolicy(10, 3))
    assert result == "ok" and slept == [2.5]


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_client_errors_are_not_retried(status: int) -> None:
    with pytest.raises(ModelError) as e:
        run([Flaky(status), "ok"], RetryPolicy(10, 3))
    assert e.value.attempts == 1 and "after" not in str(e.value)


def test_giving_up_names_the_attempts() -> None:
    with pytest.raises(ModelError) as e:
        run([Flaky(529)] * 5, RetryPolicy(10, 2))
    assert e.value.attempts == 3
    assert str(e.value) == "ask m: 529; giving up after 3 attempts"


def test_a_retry_after_past_the_deadline_is_not_waited_for() -> None:
    with pytest.raises(ModelError, match="past the deadline"):
        run([Flaky(429, 60.0), "ok"], RetryPolicy(1, 1))


def test_unknown_exceptions_propagate() -> None:
    with pytest.raises(KeyError):
        run([KeyError("x")], RetryPolicy(10, 3))


def test_parse_retry_after() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert parse_retry_after({"retry-after": "3600"}) == 60.0
    assert parse_retry_after(None) is None


def test_the_deadline_covers_every_attempt_and_backoff() -> None:
    assert call_deadline(60, 3) == 60 * 4 + 8 * 3
    assert RetryPolicy(5, 0).deadline() == 5


# --- citations ------------------------------------------------------------------

TEXT = "alpha one\nbeta two\n\ngamma three\n"


def chunk() -> Chunk:
    return Chunk("/c/f.md", 10, 13, TEXT)


@pytest.mark.parametrize(
    ("start", "end", "lines"),
    [
        (0, 9, (10, 10)),  # "alpha one"
        (0, 10, (10, 10)),  # with its newline: still line 10
        (10, 18, (11, 11)),  # "beta two"
        (9, 18, (11, 11)),  # starting at the newline before it
        (6, 14, (10, 11)),  # across a line break
        (0, len(TEXT), (10, 13)),
        (19, 20, None),  # only the blank line's newline
        (5, 5, None),  # empty
        (0, len(TEXT) + 1, None),  # past the end
    ],
)
def test_lines_of(start: int, end: int, lines: tuple[int, int] | None) -> None:
    assert lines_of(chunk(), start, end) == lines


@given(st.text(alphabet="ab \n", min_size=1, max_size=60), st.data())
def test_lines_of_covers_exactly_the_non_blank_cited_lines(text: str, data: st.DataObject) -> None:
    c = Chunk("p", 1, text.count("\n") + 1, text)
    start = data.draw(st.integers(0, len(text) - 1))
    end = data.draw(st.integers(start + 1, len(text)))
    got = lines_of(c, start, end)
    piece = text[start:end]
    if not piece.strip():
        assert got is None
        return
    assert got is not None
    first = start + (len(piece) - len(piece.lstrip()))
    last = end - (len(piece) - len(piece.rstrip())) - 1
    lines = text.split("\n")
    assert lines[got[0] - 1].strip() and lines[got[1] - 1].strip()
    assert got == (text.count("\n", 0, first) + 1, text.count("\n", 0, last) + 1)


def test_an_answer_is_verified_only_with_citations_and_none_unverified() -> None:
    answer = Answer("text", "m", Usage())
    assert not answer.verified
    assert answer.add_citation("p", 1, 2, "x") == 1
    assert answer.add_citation("p", 1, 2, "x") == 1  # once per passage
    assert answer.add_citation("p", 3, 3, "y") == 2
    assert answer.verified
    answer.unverified.append({"reason": "nothing"})
    assert not answer.verified
    assert answer.to_json()["verified"] is False


def test_over_budget_says_how_to_split() -> None:
    message = str(CorpusOverBudgetError("docs", 450_000, 180_000, "api"))
    assert "corpus is 450,000 tokens (api), over its budget of 180,000" in message
    assert "Split it into 3 or more shards" in message


def test_numbered_passages_fit_the_budget() -> None:
    chunks = chunk_text("/a.txt", "".join(f"line {i} " * 20 + "\n" for i in range(40)))
    kept = numbered_passages(chunks, 1500, "question")
    assert 0 < len(kept) < len(chunks)
    assert kept == chunks[: len(kept)]


# --- keep-warm ------------------------------------------------------------------


def test_warm_only_just_before_expiry_and_only_while_questions_come() -> None:
    assert not warm_due(100, None, None, "5m")
    assert not warm_due(200, 0, 0, "5m")  # cache has 100 s left
    assert warm_due(271, 0, 0, "5m")  # 29 s left
    assert not warm_due(301, 0, 0, "5m")  # the last question is a TTL old: stop
    assert warm_due(571, 300, 300, "5m")
    assert not warm_due(3000, 0, 0, "1h")
    assert warm_due(3250, 0, 0, "1h")


# --- synthesis ------------------------------------------------------------------

ANSWERS = [
    {
        "shard": "docs",
        "text": "Fog guides [1]. Wicks [2].",
        "citations": [{"n": 1, "citation": "a.md:1-2"}, {"n": 2, "citation": "a.md:4-4"}],
    },
    {
        "shard": "notes",
        "text": "Harbour [1], wicks [2].",
        "citations": [{"n": 1, "citation": "h.md:3-3"}, {"n": 2, "citation": "a.md:4-4"}],
    },
]


def test_synthesis_renumbers_citations_across_answers() -> None:
    prompt, union = synthesis_prompt("q", ANSWERS)
    assert [c["citation"] for c in union] == ["a.md:1-2", "a.md:4-4", "h.md:3-3"]
    assert "Fog guides [1]. Wicks [2]." in prompt
    assert "Harbour [3], wicks [2]." in prompt


def test_synthesis_keeps_every_citation_and_drops_invented_ones() -> None:
    _, union = synthesis_prompt("q", ANSWERS)
    text, invented = finish_synthesis("Fog [1] and wicks [2], see [9].", union)
    assert invented == [9]
    assert "[9]" not in text
    assert text.endswith("Also cited: [3]")
    assert sorted(set(markers(text))) == [1, 2, 3]


def test_markers() -> None:
    assert markers("a [1] b [2, 3] c [x] [10]") == [1, 2, 3, 10]


# --- weight ---------------------------------------------------------------------


def test_the_daemon_and_the_cli_never_import_a_model_sdk() -> None:
    code = (
        "import sys\n"
        "import ifmemd.daemon, ifmemd.coordinator, ifmemd.supervisor, ifmemd.shards.shard\n"
        "import ifmemd.usage, ifmemd.shards.llm, ifmemd.shards.modelshard, ifmem.main\n"
        "print(','.join(m for m in ('anthropic', 'httpx2', 'httpx') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
