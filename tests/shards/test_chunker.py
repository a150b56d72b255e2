"""Tests for ifmemd.shards.chunker: passages follow the file's structure and never lose a line."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ifmemd.shards.chunker import (
    Chunk,
    ChunkSize,
    ChunkSizeError,
    Kind,
    chunk_file,
    chunk_files,
    chunk_text,
    kind_of,
    split_lines,
    whole_chunk,
)
from ifmemd.shards.corpus import SourceFile


def assert_exact_cover(path: str, text: str, chunks: list[Chunk]) -> None:
    """Every line is in a chunk, and each chunk is exactly its lines, in file order."""
    lines = split_lines(text)
    covered: set[int] = set()
    previous_start = 0
    for chunk in chunks:
        assert chunk.path == path
        assert 1 <= chunk.start_line <= chunk.end_line <= len(lines)
        assert chunk.text
        assert chunk.text == "".join(lines[chunk.start_line - 1 : chunk.end_line])
        assert chunk.start_line > previous_start
        previous_start = chunk.start_line
        covered.update(range(chunk.start_line, chunk.end_line + 1))
    assert covered == set(range(1, len(lines) + 1))


# Lines that exercise every structural rule, mixed with arbitrary text.
STRUCTURED_LINES = st.one_of(
    st.sampled_from(
        [
            "",
            "   ",
            "# Title",
            "## Section",
            "Heading",
            "=======",
            "-------",
            "~~~~~~~",
            "```python",
            "```",
            "def f(x):",
            "    return x",
            "class A:",
            "    def m(self):",
            "        pass",
            "@decorator",
            "function g() {",
            "}",
            "func main() {",
            "fn main() {",
            "\tindented",
            "# comment",
        ]
    ),
    st.text(alphabet=st.characters(blacklist_characters="\n"), max_size=120),
)


@st.composite
def structured_texts(draw: st.DrawFn) -> str:
    lines = draw(st.lists(STRUCTURED_LINES, max_size=120))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    trailing = draw(st.sampled_from(["", newline]))
    return newline.join(lines) + (trailing if lines else "")


SIZES = st.builds(
    ChunkSize,
    lines=st.integers(1, 12),
    chars=st.integers(1, 400),
    overlap=st.integers(0, 4),
)
PATHS = st.sampled_from(["a.md", "a.rst", "a.py", "a.go", "a.txt", "script"])


@given(text=st.text(), path=PATHS, size=SIZES)
def test_any_text_is_covered_exactly(text: str, path: str, size: ChunkSize) -> None:
    assert_exact_cover(path, text, chunk_text(path, text, size))


@given(text=structured_texts(), path=PATHS, size=SIZES)
def test_structured_text_is_covered_exactly(text: str, path: str, size: ChunkSize) -> None:
    assert_exact_cover(path, text, chunk_text(path, text, size))


@given(text=structured_texts(), path=PATHS)
def test_default_size_covers_exactly(text: str, path: str) -> None:
    assert_exact_cover(path, text, chunk_text(path, text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("\n", ["\n"]),
        ("a", ["a"]),
        ("a\nb", ["a\n", "b"]),
        ("a\r\nb\r\n", ["a\r\n", "b\r\n"]),
        ("a\x0cb\u2028c\rd\n", ["a\x0cb\u2028c\rd\n"]),
    ],
)
def test_split_lines_only_breaks_at_newline(text: str, expected: list[str]) -> None:
    assert split_lines(text) == expected


@pytest.mark.parametrize(
    ("path", "text", "kind"),
    [
        ("notes/a.md", "", Kind.MARKDOWN),
        ("README.markdown", "", Kind.MARKDOWN),
        ("doc/index.rst", "", Kind.RST),
        ("x.py", "", Kind.CODE),
        ("x.TS", "", Kind.CODE),
        ("bin/tool", "#!/bin/sh\necho hi\n", Kind.CODE),
        ("notes.txt", "#!/bin/sh\n", Kind.TEXT),
        ("LICENSE", "MIT\n", Kind.TEXT),
    ],
)
def test_kind_of(path: str, text: str, kind: Kind) -> None:
    assert kind_of(path, text) is kind


def test_empty_file_has_no_chunks() -> None:
    assert chunk_text("empty.md", "") == []


def test_small_file_is_one_chunk_without_trailing_newline() -> None:
    chunks = chunk_text("a.py", "x = 1\ny = 2")
    assert chunks == [Chunk("a.py", 1, 2, "x = 1\ny = 2")]
    assert chunks[0].citation == "a.py:1-2"


def test_single_huge_line_is_one_chunk() -> None:
    text = "word " * 200_000
    assert chunk_text("big.txt", text) == [Chunk("big.txt", 1, 1, text)]


def test_crlf_lines_keep_their_carriage_returns() -> None:
    text = "".join(f"line {i}\r\n" for i in range(100))
    chunks = chunk_text("a.txt", text)
    assert len(chunks) > 1
    assert_exact_cover("a.txt", text, chunks)
    assert chunks[0].text.startswith("line 0\r\n")


def test_markdown_is_cut_at_headings() -> None:
    sections = [f"# Part {n}\n\n" + "".join(f"text {n}.{i}\n" for i in range(25)) for n in range(3)]
    text = "\n".join(sections)
    chunks = chunk_text("doc.md", text)
    assert [c.text.splitlines()[0] for c in chunks] == ["# Part 0", "# Part 1", "# Part 2"]
    assert_exact_cover("doc.md", text, chunks)


def test_markdown_headings_inside_fences_are_not_sections() -> None:
    body = "".join(f"echo {i}\n" for i in range(10))
    text = "# Real\n\n```sh\n# not a heading\n" + body + "```\n" + "tail\n" * 30
    chunks = chunk_text("doc.md", text, ChunkSize(lines=20, chars=10_000))
    assert not any(c.text.startswith("# not a heading") for c in chunks)
    assert_exact_cover("doc.md", text, chunks)


def test_long_section_is_cut_at_paragraphs() -> None:
    paragraphs = ["".join(f"p{n} line {i}\n" for i in range(15)) for n in range(4)]
    text = "# One\n\n" + "\n".join(paragraphs)
    chunks = chunk_text("doc.md", text, ChunkSize(lines=35, chars=100_000, target_lines=35))
    assert len(chunks) == 2
    assert all(c.end_line - c.start_line + 1 <= 35 for c in chunks)
    # Cuts fall on paragraph starts, not mid-paragraph.
    assert chunks[1].text.startswith(("p1 line 0", "p2 line 0", "p3 line 0"))
    # With the default target, each paragraph is a passage, the heading with the first.
    chunks = chunk_text("doc.md", text, ChunkSize(lines=35, chars=100_000))
    assert [c.text.splitlines()[0] for c in chunks] == [
        "# One",
        *(f"p{n} line 0" for n in (1, 2, 3)),
    ]


def test_rst_underlined_titles_are_sections() -> None:
    text = "".join(
        f"Title {n}\n========\n\n" + "".join(f"body {n}.{i}\n" for i in range(30)) + "\n"
        for n in range(3)
    )
    chunks = chunk_text("doc.rst", text)
    assert [c.text.splitlines()[0] for c in chunks] == ["Title 0", "Title 1", "Title 2"]


def test_python_definitions_are_chunks() -> None:
    funcs = [
        f"@decorator\ndef f{n}(x):\n"
        + "".join(f"    x += {i}\n" for i in range(20))
        + "    return x\n"
        for n in range(3)
    ]
    text = "import os\n\n\n" + "\n\n".join(funcs)
    chunks = chunk_text("m.py", text)
    starts = [c.text.splitlines()[0] for c in chunks]
    # The one-line import is too small to stand alone; decorators stay with their def.
    assert starts == ["import os", "@decorator", "@decorator"]
    assert "def f0" in chunks[0].text
    assert_exact_cover("m.py", text, chunks)


def test_huge_class_is_cut_at_its_methods() -> None:
    methods = [
        f"    def m{n}(self):\n" + "".join(f"        y = {i}\n" for i in range(15))
        for n in range(6)
    ]
    text = "class Big:\n" + "\n".join(methods)
    chunks = chunk_text("m.py", text)
    assert len(chunks) > 1
    assert all(c.end_line - c.start_line + 1 <= 40 for c in chunks)
    assert all(c.text.lstrip("\n").startswith(("class Big", "    def m")) for c in chunks)


def test_c_like_definitions_after_closing_brace() -> None:
    funcs = [
        f"func f{n}() {{\n" + "".join(f"\tx{i}()\n" for i in range(30)) + "}\n" for n in range(3)
    ]
    text = "".join(funcs)
    chunks = chunk_text("main.go", text)
    assert [c.text.splitlines()[0] for c in chunks] == ["func f0() {", "func f1() {", "func f2() {"]


def test_plain_text_windows_overlap() -> None:
    text = "".join(f"line {i}\n" for i in range(100))
    chunks = chunk_text(
        "notes.txt", text, ChunkSize(lines=40, chars=10_000, overlap=3, target_lines=20)
    )
    assert chunks[0].start_line == 1 and chunks[0].end_line == 20
    assert chunks[1].start_line == 18
    assert_exact_cover("notes.txt", text, chunks)


def test_chunks_respect_the_character_limit() -> None:
    text = "".join("x" * 99 + "\n" for _ in range(100))
    chunks = chunk_text("notes.txt", text, ChunkSize(lines=40, chars=1000, overlap=0))
    assert all(len(c.text) <= 1000 for c in chunks)
    assert_exact_cover("notes.txt", text, chunks)


@pytest.mark.parametrize("field", ["lines", "chars"])
def test_chunk_size_must_be_positive(field: str) -> None:
    with pytest.raises(ChunkSizeError, match=f"{field} must be at least 1"):
        ChunkSize(**{field: 0})


def test_chunk_size_overlap_cannot_be_negative() -> None:
    with pytest.raises(ChunkSizeError, match="overlap"):
        ChunkSize(overlap=-1)


def test_whole_chunk_is_one_passage() -> None:
    assert whole_chunk("memory:7", "") == []
    text = "remember\nthis\n" * 50
    assert whole_chunk("memory:7", text) == [Chunk("memory:7", 1, 100, text)]


def test_chunk_files_keeps_corpus_order() -> None:
    sources = [SourceFile("/b.txt", "b\n"), SourceFile("/a.md", "# a\n")]
    assert [c.path for c in chunk_files(sources)] == ["/b.txt", "/a.md"]
    assert chunk_file(sources[0]) == [Chunk("/b.txt", 1, 1, "b\n")]


MAN_TITLE = "GZIP(1)              General Commands Manual              GZIP(1)"


def _man_page(options: int) -> str:
    """Text shaped like `mandoc -T utf8` output: sections at the margin, options
    indented 7, their paragraphs 14, typographic hyphens."""
    out = [MAN_TITLE + "\n", "\n", "NAME\n"]
    out += ["       gzip \u2010 compress files\n", "\n", "OPTIONS\n"]
    for n in range(options):
        out += [f"       \u2010{n} \u2010\u2010option{n}\n"]
        out += [f"              Paragraph {n} line {i} of the option.\n" for i in range(4 + n % 9)]
        out += ["\n"]
    out += ["SEE ALSO\n", "       zcat(1)\n"]
    return "".join(out)


def test_man_page_option_is_cut_with_its_paragraph() -> None:
    text = _man_page(30)
    chunks = chunk_text("gzip.1.txt", text)
    assert_exact_cover("gzip.1.txt", text, chunks)
    for chunk in chunks:
        first = chunk.text.lstrip("\n").splitlines()[0]
        # Every passage starts at an option, a section, or the title: never mid-paragraph.
        assert first.startswith(("       \u2010", "GZIP(1)", "OPTIONS", "SEE ALSO")), first
    lines = sorted(c.end_line - c.start_line + 1 for c in chunks)
    assert lines[len(lines) // 2] <= 15
    option = next(c for c in chunks if "\u2010\u2010option8\n" in c.text)
    # Its whole paragraph is with it, and the section it is in is its context.
    assert "Paragraph 8 line 11" in option.text
    assert option.context.splitlines() == ["gzip", MAN_TITLE, "OPTIONS"]


def test_small_neighbours_merge_up_to_the_target_only() -> None:
    funcs = "".join(f"def f{n}():\n    return {n}\n\n\n" for n in range(20))
    chunks = chunk_text("m.py", funcs)
    assert all(c.end_line - c.start_line + 1 <= 15 for c in chunks)
    assert len(chunks) > 4


def test_context_names_the_file_and_the_definitions_around() -> None:
    methods = "\n".join(
        f"    def m{n}(self):\n" + "".join(f"        y = {i}\n" for i in range(14))
        for n in range(4)
    )
    text = '"""A module."""\n\n\nclass Big:\n' + methods
    chunks = chunk_text("pkg/big.py", text)
    m2 = next(c for c in chunks if "def m2" in c.text)
    assert m2.context == 'pkg big\n"""A module."""\nclass Big:'
    assert chunk_text("a.md", "# A\n\ntext\n")[0].context == "a"
    assert Chunk("a", 1, 1, "x", "ctx") == Chunk("a", 1, 1, "x")
