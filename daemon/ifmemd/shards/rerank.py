"""Second-stage ranking of a shard's bm25 candidates: definitions first, tests last.

bm25 ranks a passage by how often it holds the question's rare words, so the
tests of a function, which name it in every line, outrank the function itself
("where is mkdtemp implemented" found `test_tempfile.py` first). The index
asks FTS5 for a few dozen candidates (and for the passages defining a name
the question uses, wherever bm25 put them) and this module reorders them:
first the passages that define a name the question uses (`def`/`class` at
any depth, an assignment at the left margin, a C `#define`), then those
holding, as written, a name the question writes as code (`PROMPT_COMMAND`,
`basicConfig`: the tokenizer cuts the first into two common words), then
the rest, then the passages of test files (`test_*.py`, `tests/…`,
`conftest.py`…) unless the question is about tests; by bm25 within each
group. Prose defines a thing in words: for "what is X?", the few passages
saying "X is", "X are" or "what is X" (`subject_asked`; the index finds
them by phrase) count as its definitions. A name defined in many passages
("run", "path") is too common to mean one of them and is ignored.

Which passages define which names is worked out once per passage, when it is
stored (`defined_names`, kept in the index's `definition` table by
`ifmemd.shards.store`), so a change to a file costs a scan of that file's
passages, not of the shard, and no text is held to answer it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

# How many bm25 candidates are reordered, whatever `k` is.
CANDIDATES = 32
# A name defined in more passages than this ("name", "path", "run") says
# nothing about which one the question means.
MAX_DEFINITIONS = 4
MIN_NAME_CHARS = 3

# What a definition looks like (part of the index's format: it decides what is
# stored), each form within one line. The repeats are possessive: what follows
# each could never match what it gave back, so they match what greedy ones
# would, without scanning an indentation twice on the way to failing.
_DEFINITION_FORMS = (
    r"[ \t]*+(?:async[ \t]++)?(?:def|class)[ \t]++([A-Za-z_]\w*+)",
    r"([A-Za-z_]\w*+)[ \t]*+(?::[^=\n]*+)?=(?!=)",
    r"[ \t]*+#[ \t]*+define[ \t]++([A-Za-z_]\w*+)",
)
DEFINES = re.compile("|".join(f"^{form}" for form in _DEFINITION_FORMS), re.M)
# The same forms after a line break, for a whole file: the engine skips from
# one "\n" to the next in C, where `^` would be tried at every character (3x
# faster over the standard library).
_DEFINES_AFTER_BREAK = re.compile("\n(?:{})".format("|".join(_DEFINITION_FORMS)))
_TEST_PATH = re.compile(
    r"(?:^|/)(?:tests?|testing)/|(?:^|/)test_[^/]*$|_tests?\.py$|(?:^|/)conftest\.py$"
)
# A name as typed: `shutil.which`, `mkdtemp`, `JSONDecodeError`.
_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
# A name written as code: with an underscore, or a capital inside a word.
_CODE_NAME = re.compile(r"\b(?:[A-Za-z]\w*_\w*[A-Za-z0-9]|[a-z]+[A-Z]\w*|[A-Z]{2,}[a-z]\w*)\b")
_ABOUT_TESTS = re.compile(r"\b(?:test|tests|testing|tested|unittest|pytest)\b", re.I)


# "What is a dpkg trigger?", "what are capabilities": a question asking what a thing is.
_WHAT_IS = re.compile(
    r"^\s*what\s+(?:is|are)\s+(?:an?\s+|the\s+)?"
    r"([A-Za-z0-9_][\w.+-]*(?:\s+[\w.+-]+){0,3})(?<!\sfor)\s*\??\s*$",
    re.I,
)


def subject_asked(question: str) -> str | None:
    """The thing a "what is X?" question asks about (X, at most four words), or None."""
    match = _WHAT_IS.match(question)
    return match.group(1) if match else None


def defined_names(text: str) -> set[str]:
    """The names (lower-cased) a passage defines."""
    return {next(filter(None, m.groups())).lower() for m in DEFINES.finditer(text)}


def definitions(text: str) -> list[tuple[int, str]]:
    """(line, name lower-cased) of each definition in a whole file's text, lines from 1.

    Each form lies within one line, so the names `defined_names` finds in a
    passage (a run of whole lines) are those found here on its lines.
    """
    found: list[tuple[int, str]] = []
    line, at = 1, 0
    for m in _DEFINES_AFTER_BREAK.finditer("\n" + text):
        start = m.start()  # where its line starts in `text`
        line += text.count("\n", at, start)
        at = start
        found.append((line, m.group(m.lastindex).lower()))  # type: ignore[arg-type]
    return found


@functools.lru_cache(maxsize=65536)
def is_test(path: str) -> bool:
    """Whether `path` is a test file."""
    return _TEST_PATH.search(path) is not None


def about_tests(question: str) -> bool:
    """Whether the question asks about tests (then tests are not ranked down)."""
    return _ABOUT_TESTS.search(question) is not None


def code_names(question: str) -> list[str]:
    """The names (lower-cased) the question writes as code: `PROMPT_COMMAND`, `lru_cache`."""
    return sorted({m.group().lower() for m in _CODE_NAME.finditer(question)})


def names_in(question: str, stopwords: frozenset[str]) -> set[str]:
    """The words of a question (lower-cased) that may name code.

    A dotted name's parts always count (`shutil.which`: "which" too); a lone
    word counts unless it is a stopword or shorter than MIN_NAME_CHARS.
    """
    out: set[str] = set()
    for match in _NAME.finditer(question):
        parts = match.group().lower().split(".")
        if len(parts) > 1:
            out.update(p for p in parts if len(p) >= MIN_NAME_CHARS)
        elif len(parts[0]) >= MIN_NAME_CHARS and parts[0] not in stopwords:
            out.add(parts[0])
    return out


def rerank(
    ranked: list[tuple[int, float]],
    where: Mapping[int, tuple[Any, ...]],
    defining: set[int],
    written: list[str],
    penalize_tests: bool,
) -> list[tuple[int, float]]:
    """(rowid, score) reordered: definitions, then passages holding a name of
    `written` as written, then the rest, then tests; by score (bm25, higher
    is better) within each. `where` gives each rowid's (path, start line, end
    line, text, …)."""

    def tier(rowid: int) -> int:
        passage = where[rowid]
        if rowid in defining:
            group = 0
        elif written:
            text = passage[3].lower()  # once, not once a name
            group = 1 if any(name in text for name in written) else 2
        else:
            group = 2
        return group + (3 if penalize_tests and is_test(passage[0]) else 0)

    return sorted(ranked, key=lambda item: (tier(item[0]), -item[1]))
