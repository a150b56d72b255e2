"""The two model backends in process, against the fake servers on 127.0.0.1.

`ClaudeBackend` goes through the real `anthropic` SDK; `OpenAIBackend` through
urllib. What crosses processes (routing, recording, the key's absence from the
log) is in test_llm_daemon.py.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fake_anthropic import FakeAnthropic
from fake_openai import FakeOpenAI
from ifmemd.shards.chunker import chunk_text
from ifmemd.shards.llm import CorpusOverBudgetError, ModelError, estimate_tokens, passage_block

pytest.importorskip("anthropic")
from ifmemd.shards.claude import ClaudeBackend
from ifmemd.shards.openai_chat import OpenAIBackend

KEY = "sk-ant-unit-" + "Q9" * 12
BEACON = (
    "# Beacon\n\nA lighthouse beacon guides ships through the fog.\n"
    "Keepers trim the wick every evening.\n"
)
GLACIER = "# Glacier\n\nGlacier ice moves slowly down the valley.\n"


def chunks(extra: str = "") -> list:
    return chunk_text("/c/beacon.md", BEACON + extra) + chunk_text("/c/glacier.md", GLACIER)


def settings(url: str, **over: Any) -> dict[str, Any]:
    return {
        "backend": "anthropic",
        "model": "claude-unit",
        "max_tokens": 10_000,
        "base_url": url,
        "timeout": 5.0,
        "max_retries": 2,
        "cache_ttl": "5m",
        **over,
    }


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=KEY) as server:
        yield server


@pytest.fixture
def make_claude() -> Iterator[Callable[..., ClaudeBackend]]:
    """ClaudeBackend, closed after the test: its SDK client holds pooled sockets."""
    made: list[ClaudeBackend] = []

    def make(*args: Any) -> ClaudeBackend:
        made.append(ClaudeBackend(*args))
        return made[-1]

    yield make
    for backend in made:
        backend.close()


@pytest.fixture
def claude(fake: FakeAnthropic, make_claude: Callable[..., ClaudeBackend]) -> ClaudeBackend:
    backend = make_claude("docs", "Field notes", settings(fake.url), KEY)
    backend.load(chunks())
    return backend


# --- Claude ---------------------------------------------------------------------


def test_the_corpus_is_counted_by_the_api(fake: FakeAnthropic, claude: ClaudeBackend) -> None:
    counted = [c for c in fake.calls if c.path == "/v1/messages/count_tokens"]
    assert len(counted) == 1 and claude.tokens > 0
    assert len(counted[0].documents) == 2


def test_cache_is_written_then_read_then_expires(
    fake: FakeAnthropic, claude: ClaudeBackend
) -> None:
    first = claude.ask("who trims the wick")
    assert first.usage.cache_creation_input_tokens > 0 and first.usage.cache_read_input_tokens == 0
    second = claude.ask("how does glacier ice move")
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.cache_creation_input_tokens == 0
    fake.advance(301)
    third = claude.ask("fog")
    assert third.usage.cache_creation_input_tokens > 0


def test_a_one_hour_ttl_outlives_five_minutes(
    make_claude: Callable[..., ClaudeBackend], fake: FakeAnthropic
) -> None:
    backend = make_claude("docs", "", settings(fake.url, cache_ttl="1h"), KEY)
    backend.load(chunks())
    backend.ask("fog")
    assert fake.messages()[-1].documents[-1]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    fake.advance(1800)
    assert backend.ask("fog").usage.cache_read_input_tokens > 0


def test_a_changed_corpus_is_a_new_cache_entry(fake: FakeAnthropic, claude: ClaudeBackend) -> None:
    claude.ask("fog")
    claude.load(chunks("The wick is cotton.\n"))
    after = claude.ask("fog")
    assert after.usage.cache_creation_input_tokens > 0 and after.usage.cache_read_input_tokens == 0


def test_citations_map_to_exact_lines(claude: ClaudeBackend) -> None:
    answer = claude.ask("who trims the wick")
    assert answer.verified
    assert answer.citations == [
        {
            "n": 1,
            "citation": "/c/beacon.md:4-4",
            "path": "/c/beacon.md",
            "start_line": 4,
            "end_line": 4,
            "cited_text": "Keepers trim the wick every evening.",
        }
    ]
    assert answer.text.endswith("[1]")


@pytest.mark.parametrize("mode", ["bogus", "none"])
def test_an_answer_citing_nothing_valid_is_unverified(
    fake: FakeAnthropic, claude: ClaudeBackend, mode: str
) -> None:
    fake.citation_mode = mode
    answer = claude.ask("who trims the wick")
    assert not answer.verified and answer.citations == []
    if mode == "bogus":
        assert "document_index 9 is not one of the 2 documents" in answer.unverified[0]["reason"]


def test_a_citation_whose_text_differs_is_unverified(
    fake: FakeAnthropic, claude: ClaudeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = fake._answer

    def lying(body: dict) -> list:
        content = real(body)
        content[1]["citations"][0]["cited_text"] = "Keepers never sleep."
        return content

    monkeypatch.setattr(fake, "_answer", lying)
    answer = claude.ask("who trims the wick")
    assert not answer.verified
    assert "cited text is not what /c/beacon.md:1-4 holds" in answer.unverified[0]["reason"]


def test_429_with_retry_after_is_honoured(fake: FakeAnthropic, claude: ClaudeBackend) -> None:
    fake.fail_next(429, times=2, retry_after=0.3)
    start = time.monotonic()
    answer = claude.ask("fog")
    assert time.monotonic() - start >= 0.6
    assert answer.verified
    assert [c.status for c in fake.messages(None)] == [429, 429, 200]


def test_overloaded_and_server_errors_are_retried(
    fake: FakeAnthropic, claude: ClaudeBackend
) -> None:
    fake.fail_next(529, retry_after=0)
    fake.fail_next(500, retry_after=0)
    assert claude.ask("fog").verified


def test_a_storm_gives_up_after_max_retries(fake: FakeAnthropic, claude: ClaudeBackend) -> None:
    fake.fail_next(529, times=10, retry_after=0)
    with pytest.raises(ModelError) as e:
        claude.ask("fog")
    assert e.value.attempts == 3
    assert "529 overloaded_error" in str(e.value) and KEY not in str(e.value)


def test_a_bad_request_is_not_retried(fake: FakeAnthropic, claude: ClaudeBackend) -> None:
    fake.fail_next(400)
    with pytest.raises(ModelError) as e:
        claude.ask("fog")
    assert e.value.attempts == 1 and "400 invalid_request_error" in str(e.value)


def test_a_wrong_key_is_refused_and_never_echoed(
    make_claude: Callable[..., ClaudeBackend], fake: FakeAnthropic
) -> None:
    backend = make_claude("docs", "", settings(fake.url), "sk-wrong-" + "z" * 20)
    info = backend.load(chunks())
    assert info["token_source"] == "estimate" and "401" in info["warning"]
    with pytest.raises(ModelError) as e:
        backend.ask("fog")
    assert "401 authentication_error" in str(e.value) and "sk-wrong" not in str(e.value)


def test_a_slow_reply_times_out_per_call(
    make_claude: Callable[..., ClaudeBackend], fake: FakeAnthropic
) -> None:
    backend = make_claude("docs", "", settings(fake.url, timeout=0.3, max_retries=1), KEY)
    backend.load(chunks())
    fake.delay = 1.0
    with pytest.raises(ModelError) as e:
        backend.ask("fog")
    assert "timed out" in str(e.value) and e.value.attempts == 2


def test_without_the_api_tokens_are_estimated(
    make_claude: Callable[..., ClaudeBackend], fake: FakeAnthropic
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    backend = make_claude("docs", "", settings(closed, timeout=1.0), KEY)
    info = backend.load(chunks())
    assert info["token_source"] == "estimate" and info["tokens"] > 0
    assert "cannot connect" in info["warning"]


def test_over_budget_is_refused_by_the_api_count(
    make_claude: Callable[..., ClaudeBackend], fake: FakeAnthropic
) -> None:
    backend = make_claude("docs", "", settings(fake.url, max_tokens=50), KEY)
    with pytest.raises(CorpusOverBudgetError) as e:
        backend.load(chunks())
    assert "(api), over its budget of 50" in str(e.value)


def test_keep_warm_reads_the_cache(fake: FakeAnthropic, claude: ClaudeBackend) -> None:
    claude.ask("fog")
    usage = claude.warm()
    assert usage.cache_read_input_tokens > 0 and usage.output_tokens <= 1


def test_synthesis_keeps_every_citation(fake: FakeAnthropic, claude: ClaudeBackend) -> None:
    answers = [
        {"shard": "docs", "text": "Wicks [1].", "citations": [{"n": 1, "citation": "a:1-1"}]},
        {"shard": "notes", "text": "Fog [1].", "citations": [{"n": 1, "citation": "b:2-2"}]},
    ]
    merged = claude.synthesize("q", answers)
    assert [c["citation"] for c in merged["citations"]] == ["a:1-1", "b:2-2"]
    assert "[1]" in merged["text"] and "[2]" in merged["text"]
    assert fake.messages()[-1].documents == []  # no corpus is sent to synthesise


# --- OpenAI-compatible ----------------------------------------------------------


def openai_settings(url: str, **over: Any) -> dict[str, Any]:
    return {
        "backend": "openai",
        "model": "llama-local",
        "max_tokens": 10_000,
        "base_url": url,
        "timeout": 5.0,
        "max_retries": 2,
        **over,
    }


def test_openai_answers_cite_numbered_passages() -> None:
    with FakeOpenAI(cached_tokens=7) as fake:
        backend = OpenAIBackend("docs", "", openai_settings(fake.url), None)
        answer = backend.ask("who trims the wick", chunks())
        sent = fake.requests[-1]["messages"][1]["content"]
        assert "[1] /c/beacon.md:1-4" in sent and "[2] /c/glacier.md:1-3" in sent
        assert "Authorization" not in fake.headers[-1]
    assert answer.verified and answer.text.endswith("[1]")
    assert [c["citation"] for c in answer.citations] == ["/c/beacon.md:1-4"]
    assert answer.usage.cache_read_input_tokens == 7 and answer.usage.input_tokens > 0


def test_openai_refs_outside_the_passages_are_unverified() -> None:
    with FakeOpenAI() as fake:
        fake.cite = [2, 99]
        answer = OpenAIBackend("docs", "", openai_settings(fake.url), None).ask("fog", chunks())
    assert not answer.verified
    assert [c["n"] for c in answer.citations] == [2]
    assert answer.unverified == [{"n": 99, "reason": "[99] is not one of the 2 passages sent"}]


def test_openai_without_any_reference_is_unverified() -> None:
    with FakeOpenAI() as fake:
        fake.cite = []
        answer = OpenAIBackend("docs", "", openai_settings(fake.url), None).ask("fog", chunks())
    assert not answer.verified and answer.citations == []


def test_openai_passages_stay_within_the_budget() -> None:
    with FakeOpenAI() as fake:
        unlimited = OpenAIBackend("docs", "", openai_settings(fake.url), None)
        tail = "\nQuestion: fog\nAnswer, citing passages as [n]."
        first = passage_block(1, chunks()[0])
        budget = estimate_tokens(unlimited.system + tail) + estimate_tokens(first)
        backend = OpenAIBackend("docs", "", openai_settings(fake.url, max_tokens=budget), None)
        backend.ask("fog", chunks())
        sent = fake.requests[-1]["messages"][1]["content"]
    assert "[1] /c/beacon.md:1-4" in sent and "[2]" not in sent


def test_openai_retries_and_sends_the_key() -> None:
    with FakeOpenAI() as fake:
        fake.fail_next(503, retry_after=0)
        fake.fail_next(429, retry_after=0)
        backend = OpenAIBackend("docs", "", openai_settings(fake.url), "sk-local-1234")
        assert backend.ask("fog", chunks()).verified
        assert len(fake.requests) == 3
        assert fake.headers[-1]["Authorization"] == "Bearer sk-local-1234"
        fake.fail_next(500, times=5, retry_after=0)
        with pytest.raises(ModelError) as e:
            backend.ask("fog", chunks())
    assert e.value.attempts == 3 and "500 simulated 500" in str(e.value)


def test_openai_unreachable_server_is_a_model_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    backend = OpenAIBackend("docs", "", openai_settings(closed, max_retries=1), None)
    with pytest.raises(ModelError, match="cannot connect"):
        backend.ask("fog", chunks())


# --- the shard side: worker threads and keep-warm ---------------------------------


class Sink:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, obj: dict[str, Any]) -> None:
        self.sent.append(obj)

    def wait(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in self.sent:
                if msg["type"] == kind:
                    return msg
            time.sleep(0.02)
        raise AssertionError(f"no {kind!r} message in {self.sent}")


def test_keep_warm_renews_the_cache_just_before_it_expires(
    fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ifmemd.shards import modelshard

    monkeypatch.setattr(modelshard, "WARM_POLL_S", 0.02)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    offset = [0.0]
    sink = Sink()
    runner = modelshard.ModelRunner(
        "docs",
        "",
        settings(fake.url, keep_warm=True),
        sink,
        clock=lambda: time.monotonic() + offset[0],
    )
    try:
        runner.load(chunks())
        runner.ask(1, "fog", [], {})
        answer = sink.wait("answer")
        assert answer["rid"] == 1 and answer["verified"]
        time.sleep(0.2)
        assert not [m for m in sink.sent if m["type"] == "warmed"]  # 5 minutes left: not yet
        offset[0] = 275.0  # 25 s before the cache would expire
        warmed = sink.wait("warmed")
        assert warmed["model"] == "claude-unit"
        assert warmed["usage"]["cache_read_input_tokens"] > 0
        assert fake.messages()[-1].body["max_tokens"] == 1
    finally:
        runner.close()


def test_a_failed_model_call_answers_with_an_error_not_silence(
    fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ifmemd.shards import modelshard

    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    sink = Sink()
    runner = modelshard.ModelRunner("docs", "", settings(fake.url, max_retries=0), sink)
    try:
        runner.load(chunks())
        fake.fail_next(529)
        runner.ask(5, "fog", [], {})
        error = sink.wait("error")
        assert error["rid"] == 5 and "529 overloaded_error" in error["message"]
    finally:
        runner.close()


def test_a_missing_sdk_is_a_clear_fatal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from ifmemd.shards import modelshard
    from ifmemd.shards.llm import BackendMissingError

    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    import ifmemd.shards

    monkeypatch.setitem(sys.modules, "ifmemd.shards.claude", None)  # as if not installed
    monkeypatch.delattr(ifmemd.shards, "claude", raising=False)
    # The key is read at once; the SDK only when the corpus is loaded, after `ready`.
    runner = modelshard.ModelRunner("docs", "", settings("http://127.0.0.1:9"), Sink())
    with pytest.raises(BackendMissingError, match=r"pip install 'ifmem\[anthropic\]'"):
        runner.load(chunks())
    assert not runner.usable.is_set()
