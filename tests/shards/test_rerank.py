"""Definitions first, tests last: the second stage of a shard's ranking."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ifmemd.shards import rerank
from ifmemd.shards.chunker import Chunk, chunk_text, split_lines
from ifmemd.shards.index import STOPWORDS, Index


def test_defined_names() -> None:
    text = (
        "def mkdtemp(suffix=None):\n"
        "    async def inner(): pass\n"
        "class TemporaryDirectory:\n"
        "TMP_MAX = 10000\n"
        "template: str = 'tmp'\n"
        "    local = 1\n"
        "x == y\n"
        "#define PATH_MAX 4096\n"
    )
    assert rerank.defined_names(text) == {
        "mkdtemp", "inner", "temporarydirectory", "tmp_max", "template", "path_max"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("path", "test"),
    [
        ("/lib/test/test_tempfile.py", True),
        ("/src/tests/util.py", True),
        ("/src/pkg/test_util.py", True),
        ("/src/pkg/util_test.py", True),
        ("/src/conftest.py", True),
        ("/lib/tempfile.py", False),
        ("/src/contest.py", False),
        ("/src/latest/x.py", False),
    ],
)
def test_is_test(path: str, test: bool) -> None:
    assert rerank.is_test(path) is test


def test_names_in_a_question() -> None:
    assert rerank.names_in("Where is mkdtemp implemented?", STOPWORDS) == {
        "mkdtemp", "implemented"
    }  # fmt: skip
    # A dotted name's parts count even when they are stopwords.
    assert "which" in rerank.names_in("How does shutil.which search PATH?", STOPWORDS)
    assert "which" not in rerank.names_in("which one is it", STOPWORDS)
    assert rerank.about_tests("What do the tests check about mkdtemp?")
    assert not rerank.about_tests("where is the latest contest")


# Fewer than the candidates reordered, so that the weak use is among them;
# more than the definition's rank under bm25 alone.
TESTS = rerank.CANDIDATES - 4


def _tempfile_tree() -> Index:
    """A module whose long function defines mkdtemp, another that calls it once
    in a long function, and tests that name it on every line."""
    body = "".join(f"    step{i} = prepare(prefix, suffix, {i})\n" for i in range(30))
    module = (
        '"""Temporary files."""\n\n\n'
        "def mkdtemp(suffix=None, prefix=None, dir=None):\n"
        '    """User-callable function to create a unique temporary directory."""\n'
        + body
        + "    return file\n"
    )
    user = "def copy_tree(src):\n    tmp = mkdtemp()\n" + body
    tests = "".join(
        f"def test_mkdtemp_{i}(self):\n    d = mkdtemp()\n    self.assertTrue(mkdtemp())\n\n\n"
        for i in range(TESTS)
    )
    return Index.build(
        [
            *chunk_text("/lib/tempfile.py", module),
            *chunk_text("/lib/shutil.py", user),
            *chunk_text("/lib/test/test_tempfile.py", tests),
        ]
    )


def test_the_definition_ranks_above_its_uses_and_tests() -> None:
    index = _tempfile_tree()
    # bm25 alone puts every test first (they say mkdtemp three times in five lines).
    plan = index._plan("where is mkdtemp implemented")
    assert plan is not None
    by_bm25 = [index._passage(rowid)[0] for rowid, _ in index._rank(plan, TESTS)]
    assert set(by_bm25) == {"/lib/test/test_tempfile.py"}
    hits = index.search("where is mkdtemp implemented", 3)
    assert [p.path for p in hits] == [
        "/lib/tempfile.py",
        "/lib/shutil.py",
        "/lib/test/test_tempfile.py",
    ]
    assert hits[0].span == (4, 4)  # the `def` line


def test_tests_are_not_ranked_down_when_the_question_is_about_tests() -> None:
    index = _tempfile_tree()
    hits = index.search("which tests call mkdtemp", 3)
    assert [p.path for p in hits] == ["/lib/tempfile.py", *["/lib/test/test_tempfile.py"] * 2]


def test_tests_rank_below_code_that_uses_the_name() -> None:
    index = Index.build(
        [
            Chunk("/lib/test/test_x.py", 1, 1, "rotate rotate the log files"),
            Chunk("/lib/handlers.py", 1, 1, "rotate the log files when they grow"),
            *(Chunk(f"/lib/f{i}.py", 1, 1, f"filler {i}") for i in range(6)),
        ]
    )
    assert [p.path for p in index.search("rotate log files", 2)] == [
        "/lib/handlers.py", "/lib/test/test_x.py"
    ]  # fmt: skip


def test_definitions_are_learned_for_passages_added_later() -> None:
    index = Index.build([Chunk("/a.py", 1, 1, "x = frobnicate(1)"), Chunk("/b.md", 1, 1, "y")])
    assert index.search("where is frobnicate defined", 1)[0].path == "/a.py"
    index.add("/c.py", [Chunk("/c.py", 1, 2, "def frobnicate(n):\n    return n\n")])
    assert index.search("where is frobnicate defined", 1)[0].path == "/c.py"
    index.remove("/c.py")
    assert index.search("where is frobnicate defined", 1)[0].path == "/a.py"


def test_the_passages_defining_each_name_of_a_question_at_once() -> None:
    common = [
        Chunk(f"/lib/r{i}.py", 1, 1, f"def run(x{i}):\n    return x{i}\n")
        for i in range(rerank.MAX_DEFINITIONS + 1)
    ]
    index = Index.build(
        [
            Chunk("/lib/a.py", 1, 2, "def frobnicate(n):\n    return n\n"),
            Chunk("/lib/b.py", 1, 1, "frobnicate = None"),
            Chunk("/lib/c.h", 1, 1, "#define WIDGET_MAX 4"),
            *common,
        ]
    )
    where = {index._passage(rowid)[0]: rowid for rowid in range(1, len(common) + 4)}
    assert index._defining(["frobnicate", "widget_max", "nothing"]) == {
        where["/lib/a.py"], where["/lib/b.py"], where["/lib/c.h"]
    }  # fmt: skip
    # A name defined in more than MAX_DEFINITIONS passages means none of them.
    assert index._defining(["run", "widget_max"]) == {where["/lib/c.h"]}
    assert index._defining([]) == set()


def test_code_names_in_a_question() -> None:
    question = "What is PROMPT_COMMAND, basicConfig or JSONDecodeError for, and lru_cache?"
    assert rerank.code_names(question) == [
        "basicconfig", "jsondecodeerror", "lru_cache", "prompt_command"
    ]  # fmt: skip
    assert rerank.code_names("What is the prompt command for?") == []


def test_a_name_written_as_code_is_matched_as_written() -> None:
    # The tokenizer cuts PROMPT_COMMAND into "prompt" and "command", which the
    # other passage holds more often.
    index = Index.build(
        [
            Chunk(
                "/a.txt", 1, 1, "a prompt is shown before each command; the command prompt is used"
            ),
            Chunk("/b.txt", 1, 2, "PROMPT_COMMAND\n    run before each primary prompt"),
            *(Chunk(f"/f{i}.txt", 1, 1, f"filler {i}") for i in range(6)),
        ]
    )
    assert index.search("What is PROMPT_COMMAND used for?", 1)[0].path == "/b.txt"
    assert index.search("What is the prompt command used for?", 1)[0].path == "/a.txt"


@pytest.mark.parametrize(
    ("question", "subject"),
    [
        ("What is a dpkg trigger?", "dpkg trigger"),
        ("what are capabilities", "capabilities"),
        ("What is libffi?", "libffi"),
        ("What is the /var/tmp directory for?", None),
        ("What is PROMPT_COMMAND used for?", None),
        ("How is a trigger activated?", None),
    ],
)
def test_the_subject_of_a_what_is_question(question: str, subject: str | None) -> None:
    assert rerank.subject_asked(question) == subject


def test_the_passage_saying_what_a_thing_is_ranks_first() -> None:
    uses = [
        Chunk(f"/spec/use{i}.txt", 1, 1, f"Each dpkg trigger runs; trigger {i} and trigger "
              f"names, trigger files and the dpkg trigger queue, trigger by trigger.")
        for i in range(6)
    ]  # fmt: skip
    says = Chunk("/spec/intro.txt", 1, 1, "A dpkg trigger is a way for one package to "
                 "record events that interest another.")  # fmt: skip
    index = Index.build([*uses, says])
    assert index.search("What is a dpkg trigger?", 3)[0].path == "/spec/intro.txt"
    # The same words, not asking what it is: bm25's order.
    assert index.search("dpkg trigger", 3)[0].path != "/spec/intro.txt"


DEFINITION_LINES = st.one_of(
    st.sampled_from(
        [
            "",
            "def f(x):",
            "    async def g():",
            "class A(B):",
            "\tclass  C:",
            "X = 1",
            "X == 1",
            "y: int = 2",
            "y: int == 2",
            "  z = 3",
            "#define MAX 10",
            "  #  define MIN 1",
            "defined = 1",
            "classy x",
            "async = 5",
            "x =",
            "=",
            "    return x",
        ]
    ),
    st.text(alphabet=st.sampled_from("ab_ =:#\t(\r"), max_size=20),
)


@given(lines=st.lists(DEFINITION_LINES, max_size=60), cut=st.integers(0, 60))
def test_definitions_of_a_file_are_those_of_its_lines(lines: list[str], cut: int) -> None:
    """What `definitions` finds over a whole text, line by line, is what
    `defined_names` finds in any run of its lines (the passages)."""
    text = "\n".join(lines)
    found = rerank.definitions(text)
    assert [line for line, _ in found] == sorted(line for line, _ in found)
    head = "".join(split_lines(text)[:cut])
    within = {name for line, name in found if line <= cut}
    assert within == rerank.defined_names(head)
    assert {name for _, name in found} == rerank.defined_names(text)
