"""bm25 scored from cached postings agrees with FTS5's own bm25()."""

from __future__ import annotations

import random

import pytest
from ifmemd.shards.chunker import Chunk
from ifmemd.shards.index import Index

WORDS = ["lighthouse", "beacon", "ship", "fog", "keeper", "wick", "harbour", "tide", "storm"]


def _corpus(seed: int, n: int) -> list[Chunk]:
    rng = random.Random(seed)
    return [
        Chunk(f"/d{i}.md", 1, 1, " ".join(rng.choices(WORDS, k=rng.randint(1, 40))))
        for i in range(n)
    ]


def _both(index: Index, question: str) -> tuple[dict[int, float], dict[int, float]]:
    """(ours, FTS5's) scores of every passage matching the question's words."""
    plan = index._plan(question)
    assert plan is not None
    rows = index._db.execute(
        "SELECT rowid, bm25(passage) FROM passage WHERE passage MATCH ?", (plan.expression,)
    ).fetchall()
    return index._scorer.scores(list(plan.terms)), {r: -s for r, s in rows}


@pytest.mark.parametrize("seed", range(5))
def test_scores_equal_fts5_bm25(seed: int) -> None:
    index = Index.build(_corpus(seed, 60))
    for question in ("lighthouse", "beacon fog", "ships, tides, storms and a wick"):
        ours, fts5 = _both(index, question)
        assert ours and ours == pytest.approx(fts5, rel=1e-9)


def test_scores_follow_removed_and_added_passages() -> None:
    chunks = _corpus(7, 30)
    chunks[3] = Chunk("/d3.md", 1, 1, "beacon storm")  # rowid 4
    index = Index.build(chunks)
    assert 4 in _both(index, "beacon")[0]  # cached, then made stale
    index.remove("/d3.md")
    index.add("/new.md", [Chunk("/new.md", 1, 1, "beacon beacon beacon")])
    ours, fts5 = _both(index, "beacon")
    assert ours == pytest.approx(fts5, rel=1e-9)
    assert 4 not in ours and max(ours, key=ours.__getitem__) == 31
