"""Full-text search over a shard's passages with SQLite FTS5.

An `Index` searches the tables of `ifmemd.shards.store` (`porter unicode61`;
the FTS5 table is contentless, the texts are rows of `chunk`, fetched for the
candidates only, a few dozen a search, with a small cache) and answers
`search(query, k)` with the best passages, each with its citation, the
digest of the file version it was cut from, and a short excerpt. It lives in
memory, built once (`Index.build`) or grown and shrunk item by item (`add`,
`remove`) for working memory, whose passages are `memory:<id>`; or it reads a
file shard's on-disk index (`Index(connection)`), which another connection
writes: each search reads one consistent snapshot, and notices (`PRAGMA
data_version`) when the writer changed the passages. Nothing is held per
passage of the whole corpus: a shard's memory is the page cache's, not its
heap's.

Any user text is a valid query. It is never handed to FTS5's query language:
it is cut into words by the same tokenizer the index uses, and the words are
quoted and OR-ed. To keep latency bounded on large corpora, only the most
informative words are kept: words absent from the index are dropped, English
stopwords are dropped when other words remain, words in more than half of
the passages are dropped when rarer ones remain (their bm25 weight is near
zero while their posting lists are the longest), and of the rest the rarest
are kept, at most `MAX_TERMS` of them and no more than `POSTINGS_BUDGET`
postings in all, since ranking costs time for every row a query matches.
A single term too common for that budget is ranked once (at build time when
possible) and its best passages are kept until the index changes.

Passages are ranked by bm25 (`ifmemd.shards.bm25`, FTS5's formula over
cached postings); when the best one lacks some of the question's words, the
question is expanded with words of the best passages (`ifmemd.shards.expand`,
RM3) and ranked again. Of a few dozen candidates, `ifmemd.shards.rerank` puts the
passages defining a name the question uses first (the store's `definition`
table, filled when a passage is stored) and those of test files last, and
the `k` best are kept.

A shard with `semantic = true` (`ifmemd.shards.semantic`) also ranks every
passage by the similarity of its vector to the question's, and fuses that
ranking with bm25's before the second stage; each winner then says its
similarity, which, unlike bm25, the coordinator can compare across shards.

Only the `k` winners get an excerpt and a coverage (how many of the
question's words they hold). Both come from one pass over the winner's text.
Where Python's str splits and folds words as unicode61 does (ASCII, and text
whose only other characters are punctuation, like the typographic hyphens and
quotes of rendered man pages), `str.find` jumps to each word that may share a
stem with a question word (it starts with the stem's prefix), and that word's
stem is then checked with the index's own tokenizer (cached); other text,
whose letters fold in ways Python's str does not, is run through the tokenizer
whole. Either way a passage counts exactly the stems FTS5 would match (a
property test holds the two to each other). FTS5's `snippet()` re-tokenizes
every winner in full and cost several times more.
"""

from __future__ import annotations

import functools
import math
import re
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

import apsw
import orjson

from ifmemd.errors import IfmemError
from ifmemd.shards import bm25, expand, rerank, semantic, store
from ifmemd.shards.chunker import Chunk

if TYPE_CHECKING:
    import numpy as np

MAX_QUERY_CHARS = 64 * 1024
MAX_CANDIDATES = 256
MAX_TERMS = 32
# About 5 ms of bm25 scoring at ~0.45 µs a matched row (measured on a
# 12M-token corpus); rarer terms are kept first until this many postings.
POSTINGS_BUDGET = 10_000
PREWARM_MIN_DOCS = 64
# How many results are kept for a term too common for the budget: as many as
# the second stage reorders.
HOT_RESULTS = rerank.CANDIDATES
MAX_CACHED_TERMS = 200_000
# Stem counts of passages used for feedback (a few kB each).
MAX_CACHED_VECTORS = 1024
# Passages (their text, a few kB each) kept after a fetch: a search reads a few
# dozen candidates, and the same questions come back.
MAX_CACHED_PASSAGES = 512
# For this long after the writer's last batch, a question whose postings are
# not cached is ranked by FTS5 itself, without feedback: while a `git checkout`
# commits batch after batch, re-reading a common term's postings into Python
# at each batch would cost every ask milliseconds a term.
CHANGING_S = 1.0
COMMON_FRACTION = 0.5
SCORE_DIGITS = 9
# When ranking by meaning, a passage holding less of the question than this
# (coverage) is cited whole: it may have been found by what it means, and the
# few question words it holds say nothing of where in it the answer is. (A
# passage bm25 alone found was found by those words: their span is cited.)
MIN_SPAN_COVERAGE = 0.4
# Passage vectors of removed passages are dropped (the vectors re-read) once
# they are this share of those held.
MAX_STALE_VECTORS = 0.1
SNIPPET_CHARS = 300
# An excerpt shows about this many characters of the passage (~24 words),
# starting a little before the densest run of the question's words.
EXCERPT_CHARS = 160
EXCERPT_LEAD = 40
# Stems this short are matched as whole words, not as prefixes.
SHORT_STEM = 3
ELLIPSIS = "…"
# A word at a given offset (after "_" became a space): what unicode61 keeps together.
_WORD_AT = re.compile(r"\w*")
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
# A passage on the shard protocol, in this order (see `Passage.to_row`); a row
# may stop before the span, whose lines then are the whole passage, and its
# digest unknown ("").
ROW_FIELDS = (
    "path", "start_line", "end_line", "score", "coverage", "snippet", "span_start", "span_end",
    "digest", "similarity",
)  # fmt: skip
SHORT_ROW = 6
# A shard that does not rank by meaning stops before the similarity.
LEXICAL_ROW = 9

STOPWORDS = frozenset(
    {
        "a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any",
        "are", "as", "at", "be", "because", "been", "before", "being", "below", "between",
        "both", "but", "by", "can", "could", "did", "do", "does", "doing", "down", "during",
        "each", "few", "for", "from", "further", "had", "has", "have", "having", "he", "her",
        "here", "hers", "herself", "him", "himself", "his", "how", "i", "if", "in", "into",
        "is", "it", "its", "itself", "just", "me", "more", "most", "my", "myself", "no", "nor",
        "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "ours",
        "ourselves", "out", "over", "own", "same", "she", "should", "so", "some", "such",
        "than", "that", "the", "their", "theirs", "them", "themselves", "then", "there",
        "these", "they", "this", "those", "through", "to", "too", "under", "until", "up",
        "very", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom",
        "why", "will", "with", "would", "you", "your", "yours", "yourself", "yourselves",
    }
)  # fmt: skip

# Term statistics, per connection (a temp table: never written to the index file).
_VOCAB = "CREATE VIRTUAL TABLE IF NOT EXISTS temp.vocab USING fts5vocab(main, passage, 'row')"
_PASSAGE = (
    "SELECT f.path, c.start_line, c.end_line, c.body, f.digest "
    "FROM chunk c JOIN file f ON f.id = c.file WHERE c.id = ?"
)
# Many passages at once: their rowids as a JSON array (one statement, whatever their number).
_PASSAGES = (
    "SELECT c.id, f.path, c.start_line, c.end_line, c.body, f.digest "
    "FROM chunk c JOIN file f ON f.id = c.file WHERE c.id IN (SELECT value FROM json_each(?))"
)
# Each name's first few defining passages ("12,34"), for many names in one statement.
_DEFINING = (
    "SELECT (SELECT group_concat(chunk) FROM"
    " (SELECT chunk FROM definition WHERE name = j.value LIMIT ?2)) FROM json_each(?1) j"
)
# Ranking with the SQLite sorter's top-k (ORDER BY bm25 … LIMIT) beats FTS5's
# own `ORDER BY rank`, which sorts every match; excerpts are then made for
# the k winners only.
_PASSAGES_WRITTEN = (
    "SELECT (SELECT seq FROM sqlite_sequence WHERE name = 'chunk'),"
    " (SELECT block FROM passage_data WHERE id = 1)"
)
_RANK = "SELECT rowid, bm25(passage) FROM passage WHERE passage MATCH ? ORDER BY 2, 1 LIMIT ?"
_TERM_DOCS = "SELECT doc FROM vocab WHERE term = ?"
_COMMON_TERMS = "SELECT term, doc FROM vocab WHERE doc >= ?"


class SearchIndexError(IfmemError):
    """Raised when the in-memory search index cannot be built, changed or queried."""

    def __init__(self, operation: str, reason: str) -> None:
        self.operation = operation
        self.reason = reason
        super().__init__(f"{operation}: {reason}; the shard's index is unusable until rebuilt")


class MisfiledChunkError(IfmemError, ValueError):
    """Raised when `Index.add` is given a chunk of another path than the one it adds."""

    def __init__(self, path: str, chunk: Chunk) -> None:
        self.path = path
        self.chunk = chunk
        super().__init__(
            f"add {path}: chunk {chunk.citation} belongs to another path; nothing was added"
        )


class PassageFormatError(IfmemError):
    """Raised when a shard's JSON does not describe a passage."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"read passage: {reason}")


@dataclass(frozen=True, slots=True)
class Passage:
    """One search hit: where it is (`path:start-end`), how good, and an excerpt.

    `span_start`..`span_end` are the narrowest lines of the passage that hold
    every question word it holds (the whole passage when the words are spread
    over it): what an answer cites, so a reader reads a few lines, not forty.

    `score` is the negated bm25 rank: higher is better, only comparable
    within one index. `coverage` is the share of the question's content words
    the passage holds (0..1), each word weighted by its rarity in the index
    (bm25's idf): unlike bm25, comparable across shards, which is what the
    coordinator's fusion needs to break ties between shards.
    `digest` is the BLAKE2b-256 (hex) of the bytes of the file version it was
    cut from ("" when unknown). `similarity` is the cosine of its vector with
    the question's (-1..1) when its shard ranks by meaning, else None; with
    it, `score` is the shard's fusion of its bm25 and dense rankings.
    """

    path: str
    start_line: int
    end_line: int
    score: float
    snippet: str
    coverage: float = 0.0
    span_start: int = 0  # 0: the span is the whole passage
    span_end: int = 0
    digest: str = ""
    similarity: float | None = None

    @property
    def citation(self) -> str:
        """The passage as cited in answers: `path:start-end`."""
        return f"{self.path}:{self.start_line}-{self.end_line}"

    @property
    def span(self) -> tuple[int, int]:
        """The lines an answer cites: the span, or the whole passage."""
        if self.span_start:
            return self.span_start, self.span_end
        return self.start_line, self.end_line

    def to_row(self) -> list[Any]:
        """The passage as the shard protocol sends it: a JSON array, cheap to parse."""
        row = [
            self.path,
            self.start_line,
            self.end_line,
            self.score,
            self.coverage,
            self.snippet,
            *self.span,
            self.digest,
        ]
        if self.similarity is not None:
            row.append(self.similarity)
        return row

    @classmethod
    def from_row(cls, row: Any) -> Passage:
        """Read back what `to_row` wrote (or its first six or nine fields), checking every field."""
        if type(row) is not list or len(row) not in (SHORT_ROW, LEXICAL_ROW, len(ROW_FIELDS)):
            raise PassageFormatError(f"expected an array [{', '.join(ROW_FIELDS)}]")
        path, start, end, score, coverage, snippet = row[:SHORT_ROW]
        span_start, span_end, digest = row[SHORT_ROW:LEXICAL_ROW] or (start, end, "")
        similarity = row[LEXICAL_ROW] if len(row) > LEXICAL_ROW else None
        if similarity is not None and type(similarity) not in (int, float):
            raise PassageFormatError("similarity must be a number")
        if type(path) is not str or type(snippet) is not str or type(digest) is not str:
            raise PassageFormatError("path, snippet and digest must be strings")
        if type(start) is not int or type(end) is not int or not 1 <= start <= end:
            raise PassageFormatError(f"line range {start!r}-{end!r} is not 1 <= start <= end")
        if (
            type(span_start) is not int
            or type(span_end) is not int
            or not start <= span_start <= span_end <= end
        ):
            raise PassageFormatError(
                f"span {span_start!r}-{span_end!r} is not within the passage {start}-{end}"
            )
        if type(score) not in (int, float) or type(coverage) not in (int, float):
            raise PassageFormatError("score and coverage must be numbers")
        return cls(
            path,
            start,
            end,
            float(score),
            snippet,
            float(coverage),
            span_start,
            span_end,
            digest,
            None if similarity is None else float(similarity),
        )


@dataclass(frozen=True, slots=True)
class _Query:
    """What `search` runs: the FTS5 expression, its postings, and its rarest term's stem."""

    expression: str
    terms: tuple[str, ...]  # the stems ranked, rarest first
    postings: int
    stem: str
    covered: dict[str, str]  # stem → word as typed: every informative word this index knows
    weights: dict[str, float]  # stem → its weight in coverage (how rare it is here)
    total_weight: float  # of the question's informative words, known here or not
    unknown: int  # informative words this index does not hold


class Index:
    """An FTS5 index of passages, searched by bm25: in memory, or on a connection given.

    Not safe for concurrent use from several threads; a shard serves one
    query at a time (its on-disk index is written through another connection).
    """

    def __init__(
        self, db: apsw.Connection | None = None, embedder: semantic.Embedder | None = None
    ) -> None:
        """`embedder`: rank by meaning too (the index's passages have vectors)."""
        try:
            self._db = store.memory_db() if db is None else db
            self._db.execute(_VOCAB)
            self._tokenizer = self._db.fts5_tokenizer("porter", ["unicode61"])
            self._data_version = self._version()
            self._passages_seen = self._passages_written()
        except apsw.Error as e:
            raise SearchIndexError("open index", str(e)) from e
        self._changed_at = -math.inf  # time.monotonic() of the writer's last batch seen
        self._count: int | None = None
        self._doc_freq: dict[str, int] = {}
        self._stems: dict[str, tuple[str, ...]] = {}
        self._hot: dict[str, tuple[int, list[tuple[int, float]]]] = {}
        self._scorer = bm25.Scorer(self._db, "passage")
        self._vectors: dict[int, tuple[frozenset[str], dict[str, float]]] = {}
        # rowid → (path, start line, end line, text, digest), most recently used last.
        self._passages: OrderedDict[int, tuple[str, int, int, str, str]] = OrderedDict()
        self._stopstems: frozenset[str] | None = None
        self._embedder = embedder
        # The passages' vectors, read when first searched, then kept up to date.
        self._dense: semantic.Vectors | None = None
        self._dense_current = False

    @classmethod
    def build(
        cls,
        chunks: Iterable[Chunk],
        digests: dict[str, str] | None = None,
        embedder: semantic.Embedder | None = None,
    ) -> Self:
        """Make an in-memory index of many chunks at once, merged for fast queries.

        `digests` gives each path's file digest (none: ""); `embedder`: rank by meaning too.
        """
        index = cls(embedder=embedder)
        by_path: dict[str, list[Chunk]] = {}
        for chunk in chunks:
            by_path.setdefault(chunk.path, []).append(chunk)
        try:
            with index._db:
                for path, group in by_path.items():
                    digest = (digests or {}).get(path, "")
                    store.replace_file(
                        index._db, store.FileState(path, digest=digest), group, index._embed
                    )
        except apsw.Error as e:
            raise SearchIndexError("build index", str(e)) from e
        index.optimize()
        index._rank_hot_terms()
        return index

    def optimize(self) -> None:
        """Merge the index for fast queries and learn its common terms (after a bulk load).

        Terms too common for the postings budget are ranked when first asked
        for (on a large on-disk index, ranking them all would cost seconds).
        """
        try:
            store.merge(self._db)
        except apsw.Error as e:
            raise SearchIndexError("build index", str(e)) from e
        self.prewarm()

    def prewarm(self) -> None:
        """Learn the frequencies of common terms now (one scan), not at query time."""
        self._forget_statistics()
        self._data_version = self._version()
        self._prewarm()

    def add(self, path: str, chunks: Iterable[Chunk], digest: str = "") -> int:
        """Index `chunks` as the passages of `path`, replacing any it had; return how many.

        `digest` is the BLAKE2b-256 (hex) of the text they were cut from.
        """
        chunks = list(chunks)
        for chunk in chunks:
            if chunk.path != path:
                raise MisfiledChunkError(path, chunk)
        try:
            with self._db:
                store.replace_file(
                    self._db, store.FileState(path, digest=digest), chunks, self._embed
                )
        except apsw.Error as e:
            raise SearchIndexError(f"add {path}", str(e)) from e
        self._forget_statistics()
        return len(chunks)

    def remove(self, path: str) -> int:
        """Drop every passage of `path`; return how many there were."""
        try:
            with self._db:
                removed = store.remove_file(self._db, path)
        except apsw.Error as e:
            raise SearchIndexError(f"remove {path}", str(e)) from e
        if removed:
            self._forget_statistics()
        return removed

    @property
    def _embed(self) -> store.Embed | None:
        return None if self._embedder is None else self._embedder.blobs

    @property
    def connection(self) -> apsw.Connection:
        """The connection the index reads (for totals and digests beside searching)."""
        return self._db

    def __len__(self) -> int:
        if self._count is None:
            self._count = self._scalar("SELECT count(*) FROM chunk", ())
        return self._count

    def __contains__(self, path: object) -> bool:
        return bool(
            self._scalar(
                "SELECT EXISTS(SELECT 1 FROM chunk WHERE file = "
                "(SELECT id FROM file WHERE path = ?))",
                (path,),
            )
        )

    def paths(self) -> list[str]:
        """Every path with passages in the index, sorted."""
        try:
            return [
                row[0]
                for row in self._db.execute(
                    "SELECT path FROM file f WHERE EXISTS(SELECT 1 FROM chunk WHERE file = f.id) "
                    "ORDER BY path"
                )
            ]
        except apsw.Error as e:
            raise SearchIndexError("list paths", str(e)) from e

    def _scalar(self, sql: str, args: tuple[object, ...]) -> int:
        try:
            return self._db.execute(sql, args).fetchone()[0]
        except apsw.Error as e:
            raise SearchIndexError("read index", str(e)) from e

    def close(self) -> None:
        """Free the index's memory; it cannot be used afterwards."""
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def search(self, query: str, k: int = 10, vector: np.ndarray | None = None) -> list[Passage]:
        """The `k` passages that best match `query` (any text), best first.

        Returns [] when the query has no word the index knows. `vector`: the
        question's, made by this index's model (`question_vector`), when the
        caller has it already; without it, an index ranking by meaning encodes
        the question itself.
        """
        try:
            # One snapshot: the winners' rows are those of the index they were ranked in.
            with self._db:
                return self._search(query, k, vector)
        except apsw.Error as e:
            raise SearchIndexError("search", str(e)) from e

    def _search(self, query: str, k: int, vector: np.ndarray | None) -> list[Passage]:
        if self._version() != self._data_version:
            # Another connection (the shard's writer) committed a batch of files,
            # or the vectors of passages stored before (`store.fill_vectors`).
            self._data_version = self._version()
            self._dense_current = False
            # The writer also commits its own bookkeeping (file states, the
            # directories it walked): only a change of the passages counts.
            passages = self._passages_written()
            if passages != self._passages_seen:
                self._passages_seen = passages
                self._forget_statistics(keep_common=True)
                self._changed_at = time.monotonic()
        plan = self._plan(query)
        if plan is None or k <= 0:
            return []
        names = rerank.names_in(query[:MAX_QUERY_CHARS], STOPWORDS)
        defining = self._defining(names) | self._defining_prose(query[:MAX_QUERY_CHARS])
        # A definition is one passage among many that name the thing, and
        # often a long one: bm25 may leave it out of the candidates.
        ranked = self._rank(plan, max(k, rerank.CANDIDATES), defining)
        # (rowid, score): higher is better.
        candidates = [(rowid, -rank) for rowid, rank in ranked]
        dense: semantic.Ranking | None = None
        if self._embedder is not None:
            dense = self._rank_dense(query, vector)
            fused = semantic.fuse([rowid for rowid, _ in candidates], dense.best)
            # As many candidates as bm25 alone gives the second stage (and the
            # definitions, wherever they are): no more passages to read.
            ordered = sorted(fused.items(), key=lambda item: (-item[1], item[0]))
            kept = max(k, rerank.CANDIDATES)
            candidates = ordered[:kept] + [item for item in ordered[kept:] if item[0] in defining]
        # A cached ranking may outlive a passage: one not found is never cited.
        found = self._passages_of([rowid for rowid, _ in candidates])
        scored = rerank.rerank(
            [(rowid, score) for rowid, score in candidates if rowid in found],
            found,
            defining,
            rerank.code_names(query[:MAX_QUERY_CHARS]),
            penalize_tests=not rerank.about_tests(query[:MAX_QUERY_CHARS]),
        )
        covered = plan.covered
        prefixes = _prefixes(tuple(sorted(covered.items())))
        passages = []
        for rowid, score in scored[:k]:
            path, start, end, body, digest = found[rowid]
            hits = self._hits(body, covered, prefixes)
            held = sum(plan.weights[stem] for stem in {stem for _, stem in hits})
            coverage = round(min(1.0, held / plan.total_weight), 4)
            narrow = dense is None or coverage >= MIN_SPAN_COVERAGE
            first, last = _span(body, hits if narrow else [])
            passages.append(
                Passage(
                    path,
                    start,
                    end,
                    # FTS5 and bm25.Scorer add the same terms in other orders.
                    round(score, SCORE_DIGITS),
                    _excerpt(body, hits),
                    coverage,
                    start + first,
                    start + last,
                    digest,
                    None if dense is None else _rounded(dense.similarity(rowid)),
                )
            )
        return passages

    @property
    def by_meaning(self) -> bool:
        """Whether this index ranks by meaning too (its passages have vectors)."""
        return self._embedder is not None

    def question_vector(self, query: str) -> np.ndarray:
        """The vector of `query` as `search` would make it (this index ranks by meaning)."""
        assert self._embedder is not None
        return self._embedder.embed_one(query[:MAX_QUERY_CHARS])

    def _rank_dense(self, query: str, vector: np.ndarray | None) -> semantic.Ranking:
        """Every passage by the similarity of its vector to the question's: the best few."""
        vectors = self._passage_vectors()
        if vector is None:
            vector = self.question_vector(query)
        return vectors.rank(vector, semantic.CANDIDATES)

    def _passage_vectors(self) -> semantic.Vectors:
        """The passages' vectors, brought up to date with the index.

        Vectors are stored in increasing chunk id (new passages have higher
        ids than any held, AUTOINCREMENT, and queued ones are encoded oldest
        first), so only the new ones are read; those of removed passages are
        dropped by reading all again once they are MAX_STALE_VECTORS of what
        is held.
        """
        if self._dense is not None and self._dense_current:
            return self._dense
        if self._dense is None or len(self._dense) > (1 + MAX_STALE_VECTORS) * len(self):
            self._dense = semantic.Vectors()
        self._dense.extend(
            self._db.execute(
                "SELECT chunk, v FROM vector WHERE chunk > ? ORDER BY chunk", (self._dense.last,)
            )
        )
        self._dense_current = True
        return self._dense

    def _passages_written(self) -> tuple[Any, ...]:
        """What changes whenever passages are added or removed: the last chunk id
        ever given (AUTOINCREMENT: never reused) and FTS5's row and token totals."""
        return self._db.execute(_PASSAGES_WRITTEN).fetchone()

    def _version(self) -> int:
        return self._db.execute("PRAGMA data_version").fetchone()[0]

    def _passage(self, rowid: int) -> tuple[str, int, int, str, str] | None:
        """(path, start line, end line, text, digest) of a passage, or None if
        it is gone; the last MAX_CACHED_PASSAGES are kept until the index changes."""
        found = self._passages.get(rowid)
        if found is not None:
            self._passages.move_to_end(rowid)
            return found
        found = self._db.execute(_PASSAGE, (rowid,)).fetchone()
        if found is not None:
            if len(self._passages) >= MAX_CACHED_PASSAGES:
                self._passages.popitem(last=False)
            self._passages[rowid] = found
        return found

    def _passages_of(self, rowids: list[int]) -> dict[int, tuple[str, int, int, str, str]]:
        """`_passage` of each of `rowids` that exists, those not cached read in one query
        (a query per passage cost a search on real text ~0.1 ms: ~20 of its ~30
        candidates miss the cache)."""
        cache = self._passages
        found: dict[int, tuple[str, int, int, str, str]] = {}
        missing = []
        for rowid in rowids:
            passage = cache.get(rowid)
            if passage is None:
                missing.append(rowid)
            else:
                cache.move_to_end(rowid)
                found[rowid] = passage
        if missing:
            for row in self._db.execute(_PASSAGES, (f"[{','.join(map(str, missing))}]",)):
                rowid = row[0]
                passage = found[rowid] = row[1:]
                if len(cache) >= MAX_CACHED_PASSAGES:
                    cache.popitem(last=False)
                cache[rowid] = passage
        return found

    def _defining(self, names: Iterable[str]) -> set[int]:
        """The passages that define any of `names` (each defined in few passages)."""
        names = list(names)
        out: set[int] = set()
        if not names:
            return out
        for (chunks,) in self._db.execute(
            _DEFINING, (orjson.dumps(names).decode(), rerank.MAX_DEFINITIONS + 1)
        ):
            if chunks is not None:
                found = chunks.split(",")
                if len(found) <= rerank.MAX_DEFINITIONS:
                    out.update(map(int, found))
        return out

    def _defining_prose(self, query: str) -> set[int]:
        """For "what is X?": the few passages saying "X is", "X are" or "what is X"
        (prose defines a thing so, or poses the question as a heading)."""
        subject = rerank.subject_asked(query)
        if subject is None:
            return set()
        words = " + ".join(_quote(w) for w in subject.split())
        phrases = [f'{words} + "is"', f'{words} + "are"', f'"what" + "is" + {words}']
        rows = self._db.execute(
            "SELECT rowid FROM passage WHERE passage MATCH ? LIMIT ?",
            (" OR ".join(f"({p})" for p in phrases), rerank.MAX_DEFINITIONS + 1),
        ).fetchall()
        return {row[0] for row in rows} if len(rows) <= rerank.MAX_DEFINITIONS else set()

    def match_expression(self, query: str) -> str | None:
        """The FTS5 query `search` runs for `query`, or None when nothing is searchable."""
        plan = self._plan(query)
        return None if plan is None else plan.expression

    def _plan(self, query: str) -> _Query | None:
        """Turn any text into a safe FTS5 query over its best words, or None if it has none."""
        words = self._words(query)
        content = [stem for stem, word in words.items() if word.casefold() not in STOPWORDS]
        known = self._known(content)
        chosen = self._choose_terms(words, known)
        if not chosen:
            return None
        expression = " OR ".join(_quote(words[stem]) for _, stem in chosen)
        # Coverage counts common words too (they were only left out of ranking
        # to bound its cost); it is evaluated on the k winners alone.
        covered = [stem for _, stem in known][:MAX_TERMS] or [stem for _, stem in chosen]
        # A word weighs by its rarity here (bm25's idf), so that holding the
        # question's one rare word counts for more than holding three common
        # ones; a word this index lacks weighs most, which lowers the coverage
        # of every passage of a shard that does not know the question's words.
        # Stopwords count only in a question of nothing else: a shard that
        # knows none of the question's words but "is" covers none of it.
        counted = set(content) or set(covered)
        idf = {stem: self._idf(stem) for stem in counted}
        weights = {stem: idf[stem] if stem in counted else 0.0 for stem in covered}
        return _Query(
            expression,
            tuple(stem for _, stem in chosen),
            sum(df for df, _ in chosen),
            chosen[0][1],
            {stem: words[stem] for stem in covered},
            weights,
            sum(idf[stem] for stem in counted),
            len(counted - set(covered)),
        )

    def _idf(self, stem: str) -> float:
        """bm25's inverse document frequency of `stem` in this index (> 0)."""
        n, df = len(self), self._df(stem)
        return math.log(1 + (n - df + 0.5) / (df + 0.5))

    def _rank(self, plan: _Query, k: int, include: Iterable[int] = ()) -> list[tuple[int, float]]:
        """(rowid, bm25) of the best `k` matches of the plan, best first, then
        those of `include` that match and are not among them."""
        changing = time.monotonic() - self._changed_at < CHANGING_S
        if plan.postings <= POSTINGS_BUDGET and changing and not self._scorer.holds(plan.terms):
            return self._rank_in_fts5(plan, k, include)
        if plan.postings <= POSTINGS_BUDGET:
            scores = self._scorer.scores(plan.terms)
            best = _top(scores, max(k, expand.FEEDBACK_PASSAGES))
            if not best:
                return []
            # A question whose words are all in its best passage is answered in
            # its own words; one whose best passage holds little of it is about
            # something this shard does not hold. Feedback would only add noise
            # (and time) to either.
            held = self._vector(best[0])[0]
            share = sum(w for stem, w in plan.weights.items() if stem in held) / plan.total_weight
            whole = not plan.unknown and all(stem in held for stem in plan.covered)
            if not whole and share >= expand.MIN_BEST_COVERAGE:
                extra = expand.feedback(
                    best,
                    scores,
                    lambda rowid: self._vector(rowid)[1],
                    {*plan.terms, *plan.covered},
                )
                extra = self._affordable(extra)
                if extra:
                    scores, best = _rerank_expanded(
                        scores, best, self._scorer.scores(extra, extra), k, include
                    )
            return _ranked(scores, best[:k], include)
        # Over the budget means one very common term (see _choose_terms),
        # whose ranking is the same whatever the query: FTS5 works it out once.
        limit, ranked = self._hot.get(plan.stem, (0, []))
        if limit < k and len(ranked) == limit:
            limit = max(k, HOT_RESULTS)
            ranked = self._db.execute(_RANK, (plan.expression, limit)).fetchall()
            self._hot[plan.stem] = (limit, ranked)
        ranked = ranked[:k]
        missing = set(include) - {rowid for rowid, _ in ranked}
        if missing:
            scores = self._scorer.scores(plan.terms)
            ranked += [(rowid, -scores[rowid]) for rowid in sorted(missing) if rowid in scores]
        return ranked

    def _rank_in_fts5(
        self, plan: _Query, k: int, include: Iterable[int]
    ) -> list[tuple[int, float]]:
        """As `_rank`, by FTS5's own bm25() (the same formula as bm25.Scorer's),
        reading no postings into Python, and without feedback."""
        ranked = self._db.execute(_RANK, (plan.expression, k)).fetchall()
        missing = sorted(set(include) - {rowid for rowid, _ in ranked})
        if missing:
            marks = ", ".join("?" * len(missing))
            ranked += self._db.execute(
                f"SELECT rowid, bm25(passage) FROM passage WHERE passage MATCH ? "
                f"AND rowid IN ({marks}) ORDER BY 2, 1",
                (plan.expression, *missing),
            ).fetchall()
        return ranked

    def _affordable(self, extra: dict[str, float]) -> dict[str, float]:
        """The expansion terms, heaviest first, while their postings fit POSTINGS_BUDGET.

        Scoring costs time for every posting: on a large shard (the standard
        library: ~200,000 passages) a feedback word can be in tens of thousands
        of them, and unbounded expansion took asks from ~2 to ~20 ms (p50).
        """
        kept: dict[str, float] = {}
        postings = 0
        for stem in sorted(extra, key=extra.__getitem__, reverse=True):
            df = self._df(stem)
            if postings + df <= POSTINGS_BUDGET:
                kept[stem] = extra[stem]
                postings += df
        return kept

    def _vector(self, rowid: int) -> tuple[frozenset[str], dict[str, float]]:
        """A passage's stems, and its words fit for feedback with their weight
        (`expand.telling_words`); cached until the index changes."""
        found = self._vectors.get(rowid)
        if found is None:
            passage = self._passage(rowid)
            data = passage[3].encode("utf-8", "replace") if passage else b""
            stems = [token for _, _, token, *_ in self._tokenize(data)]
            found = (
                frozenset(stems),
                expand.telling_words(stems, self._df, len(self), self._stopword_stems()),
            )
            if len(self._vectors) >= MAX_CACHED_VECTORS:
                self._vectors.clear()
            self._vectors[rowid] = found
        return found

    def _stopword_stems(self) -> frozenset[str]:
        """The stems of STOPWORDS, as the tokenizer makes them ("this" → "thi")."""
        if self._stopstems is None:
            data = " ".join(sorted(STOPWORDS)).encode()
            self._stopstems = frozenset(token for _, _, token, *_ in self._tokenize(data))
        return self._stopstems

    def _words(self, query: str) -> dict[str, str]:
        """Map each indexed form (stemmed) of the query's words to one word as typed."""
        # Lone surrogates (possible in text decoded from JSON) cannot be
        # encoded as UTF-8; replace them rather than fail.
        data = query[:MAX_QUERY_CHARS].encode("utf-8", "replace")
        words: dict[str, str] = {}
        for start, end, stem, *_ in self._tokenize(data):
            if stem not in words:
                words[stem] = data[start:end].decode("utf-8", "replace")
        if len(words) > MAX_CANDIDATES:
            longest = sorted(words, key=len, reverse=True)[:MAX_CANDIDATES]
            words = {stem: words[stem] for stem in longest}
        return words

    def _choose_terms(
        self, words: dict[str, str], meaningful: list[tuple[int, str]]
    ) -> list[tuple[int, str]]:
        """(document frequency, stem) of the rarest informative words in the index;
        `meaningful` is `_known` of the words that are not stopwords."""
        known = meaningful or self._known(
            [stem for stem, word in words.items() if word.casefold() in STOPWORDS]
        )
        common = COMMON_FRACTION * len(self)
        pool = [(df, stem) for df, stem in known if df <= common] or known
        chosen: list[tuple[int, str]] = []
        postings = 0
        for df, stem in pool[:MAX_TERMS]:
            # Ranking cost grows with the rows matched; the rarest term is
            # always kept so a query of common words still finds something.
            if chosen and postings + df > POSTINGS_BUDGET:
                break
            chosen.append((df, stem))
            postings += df
        return chosen

    def _known(self, stems: list[str]) -> list[tuple[int, str]]:
        """(document frequency, stem) of the stems the index holds, rarest first."""
        return sorted((df, stem) for stem in stems if (df := self._df(stem)) > 0)

    def _df(self, stem: str) -> int:
        """How many passages hold `stem` (cached until the index changes)."""
        df = self._doc_freq.get(stem)
        if df is None:
            try:
                row = self._db.execute(_TERM_DOCS, (stem,)).fetchone()
            except apsw.Error as e:
                raise SearchIndexError("look up term", str(e)) from e
            df = row[0] if row else 0
            if len(self._doc_freq) >= MAX_CACHED_TERMS:
                self._doc_freq.clear()
            self._doc_freq[stem] = df
        return df

    def _prewarm(self) -> None:
        """Cache the frequencies of common terms, whose lookups are slowest (one scan)."""
        try:
            rows = self._db.execute(_COMMON_TERMS, (PREWARM_MIN_DOCS,)).fetchall()
        except apsw.Error as e:
            raise SearchIndexError("build index", str(e)) from e
        self._doc_freq.update(rows)

    def _rank_hot_terms(self) -> None:
        """Rank the terms too common for the budget now, while building, not at query time."""
        for stem, df in list(self._doc_freq.items()):
            if df <= POSTINGS_BUDGET:
                continue
            # A stem can only be queried as itself if it is its own stem
            # ("return" is, "thi" of "this" is not); others are ranked lazily.
            if [token for _, _, token, *_ in self._tokenize(stem.encode("utf-8"))] != [stem]:
                continue
            try:
                hot = _Query(_quote(stem), (stem,), df, stem, {stem: stem}, {stem: 1.0}, 1.0, 0)
                self._rank(hot, HOT_RESULTS)
            except apsw.Error as e:
                raise SearchIndexError("build index", str(e)) from e

    def _hits(
        self, body: str, covered: dict[str, str], prefixes: tuple[str, ...]
    ) -> list[tuple[int, str]]:
        """(offset, stem) of each word of `body` whose stem is in `covered`, in order."""
        if body.isascii() or _splits_like_str(body):
            # unicode61 folds ASCII case and splits words at anything not a
            # letter or digit ("_" too): lower() and isalnum() do the same.
            # Text whose only non-ASCII characters are punctuation (the
            # typographic hyphens, quotes and bullets of rendered man pages)
            # splits the same way, so it takes this path too.
            text = body.replace("_", " ").lower()
            hits: list[tuple[int, str]] = []
            word_at = _WORD_AT.match
            find = text.find
            known = self._stems
            # str.find skips to each candidate in C; a word may start only
            # where the character before it is not part of a word.
            for prefix in prefixes:
                at = find(prefix)
                while at >= 0:
                    if at == 0 or not text[at - 1].isalnum():
                        word = word_at(text, at).group()
                        stems = known.get(word) or self._stems_of(word)
                        for stem in stems:
                            if stem in covered:
                                hits.append((at, stem))
                    at = find(prefix, at + 1)
            hits.sort()
            return hits
        # Letters outside ASCII fold in ways Python's str does not (diacritics,
        # "µ"): the tokenizer itself, exact but slower, finds their words.
        data = body.encode("utf-8", "replace")
        return [
            (len(data[:at].decode("utf-8", "replace")), stem)
            for at, _, stem, *_ in self._tokenize(data)
            if stem in covered
        ]

    def _stems_of(self, word: str) -> tuple[str, ...]:
        """The stems the tokenizer makes of one word of a passage (cached)."""
        stems = self._stems.get(word)
        if stems is None:
            stems = tuple(token for _, _, token, *_ in self._tokenize(word.encode("utf-8")))
            if len(self._stems) >= MAX_CACHED_TERMS:
                self._stems.clear()
            self._stems[word] = stems
        return stems

    def _tokenize(self, data: bytes) -> list[tuple[Any, ...]]:
        try:
            return self._tokenizer(data, apsw.FTS5_TOKENIZE_QUERY, None)
        except apsw.Error as e:
            raise SearchIndexError("tokenize query", str(e)) from e

    def _forget_statistics(self, keep_common: bool = False) -> None:
        """Drop what was learned about terms and passages: the passages changed.

        `keep_common`: a batch of a few files barely moves the frequency of a
        common term, which only decides which words to rank by, while looking
        it up again reads its whole posting list; so those are kept. Rare terms
        (a word the batch may have added), rankings, postings and texts are
        always dropped.
        """
        if keep_common:
            self._doc_freq = {t: df for t, df in self._doc_freq.items() if df >= PREWARM_MIN_DOCS}
        else:
            self._doc_freq.clear()
        self._hot.clear()
        self._scorer.forget()
        self._vectors.clear()
        self._passages.clear()
        self._count = None
        self._dense_current = False


def _top(scores: dict[int, float], k: int) -> list[int]:
    """The rowids of the `k` best scores, best first (ties: lower rowid first;
    of passages tied at the cut, those scored first are kept, the same ones on
    every run)."""
    return _by_score(scores, expand.largest(scores, k))


def _by_score(scores: dict[int, float], rowids: list[int]) -> list[int]:
    """`rowids` by descending score, ties by rowid (two stable sorts with C keys)."""
    rowids = sorted(rowids)
    rowids.sort(key=scores.__getitem__, reverse=True)
    return rowids


def _rerank_expanded(
    scores: dict[int, float],
    best: list[int],
    more: dict[int, float],
    k: int,
    include: Iterable[int],
) -> tuple[dict[int, float], list[int]]:
    """The first pass's `scores` with the expansion's `more` added (`scores.get(r,
    0.0) + more[r]`), for the passages of `best` (the first pass's `_top`: at
    least `k`, or all it scored), of `more` and of `include`; and the `k` best
    of all, as `_top` of the whole merge would rank them.

    `more` is positive: only the passages it scored can rise, and every other
    one still ranks below all of `best`, so the new `k` best are among `best`
    and those. They are ranked alone, unless a tie at the cut would have to be
    broken by the order the passages were first scored in: that (rare) case
    is `_top` of the whole merge.
    """
    merged = {rowid: scores[rowid] for rowid in best}
    for rowid, score in more.items():
        merged[rowid] = scores.get(rowid, 0.0) + score
    if k <= 0:
        return merged, []
    top = expand.largest(merged, k + 1)
    if len(top) > k and merged[top[k]] == merged[top[k - 1]]:
        whole = dict(scores)
        for rowid, score in more.items():
            whole[rowid] = whole.get(rowid, 0.0) + score
        return whole, _top(whole, k)
    del top[k:]
    for rowid in include:
        if rowid not in merged and rowid in scores:
            merged[rowid] = scores[rowid]
    return merged, _by_score(merged, top)


def _ranked(
    scores: dict[int, float], best: list[int], include: Iterable[int]
) -> list[tuple[int, float]]:
    """(rowid, negated score) of `best`, lowest first as FTS5 ranks, then those
    of `include` with a score that are not among them."""
    ranked = [(rowid, -scores[rowid]) for rowid in best]
    kept = set(best)
    ranked += [(r, -scores[r]) for r in sorted(include) if r in scores and r not in kept]
    return ranked


def _rounded(similarity: float | None) -> float | None:
    return None if similarity is None else round(similarity, 4)


def _quote(word: str) -> str:
    """An FTS5 string: the word, never an operator, column filter or prefix query."""
    return '"' + word.replace('"', '""') + '"'


@functools.lru_cache(maxsize=1024)
def _prefixes(covered: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    """What every word (lower-cased, no "_") that may have one of `covered`'s
    stems (stem → word as typed) starts with; none a prefix of another."""
    prefixes: set[str] = set()
    for stem, typed in covered:
        if len(stem) > SHORT_STEM:
            # Porter only rewrites a word's last letters ("happy" → "happi",
            # "hoping" → "hope"): every form of the stem starts with all but its last.
            prefixes.add(stem[:-1])
        else:
            prefixes.update((stem, typed.lower()))
            if stem.endswith("i"):
                # "day" and "days" both stem to "dai".
                prefixes.add(stem[:-1] + "y")
    # A word found by a shorter prefix needs no search for a longer one.
    ordered = sorted(prefixes)
    kept: list[str] = []
    for prefix in ordered:
        if not kept or not prefix.startswith(kept[-1]):
            kept.append(prefix)
    return tuple(kept)


def _splits_like_str(body: str) -> bool:
    """Whether lower() and isalnum() cut `body` into the words unicode61 makes:
    its only non-ASCII characters are separators for both."""
    return all(map(_separates, set("".join(_NON_ASCII.findall(body)))))


@functools.lru_cache(maxsize=4096)
def _separates(char: str) -> bool:
    """A character that splits words for unicode61 and is no word character for str.

    Punctuation, symbols, spaces and controls. unicode61 keeps letters,
    numbers, private-use characters and (as it drops diacritics) combining
    marks in its tokens, and its Unicode tables may know letters that
    Python's do not yet (unassigned here): all of those take the slow path.
    """
    category = unicodedata.category(char)
    return category[0] in "PSZ" or category in ("Cc", "Cf", "Cs")


def _span(body: str, hits: list[tuple[int, str]]) -> tuple[int, int]:
    """The first and last line (0-based, in `body`) of the fewest lines of
    `body` that hold each stem of `hits` at least once; the whole body if none."""
    if not hits:
        return 0, body.count("\n", 0, len(body) - 1)
    # Hits become (line, stem): the narrowest run is counted in lines. The
    # hits are in order: each one's line counts the line breaks since the last.
    count = body.count
    lines = []
    line = last = 0
    for at, stem in hits:
        line += count("\n", last, at)
        last = at
        lines.append((line, stem))
    need = len({stem for _, stem in lines})
    best = (lines[0][0], lines[-1][0])
    window: dict[str, int] = {}
    lo = 0
    for line, stem in lines:
        window[stem] = window.get(stem, 0) + 1
        # Shrink from the left while every stem stays in the window.
        while window[lines[lo][1]] > 1:
            window[lines[lo][1]] -= 1
            lo += 1
        if len(window) == need and line - lines[lo][0] < best[1] - best[0]:
            best = (lines[lo][0], line)
    return best


def _excerpt(body: str, hits: list[tuple[int, str]]) -> str:
    """About EXCERPT_CHARS of `body` on one line, where most question words are together.

    `hits` are (offset, stem) of the question's words in `body`, in order.
    A passage that short is shown whole.
    """
    if len(body) <= 2 * EXCERPT_CHARS:
        whole = " ".join(body.split())
        if len(whole) <= EXCERPT_CHARS:
            return whole
    best, best_at = 0, 0
    window: dict[str, int] = {}  # stem → hits in [hits[i], hits[i] + EXCERPT_CHARS)
    end = 0
    for at, stem in hits:
        while end < len(hits) and hits[end][0] < at + EXCERPT_CHARS:
            window[hits[end][1]] = window.get(hits[end][1], 0) + 1
            end += 1
        if len(window) > best:
            best, best_at = len(window), at
        window[stem] -= 1
        if not window[stem]:
            del window[stem]
    start = max(0, best_at - EXCERPT_LEAD)
    if start:
        # Begin at a word, not inside one.
        space = body.find(" ", start, best_at)
        start = space + 1 if space >= 0 else start
    # Extra room: whitespace runs collapse to one space.
    text = " ".join(body[start : start + 2 * EXCERPT_CHARS].split())
    cut = len(text) > EXCERPT_CHARS or start + 2 * EXCERPT_CHARS < len(body)
    if cut:
        space = text.rfind(" ", EXCERPT_CHARS // 2, EXCERPT_CHARS)
        text = text[: space if space > 0 else EXCERPT_CHARS].rstrip() + ELLIPSIS
    if start:
        text = ELLIPSIS + text
    return text[:SNIPPET_CHARS]
