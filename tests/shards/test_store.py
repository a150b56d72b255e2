"""The on-disk index: reopened as it was, rebuilt (never a failure) when it cannot be used,
and brought up to date by re-reading only the files that changed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, BinaryIO

import apsw
import pytest
from hypothesis import given
from hypothesis import strategies as st
from ifmemd.shards import corpus as corpus_module
from ifmemd.shards import store
from ifmemd.shards.chunker import chunk_text
from ifmemd.shards.corpus import Selection, open_file
from ifmemd.shards.ignore import IgnoreRules
from ifmemd.shards.index import Index
from ifmemd.shards.sync import Batch, Updater


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


class CountingOpener:
    """Opens files for real, and remembers which."""

    def __init__(self) -> None:
        self.opened: list[str] = []

    def __call__(self, path: str) -> BinaryIO:
        self.opened.append(path)
        return open_file(path)


def sync(directory: Path, corpus: Path, opener: CountingOpener | None = None) -> list[Batch]:
    opened = store.open_store(directory)
    try:
        updater = Updater(opened.db, Selection([str(corpus)]), opener=opener or open_file)
        return list(updater.scan(build=opened.fresh))
    finally:
        opened.close()


def search(directory: Path, query: str) -> list[tuple[str, str]]:
    opened = store.open_store(directory)
    try:
        index = Index(opened.connect())
        return [(p.path, p.snippet) for p in index.search(query)]
    finally:
        opened.close()


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    write(root / "deploy.md", "# Deploys\n\nDeploys happen on Tuesdays.\n")
    write(root / "glacier.md", "# Glacier\n\nGlacier ice moves slowly.\n")
    write(root / "sub" / "valve.py", "class Valve:\n    def open(self):\n        return 1\n")
    return root


def test_a_new_index_is_built_and_reopened_as_it_was(tmp_path: Path, corpus: Path) -> None:
    index_dir = tmp_path / "index"
    first = store.open_store(index_dir)
    assert first.fresh and not first.rebuilt
    first.close()
    sync(index_dir, corpus)
    again = store.open_store(index_dir)
    assert not again.fresh and not again.rebuilt
    assert store.totals(again.db).files == 3
    again.close()
    assert search(index_dir, "tuesdays") == [
        (str(corpus / "deploy.md"), "# Deploys Deploys happen on Tuesdays.")
    ]


def test_an_unchanged_file_is_not_opened_again(tmp_path: Path, corpus: Path) -> None:
    index_dir = tmp_path / "index"
    # Old enough that their mtimes prove them unchanged (not "racily clean").
    for path in corpus.rglob("*.*"):
        os.utime(path, ns=(10**18, 10**18))
    sync(index_dir, corpus)
    opener = CountingOpener()
    batches = sync(index_dir, corpus, opener)
    assert opener.opened == []
    assert not any(b.changed or b.removed for b in batches)


def test_only_changed_new_and_vanished_files_are_touched(tmp_path: Path, corpus: Path) -> None:
    index_dir = tmp_path / "index"
    for path in corpus.rglob("*.*"):
        os.utime(path, ns=(10**18, 10**18))
    sync(index_dir, corpus)
    write(corpus / "deploy.md", "# Deploys\n\nDeploys happen on Thursdays.\n")
    write(corpus / "new.md", "# Rollback\n\nRoll back with the previous tag.\n")
    (corpus / "glacier.md").unlink()
    opener = CountingOpener()
    batches = sync(index_dir, corpus, opener)
    assert sorted(opener.opened) == [str(corpus / "deploy.md"), str(corpus / "new.md")]
    changed = {c["path"]: c for b in batches for c in b.changed}
    removed = [p for b in batches for p in b.removed]
    assert set(changed) == {str(corpus / "deploy.md"), str(corpus / "new.md")}
    assert removed == [str(corpus / "glacier.md")]
    data = (corpus / "deploy.md").read_bytes()
    assert changed[str(corpus / "deploy.md")]["digest"] == store.file_digest(data)
    assert search(index_dir, "tuesdays") == []
    assert [p for p, _ in search(index_dir, "thursdays")] == [str(corpus / "deploy.md")]
    assert search(index_dir, "glacier") == []
    assert [p for p, _ in search(index_dir, "rollback")] == [str(corpus / "new.md")]


def test_a_touched_file_with_the_same_bytes_is_not_a_change(tmp_path: Path, corpus: Path) -> None:
    index_dir = tmp_path / "index"
    sync(index_dir, corpus)
    os.utime(corpus / "deploy.md", ns=(10**18, 10**18))
    batches = sync(index_dir, corpus)
    assert not any(b.changed or b.removed for b in batches)


def test_passages_carry_the_digest_of_their_file_version(tmp_path: Path, corpus: Path) -> None:
    index_dir = tmp_path / "index"
    sync(index_dir, corpus)
    opened = store.open_store(index_dir)
    try:
        (hit,) = Index(opened.connect()).search("valve")
    finally:
        opened.close()
    assert hit.digest == store.file_digest((corpus / "sub" / "valve.py").read_bytes())


def built(tmp_path: Path, corpus: Path) -> Path:
    index_dir = tmp_path / "index"
    sync(index_dir, corpus)
    return index_dir / store.INDEX_FILE


def reopened_reason(path: Path) -> str:
    opened = store.open_store(path.parent)
    try:
        assert opened.fresh
        assert store.totals(opened.db).files == 0
        return opened.rebuilt
    finally:
        opened.close()


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_a_truncated_index_is_rebuilt(tmp_path: Path, corpus: Path, keep: float) -> None:
    for i in range(40):  # pages enough that some are lost after the schema's
        write(corpus / "more" / f"{i}.md", f"# Note {i}\n\n" + "filler words here\n" * 200)
    path = built(tmp_path, corpus)
    page = store.PAGE_SIZE
    with path.open("r+b") as f:
        f.truncate(int(path.stat().st_size * keep) // page * page)
    assert reopened_reason(path)
    sync(path.parent, corpus)
    assert [p for p, _ in search(path.parent, "glacier")] == [str(corpus / "glacier.md")]


def test_an_index_from_a_future_version_is_rebuilt(tmp_path: Path, corpus: Path) -> None:
    path = built(tmp_path, corpus)
    db = apsw.Connection(str(path))
    db.execute(f"PRAGMA user_version = {store.FORMAT + 1}")
    db.close()
    assert reopened_reason(path) == f"format {store.FORMAT + 1}, this ifmem uses {store.FORMAT}"


def test_an_index_of_other_chunking_code_is_rebuilt(tmp_path: Path, corpus: Path) -> None:
    path = built(tmp_path, corpus)
    db = apsw.Connection(str(path))
    db.execute("UPDATE meta SET value = 'other' WHERE key = 'code'")
    db.close()
    assert reopened_reason(path) == "built by another version of the chunker"


def test_garbage_in_place_of_an_index_is_rebuilt(tmp_path: Path, corpus: Path) -> None:
    path = built(tmp_path, corpus)
    path.write_bytes(b"not a database at all" * 100)
    assert reopened_reason(path)


def test_a_deleted_index_is_built_again(tmp_path: Path, corpus: Path) -> None:
    path = built(tmp_path, corpus)
    for leftover in path.parent.iterdir():
        leftover.unlink()
    path.parent.rmdir()
    batches = sync(path.parent, corpus)
    assert len([c for b in batches for c in b.changed]) == 3


def test_a_reader_sees_each_batch_the_writer_commits(tmp_path: Path, corpus: Path) -> None:
    index_dir = tmp_path / "index"
    sync(index_dir, corpus)
    opened = store.open_store(index_dir)
    reader = Index(opened.connect())
    try:
        assert reader.search("zebra") == []  # "zebra" now known to be absent
        assert [p.path for p in reader.search("tuesdays")] == [str(corpus / "deploy.md")]
        write(corpus / "deploy.md", "# Deploys\n\nA zebra deploys on Thursdays.\n")
        updater = Updater(opened.db, Selection([str(corpus)]))
        list(updater.refresh([str(corpus / "deploy.md")]))
        (hit,) = reader.search("zebra")
        assert hit.digest == store.file_digest((corpus / "deploy.md").read_bytes())
        assert reader.search("tuesdays") == []
    finally:
        reader.close()
        opened.close()


def test_a_reader_ranks_definitions_first_as_the_writer_changes_them(
    tmp_path: Path, corpus: Path
) -> None:
    # Which passages define a name is stored with them, not learned by a reader
    # holding every text: a definition the writer adds or removes is seen at once.
    uses = "".join(f"rotor = spin(rotor, {i})  # spin the rotor\n" for i in range(6))
    write(
        corpus / "calls.py", "def turbine():\n" + "".join(f"    {u}" for u in uses.splitlines(True))
    )
    index_dir = tmp_path / "index"
    sync(index_dir, corpus)
    opened = store.open_store(index_dir)
    reader = Index(opened.connect())
    try:
        assert [p.path for p in reader.search("where is spin defined", 1)] == [
            str(corpus / "calls.py")
        ]
        defined = write(corpus / "sub" / "rotor.py", "\n\ndef spin(rotor, n):\n    return n\n")
        list(Updater(opened.db, Selection([str(corpus)])).refresh([str(defined)]))
        (hit,) = reader.search("where is spin defined", 1)
        assert (hit.path, hit.span, hit.digest) == (
            str(defined),
            (3, 3),
            store.file_digest(defined.read_bytes()),
        )
        defined.unlink()
        list(Updater(opened.db, Selection([str(corpus)])).refresh([str(defined)]))
        assert reader.search("where is spin defined", 1)[0].path == str(corpus / "calls.py")
        assert not opened.db.execute("SELECT 1 FROM definition WHERE name = 'spin'").fetchall()
    finally:
        reader.close()
        opened.close()


def test_a_file_read_within_its_mtime_tick_is_checked_again(tmp_path: Path, corpus: Path) -> None:
    """A write in the same mtime tick as the read could leave the stat as it was: such a
    racily clean entry is re-read next time, however unchanged its stat looks."""
    index_dir = tmp_path / "index"
    old = corpus / "glacier.md"
    os.utime(old, ns=(10**18, 10**18))
    sync(index_dir, corpus)  # deploy.md and valve.py were written just now: racy
    opened = store.open_store(index_dir)
    try:
        states = store.file_states(opened.db)
    finally:
        opened.close()
    assert states[str(corpus / "deploy.md")].racy and not states[str(old)].racy
    racy = states[str(corpus / "deploy.md")]
    assert not racy.unchanged(os.stat(corpus / "deploy.md"))
    opener = CountingOpener()
    sync(index_dir, corpus, opener)
    assert str(corpus / "deploy.md") in opener.opened and str(old) not in opener.opened


def age(root: Path) -> None:
    """Make every file and directory under `root` old: its stat proves it unchanged."""
    for path in [root, *root.rglob("*")]:
        os.utime(path, ns=(10**18, 10**18))


def catch_up(directory: Path, corpus: Path, rules: IgnoreRules | None = None) -> list[Batch]:
    opened = store.open_store(directory)
    try:
        selection = Selection([str(corpus)], rules=rules or IgnoreRules())
        return list(Updater(opened.db, selection).catch_up())
    finally:
        opened.close()


def full_scan(directory: Path, corpus: Path) -> None:
    opened = store.open_store(directory)
    try:
        list(Updater(opened.db, Selection([str(corpus)], rules=IgnoreRules())).scan())
    finally:
        opened.close()


def test_a_start_lists_only_the_directories_that_changed(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index_dir = tmp_path / "index"
    write(corpus / "deeper" / "quiet" / "q.md", "# Quiet\n")
    age(corpus)
    full_scan(index_dir, corpus)
    listed: list[str] = []
    real_scandir = os.scandir

    def counting_scandir(path: str) -> Any:
        listed.append(str(path))
        return real_scandir(path)

    monkeypatch.setattr(corpus_module.os, "scandir", counting_scandir)
    assert not any(b.changed or b.removed for b in catch_up(index_dir, corpus))
    assert listed == []
    new = write(corpus / "sub" / "new.md", "# New\n\nnewword\n")
    nested = write(corpus / "sub" / "fresh" / "dir" / "n.md", "# Nested\n\nnestedword\n")
    (corpus / "glacier.md").unlink()
    batches = catch_up(index_dir, corpus)
    assert sorted(listed) == [
        str(corpus),
        str(corpus / "sub"),
        str(corpus / "sub" / "fresh"),
        str(corpus / "sub" / "fresh" / "dir"),
    ]
    assert {c["path"] for b in batches for c in b.changed} == {str(new), str(nested)}
    assert [p for b in batches for p in b.removed] == [str(corpus / "glacier.md")]


def test_a_start_after_an_ignore_file_changed_walks_everything(
    tmp_path: Path, corpus: Path
) -> None:
    index_dir = tmp_path / "index"
    write(corpus / ".ignore", "nothing-yet\n")
    age(corpus)
    full_scan(index_dir, corpus)
    write(corpus / ".ignore", "glacier.md\n")
    age(corpus)  # even with the old mtime back, its ctime tells
    batches = catch_up(index_dir, corpus)
    assert [p for b in batches for p in b.removed] == [str(corpus / "glacier.md")]
    # A new ignore file in an unchanged tree's directory also counts.
    write(corpus / "sub" / ".ignore", "valve.py\n")
    batches = catch_up(index_dir, corpus)
    assert [p for b in batches for p in b.removed] == [str(corpus / "sub" / "valve.py")]


def test_the_index_file_is_private_whatever_the_umask(tmp_path: Path) -> None:
    """It holds the user's text: 0600, and so are the -wal and -shm SQLite derives from it."""
    old = os.umask(0o022)
    try:
        opened = store.open_store(tmp_path / "shard")
        with opened.db:
            opened.db.execute("INSERT INTO meta(key, value) VALUES ('probe', '1')")
        modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "shard").iterdir()}
        opened.db.close()
    finally:
        os.umask(old)
    assert "index.db-wal" in modes and set(modes.values()) == {0o600}, modes


@pytest.mark.parametrize("changing_s", [0.0, 3600.0])
def test_while_the_writer_commits_fts5_ranks_without_reading_postings(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch, changing_s: float
) -> None:
    """Right after a batch (a checkout storm), an uncached question is ranked by
    FTS5's bm25() instead of re-reading its postings: the same ranking either way."""
    from ifmemd.shards import index as index_module

    for i in range(12):
        write(corpus / f"log{i}.md", f"# Entry {i}\n\nThe valve opened {'slowly ' * i}today.\n")
    index_dir = tmp_path / "index"
    sync(index_dir, corpus)
    opened = store.open_store(index_dir)
    reader = Index(opened.connect())
    try:
        before = [(p.path, p.score) for p in reader.search("valve opened slowly", 5)]
        monkeypatch.setattr(index_module, "CHANGING_S", changing_s)
        write(corpus / "other.md", "# Other\n\nNothing to see here.\n")
        list(Updater(opened.db, Selection([str(corpus)])).refresh([str(corpus / "other.md")]))
        read: list[str] = []
        postings = reader._scorer.postings
        monkeypatch.setattr(reader._scorer, "postings", lambda t: read.append(t) or postings(t))
        after = [(p.path, p.score) for p in reader.search("valve opened slowly", 5)]
        # One unrelated file more moves every idf a little: compare the order only.
        assert [path for path, _ in after] == [path for path, _ in before]
        assert (read == []) == (changing_s > 0), read
    finally:
        reader.close()
        opened.close()


def test_the_writers_bookkeeping_does_not_drop_what_the_reader_learned(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit that changes no passage (the walk's record) keeps the postings the
    reader read; one that changes passages makes it read them anew."""
    from ifmemd.shards import index as index_module

    monkeypatch.setattr(index_module, "CHANGING_S", 0.0)  # always the Python ranking
    index_dir = tmp_path / "index"
    sync(index_dir, corpus)
    opened = store.open_store(index_dir)
    reader = Index(opened.connect())
    try:
        reader.search("glacier ice", 3)
        learned = reader._scorer.postings("glacier")
        with opened.db:
            store.forget_walk(opened.db)
        reader.search("glacier ice", 3)
        assert reader._scorer.postings("glacier") is learned
        write(corpus / "other.md", "# Other\n\nNothing to see here.\n")
        list(Updater(opened.db, Selection([str(corpus)])).refresh([str(corpus / "other.md")]))
        reader.search("glacier ice", 3)
        assert reader._scorer.postings("glacier") is not learned
    finally:
        reader.close()
        opened.close()


def test_a_build_killed_before_its_end_has_merging_turned_back_on(tmp_path: Path) -> None:
    def automerge(db: apsw.Connection) -> str | None:
        row = db.execute("SELECT v FROM passage_config WHERE k = 'automerge'").fetchone()
        return None if row is None else str(row[0])

    # A process that starts a build and dies inside the block, its `finally` never run.
    build = (
        "import os, sys; from pathlib import Path; from ifmemd.shards import store\n"
        "opened = store.open_store(Path(sys.argv[1]))\n"
        "with store.bulk(opened.db):\n"
        "    os._exit(9)\n"
    )
    killed = subprocess.run([sys.executable, "-c", build, str(tmp_path / "index")], check=False)
    assert killed.returncode == 9
    db = apsw.Connection(str(tmp_path / "index" / store.INDEX_FILE))
    assert automerge(db) == "0"
    db.close()
    again = store.open_store(tmp_path / "index")
    try:
        assert not again.fresh
        assert automerge(again.db) == str(store.AUTOMERGE)
    finally:
        again.close()


CODE_LINES = st.sampled_from(
    ["", "import os", "def f(x):", "    return x", "class A:", "    def m(self):",
     "        y = 1", "X = 2", "#define N 3", "@decorator", "}", "# comment"]
)  # fmt: skip


@given(lines=st.lists(CODE_LINES, max_size=150), path=st.sampled_from(["a.py", "a.md", "a.txt"]))
def test_cut_finds_each_passages_definitions_in_one_pass(lines: list[str], path: str) -> None:
    text = "\n".join(lines)
    assert store.cut(path, text) == store.Passages.of(chunk_text(path, text))
