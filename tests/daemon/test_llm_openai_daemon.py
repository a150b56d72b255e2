"""OpenAI-compatible shards end to end: a real daemon asking the fake chat completions server,
with `[n]` references checked, tokens recorded, and answers merged by `synthesize`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import daemonproc as dp
import pytest
from fake_openai import FakeOpenAI
from ifmem.main import app
from typer.testing import CliRunner

DOCS = {"beacon.md": "# Beacon\n\nKeepers trim the wick every evening.\n"}
NOTES = {"harbour.md": "# Harbour\n\nShips wait in the harbour when the wick is out.\n"}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, fake: FakeOpenAI) -> Iterator[dp.DaemonProc]:
    root = tmp_path_factory.mktemp("openai")
    for name, files in (("docs", DOCS), ("notes", NOTES)):
        (root / name).mkdir()
        for filename, text in files.items():
            (root / name / filename).write_text(text)
    config = (
        "[daemon]\nheartbeat_interval = 0.5\nheartbeat_timeout = 20\n\n"
        f'[openai]\nbase_url = "{fake.url}"\nmodel = "llama-fake"\ntimeout = 5\n'
        "max_retries = 1\n\n"
        # Both shards' models answer (none routed out for covering less), to be merged.
        "[coordinator]\nsynthesize = true\nroute_min_coverage_ratio = 0\n\n"
        f'[[shard]]\nname = "docs"\npaths = ["{root}/docs/*.md"]\nbackend = "openai"\n\n'
        f'[[shard]]\nname = "notes"\npaths = ["{root}/notes/*.md"]\nbackend = "openai"\n'
    )
    made = dp.DaemonFactory(root)
    try:
        yield made(config)
    finally:
        made.close()


def test_answers_cite_numbered_passages_and_are_merged(
    daemon: dp.DaemonProc, fake: FakeOpenAI, tmp_path: Path
) -> None:
    result = daemon.request("ask", request_id="o-1", question="who trims the wick")
    answers = {a["shard"]: a for a in result["answers"]}
    assert set(answers) == {"docs", "notes"}
    docs = answers["docs"]
    assert docs["verified"] and docs["model"] == "llama-fake"
    assert docs["citations"][0]["citation"].endswith("beacon.md:1-3")
    assert docs["text"].endswith("[1]")
    beacon = Path(docs["citations"][0]["path"])
    # The citation names the version of the file the model was given.
    assert (
        docs["citations"][0]["digest"]
        == hashlib.blake2b(beacon.read_bytes(), digest_size=32).hexdigest()
    )
    synthesis = result["synthesis"]
    assert {c["citation"].rsplit("/", 1)[1] for c in synthesis["citations"]} == {
        "beacon.md:1-3",
        "harbour.md:1-3",
    }
    assert "[1]" in synthesis["text"] and "[2]" in synthesis["text"]  # every citation kept
    bodies = daemon.shard_results("o-1")
    assert "mode" not in bodies.pop("working")
    assert all(b["mode"] == "model" and b["usage"]["input_tokens"] > 0 for b in bodies.values())
    [answered] = [b for _, _, b in daemon.events("query.answered") if b["qid"] == "o-1"]
    assert answered["synthesis"]["input_tokens"] > 0
    assert len(fake.requests) == 3  # two shards and one synthesis


def test_a_reference_to_a_passage_never_sent_is_unverified(
    daemon: dp.DaemonProc, fake: FakeOpenAI
) -> None:
    fake.cite = [7]
    try:
        result = daemon.request("ask", question="wick", shards=["docs"])
    finally:
        fake.cite = None
    [answer] = result["answers"]
    assert not answer["verified"]
    assert answer["unverified"] == [{"n": 7, "reason": "[7] is not one of the 1 passages sent"}]
    assert result["passages"] == []


def test_ifmem_ask_prints_the_answer_and_its_citations(daemon: dp.DaemonProc) -> None:
    out = CliRunner().invoke(
        app, ["ask", "--socket", str(daemon.socket_path), "-s", "docs", "who trims the wick"]
    )
    assert out.exit_code == 0, out.output
    assert "answer from docs (llama-fake; cited):" in out.stdout
    assert "beacon.md:1-3" in out.stdout
