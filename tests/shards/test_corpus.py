"""Tests for ifmemd.shards.corpus: what is loaded, what is skipped and why, and in what order."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import pytest
from ifmemd.shards.corpus import Corpus, CorpusTotals, Skipped, SourceFile, load_corpus


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def loaded(corpus: Corpus) -> list[str]:
    return [f.path for f in corpus.files]


def reasons(corpus: Corpus) -> dict[str, str]:
    return {s.path: s.reason for s in corpus.skipped}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    write(root / "b.md", "# B\n")
    write(root / "a.txt", "alpha\n")
    write(root / "sub" / "c.md", "# C\nsee\n")
    write(root / "sub" / "deeper" / "d.md", "# D")
    write(root / ".hidden" / "e.md", "# E\n")
    write(root / ".f.md", "# F\n")
    return root


def test_directory_means_every_visible_file_under_it_sorted(tree: Path) -> None:
    corpus = load_corpus([str(tree)])
    assert loaded(corpus) == [
        str(tree / "a.txt"),
        str(tree / "b.md"),
        str(tree / "sub" / "c.md"),
        str(tree / "sub" / "deeper" / "d.md"),
    ]
    assert corpus.files[0] == SourceFile(str(tree / "a.txt"), "alpha\n")
    assert corpus.skipped == ()


def test_include_hidden(tree: Path) -> None:
    corpus = load_corpus([str(tree)], include_hidden=True)
    assert str(tree / ".hidden" / "e.md") in loaded(corpus)
    assert str(tree / ".f.md") in loaded(corpus)


def test_star_matches_one_level_and_double_star_any(tree: Path) -> None:
    assert loaded(load_corpus([f"{tree}/*.md"])) == [str(tree / "b.md")]
    assert loaded(load_corpus([f"{tree}/**/*.md"])) == [
        str(tree / "b.md"),
        str(tree / "sub" / "c.md"),
        str(tree / "sub" / "deeper" / "d.md"),
    ]
    assert loaded(load_corpus([f"{tree}/**/deeper/*"])) == [str(tree / "sub" / "deeper" / "d.md")]


def test_explicit_dot_pattern_matches_hidden(tree: Path) -> None:
    assert loaded(load_corpus([f"{tree}/.*.md"])) == [str(tree / ".f.md")]
    assert loaded(load_corpus([str(tree / ".f.md")])) == [str(tree / ".f.md")]


def test_directory_matched_by_a_pattern_brings_its_files(tree: Path) -> None:
    assert loaded(load_corpus([f"{tree}/s*"])) == [
        str(tree / "sub" / "c.md"),
        str(tree / "sub" / "deeper" / "d.md"),
    ]


def test_tilde_is_the_home_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "someone"
    write(home / "notes" / "n.md", "# N\n")
    monkeypatch.setenv("HOME", str(home))
    assert loaded(load_corpus(["~/notes/**/*.md"])) == [str(home / "notes" / "n.md")]
    assert loaded(load_corpus(["~/notes"])) == [str(home / "notes" / "n.md")]


def test_a_lone_string_is_one_path(tree: Path) -> None:
    assert loaded(load_corpus(str(tree / "a.txt"))) == [str(tree / "a.txt")]


def test_relative_paths_start_at_root(tree: Path) -> None:
    assert loaded(load_corpus(["sub/*.md"], root=str(tree))) == [str(tree / "sub" / "c.md")]


def test_overlapping_paths_load_each_file_once(tree: Path) -> None:
    corpus = load_corpus([str(tree), f"{tree}/**/*.md", str(tree / "b.md"), str(tree / "b.md")])
    assert len(loaded(corpus)) == len(set(loaded(corpus))) == 4


def test_binary_file_is_skipped(tmp_path: Path) -> None:
    write(tmp_path / "img.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    corpus = load_corpus([str(tmp_path / "img.png")])
    assert corpus.files == ()
    assert "binary" in reasons(corpus)[str(tmp_path / "img.png")]


def test_invalid_utf8_is_skipped(tmp_path: Path) -> None:
    write(tmp_path / "latin1.txt", "café".encode("latin-1"))
    corpus = load_corpus([str(tmp_path)])
    assert corpus.files == ()
    assert "not UTF-8" in reasons(corpus)[str(tmp_path / "latin1.txt")]


def test_utf8_bom_is_dropped(tmp_path: Path) -> None:
    write(tmp_path / "bom.txt", b"\xef\xbb\xbfhello\n")
    assert load_corpus([str(tmp_path)]).files[0].text == "hello\n"


def test_oversized_file_is_skipped(tmp_path: Path) -> None:
    write(tmp_path / "big.txt", "x" * 101)
    write(tmp_path / "ok.txt", "x" * 100)
    corpus = load_corpus([str(tmp_path)], max_bytes=100)
    assert loaded(corpus) == [str(tmp_path / "ok.txt")]
    assert "too large (101 bytes" in reasons(corpus)[str(tmp_path / "big.txt")]


def test_fifo_is_skipped_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    write(tmp_path / "ok.txt", "ok\n")
    corpus = load_corpus([str(tmp_path)])
    assert loaded(corpus) == [str(tmp_path / "ok.txt")]
    assert reasons(corpus) == {str(tmp_path / "pipe"): "not a regular file"}


def test_dangling_symlink_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    corpus = load_corpus([str(tmp_path)])
    assert reasons(corpus) == {str(tmp_path / "gone"): "dangling symlink"}


def test_permission_denied_is_skipped(tmp_path: Path) -> None:
    write(tmp_path / "secret.txt", "s\n")
    write(tmp_path / "ok.txt", "ok\n")

    def opener(path: str) -> BinaryIO:
        if path.endswith("secret.txt"):
            raise PermissionError(13, "Permission denied", path)
        return open(path, "rb")

    corpus = load_corpus([str(tmp_path)], opener=opener)
    assert loaded(corpus) == [str(tmp_path / "ok.txt")]
    assert reasons(corpus) == {str(tmp_path / "secret.txt"): "cannot read: Permission denied"}


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_skipped(tmp_path: Path) -> None:
    secret = write(tmp_path / "secret.txt", "s\n")
    secret.chmod(0)
    corpus = load_corpus([str(tmp_path)])
    assert corpus.files == ()
    assert "Permission denied" in reasons(corpus)[str(secret)]


def test_missing_path_and_empty_pattern_are_reported(tmp_path: Path) -> None:
    corpus = load_corpus([str(tmp_path / "missing.md"), f"{tmp_path}/*.nothing"])
    assert corpus.files == ()
    assert reasons(corpus) == {
        str(tmp_path / "missing.md"): "no such file or directory",
        f"{tmp_path}/*.nothing": "no file matches this pattern",
    }


def test_symlink_loop_terminates(tmp_path: Path) -> None:
    write(tmp_path / "d" / "x.md", "# X\n")
    (tmp_path / "d" / "loop").symlink_to(tmp_path / "d")
    (tmp_path / "d" / "up").symlink_to(tmp_path)
    corpus = load_corpus([str(tmp_path / "d"), f"{tmp_path}/**/*.md", f"{tmp_path}/d/loop"])
    assert loaded(corpus) == [str(tmp_path / "d" / "x.md")]


def test_real_directory_wins_over_a_symlinked_alias(tmp_path: Path) -> None:
    write(tmp_path / "z_real" / "x.md", "# X\n")
    (tmp_path / "a_link").symlink_to(tmp_path / "z_real")
    corpus = load_corpus([str(tmp_path)])
    assert loaded(corpus) == [str(tmp_path / "z_real" / "x.md")]


def test_same_file_through_a_symlink_is_loaded_once(tmp_path: Path) -> None:
    write(tmp_path / "real.md", "# R\n")
    (tmp_path / "alias.md").symlink_to(tmp_path / "real.md")
    corpus = load_corpus([str(tmp_path)])
    assert loaded(corpus) == [str(tmp_path / "real.md")]
    assert reasons(corpus) == {str(tmp_path / "alias.md"): f"same file as {tmp_path / 'real.md'}"}


def test_totals(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "one\ntwo\n")
    write(tmp_path / "b.txt", "three")
    write(tmp_path / "c.txt", "")
    write(tmp_path / "d.txt", "é\n")
    assert load_corpus([str(tmp_path)]).totals == CorpusTotals(files=4, lines=4, bytes=16, tokens=4)


def test_digest_tracks_paths_and_contents(tmp_path: Path) -> None:
    a = write(tmp_path / "a.txt", "one\n")
    first = load_corpus([str(tmp_path)]).digest
    assert len(first) == 64
    assert load_corpus([str(tmp_path)]).digest == first
    a.write_text("two\n")
    changed = load_corpus([str(tmp_path)]).digest
    assert changed != first
    a.rename(tmp_path / "b.txt")
    assert load_corpus([str(tmp_path)]).digest not in (first, changed)


def test_digest_separates_path_from_content() -> None:
    one = Corpus((SourceFile("/ab", "c"),))
    two = Corpus((SourceFile("/a", "bc"),))
    assert one.digest != two.digest
    assert Corpus().digest != one.digest


def test_skipped_is_a_plain_record() -> None:
    assert Skipped("/x", "why") == Skipped("/x", "why")
