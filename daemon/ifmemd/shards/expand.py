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

import itertools
import math
from collections import Counter
from collections.abc import Callable, Container, Iterable, Mapping
from typing import TypeVar

T = TypeVar("T")

FEEDBACK_PASSAGES = 10
EXPANSION_TERMS = 6
EXPANSION_WEIGHT = 0.3
MAX_DF_FRACTION = 0.1
# Below this share of the question (weighted as coverage is) in its best
# passage, a shard is taken not to hold what the question is about.
MIN_BEST_COVERAGE = 0.2
# A passage's best words kept for feedback.
WORDS_KEPT = 24


def feedback(
    best: list[int],
    scores: Mapping[int, float],
    vector: Callable[[int], Mapping[str, float]],
    exclude: Iterable[str],
) -> dict[str, float]:
    """Expansion stem → weight (0 < weight <= EXPANSION_WEIGHT) from the best passages.

    `best` are the first pass's best passages (rowids, best first; the first
    FEEDBACK_PASSAGES count) and `scores` its scores (higher is better);
    `vector` gives a passage's telling words with their weight in it (see
    `telling_words`); stems in `exclude` (the question's own) are skipped.
    """
    best = best[:FEEDBACK_PASSAGES]
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
    chosen = largest(weights, EXPANSION_TERMS)
    if not chosen:
        return {}
    top = weights[chosen[0]]
    return {stem: EXPANSION_WEIGHT * weights[stem] / top for stem in chosen}


def telling_words(
    stems: Iterable[str], df: Callable[[str], int], n: int, stopwords: Container[str]
) -> dict[str, float]:
    """A passage's words fit to expand a question with → tf / length × idf.

    Not stopwords, numbers, one-letter words, nor words in more than
    MAX_DF_FRACTION of the `n` passages; only the passage's WORDS_KEPT best
    (their weight is what feedback adds up, so the rest would barely count).
    """
    counts = Counter(stems)
    length = sum(counts.values()) or 1
    weights = {}
    for stem, tf in counts.items():
        if len(stem) < 2 or stem.isdigit() or stem in stopwords:
            continue
        frequency = df(stem)
        if 0 < frequency <= MAX_DF_FRACTION * n:
            weights[stem] = tf / length * math.log(n / frequency)
    kept = largest(weights, WORDS_KEPT)
    return {stem: weights[stem] for stem in kept}


def largest(weights: Mapping[T, float], n: int) -> list[T]:
    """heapq.nlargest(n, weights, key=weights.__getitem__): the keys of the `n`
    largest values, largest first, of equal values the key inserted first.

    nlargest compares in Python for every entry. Here the n-th largest of
    the first 2n values is a floor no higher than the n-th largest of all,
    so the keys at or above it hold all of the n largest; kept in their
    order and sorted stably by value (in C), their first n are nlargest's.
    """
    if n <= 0:
        return []
    if len(weights) > n:
        floor = sorted(itertools.islice(weights.values(), 2 * n), reverse=True)[n - 1]
        kept = [key for key, value in weights.items() if value >= floor]
    else:
        kept = list(weights)
    kept.sort(key=weights.__getitem__, reverse=True)
    return kept[:n]
