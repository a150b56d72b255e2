"""Ignore rules as ripgrep applies them (.gitignore in a git repository, .ignore anywhere,
deeper files first, negation), a shard's `exclude`, `respect_gitignore = false`; and a
watching shard that follows them, including when an ignore file changes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ifmemd.shards.corpus import Selection, Skipped
from ifmemd.shards.ignore import IgnoreRules
from shardproc import ShardProc


def write(path: Path, text: str = "text\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def listed(root: Path, rules: IgnoreRules, spec: str | None = None) -> list[str]:
    skipped: list[Skipped] = []
    found = Selection([spec or str(root)], rules=rules).candidates(skipped)
    return sorted(str(Path(p).relative_to(root)) for p in found)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / ".git" / "info").mkdir(parents=True)
    write(root / ".gitignore", "build/\n*.log\n!keep.log\n")
    write(root / "a.md")
    write(root / "debug.log")
    write(root / "keep.log")
    write(root / "build" / "out.md")
    write(root / "src" / "b.md")
    write(root / "src" / ".gitignore", "generated.md\n")
    write(root / "src" / "generated.md")
    write(root / "docs" / ".ignore", "draft*\n")
    write(root / "docs" / "draft1.md")
    write(root / "docs" / "final.md")
    write(root / ".git" / "info" / "exclude", "secret.md\n")
    write(root / "secret.md")
    return root


def test_gitignore_files_in_a_repository_are_respected(repo: Path) -> None:
    assert listed(repo, IgnoreRules()) == ["a.md", "docs/final.md", "keep.log", "src/b.md"]


def test_respect_gitignore_false_keeps_every_file(repo: Path) -> None:
    assert listed(repo, IgnoreRules(respect_ignore_files=False)) == [
        "a.md",
        "build/out.md",
        "debug.log",
        "docs/draft1.md",
        "docs/final.md",
        "keep.log",
        "secret.md",
        "src/b.md",
        "src/generated.md",
    ]


def test_exclude_patterns_win_over_ignore_files(repo: Path) -> None:
    rules = IgnoreRules(["**/src/**", "keep.log"])
    assert listed(repo, rules) == ["a.md", "docs/final.md"]
    rules = IgnoreRules(["*.md"], respect_ignore_files=False)
    assert listed(repo, rules) == ["debug.log", "keep.log"]


def test_outside_a_repository_only_dot_ignore_counts(tmp_path: Path) -> None:
    root = tmp_path / "notes"
    write(root / ".gitignore", "*.md\n")
    write(root / ".ignore", "tmp/\n")
    write(root / "a.md")
    write(root / "tmp" / "scratch.md")
    assert listed(root, IgnoreRules()) == ["a.md"]


def test_a_repository_above_the_root_lends_its_ignore_files(repo: Path) -> None:
    write(repo / "src" / "build" / "x.md")
    # The shard's root is src/: the repository's own .gitignore (build/) still counts.
    assert listed(repo, IgnoreRules(), str(repo / "src")) == ["src/b.md"]


def test_a_file_named_itself_is_never_left_out(repo: Path) -> None:
    assert listed(repo, IgnoreRules(), str(repo / "debug.log")) == ["debug.log"]


def test_an_ignored_directory_is_not_walked(repo: Path) -> None:
    # As in git, a file cannot be re-included from a directory left out whole.
    write(repo / ".gitignore", "build/\n!build/out.md\n")
    assert "build/out.md" not in listed(repo, IgnoreRules())


def test_matches_follows_the_rules(repo: Path) -> None:
    selection = Selection([str(repo)], rules=IgnoreRules())
    assert selection.matches(str(repo / "src" / "b.md"))
    assert not selection.matches(str(repo / "build" / "new.md"))
    assert not selection.matches(str(repo / "src" / "generated.md"))
    assert not selection.matches(str(repo / "x.log"))


@pytest.fixture
def shard(tmp_path: Path, repo: Path) -> Iterator[ShardProc]:
    proc = ShardProc("repo", [repo], tmp_path / "index", exclude=["**/vendor/**"])
    try:
        assert proc.ready()["files"] == 4
        proc.watching()
        yield proc
    finally:
        proc.close()


def indexed(path: Path) -> Callable[[dict[str, Any]], bool]:
    return lambda m: any(c["path"] == str(path) for c in m["changed"])


def test_a_watching_shard_follows_the_rules(shard: ShardProc, repo: Path) -> None:
    mark = shard.count()
    write(repo / "build" / "fresh.md", "# Fresh\n\nignoredword\n")
    write(repo / "vendor" / "lib.md", "# Lib\n\nvendoredword\n")
    kept = write(repo / "src" / "kept.md", "# Kept\n\nkeptword\n")
    shard.wait_for(
        "changed", lambda m: any(c["path"] == str(kept) for c in m["changed"]), after=mark
    )
    assert shard.search("ignoredword") == [] and shard.search("vendoredword") == []
    # A new rule leaves out a file already indexed; dropping it brings the file back.
    mark = shard.count()
    write(repo / "src" / ".gitignore", "generated.md\nkept.md\n")
    shard.wait_for("changed", lambda m: str(kept) in m["removed"], after=mark)
    assert shard.search("keptword") == []
    mark = shard.count()
    write(repo / "src" / ".gitignore", "generated.md\n")
    shard.wait_for(
        "changed", lambda m: any(c["path"] == str(kept) for c in m["changed"]), after=mark
    )
    assert shard.search("keptword")


def test_a_root_the_repository_ignores_is_indexed_whole(repo: Path) -> None:
    # As pyenv's clone ignores its versions/: a shard over one of them names that tree.
    write(repo / "build" / "lib" / "x.md")
    assert listed(repo, IgnoreRules(), str(repo / "build")) == ["build/lib/x.md", "build/out.md"]


def test_a_repository_exclude_file_made_later_applies_watched_or_at_a_start(
    tmp_path: Path, repo: Path
) -> None:
    (repo / ".git" / "info" / "exclude").unlink()
    notes = write(repo / "notes.md", "# Notes\n\nexcludedword\n")
    proc = ShardProc("repo", [repo], tmp_path / "index")
    try:
        proc.ready()
        proc.watching()
        assert proc.search("excludedword")
        mark = proc.count()
        write(repo / ".git" / "info" / "exclude", "notes.md\n")
        proc.wait_for("changed", lambda m: str(notes) in m["removed"], after=mark)
    finally:
        proc.close()
    # Made while no shard ran: the next start finds it (a walk never lists .git).
    (repo / ".git" / "info" / "exclude").unlink()
    again = ShardProc("repo", [repo], tmp_path / "index", watch=False)
    try:
        again.ready()
        assert again.search("excludedword")
    finally:
        again.close()
    write(repo / ".git" / "info" / "exclude", "notes.md\n")
    third = ShardProc("repo", [repo], tmp_path / "index", watch=False)
    try:
        third.ready()
        assert third.search("excludedword") == []
    finally:
        third.close()
