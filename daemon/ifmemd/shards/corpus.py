"""Load the files a memory shard holds, from the `paths` of its config.

A path may start with `~`, hold glob wildcards (`*`, `?`, `[...]`) and `**`
(any number of directories), or name a directory, which means every file under
it. As with the shell, wildcards and directories skip hidden names (starting
with `.`) unless the pattern itself names them, or `include_hidden` is set.

Loading never fails on a bad file: binary, undecodable, unreadable, oversized,
special (FIFO, socket, device) and vanished files each become a `Skipped`
warning in the result. Symlinks are followed, but a symlink loop is walked
once, and a file reached by two paths is loaded once. Files come in sorted path
order so the same tree always yields the same corpus and the same digest.

A `Selection` is the same `paths` compiled once, for a shard that keeps its
index up to date: which files it names (`candidates`), which of them lie under
one directory (`under`, when a watched directory changes), whether one path is
named (`matches`), and which directories to watch (`roots`). `read_file`
reads one of them as `load_corpus` would, with the stat it was read at.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import BinaryIO

from ifmemd.shards.ignore import IgnoreRules

DEFAULT_MAX_BYTES = 8 * 1024 * 1024
BINARY_SNIFF_BYTES = 8 * 1024
BYTES_PER_TOKEN = 4

_MAGIC = re.compile(r"[*?[]")
_DIGEST_DOMAIN = b"ifmem-corpus-v1\x00"


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One loaded text file: its absolute path and its whole text."""

    path: str
    text: str


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file (or pattern) that was left out of the corpus, and why."""

    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class CorpusTotals:
    """Size of a corpus, as reported in `shard.ready`."""

    files: int
    lines: int
    bytes: int
    tokens: int


@dataclass(frozen=True)
class Corpus:
    """The files a shard holds in memory, plus what was skipped while loading them."""

    files: tuple[SourceFile, ...] = ()
    skipped: tuple[Skipped, ...] = ()

    @cached_property
    def digest(self) -> str:
        """BLAKE2b-256 (hex) over every path and text, to tell whether the corpus changed."""
        h = hashlib.blake2b(_DIGEST_DOMAIN, digest_size=32)
        for source in self.files:
            path = source.path.encode("utf-8", "surrogateescape")
            text = source.text.encode("utf-8", "surrogatepass")
            h.update(len(path).to_bytes(8, "big"))
            h.update(path)
            h.update(len(text).to_bytes(8, "big"))
            h.update(text)
        return h.hexdigest()

    @cached_property
    def totals(self) -> CorpusTotals:
        """Files, lines, UTF-8 bytes and approximate tokens (bytes / 4)."""
        lines = size = 0
        for source in self.files:
            text = source.text
            lines += text.count("\n") + (1 if text and not text.endswith("\n") else 0)
            size += len(text.encode("utf-8", "surrogatepass"))
        return CorpusTotals(len(self.files), lines, size, size // BYTES_PER_TOKEN)


Opener = Callable[[str], BinaryIO]
Lister = Callable[[str, os.stat_result], None]


def open_file(path: str) -> BinaryIO:
    """Open a file for reading without ever blocking.

    O_NONBLOCK keeps a FIFO from hanging the load; the caller then sees from
    fstat that it is not a regular file and skips it.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags)
    try:
        return os.fdopen(fd, "rb")
    except OSError:
        os.close(fd)
        raise


@dataclass(frozen=True, slots=True)
class ReadFile:
    """One file read for indexing: its bytes, decoded text, and the stat they were read at."""

    path: str
    data: bytes
    text: str
    stat: os.stat_result


def read_file(
    path: str, max_bytes: int = DEFAULT_MAX_BYTES, opener: Opener | None = None
) -> ReadFile | Skipped:
    """Read one file as `load_corpus` does, or say why it is left out."""
    seen: dict[tuple[int, int], str] = {}
    opened: list[tuple[bytes, os.stat_result]] = []
    outcome = _read(path, max_bytes, opener or open_file, seen, opened)
    if isinstance(outcome, Skipped):
        return outcome
    data, st = opened[0]
    return ReadFile(path, data, outcome.text, st)


class Selection:
    """The files a shard's `paths` name, compiled once (see the module docstring)."""

    def __init__(
        self,
        paths: Iterable[str],
        *,
        root: str | None = None,
        include_hidden: bool = False,
        rules: IgnoreRules | None = None,
    ) -> None:
        if isinstance(paths, str):
            # A lone string would otherwise be walked character by character.
            paths = [paths]
        self.include_hidden = include_hidden
        self.rules = rules
        self.specs: list[tuple[str, str, _Pattern]] = []  # (as configured, base, pattern)
        for spec in paths:
            path = os.path.normpath(os.path.join(root or os.getcwd(), os.path.expanduser(spec)))
            if _MAGIC.search(path):
                parts = path.split(os.sep)
                first = next(i for i, part in enumerate(parts) if _MAGIC.search(part))
                base = os.sep.join(parts[:first]) or os.sep
                pattern = _Pattern(tuple(parts[first:]), include_hidden)
            else:
                # A file, or a directory meaning all it holds: told apart when walked.
                base, pattern = path, _Pattern((), include_hidden)
            self.specs.append((path, base, pattern))

    @property
    def fingerprint(self) -> str:
        """What decides which files are named: a walk remembered for another is not reused."""
        rules = self.rules
        settings = None if rules is None else (rules.exclude_lines, rules.respect_ignore_files)
        return repr(([spec for spec, _, _ in self.specs], self.include_hidden, settings))

    def candidates(self, skipped: list[Skipped], listed: Lister | None = None) -> set[str]:
        """Every file the paths name now; what is missing is added to `skipped`.

        `listed` hears of every directory listed (see `_walk_from`).
        """
        found: set[str] = set()
        for spec, base, pattern in self.specs:
            if pattern.parts:
                hits = set(
                    _walk_from(base, pattern, pattern.start(), skipped, self._rule(base), listed)
                )
                if not hits:
                    skipped.append(Skipped(spec, "no file matches this pattern"))
                found |= hits
            elif os.path.isdir(base):
                everything, start = self._everything()
                found.update(_walk_from(base, everything, start, skipped, self._rule(base), listed))
            elif os.path.lexists(base):
                found.add(base)  # a file named itself is never left out by a rule
            else:
                skipped.append(Skipped(base, "no such file or directory"))
        return found

    def roots(self) -> list[str]:
        """The existing directories to watch: each pattern's fixed prefix, or a file's folder."""
        roots = set()
        for _, base, _ in self.specs:
            directory = base if os.path.isdir(base) else os.path.dirname(base)
            if os.path.isdir(directory):
                roots.add(directory)
        # A root inside another is watched through the outer one.
        ordered = sorted(roots)
        return [r for r in ordered if not any(_inside(r, o) for o in ordered if o != r)]

    def matches(self, path: str) -> bool:
        """Whether `path` (absolute, normalised) is one of the files the paths name."""
        return any(
            self._states_at(base, p, path, file=True)
            and (path == base or self.rules is None or not self.rules.ignored_within(path, base))
            for _, base, p in self.specs
        )

    def under(
        self,
        directory: str,
        skipped: list[Skipped],
        listed: Lister | None = None,
        descend: Callable[[str], bool] | None = None,
    ) -> set[str]:
        """The files the paths name under `directory` (one that appeared, say).

        `listed` and `descend` as for `_walk_from`.
        """
        found: set[str] = set()
        for _, base, pattern in self.specs:
            at = self._states_at(base, pattern, directory, file=False)
            if at is None:
                continue
            if self.rules is not None and self.rules.ignored_within(directory, base, is_dir=True):
                continue  # the directory itself, or one above it, is left out
            current, states = at
            found.update(
                _walk_from(directory, current, states, skipped, self._rule(base), listed, descend)
            )
        return found

    def _rule(self, base: str) -> Callable[[str, bool], bool] | None:
        """What the walk under `base` leaves out by rule."""
        rules = self.rules
        if rules is None:
            return None
        return lambda path, is_dir: rules.ignored(path, base, is_dir=is_dir)

    def _states_at(
        self, base: str, pattern: _Pattern, path: str, *, file: bool
    ) -> tuple[_Pattern, frozenset[int]] | None:
        """The match state at `path` under `base`, or None when nothing there can match.

        For a file, not None only when it is matched itself.
        """
        if not pattern.parts:
            # A plain path: that file, or everything in that directory.
            if path == base:
                return (pattern, pattern.start()) if file else self._everything()
            if not _inside(path, base):
                return None
            pattern, names = _Pattern(("**",), self.include_hidden), _names(base, path)
        elif _inside(path, base) or path == base:
            names = _names(base, path)
        else:
            return None
        everything = _Pattern(("**",), self.include_hidden)
        current, states = pattern, pattern.start()
        for i, name in enumerate(names):
            states = current.step(states, name)
            if not states:
                return None
            if current.complete(states) and i < len(names) - 1:
                # A directory matched: everything under it is named.
                current, states = everything, everything.start()
        if file:
            return (current, states) if current.complete(states) else None
        if current.complete(states):
            return everything, everything.start()
        return current, states

    def _everything(self) -> tuple[_Pattern, frozenset[int]]:
        everything = _Pattern(("**",), self.include_hidden)
        return everything, everything.start()


def _inside(path: str, directory: str) -> bool:
    return path.startswith(directory.rstrip(os.sep) + os.sep)


def _names(base: str, path: str) -> list[str]:
    rel = os.path.relpath(path, base)
    return [] if rel == "." else rel.split(os.sep)


def load_corpus(
    paths: Iterable[str],
    *,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    root: str | None = None,
    include_hidden: bool = False,
    opener: Opener = open_file,
) -> Corpus:
    """Load every text file named by `paths` into a `Corpus`.

    Relative paths are taken from `root` (the current directory by default).
    Files larger than `max_bytes` (None: `DEFAULT_MAX_BYTES`) are skipped.
    `opener` is how files are opened; tests pass one that fails.
    """
    if max_bytes is None:
        max_bytes = DEFAULT_MAX_BYTES
    if isinstance(paths, str):
        # A lone string would otherwise be walked character by character.
        paths = [paths]
    skipped: list[Skipped] = []
    candidates = Selection(paths, root=root, include_hidden=include_hidden).candidates(skipped)
    files: list[SourceFile] = []
    seen: dict[tuple[int, int], str] = {}
    for path in sorted(candidates, key=_preference):
        outcome = _read(path, max_bytes, opener, seen)
        (files if isinstance(outcome, SourceFile) else skipped).append(outcome)
    files.sort(key=lambda f: f.path)
    skipped.sort(key=lambda s: (s.path, s.reason))
    return Corpus(tuple(files), tuple(skipped))


def _preference(path: str) -> tuple[bool, int, str]:
    """Which of several paths to one file is kept: not a symlink, then the shortest."""
    return (os.path.islink(path), path.count(os.sep), path)


class _Pattern:
    """A path pattern split into components, matched one directory level at a time.

    The match state is the set of pattern positions still possible; `**`
    consumes any number of names. This lets the walk prune directories no
    match can come from, and notice when a directory itself matches.
    """

    def __init__(self, parts: tuple[str, ...], include_hidden: bool) -> None:
        self.parts = parts
        self.include_hidden = include_hidden
        # Per part: None for `**`, else a test of one name (compiled once: the
        # walk steps every entry of a large tree through this).
        self._tests = [None if part == "**" else self._test(part) for part in parts]
        self._closures: dict[frozenset[int], frozenset[int]] = {}

    def start(self) -> frozenset[int]:
        return self._closure(frozenset({0}))

    def step(self, states: frozenset[int], name: str) -> frozenset[int]:
        nxt: set[int] = set()
        hidden = name.startswith(".") and not self.include_hidden
        for i in states:
            if i == len(self.parts):
                continue
            test = self._tests[i]
            if test is None:
                if not hidden:
                    nxt.add(i)
            elif test(name):
                nxt.add(i + 1)
        return self._closure(frozenset(nxt))

    def complete(self, states: frozenset[int]) -> bool:
        return len(self.parts) in states

    def _closure(self, states: frozenset[int]) -> frozenset[int]:
        closed = self._closures.get(states)
        if closed is None:
            grown = set(states)
            todo = list(states)
            while todo:
                i = todo.pop()
                if i < len(self.parts) and self.parts[i] == "**" and i + 1 not in grown:
                    grown.add(i + 1)
                    todo.append(i + 1)
            closed = self._closures[states] = frozenset(grown)
        return closed

    def _test(self, part: str) -> Callable[[str], bool]:
        if not _MAGIC.search(part):
            return part.__eq__
        match = re.compile(fnmatch.translate(part)).match
        if self.include_hidden or part.startswith("."):
            return lambda name: match(name) is not None
        return lambda name: not name.startswith(".") and match(name) is not None


def _walk_from(
    base: str,
    pattern: _Pattern,
    states: frozenset[int],
    skipped: list[Skipped],
    left_out: Callable[[str, bool], bool] | None = None,
    listed: Lister | None = None,
    descend: Callable[[str], bool] | None = None,
) -> Iterator[str]:
    """Yield paths under `base` matching `pattern` from match state `states`.

    A directory is entered once per (inode, match state), which ends symlink
    loops and keeps a tree linked in twice from being walked twice. What
    `left_out(path, is_dir)` says is ignored is not yielded, nor walked.
    `listed(path, stat)` hears of each directory listed, with its stat from
    before the listing; subdirectories `descend` refuses are not entered.
    """
    everything = _Pattern(("**",), pattern.include_hidden)
    stack = [(base, pattern, states)]
    # Symlinked directories wait until the real tree is walked, so a file is
    # found under its real directory rather than through an alias.
    linked: list[tuple[str, _Pattern, frozenset[int]]] = []
    entered: set[tuple[int, int, tuple[str, ...], frozenset[int]]] = set()
    while stack or linked:
        directory, current, states = stack.pop() if stack else linked.pop()
        try:
            st = os.stat(directory)
            key = (st.st_dev, st.st_ino, current.parts, states)
            if key in entered:
                continue
            entered.add(key)
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
            if listed is not None:
                listed(directory, st)
        except FileNotFoundError:
            continue
        except OSError as e:
            skipped.append(Skipped(directory, f"cannot list directory: {_why(e)}"))
            continue
        for entry in entries:
            nxt = current.step(states, entry.name)
            if not nxt:
                continue
            is_dir = _is_dir(entry)
            if left_out is not None and left_out(entry.path, is_dir):
                continue
            shown = _unnamable(entry.path)
            if shown is not None:
                # No citation could name it, nor the index hold its path (nor anything under it).
                kind = "directory" if is_dir else "file"
                skipped.append(Skipped(shown, f"{kind} name is not valid UTF-8"))
                continue
            if is_dir:
                if descend is not None and not descend(entry.path):
                    continue
                todo = linked if entry.is_symlink() else stack
                if current.complete(nxt):
                    todo.append((entry.path, everything, everything.start()))
                else:
                    todo.append((entry.path, current, nxt))
            elif current.complete(nxt):
                yield entry.path


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def same_file_as(path: str) -> str:
    """Why a file is left out when `path` is the same file (a hard link, a symlink):
    stored with it, and how the index finds those left out for `path`."""
    return f"same file as {path}"


def _unnamable(path: str) -> str | None:
    """None for a path that is valid UTF-8; else how to show it (its undecodable
    bytes escaped): the file system gave bytes that name nothing we can cite."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return path.encode("utf-8", "backslashreplace").decode("utf-8")
    return None


def _read(
    path: str,
    max_bytes: int,
    opener: Opener,
    seen: dict[tuple[int, int], str],
    opened: list[tuple[bytes, os.stat_result]] | None = None,
) -> SourceFile | Skipped:
    """Read one candidate file, or say why it is left out."""
    try:
        with opener(path) as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                return Skipped(path, "not a regular file")
            if st.st_size > max_bytes:
                return _too_big(path, st.st_size, max_bytes)
            identity = (st.st_dev, st.st_ino)
            if identity in seen:
                return Skipped(path, same_file_as(seen[identity]))
            seen[identity] = path
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        reason = "dangling symlink" if os.path.islink(path) else "vanished while loading"
        return Skipped(path, reason)
    except OSError as e:
        return Skipped(path, f"cannot read: {_why(e)}")
    if len(data) > max_bytes:
        return _too_big(path, len(data), max_bytes)
    if opened is not None:
        opened.append((data, st))
    return _decode(path, data)


def _decode(path: str, data: bytes) -> SourceFile | Skipped:
    """Decode strictly: a file that is not clean UTF-8 is not text we can cite."""
    if b"\x00" in data[:BINARY_SNIFF_BYTES]:
        return Skipped(path, "binary (NUL byte in the first 8 KiB)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        return Skipped(path, f"binary or not UTF-8 (invalid byte at offset {e.start})")
    return SourceFile(path, text)


def _too_big(path: str, size: int, max_bytes: int) -> Skipped:
    return Skipped(path, f"too large ({size} bytes; the limit is {max_bytes})")


def _why(error: OSError) -> str:
    return error.strerror or str(error)
