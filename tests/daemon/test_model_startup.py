"""A Claude shard is ready on its own index at once; its model comes up after, in the background.

A real daemon, real shard processes and the real `anthropic` SDK against the
fake Messages API, whose token counter is held shut: until it answers, the
shard's model is not usable, and the test can look at everything in between
without depending on how long anything takes.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import daemonproc as dp
import pytest
from fake_anthropic import FakeAnthropic

KEY = "sk-ant-test-" + "Ld4pQ9" * 6
MODEL = "claude-fake-1"
TIMEOUT_S = 60.0


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=KEY) as server:
        yield server


@pytest.fixture
def daemon(
    tmp_path: Path, fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dp.DaemonProc]:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "beacon.md").write_text(
        "# Beacon\n\nA lighthouse beacon guides ships through the fog.\n"
        "Keepers trim the wick every evening.\n"
    )
    config = dp.config_text(
        {"code": [str(dp.write_corpus(tmp_path / "corpus")["code"] / "*.py")]},
        heartbeat_timeout=20.0,
    ) + (
        f'\n[anthropic]\nmodel = "{MODEL}"\nbase_url = "{fake.url}"\ntimeout = 30\n'
        f'\n[[shard]]\nname = "docs"\npaths = ["{docs}/*.md"]\nbackend = "anthropic"\n'
    )
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)  # the daemon inherits it, and its shards
    with dp.factory(tmp_path) as made:
        try:
            yield made(config, start=False)
        finally:
            fake.counts_open.set()  # never leave a shard process waiting on the fake


def docs_status(d: dp.DaemonProc) -> dict[str, Any] | None:
    status = d._try_status()
    if status is None:
        return None
    return next(s for s in status["shards"] if s["name"] == "docs")


def answered(d: dp.DaemonProc, qid: str) -> dict[str, Any]:
    """What the log recorded of the docs shard's answer to `qid` (in its `query.answered`)."""
    return next(
        r
        for _, _, b in d.events("query.answered")
        if b["qid"] == qid
        for r in b["results"]
        if r["shard"] == "docs"
    )


def test_ready_on_its_index_before_the_model_then_the_model(
    daemon: dp.DaemonProc, fake: FakeAnthropic
) -> None:
    fake.counts_open.clear()  # the API's token counter does not answer yet
    daemon.start(wait=False)
    docs = dp.wait_for(
        lambda: (s := docs_status(daemon)) and s["status"] == "ready" and s,
        TIMEOUT_S,
        "docs ready",
        daemon.diagnostics,
    )
    # Ready on its index while its model still waits for the API.
    assert docs["model_status"] == "loading", docs
    assert not daemon.events("shard.model_ready")
    [ready] = [b for _, _, b in daemon.events("shard.ready") if b["shard"] == "docs"]
    assert ready["token_source"] == "estimate" and ready["model"] == MODEL

    # An ask meanwhile gets its index's passages, marked fts, and says why.
    for qid, shards in (("q-routed", None), ("q-named", ["docs"])):
        args = {"shards": shards} if shards else {}
        result = daemon.request("ask", request_id=qid, question="who trims the wick", **args)
        assert result["missing"] == []
        assert result["passages"][0]["path"].endswith("beacon.md")
        assert "answers" not in result
        [note] = result["notes"]
        assert note["shard"] == "docs" and "not ready yet (loading)" in note["note"]
        body = answered(daemon, qid)
        assert body["mode"] == "fts" and "not ready yet" in body["note"]
    assert fake.messages() == []  # no model call was attempted

    fake.counts_open.set()
    dp.wait_for(
        lambda: (s := docs_status(daemon)) and s["model_status"] == "ready",
        TIMEOUT_S,
        "the docs model ready",
        daemon.diagnostics,
    )
    [model_ready] = [b for _, _, b in daemon.events("shard.model_ready")]
    assert model_ready["shard"] == "docs" and model_ready["token_source"] == "api"
    assert daemon.shard("docs")["tokens"] == model_ready["tokens"]

    result = daemon.request("ask", request_id="q-model", question="who trims the wick")
    assert "notes" not in result
    [answer] = result["answers"]
    assert answer["shard"] == "docs" and answer["verified"]
    assert answered(daemon, "q-model")["mode"] == "model"


def test_a_corpus_over_budget_found_after_ready_still_fails_the_shard(
    daemon: dp.DaemonProc,
) -> None:
    text = daemon.config_path.read_text() + "max_tokens = 5\n"  # the docs shard's table is last
    daemon.config_path.write_text(text)
    daemon.start(wait=False)
    docs = dp.wait_for(
        lambda: (s := docs_status(daemon)) and s["status"] == "failed" and s,
        TIMEOUT_S,
        "docs failed",
        daemon.diagnostics,
    )
    assert "over its budget of 5" in docs["failure"]
    kinds = [k for _, k, b in daemon.events() if b.get("shard") == "docs"]
    assert kinds.index("shard.ready") < kinds.index("shard.failed")
    assert daemon.shard("code")["status"] == "ready"


def test_the_mcp_answer_keeps_the_notes() -> None:
    pytest.importorskip("mcp")
    from ifmem.mcpserver import AskResult

    note = {
        "shard": "docs",
        "note": "its model is not ready yet (loading): answered from its index",
    }
    reply = {"question": "q", "passages": [], "missing": [], "shards": ["docs"], "notes": [note]}
    result = AskResult.model_validate({**reply, "qid": "q1", "seq": 3})
    assert result.model_dump()["notes"] == [note]


def test_a_crashed_shard_does_not_claim_a_ready_model_until_the_new_one_is(
    daemon: dp.DaemonProc, fake: FakeAnthropic
) -> None:
    daemon.start()  # every shard and model ready
    old_pid = daemon.shard("docs")["pid"]
    fake.counts_open.clear()  # the next process's model will wait
    os.kill(old_pid, signal.SIGKILL)
    seen: list[tuple[str, str]] = []

    def restarted() -> bool:
        s = docs_status(daemon)
        if s is not None:
            seen.append((s["status"], s["model_status"]))
        return s is not None and s["status"] == "ready" and s["pid"] != old_pid

    dp.wait_for(restarted, TIMEOUT_S, "docs restarted", daemon.diagnostics)
    # Exited, restarting, starting: never with the dead process's model "ready".
    down = [m for status, m in seen if status != "ready"]
    assert down and "ready" not in down, seen
    assert seen[-1] == ("ready", "loading")
