"""Query expansion by pseudo-relevance feedback: a question in other words than
the text finds its answer through the words of the passages it does match."""

from __future__ import annotations

import math

import pytest
from ifmemd.shards import expand
from ifmemd.shards.chunker import Chunk
from ifmemd.shards.index import Index


def test_telling_words_are_rare_and_weighted_by_share_and_idf() -> None:
    frequencies = {"scratch": 2, "folder": 1, "tempdir": 3, "the": 50, "x": 1, "42": 1}
    df = frequencies.__getitem__
    words = expand.telling_words(
        ["scratch", "scratch", "tempdir", "the", "x", "42", "folder", "the"], df, 60, {"the"}
    )
    # Stopwords, one-letter words and numbers never; the others by tf/length × idf.
    assert set(words) == {"scratch", "tempdir", "folder"}
    assert words["scratch"] == pytest.approx(2 / 8 * math.log(60 / 2))
    # A word in more than a tenth of the passages is too common to tell anything.
    frequencies["fog"] = 2
    assert set(expand.telling_words(["the", "fog"], df, 60, set())) == {"fog"}


def test_feedback_borrows_the_best_passages_telling_words() -> None:
    vectors = {
        1: {"scratch": 2.0, "folder": 1.0, "tempdir": 3.0},
        2: {"scratch": 1.0, "tempdir": 1.0, "cleanup": 2.0},
        3: {"unrelated": 50.0},
    }
    extra = expand.feedback([1, 2, 3], {1: 3.0, 2: 2.0, 3: 0.01}, vectors.__getitem__, {"scratch"})
    assert "tempdir" in extra and "cleanup" in extra
    # The question's own words are not added again.
    assert "scratch" not in extra
    assert max(extra.values()) == pytest.approx(expand.EXPANSION_WEIGHT)
    assert all(0 < w <= expand.EXPANSION_WEIGHT for w in extra.values())


def test_feedback_of_nothing_is_nothing() -> None:
    assert expand.feedback([], {}, dict().__getitem__, set()) == {}


# A question in other words ("throwaway scratch folder") matches notes that
# say it that way and also name the thing ("tempdir"); the answer names it
# the text's way only.
NOTES = [
    Chunk("/notes/a.md", 1, 1, "a throwaway scratch folder for the build: use a tempdir"),
    Chunk("/notes/b.md", 1, 1, "the scratch folder is a tempdir that goes away"),
    Chunk("/notes/c.md", 1, 1, "put throwaway output in a tempdir, never in the repo"),
    Chunk("/lib/answer.md", 1, 1, "TemporaryDirectory makes a tempdir and removes it on exit"),
    *(
        Chunk(f"/filler/{i}.md", 1, 1, f"release notes for version {i} of the tool")
        for i in range(40)
    ),
]
QUESTION = "where do I get a throwaway scratch folder that deletes itself"


def test_expansion_finds_the_answer_in_other_words(monkeypatch: pytest.MonkeyPatch) -> None:
    index = Index.build(NOTES)
    assert "/lib/answer.md" in [p.path for p in index.search(QUESTION, 4)]
    # Without it, the answer holds none of the question's words.
    monkeypatch.setattr(expand, "feedback", lambda *_: {})
    index = Index.build(NOTES)
    assert "/lib/answer.md" not in [p.path for p in index.search(QUESTION, 4)]


def test_a_question_in_the_texts_own_words_is_not_expanded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[object] = []
    monkeypatch.setattr(expand, "feedback", lambda *a: calls.append(a) or {})
    index = Index.build(NOTES)
    index.search("tempdir removes exit", 3)
    assert calls == []
    index.search(QUESTION, 3)
    assert len(calls) == 1
    # Nor one whose best passage holds little of it: the shard does not know its subject.
    index.search("tempdir quokka wombat numbat bilby dugong", 3)
    assert len(calls) == 1


def test_expansion_words_beyond_the_postings_budget_are_left_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A feedback word in too many passages costs more to score than it can add:
    with a budget below "tempdir"'s postings, expansion cannot reach the answer."""
    from ifmemd.shards import index as index_module

    index = Index.build(NOTES)
    assert "/lib/answer.md" in [p.path for p in index.search(QUESTION, 4)]
    # The question's own words fit (each in at most 2 passages); "tempdir" (in 4) does not.
    monkeypatch.setattr(index_module, "POSTINGS_BUDGET", 3)
    index = Index.build(NOTES)
    assert "/lib/answer.md" not in [p.path for p in index.search(QUESTION, 4)]
