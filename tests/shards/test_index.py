"""Tests for ifmemd.shards.index: bm25 search over passages, safe for any query text."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from ifmemd.shards import index as index_module
from ifmemd.shards.chunker import Chunk, chunk_text, whole_chunk
from ifmemd.shards.index import (
    MAX_TERMS,
    SNIPPET_CHARS,
    Index,
    MisfiledChunkError,
    Passage,
    PassageFormatError,
    SearchIndexError,
)

DOCS = {
    "/docs/supervisor.md": (
        "# Supervisor\n\nThe supervisor restarts a crashed shard with back-off.\n"
        "Too many restarts and the shard is marked failed.\n"
    ),
    "/docs/log.md": (
        "# Event log\n\nEvery event is hash-chained and signed with Ed25519.\n"
        "Auditors verify the chain without our code.\n"
    ),
    "/src/router.py": (
        "def route(question, shards):\n"
        '    """Pick the shards that can answer a question."""\n'
        "    return [s for s in shards if s.accepts(question)]\n"
    ),
    "/notes/running.txt": "She was running quickly; runners run every morning.\n",
}


def build(docs: dict[str, str]) -> Index:
    return Index.build(chunk for path, text in docs.items() for chunk in chunk_text(path, text))


@pytest.fixture(scope="module")
def index() -> Index:
    return build(DOCS)


NOISE = random.Random(7).randbytes(16 * 1024).decode("latin-1")
NASTY = [
    "",
    " ",
    "\t\n\r  \x0b",
    '"',
    '"unterminated',
    "'single'",
    "(",
    "((shard",
    "shard)",
    "AND",
    "OR OR OR",
    "NOT shard",
    "shard AND OR NOT",
    "NEAR(shard supervisor, 2)",
    "NEAR(",
    "*",
    "shard*",
    "^shard",
    ":",
    "body:shard",
    "nosuchcolumn:shard",
    "{body rowid}: shard",
    "- shard",
    "+",
    "\x00",
    "shard\x00supervisor",
    "\x01\x02\x1b[31m",
    "😀🔥 shard 😀",
    "\ud800 lone surrogate",
    "ﬁ ligature Ⅻ",
    "a" * 10_000,
    " ".join(f"w{i}" for i in range(5_000)),
    NOISE,
]


@given(query=st.text())
@example(query="")
@settings(max_examples=200, deadline=None)
def test_search_never_raises(index: Index, query: str) -> None:
    results = index.search(query, 5)
    assert len(results) <= 5
    assert all(isinstance(p, Passage) for p in results)


@pytest.mark.parametrize("query", NASTY, ids=range(len(NASTY)))
def test_nasty_queries_never_raise(index: Index, query: str) -> None:
    results = index.search(query, 5)
    assert len(results) <= 5
    expression = index.match_expression(query)
    assert expression is None or expression.count(" OR ") < MAX_TERMS


@pytest.mark.parametrize("query", ["", "   ", "\n", "!!! ??? ...", "😀", "zzzqqq"])
def test_query_without_known_words_finds_nothing(index: Index, query: str) -> None:
    assert index.search(query) == []
    assert index.match_expression(query) is None


def test_best_passage_comes_first_with_its_citation(index: Index) -> None:
    results = index.search("how are crashed shards restarted?", 3)
    assert results[0].citation == "/docs/supervisor.md:1-4"
    assert results[0].score > 0
    assert "restarts a crashed shard" in results[0].snippet
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)


def test_words_are_stemmed(index: Index) -> None:
    assert index.search("run")[0].path == "/notes/running.txt"


def test_query_syntax_is_matched_as_words(index: Index) -> None:
    assert index.search('signed AND "ed25519" NOT(')[0].path == "/docs/log.md"
    assert index.search("body:route*")[0].path == "/src/router.py"


def test_stopwords_are_dropped_when_other_words_remain(index: Index) -> None:
    assert index.match_expression("the shard") == '"shard"'
    assert index.match_expression("the") == '"the"'


def test_terms_are_capped() -> None:
    words = [f"term{i}" for i in range(200)]
    index = build({"/many.txt": " ".join(words)})
    expression = index.match_expression(" ".join(words))
    assert expression is not None
    assert expression.count(" OR ") == MAX_TERMS - 1


def test_rare_terms_are_preferred_over_common_ones() -> None:
    docs = {f"/d{i}.txt": f"common filler {i}\n" for i in range(10)}
    docs["/d3.txt"] = "common filler rare\n"
    index = build(docs)
    assert index.match_expression("common rare") == '"rare"'
    assert index.match_expression("common") == '"common"'


def test_terms_over_the_budget_rank_as_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = {
        f"/d{i}.txt": f"filler{i} " + ("common values " * (i % 4 + 1) if i % 3 == 0 else "other\n")
        for i in range(45)
    }
    cases = [("common", 3), ("common", 12), ("values", 2), ("values", 40), ("filler7", 5)]
    reference = build(docs)
    expected = [reference.search(query, k) for query, k in cases]
    monkeypatch.setattr(index_module, "POSTINGS_BUDGET", 3)
    monkeypatch.setattr(index_module, "PREWARM_MIN_DOCS", 10)
    limited = build(docs)
    assert [limited.search(query, k) for query, k in cases] == expected
    assert [limited.search(query, k) for query, k in cases] == expected
    # What was ranked before a change is forgotten after it.
    limited.add("/new.txt", chunk_text("/new.txt", "common common common\n"))
    assert limited.search("common", 1)[0].path == "/new.txt"


def test_k_limits_results(index: Index) -> None:
    assert len(index.search("shard question event running", 2)) == 2
    assert index.search("shard", 0) == []


def test_excerpt_is_the_passage_where_the_question_words_are_together() -> None:
    short = "A short note whose one useful word, the lighthouse, comes at its very end"
    long_text = (
        "Preamble that says nothing of interest at all. " * 8
        + "The lighthouse beacon turns every ten seconds. "
        + "More unrelated closing words follow here. " * 8
    )
    filler = {f"/filler{i}.md": f"unrelated note number {i}" for i in range(4)}
    index = build({"/short.md": short, "/long.md": long_text, **filler})
    hits = {p.path: p for p in index.search("lighthouse beacon", 2)}
    assert hits["/short.md"].snippet == short  # short enough: whole, no ellipsis
    excerpt = hits["/long.md"].snippet
    assert excerpt.startswith("…") and excerpt.endswith("…")
    assert "lighthouse beacon turns" in excerpt
    assert len(excerpt) <= SNIPPET_CHARS


_WORDS = st.one_of(
    st.text(alphabet="abcdeiosty_-.ABC019 ", min_size=1, max_size=12),
    st.text(min_size=1, max_size=8),
    # Porter's awkward cases: rewritten endings, short stems.
    st.sampled_from(["running", "ran", "happy", "happiness", "hoping", "hope", "relational"]),
    st.sampled_from(["generalization", "controlling", "possibly", "cries", "cry", "F", "io"]),
    st.sampled_from(["day", "days", "Day’s", "re‐read", "“quoted”", "•", "a‐b"]),
    # Folding that Python's str does differently: diacritics, "µ", "ß", "Ŀ".
    st.sampled_from(["café", "CAFÉ", "Ǻngström", "µs", "Straße", "über", "Ŀa", "naïve"]),
    # Combining marks join a word for unicode61 but not for str; private use too.
    st.sampled_from(["cafe\u0301s", "x\ue000y", "x²", "İs"]),
)


@given(
    docs=st.lists(st.lists(_WORDS, min_size=1, max_size=30), min_size=1, max_size=6),
    data=st.data(),
)
@settings(max_examples=150, deadline=None)
def test_coverage_counts_exactly_the_stems_fts5_matches(
    docs: list[list[str]], data: st.DataObject
) -> None:
    # The question mixes words of the passages with words of its own.
    known = st.sampled_from([w for words in docs for w in words])
    question = data.draw(st.lists(st.one_of(known, _WORDS), min_size=1, max_size=5))
    texts = [" ".join(words) for words in docs]
    index = Index.build([Chunk(f"/d{i}", 1, 1, text) for i, text in enumerate(texts)])
    query = " ".join(question)
    plan = index._plan(query)
    for hit in index.search(query, 10):
        text = texts[int(hit.path[2:])]
        stems = {token for _, _, token, *_ in index._tokenize(text.encode("utf-8", "replace"))}
        assert plan is not None
        exact = sum(plan.weights[stem] for stem in set(plan.covered) & stems) / plan.total_weight
        assert hit.coverage == round(min(1.0, exact), 4), (text, query)
        assert len(hit.snippet) <= SNIPPET_CHARS


def test_snippet_is_short_even_for_a_huge_line() -> None:
    index = build({"/huge.txt": "needle " + "hay " * 50_000})
    [hit] = index.search("needle")
    assert len(hit.snippet) <= SNIPPET_CHARS
    assert "needle" in hit.snippet


def test_working_memory_add_replace_remove() -> None:
    with Index() as memory:
        assert memory.search("anything") == []
        assert (
            memory.add("memory:1", whole_chunk("memory:1", "the deploy key lives in vault\n")) == 1
        )
        memory.add("memory:2", whole_chunk("memory:2", "standup is at ten\nevery weekday\n"))
        assert [p.citation for p in memory.search("vault")] == ["memory:1:1-1"]
        assert [p.citation for p in memory.search("weekday standup")] == ["memory:2:1-2"]
        memory.add("memory:1", whole_chunk("memory:1", "the deploy key moved to the safe\n"))
        assert memory.search("vault") == []
        assert memory.search("safe")[0].path == "memory:1"
        assert len(memory) == 2 and "memory:1" in memory
        assert memory.remove("memory:1") == 1
        assert memory.remove("memory:1") == 0
        assert memory.search("safe") == []
        assert memory.paths() == ["memory:2"]


def test_add_refuses_chunks_of_another_path() -> None:
    with Index() as memory:
        with pytest.raises(MisfiledChunkError, match="belongs to another path"):
            memory.add("memory:1", [Chunk("memory:1", 1, 1, "x"), Chunk("memory:2", 1, 1, "y")])
        assert len(memory) == 0


def test_empty_index_finds_nothing() -> None:
    with Index.build([]) as empty:
        assert len(empty) == 0
        assert empty.search("anything") == []


def test_closed_index_raises_a_named_error() -> None:
    memory = Index()
    memory.add("memory:1", whole_chunk("memory:1", "x marks the spot\n"))
    memory.close()
    with pytest.raises(SearchIndexError, match=r"^search: "):
        memory.search("spot")


def test_passage_row_round_trip() -> None:
    passage = Passage("/a.md", 3, 9, 1.5, "some text", 0.5, 4, 5, "ab" * 32)
    assert passage.to_row() == ["/a.md", 3, 9, 1.5, 0.5, "some text", 4, 5, "ab" * 32]
    assert Passage.from_row(json.loads(json.dumps(passage.to_row()))) == passage
    assert Passage.from_row(["/a.md", 3, 9, 2, 1, "x", 3, 9, ""]) == Passage(
        "/a.md", 3, 9, 2.0, "x", 1.0, 3, 9
    )


def test_a_row_without_a_span_cites_the_whole_passage() -> None:
    passage = Passage.from_row(["/a.md", 3, 9, 2, 1, "x"])
    assert passage.span == (3, 9)
    assert passage.digest == ""
    assert Passage("/a.md", 3, 9, 2.0, "x").to_row()[-3:] == [3, 9, ""]


@pytest.mark.parametrize(
    "data",
    [
        [],
        {},
        "/a.md",
        ["/a", 1, 1, 0.0, 0.0],
        {"path": "/a", "start_line": 1, "end_line": 1, "score": 0.0, "coverage": 0, "snippet": ""},
        [1, 1, 1, 0.0, 0.0, ""],
        ["/a", 1, 1, 0.0, 0.0, None],
        ["/a", True, 1, 0.0, 0.0, ""],
        ["/a", 1, 1, "1", 0.0, ""],
        ["/a", 1, 1, 0.0, None, ""],
        ["/a", 0, 1, 0.0, 0.0, ""],
        ["/a", 5, 4, 0.0, 0.0, ""],
        ["/a", 3, 9, 0.0, 0.0, "", 2, 5, ""],
        ["/a", 3, 9, 0.0, 0.0, "", 5, 10, ""],
        ["/a", 3, 9, 0.0, 0.0, "", 6, 5, ""],
        ["/a", 3, 9, 0.0, 0.0, "", 4],
        ["/a", 3, 9, 0.0, 0.0, "", 4, 5],
        ["/a", 3, 9, 0.0, 0.0, "", "4", 5, ""],
        ["/a", 3, 9, 0.0, 0.0, "", 4, 5, None],
        ["/a", 3, 9, 0.0, 0.0, "", "ab" * 32],
    ],
)
def test_passage_from_bad_row(data: object) -> None:
    with pytest.raises(PassageFormatError):
        Passage.from_row(data)


def test_coverage_counts_the_questions_content_words() -> None:
    index = Index.build(
        [
            Chunk("/notes.md", 1, 1, "the staging password rotates monthly"),
            Chunk("/other.md", 1, 1, "staging servers restart nightly"),
            Chunk("/third.md", 1, 1, "password rules for production"),
            # Filler, so that no word of the question is "common" (in most passages).
            *(Chunk(f"/filler{i}.md", 1, 1, f"unrelated note number {i}") for i in range(5)),
        ]
    )
    by_path = {p.path: p for p in index.search("when does the staging password rotate", 5)}
    # "when", "does", "the" are stopwords: three content words, each weighted
    # by bm25's idf over the 8 passages (staging and password in 2, rotate in 1).
    idf = {df: math.log(1 + (8 - df + 0.5) / (df + 0.5)) for df in (1, 2)}
    assert by_path["/notes.md"].coverage == 1.0
    assert by_path["/other.md"].coverage == round(idf[2] / (2 * idf[2] + idf[1]), 4)


def test_a_rare_word_covers_more_than_a_common_one() -> None:
    docs = [Chunk(f"/f{i}.md", 1, 1, f"common words {i}") for i in range(3)]
    filler = [Chunk(f"/g{i}.md", 1, 1, f"other words {i}") for i in range(4)]
    index = Index.build([*docs, *filler, Chunk("/rare.md", 1, 1, "the zeppelin")])
    by_path = {p.path: p for p in index.search("common zeppelin", 10)}
    assert by_path["/rare.md"].coverage > 0.5 > by_path["/f0.md"].coverage


def test_coverage_is_relative_to_the_question_not_to_the_index() -> None:
    # A word this index lacks still counts against coverage (and weighs as the
    # rarest): that is what makes coverage comparable between shards.
    index = Index.build([Chunk("/a.md", 1, 1, "rotation schedule")])
    [hit] = index.search("staging password rotation", 5)
    known, unknown = math.log(1 + 0.5 / 1.5), math.log(1 + 1.5 / 0.5)
    assert hit.coverage == round(known / (known + 2 * unknown), 4)


def test_short_stems_porter_rewrote_are_counted() -> None:
    # "days" stems to "dai", which "day" does not start with.
    index = build({"/a.md": "what a day it was", "/b.md": "nothing of the kind"})
    [hit] = index.search("days")
    assert hit.coverage == 1.0
    assert hit.snippet == "what a day it was"


def test_typographic_punctuation_splits_words_as_fts5_does() -> None:
    text = "The \u2010\u2010retry option\u2019s “delay” grows \u2022 exponentially"
    index = build({"/curl.1.txt": text, "/b.md": "nothing of the kind"})
    [hit] = index.search("retry delay exponential")
    assert hit.coverage == 1.0


def test_span_is_the_narrowest_run_of_lines_holding_the_matched_words() -> None:
    lines = [f"filler line {i}\n" for i in range(12)]
    lines[3] = "the lighthouse beacon\n"
    lines[4] = "turns every ten seconds\n"
    lines[9] = "a beacon again\n"
    index = Index.build([Chunk("/a.md", 20, 31, "".join(lines))])
    [hit] = index.search("lighthouse beacon turns")
    assert (hit.start_line, hit.end_line) == (20, 31)
    assert hit.span == (23, 24)
    [hit] = index.search("beacon")
    assert hit.span == (23, 23)


def test_span_is_the_whole_passage_when_the_words_are_at_its_ends() -> None:
    index = Index.build([Chunk("/a.md", 1, 3, "alpha\nmiddle\nomega\n")])
    [hit] = index.search("alpha omega")
    assert hit.span == (1, 3)


def test_a_passage_holding_only_stopwords_covers_nothing() -> None:
    index = Index.build([Chunk("/a.md", 1, 1, "it is what it is"), Chunk("/b.md", 1, 1, "x")])
    [hit] = index.search("where is mkdtemp implemented")
    assert hit.coverage == 0.0
    # A question of stopwords alone is covered by them.
    assert index.search("what is it")[0].coverage == 1.0


def test_span_is_counted_in_lines_not_characters() -> None:
    # "Beacon" then "lighthouse" are closer in characters, but two lines apart;
    # "lighthouse beacon" is one line.
    index = Index.build([Chunk("/b.md", 1, 3, "# Beacon\n\nA lighthouse beacon in the fog.\n")])
    [hit] = index.search("lighthouse beacon")
    assert hit.span == (3, 3)
