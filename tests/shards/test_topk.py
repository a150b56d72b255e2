"""The shards' top-k helpers pick exactly what heapq.nlargest and a full merge
would: the same passages and words, in the same order, ties included."""

from __future__ import annotations

import heapq

from hypothesis import given
from hypothesis import strategies as st
from ifmemd.shards import expand
from ifmemd.shards import index as index_module

# Few distinct values: most draws hold ties, at the cut too.
SCORES = st.dictionaries(
    st.integers(1, 400), st.sampled_from([0.5, 1.0, 1.25, 2.0, 3.5, 7.0]), max_size=120
)


@given(SCORES, st.integers(0, 40))
def test_largest_is_nlargest(weights: dict[int, float], n: int) -> None:
    assert expand.largest(weights, n) == heapq.nlargest(n, weights, key=weights.__getitem__)


@given(st.dictionaries(st.text(max_size=3), st.floats(0, 10), max_size=60), st.integers(0, 12))
def test_largest_of_any_floats_is_nlargest(weights: dict[str, float], n: int) -> None:
    assert expand.largest(weights, n) == heapq.nlargest(n, weights, key=weights.__getitem__)


def test_largest_keeps_the_first_inserted_of_a_tie_at_the_cut() -> None:
    # The first 2n values (the floor) are all below the n-th largest.
    weights = {1: 0.1, 2: 0.1, 3: 0.1, 4: 0.1, 9: 5.0, 5: 2.0, 8: 2.0, 6: 2.0}
    assert expand.largest(weights, 2) == [9, 5]
    assert expand.largest(weights, 3) == [9, 5, 8]


def _merged_top(
    scores: dict[int, float], more: dict[int, float], k: int
) -> tuple[dict[int, float], list[int]]:
    """What the expansion's ranking was: `more` merged into every score, then `_top`."""
    whole = dict(scores)
    for rowid, score in more.items():
        whole[rowid] = whole.get(rowid, 0.0) + score
    return whole, index_module._top(whole, k)


@given(SCORES, SCORES, st.integers(1, 40), st.sets(st.integers(1, 420), max_size=5))
def test_expanded_ranking_is_the_full_merges(
    scores: dict[int, float], more: dict[int, float], k: int, include: set[int]
) -> None:
    best = index_module._top(scores, max(k, expand.FEEDBACK_PASSAGES))
    whole, want = _merged_top(scores, more, k)
    merged, got = index_module._rerank_expanded(scores, best, more, k, include)
    assert got == want
    # Every passage `_ranked` reads has the merged score.
    for rowid in [*got, *include]:
        assert merged.get(rowid) == whole.get(rowid)
    assert index_module._ranked(merged, got, include) == index_module._ranked(whole, want, include)
