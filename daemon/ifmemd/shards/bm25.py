"""bm25 over an FTS5 index's postings, scored in Python from per-term caches.

FTS5's `bm25()` costs most of a search on real text: matching a question's
words takes ~30 µs, scoring the ~400 passages they match ~170 µs, because the
auxiliary function decodes every row's position lists and looks up its size
in a shadow table, row by row. A shard answers many questions with the same
words, so `Scorer` keeps each term's postings (passage → how often it holds
the term), read once from FTS5's own index through an `fts5vocab` table of
instances, and scores a question by adding up the cached contributions: a
few dozen microseconds for the same passages.

The score is FTS5's bm25 (k1 = 1.2, b = 0.75, idf = ln((N - df + 0.5) / (df +
0.5)), at least 1e-6), with each passage's length in tokens read from the
table's `_docsize` shadow table (one varint per column, FTS5's file format)
for the passages of a term only, and N and the average length from its
averages record (`_data` row 1: the row count, then the tokens of each
column), so that both rank alike and nothing is held per passage of the
whole table (a shard's index may be on disk and large). A passage deleted
from a contentless table may linger in its postings until a merge; it has no
`_docsize` row, and is skipped. Everything cached is dropped when the
passages change (`forget`).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping

import apsw

K1 = 1.2
B = 0.75
MIN_IDF = 1e-6
# Postings kept in all (12 bytes each): beyond this the cache starts over.
MAX_CACHED_POSTINGS = 1_000_000

_INSTANCES = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS temp.{name} USING fts5vocab(main, {table}, 'instance')"
)
# The live passages holding a term: how often, and their size record.
_POSTINGS = (
    "SELECT v.doc, count(*), d.sz FROM temp.{name} v "
    "JOIN main.{table}_docsize d ON d.id = v.doc WHERE v.term = ? GROUP BY v.doc"
)
_AVERAGES = "SELECT block FROM main.{table}_data WHERE id = 1"


class Scorer:
    """bm25 of the passages of one FTS5 table, from cached postings."""

    def __init__(self, db: apsw.Connection, table: str) -> None:
        self._db = db
        self._name = f"{table}_instances"
        self._table = table
        self._ready = False
        # term → (rowids, bm25 parts), as arrays: a tuple per posting costs 5x more.
        self._postings: dict[str, tuple[array, array]] = {}
        self._cached = 0
        self._totals: tuple[int, float] | None = None

    def forget(self) -> None:
        """Drop every cached posting and total: the passages changed."""
        self._postings.clear()
        self._cached = 0
        self._totals = None

    def holds(self, terms: Iterable[str]) -> bool:
        """Whether the postings of every one of `terms` are cached."""
        return all(term in self._postings for term in terms)

    def postings(self, term: str) -> tuple[array, array]:
        """(rowids, parts) of the live passages holding `term` (as indexed): each
        passage's bm25 part for the term before idf, tf * (K1 + 1) / (tf + its
        length term), worked out once."""
        found = self._postings.get(term)
        if found is None:
            if not self._ready:
                self._db.execute(_INSTANCES.format(name=self._name, table=self._table))
                self._ready = True
            _, average = self.totals()
            rows = self._db.execute(
                _POSTINGS.format(name=self._name, table=self._table), (term,)
            ).fetchall()
            # K1 * (1 - B + B * length / average), split so the loop adds and
            # multiplies once; a length under 128 tokens is its size's only byte.
            fixed, scale = K1 * (1 - B), K1 * B / average
            found = (
                array("i", [rowid for rowid, _, _ in rows]),
                array(
                    "d",
                    [
                        tf
                        * (K1 + 1)
                        / (tf + fixed + scale * (sz[0] if sz[0] < 0x80 else _varint(sz)))
                        for _, tf, sz in rows
                    ],
                ),
            )
            if self._cached + len(rows) > MAX_CACHED_POSTINGS:
                self._postings.clear()
                self._cached = 0
            self._postings[term] = found
            self._cached += len(rows)
        return found

    def totals(self) -> tuple[int, float]:
        """(live passages, their average length in tokens), from the averages record."""
        if self._totals is None:
            row = self._db.execute(_AVERAGES.format(table=self._table)).fetchone()
            rows, tokens = _varints(row[0], 2) if row and row[0] else (0, 0)
            self._totals = (rows, tokens / rows if rows and tokens else 1.0)
        return self._totals

    def scores(
        self, terms: Iterable[str], weights: Mapping[str, float] | None = None
    ) -> dict[int, float]:
        """rowid → bm25 of every live passage holding any of `terms` (higher is
        better), each term's part multiplied by its weight (1 by default)."""
        n, _ = self.totals()
        acc: dict[int, float] = {}
        get = acc.get
        for term in terms:
            rowids, parts = self.postings(term)
            df = len(rowids)
            if not df:
                continue
            idf = max(MIN_IDF, math.log((n - df + 0.5) / (df + 0.5)))
            weight = idf * (weights[term] if weights else 1.0)
            for rowid, part in zip(rowids, parts, strict=True):
                acc[rowid] = get(rowid, 0.0) + weight * part
        return acc


def _varints(data: bytes, count: int) -> list[int]:
    """The first `count` varints of `data` (FTS5's, as SQLite's: 7 bits a byte,
    high bit set on all but the last, a ninth byte of 8 bits)."""
    values: list[int] = []
    at = 0
    while len(values) < count:
        value = 0
        for i in range(9):
            byte = data[at]
            at += 1
            if i == 8:
                value = (value << 8) | byte
                break
            value = (value << 7) | (byte & 0x7F)
            if byte < 0x80:
                break
        values.append(value)
    return values


def _varint(data: bytes) -> int:
    """The first varint of `data` (SQLite's: 7 bits a byte, high bit set on all but the last)."""
    value = 0
    for byte in data:
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            break
    return value
