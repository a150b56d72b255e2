"""Shards that rank by meaning under a real daemon: they answer by words as soon as
they are ready and `status` counts the passages still waiting for their vector;
one of them encodes each question.

Each `semantic = true` shard would encode the question itself (~9 ms of CPU
apiece, most of its search); the coordinator has one encode it and gives the
vector to the others of its model. These tests ask a real daemon with three
such shards (and one that ranks by words only) through its socket.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import daemonproc as dp
import pytest

SEMANTIC = ("tools", "storage", "network")
TEXTS = {
    "tools": {
        "tempdir.md": "TemporaryDirectory creates a scratch directory; it is removed with "
        "all its files when the with block ends.\n",
        "make.md": "make reads the Makefile in the current directory and builds its targets.\n",
    },
    "storage": {
        "disk.md": "Files are written to disk in blocks of four kilobytes.\n",
        "folder.md": "A folder in the sidebar shows the files of a directory.\n",
    },
    "network": {
        "net.md": "The socket is closed when the connection ends.\n",
        "retry.md": "A failed transfer is retried after a second, then twice as long each time.\n",
    },
    "words": {
        "itself.md": "The installer deletes itself when it is done and leaves a log behind.\n",
    },
}
QUESTIONS = (
    "How do I make a throwaway folder that deletes itself when I am done with it?",
    "what happens to a connection that failed",
    "how big are the blocks written to disk",
)


def _config(root: Path, **daemon: Any) -> str:
    text = dp.config_text({name: [str(root / name)] for name in TEXTS}, **daemon)
    for name in SEMANTIC:
        text = text.replace(
            f'name = "{name}"\n', f'name = "{name}"\nsemantic = true\nwatch = false\n'
        )
    return text


@pytest.fixture
def made(tmp_path: Path) -> Iterator[dp.DaemonFactory]:
    for shard, files in TEXTS.items():
        (tmp_path / shard).mkdir()
        for name, text in files.items():
            (tmp_path / shard / name).write_text(text)
    with dp.factory(tmp_path) as factory:
        yield factory


def _start(made: dp.DaemonFactory, **daemon: Any) -> dp.DaemonProc:
    """A daemon whose semantic shards have made every passage's vector."""
    started = made(_config(made.tmp_path, **daemon))
    started.wait_ready()
    for name in SEMANTIC:
        started.wait_shard(name, lambda s: s["vectors_queued"] == 0, "every vector made")
    return started


def _encoded(daemon: dp.DaemonProc) -> dict[str, int]:
    return {s["name"]: s["encoded"] for s in daemon.status()["shards"] if "encoded" in s}


def _wait_encoded(daemon: dp.DaemonProc, total: int) -> dict[str, int]:
    """Each semantic shard's count of questions encoded, once their heartbeats add to `total`."""

    def added_up() -> dict[str, int] | None:
        encoded = _encoded(daemon)
        return encoded if sum(encoded.values()) == total else None

    return dp.wait_for(
        added_up,
        5.0,
        f"{total} questions encoded",
        daemon.diagnostics,
    )


def test_shards_of_one_model_encode_each_question_once(made: dp.DaemonFactory) -> None:
    daemon = _start(made)
    assert _encoded(daemon) == dict.fromkeys(SEMANTIC, 0)
    with daemon.client() as client:
        shared = [client.request("ask", question=q, k=6) for q in QUESTIONS]
    # One encode an ask, not one a semantic shard (3); every shard answered.
    assert sorted(_wait_encoded(daemon, len(QUESTIONS))) == sorted(SEMANTIC)
    for reply in shared:
        assert not reply.get("missing")
    # Asked alone, a shard encodes the question itself: its answers are the baseline.
    alone: dict[tuple[str, str], dict[str, Any]] = {}
    with daemon.client() as client:
        for q in QUESTIONS:
            for name in SEMANTIC:
                reply = client.request("ask", question=q, k=6, shards=[name])
                alone[q, name] = daemon.shard_results(reply["qid"])[name]
                for p in reply["passages"]:
                    alone[q, p["citation"]] = p
    _wait_encoded(daemon, len(QUESTIONS) * (1 + len(SEMANTIC)))
    for q, reply in zip(QUESTIONS, shared, strict=True):
        results = daemon.shard_results(reply["qid"])
        for name in SEMANTIC:
            # The same passages, bm25 scores and coverages as when it encoded the question.
            assert results[name]["passages"] == alone[q, name]["passages"], (q, name)
        for p in reply["passages"]:
            if "similarity" in p:
                # And the same similarity, wherever the shard cited it alone.
                assert p["similarity"] == alone[q, p["citation"]]["similarity"]
    assert any("similarity" in p for reply in shared for p in reply["passages"])


def test_an_ask_answers_when_the_shard_encoding_the_question_hangs(
    made: dp.DaemonFactory,
) -> None:
    daemon = _start(made, ask_timeout=2.0, heartbeat_timeout=30.0)
    # The least busy shard encodes; all idle, the first in the config.
    stuck = daemon.shard_pids()["tools"]
    os.kill(stuck, signal.SIGSTOP)
    try:
        with daemon.client() as client:
            reply = client.request("ask", question=QUESTIONS[1], k=6)
            # Stuck, it looks the least busy still (its requests were given up
            # on): the next ask must not wait for it to encode again.
            again = client.request("ask", question=QUESTIONS[2], k=6)
    finally:
        os.kill(stuck, signal.SIGCONT)
    # Given up on after half the ask's time, the others encoded it themselves.
    results = daemon.shard_results(reply["qid"])
    assert "tools" in {m["shard"] for m in reply["missing"]}
    assert any(p["path"].endswith("net.md") for p in reply["passages"])
    assert results["network"]["passages"] and results["storage"]["passages"]
    assert "tools" in {m["shard"] for m in again["missing"]}
    assert daemon.shard_results(again["qid"])["network"]["passages"]
    # Resumed, the stuck shard encodes the first question twice (the embed,
    # then its own search, sent without the vector), each of the others once;
    # the second question once, for all three, by the next in the config.
    assert _wait_encoded(daemon, 5) == {"tools": 2, "storage": 2, "network": 1}


def test_vectors_are_made_after_ready_and_status_counts_them(made: dp.DaemonFactory) -> None:
    daemon = made(_config(made.tmp_path))
    status = {s["name"]: s for s in daemon.status()["shards"]}
    assert all("vectors_queued" in status[name] for name in SEMANTIC)
    assert "vectors_queued" not in status["words"]  # not a semantic shard
    for name in SEMANTIC:
        daemon.wait_shard(name, lambda s: s["vectors_queued"] == 0, "every vector made")
    answer = daemon.request("ask", question=QUESTIONS[0], shards=["tools"])
    assert answer["passages"]
    assert all(isinstance(p["similarity"], float) for p in answer["passages"])
