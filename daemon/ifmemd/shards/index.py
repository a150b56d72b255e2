"""Full-text search over a shard's passages with SQLite FTS5.

An `Index` searches the tables of `ifmemd.shards.store` (`porter unicode61`;
the FTS5 table is contentless, the texts are rows of `chunk`, fetched for the
winners only) and answers `search(query, k)` with the best passages by bm25,
each with its citation, the digest of the file version it was cut from, and a
short excerpt. It lives in memory, built once (`Index.build`) or grown and
shrunk item by item (`add`, `remove`) for working memory, whose passages are
`memory:<id>`; or it reads a file shard's on-disk index (`Index(connection)`),
which another connection writes: each search reads one consistent snapshot,
and notices (`PRAGMA data_version`) when the writer changed the passages.

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

Only the `k` winners get an excerpt and a coverage (how many of the
question's words they hold). Both come from one pass over the winner's text.
For ASCII text, a per-question regular expression finds the words that may
share a stem with a question word (they start with the stem's prefix), and
each candidate's stem is then checked with the index's own tokenizer
(cached); other text, whose case and diacritics fold in ways Python's str
does not, is run through the tokenizer whole. Either way a passage counts
exactly the stems FTS5 would match (a property test holds the two to each
other). FTS5's `snippet()` re-tokenizes every winner in full and cost
several times more.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Self

import apsw

from ifmemd.errors import IfmemError
from ifmemd.shards import store
from ifmemd.shards.chunker import Chunk

MAX_QUERY_CHARS = 64 * 1024
MAX_CANDIDATES = 256
MAX_TERMS = 32
# About 5 ms of bm25 scoring at ~0.45 µs a matched row (measured on a
# 12M-token corpus); rarer terms are kept first until this many postings.
POSTINGS_BUDGET = 10_000
PREWARM_MIN_DOCS = 64
# How many results are kept for a term too common for the budget.
HOT_RESULTS = 20
MAX_CACHED_TERMS = 200_000
COMMON_FRACTION = 0.5
SNIPPET_CHARS = 300
# An excerpt shows about this many characters of the passage (~24 words),
# starting a little before the densest run of the question's words.
EXCERPT_CHARS = 160
EXCERPT_LEAD = 40
# Stems this short are matched as whole words, not as prefixes.
SHORT_STEM = 3
ELLIPSIS = "…"
# A passage on the shard protocol, in this order (see `Passage.to_row`).
ROW_FIELDS = ("path", "start_line", "end_line", "score", "coverage", "snippet", "digest")

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
# Ranking with the SQLite sorter's top-k (ORDER BY bm25 … LIMIT) beats FTS5's
# own `ORDER BY rank`, which sorts every match; excerpts are then made for
# the k winners only.
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

    `score` is the negated bm25 rank: higher is better, only comparable
    within one index. `coverage` is the share of the question's content words
    the passage holds (0..1): unlike bm25, comparable across shards, which is
    what the coordinator's fusion needs to break ties between shards.
    `digest` is the BLAKE2b-256 (hex) of the bytes of the file version it was
    cut from.
    """

    path: str
    start_line: int
    end_line: int
    score: float
    snippet: str
    coverage: float = 0.0
    digest: str = ""

    @property
    def citation(self) -> str:
        """The passage as cited in answers: `path:start-end`."""
        return f"{self.path}:{self.start_line}-{self.end_line}"

    def to_row(self) -> list[Any]:
        """The passage as the shard protocol sends it: a JSON array, cheap to parse."""
        return [
            self.path,
            self.start_line,
            self.end_line,
            self.score,
            self.coverage,
            self.snippet,
            self.digest,
        ]

    @classmethod
    def from_row(cls, row: Any) -> Passage:
        """Read back what `to_row` wrote, checking every field."""
        if type(row) is not list or len(row) != len(ROW_FIELDS):
            raise PassageFormatError(f"expected an array [{', '.join(ROW_FIELDS)}]")
        path, start, end, score, coverage, snippet, digest = row
        if type(path) is not str or type(snippet) is not str or type(digest) is not str:
            raise PassageFormatError("path, snippet and digest must be strings")
        if type(start) is not int or type(end) is not int or not 1 <= start <= end:
            raise PassageFormatError(f"line range {start!r}-{end!r} is not 1 <= start <= end")
        if type(score) not in (int, float) or type(coverage) not in (int, float):
            raise PassageFormatError("score and coverage must be numbers")
        return cls(path, start, end, float(score), snippet, float(coverage), digest)


@dataclass(frozen=True, slots=True)
class _Query:
    """What `search` runs: the FTS5 expression, its postings, and its rarest term's stem."""

    expression: str
    postings: int
    stem: str
    content_words: int  # the question's informative words, known here or not
    covered: dict[str, str]  # stem → word as typed: every informative word this index knows


class Index:
    """An FTS5 index of passages, searched by bm25: in memory, or on a connection given.

    Not safe for concurrent use from several threads; a shard serves one
    query at a time (its on-disk index is written through another connection).
    """

    def __init__(self, db: apsw.Connection | None = None) -> None:
        try:
            self._db = store.memory_db() if db is None else db
            self._db.execute(_VOCAB)
            self._tokenizer = self._db.fts5_tokenizer("porter", ["unicode61"])
            self._data_version = self._version()
        except apsw.Error as e:
            raise SearchIndexError("open index", str(e)) from e
        self._count: int | None = None
        self._doc_freq: dict[str, int] = {}
        self._stems: dict[str, tuple[str, ...]] = {}
        self._hot: dict[str, tuple[int, list[tuple[int, float]]]] = {}

    @classmethod
    def build(cls, chunks: Iterable[Chunk], digests: dict[str, str] | None = None) -> Self:
        """Make an in-memory index of many chunks at once, merged for fast queries.

        `digests` gives each path's file digest (none: "").
        """
        index = cls()
        by_path: dict[str, list[Chunk]] = {}
        for chunk in chunks:
            by_path.setdefault(chunk.path, []).append(chunk)
        try:
            with index._db:
                for path, group in by_path.items():
                    digest = (digests or {}).get(path, "")
                    store.replace_file(index._db, store.FileState(path, digest=digest), group)
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
                store.replace_file(self._db, store.FileState(path, digest=digest), chunks)
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

    def search(self, query: str, k: int = 10) -> list[Passage]:
        """The `k` passages that best match `query` (any text), best first.

        Returns [] when the query has no word the index knows.
        """
        try:
            # One snapshot: the winners' rows are those of the index they were ranked in.
            with self._db:
                return self._search(query, k)
        except apsw.Error as e:
            raise SearchIndexError("search", str(e)) from e

    def _search(self, query: str, k: int) -> list[Passage]:
        if self._version() != self._data_version:
            # Another connection (the shard's writer) committed a batch of files.
            self._data_version = self._version()
            self._forget_statistics(keep_common=True)
        plan = self._plan(query)
        if plan is None or k <= 0:
            return []
        ranked = self._rank(plan, k)
        covered = plan.covered
        candidates = _prefixes(tuple(sorted(covered.items())))
        passages = []
        for rowid, rank in ranked:
            row = self._db.execute(_PASSAGE, (rowid,)).fetchone()
            if row is None:
                continue  # a cached ranking outlived its passage: never cite it
            path, start, end, body, digest = row
            hits = self._hits(body, covered, candidates)
            coverage = round(min(1.0, len({stem for _, stem in hits}) / plan.content_words), 4)
            passages.append(
                Passage(path, start, end, -rank, _excerpt(body, hits), coverage, digest)
            )
        return passages

    def _version(self) -> int:
        return self._db.execute("PRAGMA data_version").fetchone()[0]

    def match_expression(self, query: str) -> str | None:
        """The FTS5 query `search` runs for `query`, or None when nothing is searchable."""
        plan = self._plan(query)
        return None if plan is None else plan.expression

    def _plan(self, query: str) -> _Query | None:
        """Turn any text into a safe FTS5 query over its best words, or None if it has none."""
        words = self._words(query)
        chosen = self._choose_terms(words)
        if not chosen:
            return None
        expression = " OR ".join(_quote(words[stem]) for _, stem in chosen)
        content = [stem for stem, word in words.items() if word.casefold() not in STOPWORDS]
        # Coverage counts common words too (they were only left out of ranking
        # to bound its cost); it is evaluated on the k winners alone.
        covered = [stem for _, stem in self._known(content)][:MAX_TERMS] or [
            stem for _, stem in chosen
        ]
        return _Query(
            expression,
            sum(df for df, _ in chosen),
            chosen[0][1],
            max(len(content), len(chosen)),
            {stem: words[stem] for stem in covered},
        )

    def _rank(self, plan: _Query, k: int) -> list[tuple[int, float]]:
        """(rowid, bm25) of the best `k` matches of the plan."""
        if plan.postings <= POSTINGS_BUDGET:
            return self._db.execute(_RANK, (plan.expression, k)).fetchall()
        # Over the budget means one very common term (see _choose_terms),
        # whose ranking is the same whatever the query: work it out once.
        limit, ranked = self._hot.get(plan.stem, (0, []))
        if limit < k and len(ranked) == limit:
            limit = max(k, HOT_RESULTS)
            ranked = self._db.execute(_RANK, (plan.expression, limit)).fetchall()
            self._hot[plan.stem] = (limit, ranked)
        return ranked[:k]

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

    def _choose_terms(self, words: dict[str, str]) -> list[tuple[int, str]]:
        """(document frequency, stem) of the rarest informative words in the index."""
        meaningful = [stem for stem, word in words.items() if word.casefold() not in STOPWORDS]
        stopwords = [stem for stem, word in words.items() if word.casefold() in STOPWORDS]
        known = self._known(meaningful) or self._known(stopwords)
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
                self._rank(_Query(_quote(stem), df, stem, 1, {stem: stem}), HOT_RESULTS)
            except apsw.Error as e:
                raise SearchIndexError("build index", str(e)) from e

    def _hits(
        self, body: str, covered: dict[str, str], candidates: re.Pattern[str]
    ) -> list[tuple[int, str]]:
        """(offset, stem) of each word of `body` whose stem is in `covered`, in order."""
        if body.isascii():
            # unicode61 folds ASCII case and splits words at anything not a
            # letter or digit ("_" too): lower() and isalnum() do the same.
            text = body.replace("_", " ").lower()
            return [
                (at, stem)
                for m in candidates.finditer(text)
                # A word starts there, not inside another one.
                if (at := m.start()) == 0 or not text[at - 1].isalnum()
                for stem in self._stems_of(m.group())
                if stem in covered
            ]
        # Other scripts fold in ways Python's str does not (diacritics, "µ"):
        # the tokenizer itself, exact but slower, finds their words.
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
        """Drop what was learned about terms: the passages changed.

        `keep_common`: a batch of a few files barely moves the frequency of a
        common term, which only decides which words to rank by, while looking
        it up again reads its whole posting list; so those are kept. Rare terms
        (a word the batch may have added) and rankings are always dropped.
        """
        if keep_common:
            self._doc_freq = {t: df for t, df in self._doc_freq.items() if df >= PREWARM_MIN_DOCS}
        else:
            self._doc_freq.clear()
        self._hot.clear()
        self._count = None


def _quote(word: str) -> str:
    """An FTS5 string: the word, never an operator, column filter or prefix query."""
    return '"' + word.replace('"', '""') + '"'


@functools.lru_cache(maxsize=1024)
def _prefixes(covered: tuple[tuple[str, str], ...]) -> re.Pattern[str]:
    """A pattern finding every word (lower-cased, no "_") that may have one of
    `covered`'s stems (stem → word as typed): it starts with the stem's prefix."""
    prefixes: set[str] = set()
    for stem, typed in covered:
        if len(stem) > SHORT_STEM:
            # Porter only rewrites a word's last letters ("happy" → "happi",
            # "hoping" → "hope"): every form of the stem starts with all but its last.
            prefixes.add(stem[:-1])
        else:
            prefixes.update((stem, typed.lower()))
    # Longest first, and literal-first: the regex engine then skips quickly
    # to where one could start (a leading look-behind makes it try everywhere).
    alternatives = "|".join(map(re.escape, sorted(prefixes, key=lambda p: (-len(p), p))))
    return re.compile(f"(?:{alternatives})\\w*")


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
