"""Query expansion by pseudo-relevance feedback (RM3), from the shard's own passages.

A question in other words than the text ("a throwaway folder that deletes
itself" for `TemporaryDirectory`) shares few words with its answer, and no
lexical engine finds what it does not match. RM3 assumes the first ranking's
best passages are mostly about the right thing and borrows their words: each
word's weight is its share of each feedback passage (tf / length) times that
passage's share of the first-pass score, summed, times its idf so that rare,
telling words beat common ones. The best few words the question lacks join
it with at most `EXPANSION_WEIGHT` of an original word's weight, and the
passages are ranked again. Everything comes from the index itself: no model,
nothing downloaded, the same answer on every run.

Stopwords, numbers, one-letter words and words in more than
`MAX_DF_FRACTION` of the passages are never added. The index expands a
question only when its best passage lacks some of its words but holds at
least `MIN_BEST_COVERAGE` of it.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Callable, Container, Iterable, Mapping

FEEDBACK_PASSAGES = 10
EXPANSION_TERMS = 6
EXPANSION_WEIGHT = 0.3
MAX_DF_FRACTION = 0.1
# Below this share of the question (weighted as coverage is) in its best
# passage, a shard is taken not to hold what the question is about.
MIN_BEST_COVERAGE = 0.2
# Words looked at (by feedback weight alone) before their document frequency is.
SHORTLIST = 24


def feedback(
    scores: Mapping[int, float],
    vector: Callable[[int], Mapping[str, float]],
    df: Callable[[str], int],
    n: int,
    exclude: Iterable[str],
) -> dict[str, float]:
    """Expansion stem → weight (0 < weight <= EXPANSION_WEIGHT) from the best passages.

    `scores` are the first pass's (rowid → score, higher is better), `vector`
    gives a passage's stems with their share of it (tf / length, see
    `term_shares`), `df` a stem's document frequency among the `n` passages;
    stems in `exclude` (the question's own) are skipped.
    """
    best = heapq.nlargest(FEEDBACK_PASSAGES, scores, key=scores.__getitem__)
    total = sum(scores[rowid] for rowid in best)
    if not best or total <= 0:
        return {}
    weights: dict[str, float] = {}
    get = weights.get
    for rowid in best:
        share = scores[rowid] / total
        for stem, part in vector(rowid).items():
            weights[stem] = get(stem, 0.0) + share * part
    for stem in exclude:
        weights.pop(stem, None)
    scored = []
    for stem in heapq.nlargest(SHORTLIST, weights, key=weights.__getitem__):
        frequency = df(stem)
        if 0 < frequency <= MAX_DF_FRACTION * n:
            scored.append((weights[stem] * math.log(n / frequency), stem))
    chosen = heapq.nlargest(EXPANSION_TERMS, scored)
    if not chosen:
        return {}
    top = chosen[0][0]
    return {stem: EXPANSION_WEIGHT * weight / top for weight, stem in chosen}


def term_shares(stems: Iterable[str], stopwords: Container[str]) -> dict[str, float]:
    """A passage's stems (but stopwords, numbers and one-letter ones) → tf / length."""
    counts = Counter(stems)
    length = sum(counts.values()) or 1
    return {
        stem: tf / length
        for stem, tf in counts.items()
        if len(stem) > 1 and not stem.isdigit() and stem not in stopwords
    }
