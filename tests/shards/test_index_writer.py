"""The index writer thread: watched changes are applied between the steps of
making queued passage vectors, never behind the whole queue."""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from pathlib import Path

from ifmemd.shards import semantic, store
from ifmemd.shards.corpus import Selection
from ifmemd.shards.sync import Updater
from ifmemd.shards.writer import IndexWriter

FILES = 60
STEP = 4
STEP_S = 0.05


def slow_blobs(texts: Sequence[str]) -> list[bytes]:
    """Stands in for the encoder (tests/shards/test_semantic.py runs the real one):
    as slow a step as a real one's few passages, a zero vector each."""
    time.sleep(STEP_S)
    return [bytes(2 * semantic.DIM)] * len(texts)


def wait_for(check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_change_is_applied_before_the_vector_queue_is_done(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(FILES):
        (corpus / f"note{i:02}.txt").write_text(f"note number {i} about nothing much\n")
    opened = store.open_store(tmp_path / "index", semantic.MODEL)
    updater = Updater(opened.db, Selection([str(corpus)]), queue_vectors=True)
    list(updater.scan(build=True))
    assert store.queued_vectors(opened.db) == FILES
    reader = opened.connect()
    sent: list[dict] = []
    posted: list[dict] = []
    fill = functools.partial(store.fill_vectors, opened.db, slow_blobs, STEP)
    queued = functools.partial(store.queued_vectors, opened.db)
    writer = IndexWriter(updater, sent.append, posted.append, (fill, queued))
    writer.start()
    try:
        new = corpus / "late.txt"
        new.write_text("a late note about parrots\n")
        writer.changed({str(new)})
        wait_for(
            lambda: reader.execute("SELECT 1 FROM file WHERE path = ?", (str(new),)).fetchone()
        )
        # Applied after at most one step: most of the queue was still waiting.
        assert store.queued_vectors(reader) > FILES // 2
        assert "changed" in [m["type"] for m in sent]
        wait_for(lambda: store.queued_vectors(reader) == 0)
    finally:
        writer.close()
    told = [m["queued"] for m in sent if m["type"] == "vectors"]
    assert told[0] > 0 and told[-1] == 0  # told while filling, and when none were left
    made = [row[0] for row in reader.execute("SELECT chunk FROM vector")]
    chunks = [row[0] for row in reader.execute("SELECT id FROM chunk ORDER BY id")]
    assert made == chunks  # every passage, the late one too, in increasing id
    assert not [p for p in posted if p["op"] == "_failed"]
    reader.close()
    opened.close()


def test_a_failing_fill_ends_the_writer_and_says_why(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("some text\n")
    opened = store.open_store(tmp_path / "index", semantic.MODEL)
    updater = Updater(opened.db, Selection([str(corpus)]), queue_vectors=True)
    list(updater.scan(build=True))
    posted: list[dict] = []

    def broken(texts: Sequence[str]) -> list[bytes]:
        raise MemoryError("no room for the batch")

    fill = functools.partial(store.fill_vectors, opened.db, broken, STEP)
    queued = functools.partial(store.queued_vectors, opened.db)
    writer = IndexWriter(updater, lambda m: None, posted.append, (fill, queued))
    writer.start()
    wait_for(lambda: posted)
    writer.close()
    assert posted[0]["op"] == "_failed"
    assert isinstance(posted[0]["error"], MemoryError)
    assert store.queued_vectors(opened.db) == 1  # nothing lost: still queued
    opened.close()
