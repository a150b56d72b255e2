"""Split a file's text into passages a shard can index and cite.

A passage (`Chunk`) is always a run of whole lines, so it can be cited as
`path:start-end` and its text is exactly those lines of the file. Files are cut
along their own structure: Markdown and reStructuredText by sections, then
paragraphs; source code by top-level definitions, then nested ones (at each
level, the blocks at the shallowest indentation), then blank-line blocks;
other text the same way as code, which suits rendered man pages (sections at
the margin, options indented under them, their paragraphs indented further);
text without blank lines in fixed windows with a little overlap. A unit of
structure that fits the upper size stays whole; small neighbours are merged
up to a smaller target size, so a passage is about a dozen lines and bm25 does
not see lone stubs.

Invariants, for any text: every line is in at least one chunk, no chunk is
empty, chunks come in file order, and `text == "".join(lines[start-1:end])`.
Lines end at `\\n` only (a `\\r` before it stays part of the line), which is how
editors and `sed -n` number them.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from itertools import accumulate, compress, count, islice, pairwise, repeat
from operator import add, gt, not_, sub
from typing import Protocol

from ifmemd.errors import IfmemError


class ChunkSizeError(IfmemError, ValueError):
    """Raised when a chunk size setting is not a usable positive number."""

    def __init__(self, field: str, value: int, minimum: int) -> None:
        self.field = field
        self.value = value
        super().__init__(f"chunk size: {field} must be at least {minimum}, got {value}")


@dataclass(frozen=True, slots=True)
class ChunkSize:
    """How large a chunk may grow before it is cut.

    `lines` and `chars` are both upper bounds (a single line longer than
    `chars` still makes one chunk: a chunk is never smaller than a line): one
    unit of the file's structure (a function, a section, a man page's option
    with its paragraphs) that fits them is one chunk. `target_lines` and
    `target_chars` are the size small neighbouring units are merged up to,
    and that windows over unstructured text have: a reader cites and reads
    a dozen lines, not forty. `overlap` is how many lines consecutive windows
    share.
    """

    lines: int = 40
    chars: int = 2048
    overlap: int = 3
    target_lines: int = 15
    target_chars: int = 1024

    def __post_init__(self) -> None:
        for field, minimum in (
            ("lines", 1),
            ("chars", 1),
            ("overlap", 0),
            ("target_lines", 1),
            ("target_chars", 1),
        ):
            value = getattr(self, field)
            if value < minimum:
                raise ChunkSizeError(field, value, minimum)


DEFAULT_SIZE = ChunkSize()


@dataclass(frozen=True, slots=True)
class Chunk:
    """One passage: the exact text of lines `start_line`..`end_line` (1-based, inclusive).

    `context` says where the passage sits: its file's name and the first lines
    of the sections and definitions around it ("GZIP(1)", "OPTIONS", "class
    Foo:"). It is indexed with the passage, so a short passage is still found
    by the words of its heading, but it is not part of the passage's text.
    """

    path: str
    start_line: int
    end_line: int
    text: str
    # Not part of what the passage is: two chunks of the same lines are equal.
    context: str = dataclasses.field(default="", compare=False)

    @property
    def citation(self) -> str:
        """The passage as it is cited in answers: `path:start-end`."""
        return f"{self.path}:{self.start_line}-{self.end_line}"


class HasPathAndText(Protocol):
    """Anything with a path and its text, such as `ifmemd.shards.corpus.SourceFile`."""

    @property
    def path(self) -> str: ...

    @property
    def text(self) -> str: ...


class Kind(Enum):
    """Which structure a file is cut along."""

    MARKDOWN = "markdown"
    RST = "rst"
    CODE = "code"
    TEXT = "text"


MARKDOWN_SUFFIXES = frozenset({".md", ".markdown", ".mdown", ".mkd", ".mdx"})
RST_SUFFIXES = frozenset({".rst", ".rest"})
CODE_SUFFIXES = frozenset(
    {
        ".py", ".pyi", ".c", ".h", ".cc", ".cpp", ".cxx", ".hh", ".hpp", ".hxx",
        ".java", ".kt", ".kts", ".scala", ".swift", ".cs", ".m", ".mm",
        ".js", ".mjs", ".cjs", ".jsx", ".ts", ".mts", ".cts", ".tsx",
        ".go", ".rs", ".zig", ".d", ".dart", ".php", ".rb", ".lua", ".pl", ".pm",
        ".sh", ".bash", ".zsh", ".ksh", ".fish",
    }
)  # fmt: skip


def kind_of(path: str, text: str) -> Kind:
    """Decide how to cut a file, by its suffix, or a `#!` line for scripts without one."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix in MARKDOWN_SUFFIXES:
        return Kind.MARKDOWN
    if suffix in RST_SUFFIXES:
        return Kind.RST
    if suffix in CODE_SUFFIXES or (not suffix and text.startswith("#!")):
        return Kind.CODE
    return Kind.TEXT


def split_lines(text: str) -> list[str]:
    """Cut text into lines, each keeping its `\\n`; the last may lack one.

    Unlike `str.splitlines`, only `\\n` ends a line: form feeds, `\\x1c`,
    U+2028 and friends stay inside the line so line numbers agree with editors.
    """
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def chunk_text(path: str, text: str, size: ChunkSize = DEFAULT_SIZE) -> list[Chunk]:
    """Cut one file's text into chunks along its structure (see the module docstring)."""
    return [Chunk(path, *row) for row in chunk_rows(path, text, size)]


def chunk_rows(
    path: str, text: str, size: ChunkSize = DEFAULT_SIZE
) -> list[tuple[int, int, str, str]]:
    """`chunk_text` as plain (start_line, end_line, text, context) tuples, for a bulk load."""
    plan = _Plan(text, size, kind_of(path, text))
    if not plan.lines:
        return []
    name = _file_label(path)
    offsets = plan.offsets
    return [
        (lo + 1, hi, text[offsets[lo] : offsets[hi]], plan.context(name, lo))
        for lo, hi in plan.ranges()
    ]


def chunk_file(source: HasPathAndText, size: ChunkSize = DEFAULT_SIZE) -> list[Chunk]:
    """Cut one loaded file (an `ifmemd.shards.corpus.SourceFile`) into chunks."""
    return chunk_text(source.path, source.text, size)


def chunk_files(sources: Iterable[HasPathAndText], size: ChunkSize = DEFAULT_SIZE) -> list[Chunk]:
    """Cut every file of a corpus into chunks, in corpus order."""
    return [chunk for source in sources for chunk in chunk_file(source, size)]


def whole_chunk(path: str, text: str) -> list[Chunk]:
    """Make one chunk of a whole text, as for a remembered item; none if the text is empty."""
    lines = split_lines(text)
    if not lines:
        return []
    return [Chunk(path, 1, len(lines), text)]


# A head line in a chunk's context is cut to this many characters.
CONTEXT_LINE_CHARS = 100

# A splitter proposes where units start inside lines[lo:hi] (exclusive of lo).
Splitter = Callable[[int, int], list[int]]

_ATX_HEADING = re.compile(r" {0,3}#{1,6}(?:[ \t]|\r?$)")
_FENCE = re.compile(r" {0,3}(```|~~~)")
_MD_UNDERLINE = re.compile(r" {0,3}(?:=+|-{2,})[ \t]*\r?$")
_RST_ADORNMENT = re.compile(r"([=\-~^\"'`#*+:.!$%&,/;<>?@\\_|])\1{2,}[ \t]*\r?$")
_CLOSER = re.compile(r"(?:[})\]]|(?:end|fi|done|esac|else|elif|except|finally|catch)\b)")
# A closing line at the margin (`_CLOSER` after a line break), searched for in a
# whole text: a literal first character lets the regex engine skip ahead in C.
_LINE_CLOSER = re.compile(rf"\n(?={_CLOSER.pattern})")
_DEFINITION = re.compile(
    r"(?:(?:export|default|pub(?:\([^)]*\))?|public|private|protected|static|async|"
    r"unsafe|extern|abstract|final|inline|override|local)\s+)*"
    r"(?:(?:def|class|function|fn|func|struct|enum|union|trait|impl|interface|type|"
    r"module|mod|namespace|template)\b|macro_rules!)"
)


class _Plan:
    """Works out the line ranges of one file's chunks."""

    def __init__(self, text: str, size: ChunkSize, kind: Kind) -> None:
        # The lines without their "\n", each a plain split in C (a first build
        # cuts millions of lines: no Python loop runs once per line). The
        # rules below give the same answer with or without the "\n".
        lines = text.split("\n")
        if not lines[-1]:
            lines.pop()
        self.lines = lines
        self.text = text
        self.size = size
        self.kind = kind
        # Where each line starts in `text`: the lengths before it, and a "\n" each.
        offsets = list(map(add, accumulate(map(len, lines), initial=0), count()))
        offsets[-1] = min(offsets[-1], len(text))  # the last line may lack its "\n"
        self.offsets = offsets
        self.blank = list(map(not_, map(str.strip, lines)))
        self.target_lines = min(size.lines, size.target_lines)
        self.target_chars = min(size.chars, size.target_chars)
        # Lines after a blank line that are not blank (found once, used by several splitters).
        after_blank = map(gt, self.blank, self.blank[1:])
        self.block_starts = list(compress(range(1, len(lines)), after_blank))
        self._indents: list[int] = []
        self._contexts: dict[tuple[tuple[int, ...], int], str] = {}
        self.splitters: list[Splitter] = []
        # Chunk start → first lines of the units around it, outermost first.
        self.heads: dict[int, tuple[int, ...]] = {}

    def ranges(self) -> list[tuple[int, int]]:
        """Half-open, 0-based line ranges covering the whole file."""
        n = len(self.lines)
        if n == 0:
            return [(0, 0)]
        self.splitters = self._make_splitters()
        # Sections and definitions are cited apart even when the whole file
        # would fit in one chunk: a citation should point at the part that answers.
        return self._split(0, n, 0, whole=False)

    def _make_splitters(self) -> list[Splitter]:
        """The file's structure, outermost first."""
        if self.kind in (Kind.CODE, Kind.TEXT):
            top = self._top_level_starts() if self.kind is Kind.CODE else self._margin_starts()
            return [_fixed(top), self._nested_starts, _fixed(self._paragraph_starts(set()))]
        fenced = self._fenced_lines() if self.kind is Kind.MARKDOWN else set()
        return [_fixed(self._heading_starts(fenced)), _fixed(self._paragraph_starts(fenced))]

    def _fits(self, lo: int, hi: int) -> bool:
        """Whether lines[lo:hi] may be one chunk (the upper bounds)."""
        return hi - lo <= self.size.lines and self.offsets[hi] - self.offsets[lo] <= self.size.chars

    def context(self, name: str, lo: int) -> str:
        """The context of the chunk starting at `lo`: `name`, then the heads around it."""
        heads = self.heads.get(lo, ())
        # Heads come outermost first, in file order: those before `lo` are a prefix.
        key = (heads, bisect.bisect_left(heads, lo))
        context = self._contexts.get(key)
        if context is None:
            texts = [self.lines[h].strip()[:CONTEXT_LINE_CHARS] for h in heads[: key[1]]]
            context = self._contexts[key] = "\n".join([name, *texts])
        return context

    def _split(
        self, lo: int, hi: int, level: int, whole: bool = True, heads: tuple[int, ...] = ()
    ) -> list[tuple[int, int]]:
        """Cut lines[lo:hi] by the first splitter from `level` on that finds units.

        With `whole`, a range that fits is kept as one piece without looking inside.
        `heads` are the first lines of the units lines[lo:hi] lies in.
        """
        if whole and self._fits(lo, hi):
            self.heads[lo] = heads
            return [(lo, hi)]
        fits = self._fits
        with contextlib.suppress(ValueError):  # all blank: no head line
            heads = (*heads, self.blank.index(False, lo, hi))
        for depth in range(level, len(self.splitters)):
            starts = self.splitters[depth](lo, hi)
            if not starts:
                continue
            bounds = [lo, *starts, hi]
            pieces: list[tuple[int, int]] = []
            # Nesting goes as deep as the indentation does (a class, its
            # methods, their blocks): that splitter applies again to its pieces.
            inner = depth if self.splitters[depth] == self._nested_starts else depth + 1
            for a, b in pairwise(bounds):
                # A piece that fits is kept whole (as `_split` would, without the call).
                if fits(a, b):
                    self.heads[a] = heads
                    pieces.append((a, b))
                else:
                    pieces.extend(self._split(a, b, inner, heads=heads))
            # Only the outermost structure (sections, top-level definitions)
            # is worth keeping apart; deeper pieces merge freely.
            strong = set(starts) if depth == 0 else set()
            return self._merge(pieces, strong)
        windows = self._windows(lo, hi, self.size.overlap if self.kind is Kind.TEXT else 0)
        for start, _ in windows:
            self.heads[start] = heads
        return windows

    def _merge(self, pieces: list[tuple[int, int]], strong: set[int]) -> list[tuple[int, int]]:
        """Join neighbouring pieces while they fit the target size; a small piece
        (a stub: an import line, a heading) also joins a neighbour up to the upper
        bounds, and is the only one to cross a strong start."""
        # The sizes written out (this runs for every piece): a stub is a piece under
        # a third of the target lines and a quarter of its characters.
        offsets = self.offsets
        max_lines, max_chars = self.size.lines, self.size.chars
        target_lines, target_chars = self.target_lines, self.target_chars
        small_lines, small_chars = max(2, target_lines // 3), target_chars // 4
        merged: list[tuple[int, int]] = []
        cur_lo, cur_hi = pieces[0]
        for lo, hi in islice(pieces, 1, None):
            size = offsets[hi] - offsets[cur_lo]
            stub = (
                cur_hi - cur_lo < small_lines
                and offsets[cur_hi] - offsets[cur_lo] < small_chars
                and hi - cur_lo <= max_lines
                and size <= max_chars
            )
            if cur_hi == lo and (
                stub or (lo not in strong and hi - cur_lo <= target_lines and size <= target_chars)
            ):
                cur_hi = hi
            else:
                merged.append((cur_lo, cur_hi))
                cur_lo, cur_hi = lo, hi
        merged.append((cur_lo, cur_hi))
        return merged

    def _windows(self, lo: int, hi: int, overlap: int) -> list[tuple[int, int]]:
        """Fixed windows over lines[lo:hi], each of the target size, sharing `overlap` lines."""
        out: list[tuple[int, int]] = []
        offsets, target_lines, target_chars = self.offsets, self.target_lines, self.target_chars
        start = lo
        while True:
            # The longest window from `start` within the target size (at least a line).
            last = bisect.bisect_right(offsets, offsets[start] + target_chars, start) - 1
            end = max(start + 1, min(hi, start + target_lines, last))
            out.append((start, end))
            if end >= hi:
                return out
            # Overlap never exceeds a quarter of a window, so long lines
            # cannot make every line appear in many windows.
            start = max(start + 1, end - min(overlap, (end - start) // 4))

    def _heading_starts(self, fenced: set[int]) -> list[int]:
        """Lines where a section starts: ATX headings, or the title above an underline."""
        starts: set[int] = set()
        lines, blank = self.lines, self.blank
        markdown = self.kind is Kind.MARKDOWN
        for i, line in enumerate(lines):
            if i in fenced or blank[i]:
                continue
            if markdown and _ATX_HEADING.match(line):
                starts.add(i)
                continue
            underline = _MD_UNDERLINE if markdown else _RST_ADORNMENT
            if i == 0 or blank[i - 1] or (i - 1) in fenced or not underline.match(line):
                continue
            title = i - 1
            # An rst overline above the title belongs to the same heading.
            if not markdown and title >= 1 and lines[title - 1].strip() == line.strip():
                title -= 1
            starts.add(title)
        starts.discard(0)
        return sorted(starts)

    def _paragraph_starts(self, fenced: set[int]) -> list[int]:
        """Lines that start a block after a blank line (never inside a fenced block)."""
        return [i for i in self.block_starts if i not in fenced]

    def _fenced_lines(self) -> set[int]:
        """Lines inside Markdown code fences (after the opening fence line)."""
        inside: set[int] = set()
        fence: str | None = None
        for i, line in enumerate(self.lines):
            match = _FENCE.match(line)
            if fence is None:
                if match:
                    fence = match.group(1)
            else:
                inside.add(i)
                if match and match.group(1) == fence:
                    fence = None
        return inside

    def _top_level_starts(self) -> list[int]:
        """Lines where a top-level unit of code starts.

        An unindented line after a blank line starts a unit (so comments and
        decorators above a definition stay with it); so does a definition
        keyword right after an unindented closing brace, as in `}\\nfunc f()`.
        """
        lines, blank = self.lines, self.blank

        def opens(i: int) -> bool:
            line = lines[i]
            return line[0] not in " \t" and not _CLOSER.match(line)

        starts = [i for i in self.block_starts if opens(i)]
        # Closing lines at the margin, found by one regex search over the text.
        closers = [0] if lines[0] and _CLOSER.match(lines[0]) else []
        closers += [
            bisect.bisect_left(self.offsets, m.end()) for m in _LINE_CLOSER.finditer(self.text)
        ]
        after = [
            i
            for i in (c + 1 for c in closers)
            if i < len(lines) and not blank[i] and opens(i) and _DEFINITION.match(lines[i])
        ]
        return sorted([*starts, *after]) if after else starts

    def _margin_starts(self) -> list[int]:
        """Lines of plain text at the left margin after a blank line: a man page's
        sections, a text's headings or unindented paragraphs."""
        lines = self.lines
        return [i for i in self.block_starts if lines[i][0] not in " \t"]

    def _nested_starts(self, lo: int, hi: int) -> list[int]:
        """Inside one big unit: blocks at its shallowest inner indentation after a blank line."""
        if not self._indents:
            lines = self.lines
            stripped = map(str.lstrip, lines, repeat(" \t"))
            self._indents = list(map(sub, map(len, lines), map(len, stripped)))
        indents, blank = self._indents, self.blank
        filled = map(not_, blank[lo + 1 : hi])
        inner = min(compress(indents[lo + 1 : hi], filled), default=None)
        if inner is None:
            return []
        starts = self.block_starts
        inside = starts[bisect.bisect_right(starts, lo) : bisect.bisect_left(starts, hi)]
        return [i for i in inside if indents[i] == inner]


def _file_label(path: str) -> str:
    """A file as its context names it: its last two path parts, without extensions
    ("apt/README", "logging/__init__", "commands/gzip")."""
    parts = path.replace("\\", "/").rstrip("/").split("/")[-2:]
    return " ".join(part.split(".", 1)[0] or part for part in parts)


def _fixed(starts: list[int]) -> Splitter:
    """A splitter over unit starts found once for the whole file."""

    def within(lo: int, hi: int) -> list[int]:
        return starts[bisect.bisect_right(starts, lo) : bisect.bisect_left(starts, hi)]

    return within
