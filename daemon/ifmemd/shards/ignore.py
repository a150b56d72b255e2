"""Which files a shard leaves out by rule: `.gitignore`, `.ignore` and its own `exclude`.

As ripgrep does: a `.gitignore` counts inside a git repository (a directory
holding `.git`, here or above), as does the repository's `.git/info/exclude`;
a `.ignore` counts anywhere. Each file's patterns apply to the paths under its
own directory, a deeper file's over a shallower one's, and within a file the
last matching pattern wins (so `!keep.log` re-includes). The files above a
shard's root count too, up to the repository's top (for `.ignore`, up to the
root itself). A directory left out is not walked.

`exclude` (per shard) holds patterns of the same syntax, relative to each of
the shard's roots, which win over every ignore file:
`exclude = ["**/node_modules/**", "*.min.js"]`.
`respect_gitignore = false` turns the ignore files off (`exclude` still applies).

Parsed with `pathspec` (its `GitIgnoreSpec` follows git's own matching rules,
including the cases where git differs from a plain reading of gitignore(5));
it is the parser black, pre-commit and hatch rely on.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import pathspec

IGNORE_FILES = (".gitignore", ".ignore")
_GIT_ONLY = ".gitignore"
# The repository's own excludes: not in the tree a shard walks (inside .git).
EXCLUDE_FILE = os.path.join(".git", "info", "exclude")
# The signature recorded for a repository's exclude file that is not there: a
# walk never lists .git, so only this tells a later start that one was made.
ABSENT = ""


class IgnoreRules:
    """Ignore files and `exclude` patterns for paths under some roots; cached per directory."""

    def __init__(self, exclude: Iterable[str] = (), *, respect_ignore_files: bool = True) -> None:
        exclude = list(exclude)
        self.exclude_lines = tuple(exclude)
        self.exclude = pathspec.GitIgnoreSpec.from_lines(exclude) if exclude else None
        self.respect_ignore_files = respect_ignore_files
        self._specs: dict[str, list[tuple[str, pathspec.GitIgnoreSpec]]] = {}
        self._repos: dict[str, str | None] = {}
        self._chains: dict[tuple[str, str], list[tuple[str, pathspec.GitIgnoreSpec]]] = {}
        # Every ignore file read, with its stat signature: a change to one means a new walk.
        self.read: dict[str, str] = {}

    def forget(self) -> None:
        """Drop what was read of ignore files (one of them changed)."""
        self._specs.clear()
        self._repos.clear()
        self._chains.clear()
        self.read.clear()

    def ignored(self, path: str, root: str, *, is_dir: bool) -> bool:
        """Whether `path` (absolute, normalised, under `root`, a shard's root) is left out."""
        rel = _below(path, root)
        if rel is None:
            return False
        if self.exclude is not None and self.exclude.match_file(_as(rel, is_dir)):
            return True
        if not self.respect_ignore_files:
            return False
        # Called for every entry of every walk: the chain is looked up once per directory.
        directory = path.rpartition(os.sep)[0] or os.sep
        chain = self._chains.get((directory, root))
        if chain is None:
            chain = self._chain(directory, self._top(directory, root))
            self._chains[(directory, root)] = chain
        return bool(chain) and _verdict(chain, path, is_dir=is_dir)

    def ignored_within(self, path: str, root: str, *, is_dir: bool = False) -> bool:
        """Whether `path` or one of its directories below `root` is left out."""
        if self.ignored(path, root, is_dir=is_dir):
            return True
        directory = os.path.dirname(path)
        while directory != root and directory.startswith(root.rstrip(os.sep) + os.sep):
            if self.ignored(directory, root, is_dir=True):
                return True
            directory = os.path.dirname(directory)
        return False

    def _top(self, directory: str, root: str) -> str:
        """Where ignore files start to count: the repository's top, else `root`.

        Not the top when the repository's own files leave `root` out (a shard
        over a tree kept out of git, such as pyenv's versions/): the user named
        that tree, as a path given to rg is searched whatever ignores it.
        """
        repo = self._repo(directory)
        if repo is None or not (root == repo or root.startswith(repo.rstrip(os.sep) + os.sep)):
            return root
        if root != repo:
            key = f"{repo}\x00{root}\x00top"
            if key not in self._repos:
                above = self._chain(os.path.dirname(root), repo)
                left_out = _verdict(above, root, is_dir=True)
                self._repos[key] = root if left_out else repo
            top = self._repos[key]
            assert top is not None
            return top
        return repo

    def _repo(self, directory: str) -> str | None:
        if directory not in self._repos:
            if os.path.exists(os.path.join(directory, ".git")):
                self._repos[directory] = directory
            else:
                parent = os.path.dirname(directory)
                self._repos[directory] = None if parent == directory else self._repo(parent)
        return self._repos[directory]

    def _chain(self, directory: str, top: str) -> list[tuple[str, pathspec.GitIgnoreSpec]]:
        """The ignore specs from `top` down to `directory`, shallowest first."""
        key = f"{top}\x00{directory}"
        chain = self._specs.get(key)
        if chain is None:
            if directory == top or not directory.startswith(top.rstrip(os.sep) + os.sep):
                chain = []
            else:
                chain = list(self._chain(os.path.dirname(directory), top))
            in_repo = self._repo(directory) is not None
            if directory == top and in_repo:
                chain += self._read(directory, EXCLUDE_FILE)
            for name in IGNORE_FILES:
                if name != _GIT_ONLY or in_repo:
                    chain += self._read(directory, name)
            self._specs[key] = chain
        return chain

    def _read(self, directory: str, name: str) -> list[tuple[str, pathspec.GitIgnoreSpec]]:
        path = os.path.join(directory, name)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                self.read[path] = signature(os.fstat(f.fileno()))
                lines = f.read().splitlines()
        except FileNotFoundError:
            if name == EXCLUDE_FILE:
                self.read[path] = ABSENT
            return []
        except OSError:
            return []
        spec = pathspec.GitIgnoreSpec.from_lines(lines)
        return [(directory, spec)] if spec.patterns else []


def _verdict(chain: list[tuple[str, pathspec.GitIgnoreSpec]], path: str, *, is_dir: bool) -> bool:
    """Whether `chain` leaves `path` out: the deepest ignore file that says anything decides."""
    for base, spec in reversed(chain):
        include = spec.check_file(_as(_below(path, base) or ".", is_dir)).include
        if include is not None:
            return include
    return False


def signature(st: os.stat_result) -> str:
    """An ignore file's stat, to tell whether it changed."""
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"


def _below(path: str, base: str) -> str | None:
    """`path` relative to `base` (both normalised), or None when it is not under it."""
    if path == base:
        return "."
    prefix = base if base.endswith(os.sep) else base + os.sep
    return path[len(prefix) :] if path.startswith(prefix) else None


def _as(rel: str, is_dir: bool) -> str:
    """A relative path as gitignore patterns see it: a directory ends with '/'."""
    return rel + "/" if is_dir else rel
