"""A real shard process follows its files: every kind of change is indexed, reported, and
never leaves an answer citing text that is no longer there."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ifmemd.shards.index import ROW_FIELDS
from ifmemd.shards.store import file_digest
from shardproc import ShardProc

# Runs the shard as root of a user namespace of its own: files owned by an unmapped
# uid are then out of reach of root's DAC override, and inotify limits can be lowered
# for this namespace alone (/proc/sys/user/max_inotify_watches).
USERNS = ["unshare", "--user", "--map-root-user"]
NOBODY = 65534


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def texts(passages: list[list[Any]]) -> str:
    return " ".join(p[5] for p in passages)


def paths(passages: list[list[Any]]) -> set[str]:
    return {p[0] for p in passages}


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    root = tmp_path / "notes"
    write(root / "deploy.md", "# Deploys\n\nDeploys happen on Tuesdays.\n")
    write(root / "sub" / "glacier.md", "# Glacier\n\nGlacier ice moves slowly.\n")
    return root


@pytest.fixture
def shard(tmp_path: Path, notes: Path) -> Iterator[ShardProc]:
    proc = ShardProc("notes", [notes], tmp_path / "index")
    try:
        proc.ready()
        assert proc.watching() == "inotify"
        yield proc
    finally:
        proc.close()


def changed(shard: ShardProc, path: Path, mark: int) -> dict[str, Any]:
    """The first `changed` batch since `mark` that holds `path` as it is on disk now.

    The watcher may also see a file between its truncation and its writing, and
    report it indexed as it was then (then again once written): such a batch is
    not the one a test waits for.
    """
    want = file_digest(path.read_bytes())
    return shard.wait_for(
        "changed",
        lambda m: any(c["path"] == str(path) and c["digest"] == want for c in m["changed"]),
        after=mark,
    )


def removed(shard: ShardProc, path: Path, mark: int) -> dict[str, Any]:
    return shard.wait_for("changed", lambda m: str(path) in m["removed"], after=mark)


def test_an_edit_is_indexed_with_its_digest_and_the_old_text_is_gone(
    shard: ShardProc, notes: Path
) -> None:
    assert "Tuesdays" in texts(shard.search("deploys"))
    mark = shard.count()
    edited = write(notes / "deploy.md", "# Deploys\n\nDeploys happen on Thursdays.\n")
    batch = changed(shard, edited, mark)
    (entry,) = [c for c in batch["changed"] if c["path"] == str(edited)]
    assert entry == {"path": str(edited), "digest": file_digest(edited.read_bytes()), "lines": 3}
    hits = shard.search("deploys")
    assert "Thursdays" in texts(hits) and "Tuesdays" not in texts(hits)
    assert hits[0][ROW_FIELDS.index("digest")] == file_digest(edited.read_bytes())
    assert shard.search("tuesdays") == []


def test_a_new_file_is_found_and_a_deleted_one_is_gone(shard: ShardProc, notes: Path) -> None:
    mark = shard.count()
    new = write(notes / "rollback.md", "# Rollback\n\nRoll back with the previous tag.\n")
    changed(shard, new, mark)
    assert paths(shard.search("rollback")) == {str(new)}
    mark = shard.count()
    new.unlink()
    removed(shard, new, mark)
    assert shard.search("rollback") == []


def test_a_rename_moves_the_passages(shard: ShardProc, notes: Path) -> None:
    mark = shard.count()
    old, new = notes / "deploy.md", notes / "deployments.md"
    old.rename(new)
    removed(shard, old, mark)
    changed(shard, new, mark)
    assert paths(shard.search("tuesdays")) == {str(new)}


def test_a_directory_moved_away_takes_its_files_and_one_moved_in_brings_them(
    shard: ShardProc, notes: Path, tmp_path: Path
) -> None:
    mark = shard.count()
    away = tmp_path / "elsewhere"
    (notes / "sub").rename(away)
    removed(shard, notes / "sub" / "glacier.md", mark)
    assert shard.search("glacier") == []
    mark = shard.count()
    (away).rename(notes / "moved")
    changed(shard, notes / "moved" / "glacier.md", mark)
    assert paths(shard.search("glacier")) == {str(notes / "moved" / "glacier.md")}
    mark = shard.count()
    shutil.rmtree(notes / "moved")
    removed(shard, notes / "moved" / "glacier.md", mark)
    assert shard.search("glacier") == []


def test_a_new_directory_tree_is_watched_too(shard: ShardProc, notes: Path) -> None:
    mark = shard.count()
    deep = write(notes / "a" / "b" / "c" / "deep.md", "# Deep\n\nAn abyssal note.\n")
    changed(shard, deep, mark)
    mark = shard.count()
    write(deep, "# Deep\n\nA bathyal note.\n")
    changed(shard, deep, mark)
    assert shard.search("abyssal") == []
    assert paths(shard.search("bathyal")) == {str(deep)}


def test_a_file_replaced_by_binary_is_dropped_with_a_warning(shard: ShardProc, notes: Path) -> None:
    mark = shard.count()
    target = notes / "deploy.md"
    target.write_bytes(b"\x00\x01binary Tuesdays\x00")
    removed(shard, target, mark)
    warning = shard.wait_for("warning", lambda m: m["path"] == str(target), after=mark)
    assert "binary" in warning["reason"]
    assert shard.search("tuesdays") == []


def test_names_that_are_not_utf8_are_skipped_with_a_warning_at_every_start(
    tmp_path: Path, notes: Path
) -> None:
    # A directory (with a file in it) and a file, named by bytes no UTF-8 decodes.
    bad_dir = os.fsencode(notes) + b"/old\xff"
    os.mkdir(bad_dir)
    Path(os.fsdecode(bad_dir + b"/inside.md")).write_text("Bathyal zone.\n")
    Path(os.fsdecode(os.fsencode(notes) + b"/caf\xe9.md")).write_text("Bathyal fish.\n")
    for _ in range(2):  # built, then restarted over the same index
        proc = ShardProc("notes", [notes], tmp_path / "index")
        try:
            proc.ready()
            assert "Tuesdays" in texts(proc.search("deploys"))
            assert proc.search("bathyal") == []
            reasons = {m["reason"] for m in proc.seen("warning")}
            assert "directory name is not valid UTF-8" in reasons
        finally:
            assert proc.close() == 0


def test_a_file_not_utf8_named_that_changes_does_not_end_watching(
    shard: ShardProc, notes: Path
) -> None:
    log = os.fsdecode(os.fsencode(notes) + b"/run\xe9.log")
    for i in range(5):  # written on, as a log is: each change ends the watch
        with open(log, "a") as f:
            f.write(f"line {i}\n")
        time.sleep(0.1)
    mark = shard.count()
    new = write(notes / "later.md", "# Later\n\nAbyssal plains are flat.\n")
    changed(shard, new, mark)
    assert paths(shard.search("abyssal")) == {str(new)}
    # Said once, however many times it ended the watch; the file itself is
    # left out with a warning, as at a start.
    ended = [m for m in shard.seen("warning") if "end the watch" in m["reason"]]
    assert len(ended) == 1 and ended[0]["path"] == str(notes)
    assert any(m["reason"] == "file name is not valid UTF-8" for m in shard.seen("warning"))
    assert shard.proc.poll() is None


def test_a_file_replaced_by_a_directory_of_its_name_is_gone(
    tmp_path: Path, shard: ShardProc, notes: Path
) -> None:
    target = notes / "deploy.md"
    mark = shard.count()
    target.unlink()
    write(target / "inside.md", "# Inside\n\nHadal trenches are deepest.\n")
    removed(shard, target, mark)
    changed(shard, target / "inside.md", mark)
    assert shard.search("tuesdays") == []
    assert paths(shard.search("hadal")) == {str(target / "inside.md")}
    shard.close()
    # Nor does a restart find a file there to warn about.
    again = ShardProc("notes", [notes], tmp_path / "index")
    try:
        again.ready()
        assert again.search("tuesdays") == []
        assert not [m for m in again.seen("warning") if m["path"] == str(target)]
    finally:
        again.close()


def test_a_file_made_a_directory_while_the_shard_was_down_is_gone(
    tmp_path: Path, notes: Path
) -> None:
    with_file = ShardProc("notes", [notes], tmp_path / "index", watch=False)
    with_file.ready()
    assert with_file.close() == 0
    target = notes / "deploy.md"
    target.unlink()
    write(target / "inside.md", "# Inside\n\nHadal trenches are deepest.\n")
    again = ShardProc("notes", [notes], tmp_path / "index", watch=False)
    try:
        again.ready()
        assert again.search("tuesdays") == []
        assert paths(again.search("hadal")) == {str(target / "inside.md")}
        assert not [m for m in again.seen("warning") if m["path"] == str(target)]
    finally:
        again.close()


def test_a_hard_link_left_out_as_a_twin_is_indexed_when_its_twin_goes(
    shard: ShardProc, notes: Path
) -> None:
    mark = shard.count()
    twin = notes / "zz-deploy-copy.md"  # walked after deploy.md: the one left out
    os.link(notes / "deploy.md", twin)
    shard.wait_for("warning", lambda m: m["path"] == str(twin), after=mark)
    assert paths(shard.search("tuesdays")) == {str(notes / "deploy.md")}
    mark = shard.count()
    (notes / "deploy.md").unlink()
    changed(shard, twin, mark)
    assert paths(shard.search("tuesdays")) == {str(twin)}


def test_a_root_symlink_pointed_elsewhere_is_followed(tmp_path: Path) -> None:
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    write(v1 / "doc.md", "# Release\n\nVersion one ships the lighthouse.\n")
    write(v2 / "doc.md", "# Intro\n\nRead this first.\n\nVersion two ships the beacon.\n")
    current = tmp_path / "current"
    current.symlink_to("v1")
    proc = ShardProc("notes", [current], tmp_path / "index")
    try:
        proc.ready()
        assert proc.watching() == "inotify"
        assert "lighthouse" in texts(proc.search("version"))
        mark = proc.count()
        swap = tmp_path / "current.new"
        swap.symlink_to("v2")
        swap.rename(current)  # as a deploy flips `current` (ln -sfn), atomically
        changed(proc, current / "doc.md", mark)
        found = proc.search("beacon")
        assert paths(found) == {str(current / "doc.md")}
        assert found[0][ROW_FIELDS.index("span_start")] == 5  # its line in the new file
        assert proc.search("lighthouse") == []
        # And what is written there afterwards: the new directory is the one watched.
        mark = proc.count()
        write(v2 / "new.md", "# New\n\nThe foghorn arrives in version two.\n")
        changed(proc, current / "new.md", mark)
        assert paths(proc.search("foghorn")) == {str(current / "new.md")}
    finally:
        proc.close()


def test_a_file_made_unreadable_is_dropped(tmp_path: Path, notes: Path) -> None:
    proc = ShardProc("notes", [notes], tmp_path / "index", prefix=USERNS)
    try:
        proc.ready()
        proc.watching()
        assert proc.search("tuesdays")
        mark = proc.count()
        target = notes / "deploy.md"
        # Owned by a uid the shard's namespace does not map: root there cannot override it.
        os.chown(target, NOBODY, NOBODY)
        target.chmod(0)
        removed(proc, target, mark)
        warning = proc.wait_for("warning", lambda m: m["path"] == str(target), after=mark)
        assert "Permission denied" in warning["reason"]
        assert proc.search("tuesdays") == []
        mark = proc.count()
        target.chmod(0o644)
        changed(proc, target, mark)
        assert proc.search("tuesdays")
    finally:
        proc.close()


def test_a_symlink_loop_is_walked_once_and_watching_goes_on(tmp_path: Path, notes: Path) -> None:
    (notes / "sub" / "loop").symlink_to(notes)
    proc = ShardProc("notes", [notes], tmp_path / "index")
    try:
        assert proc.ready()["files"] == 2
        proc.watching()
        mark = proc.count()
        new = write(notes / "sub" / "after.md", "# After\n\nWritten after the loop.\n")
        changed(proc, new, mark)
        assert paths(proc.search("loop written")) == {str(new)}
    finally:
        proc.close()


def test_out_of_inotify_watches_falls_back_to_polling_once(tmp_path: Path, notes: Path) -> None:
    for i in range(20):
        write(notes / f"dir{i}" / "n.md", f"# Note {i}\n")
    limit = ["sh", "-c", 'echo 5 > /proc/sys/user/max_inotify_watches && exec "$@"', "sh"]
    proc = ShardProc("notes", [notes], tmp_path / "index", prefix=[*USERNS, *limit])
    try:
        proc.ready()
        assert proc.watching() == "polling"
        (warning,) = [w for w in proc.seen("warning") if "inotify" in w["reason"]]
        assert "polling" in warning["reason"]
        mark = proc.count()
        edited = write(notes / "deploy.md", "# Deploys\n\nDeploys happen on Fridays.\n")
        changed(proc, edited, mark)
        assert "Fridays" in texts(proc.search("deploys"))
        assert len([w for w in proc.seen("warning") if "inotify" in w["reason"]]) == 1
    finally:
        proc.close()


def test_watch_false_does_not_follow_the_files(tmp_path: Path, notes: Path) -> None:
    proc = ShardProc("notes", [notes], tmp_path / "index", watch=False)
    try:
        proc.ready()
        write(notes / "deploy.md", "# Deploys\n\nDeploys happen on Fridays.\n")
        time.sleep(1.5)
        assert "Tuesdays" in texts(proc.search("deploys"))
        assert proc.seen("watching") == [] and proc.seen("changed") == []
        # A reload looks again.
        mark = proc.count()
        proc.send({"op": "reload"})
        proc.wait_for("ready", after=mark)
        assert "Fridays" in texts(proc.search("deploys"))
    finally:
        proc.close()


def test_answers_after_each_edit_never_cite_older_text(shard: ShardProc, notes: Path) -> None:
    target = notes / "deploy.md"
    for version in range(1, 31):
        mark = shard.count()
        write(target, f"# Deploys\n\nDeploys happen in week v{version}x.\n")
        changed(shard, target, mark)
        for older in range(1, version):
            assert shard.search(f"v{older}x") == [], f"version {older} cited after {version}"
        assert paths(shard.search(f"v{version}x")) == {str(target)}


def test_a_burst_of_changes_converges(shard: ShardProc, notes: Path) -> None:
    for i in range(300):
        write(notes / "burst" / f"f{i}.md", f"# File {i}\n\nburstword{i}\n")
    for i in range(0, 300, 2):
        (notes / "burst" / f"f{i}.md").unlink()
    kept = {str(notes / "burst" / f"f{i}.md") for i in range(1, 300, 2)}

    def converged() -> bool:
        # Batches need not come in the order the files were written: every file
        # kept must be searchable, not just the last one written.
        found = {p for i in range(1, 300, 2) for p in paths(shard.search(f"burstword{i}"))}
        return found == kept and not shard.search("burstword298")

    shard.wait_until(converged, "the burst to be indexed")
    last = {c["path"] for m in shard.seen("changed") for c in m["changed"]}
    gone = {p for m in shard.seen("changed") for p in m["removed"]}
    assert kept <= last
    # Each file deleted was either never reported or reported removed.
    for i in range(0, 300, 2):
        path = str(notes / "burst" / f"f{i}.md")
        assert path not in last or path in gone
        assert shard.search(f"burstword{i}") == []


def test_sigkill_during_a_batch_leaves_an_index_that_opens_and_converges(
    tmp_path: Path, notes: Path
) -> None:
    for i in range(3000):
        write(notes / "many" / f"f{i}.md", f"# File {i}\n\nmanyword{i} " + "filler " * 50 + "\n")
    index_dir = tmp_path / "index"
    proc = ShardProc("notes", [notes], index_dir)
    # Kill it while its first build writes batches: some committed, not all.
    db = index_dir / "index.db"
    proc.wait_until(
        lambda: db.exists() and db.stat().st_size > 256 * 1024, "the build's first batches"
    )
    proc.kill9()
    assert proc.seen("ready") == []
    assert proc.proc.returncode == -signal.SIGKILL
    again = ShardProc("notes", [notes], index_dir)
    try:
        ready = again.ready(timeout=60)
        assert ready["files"] == 3002
        assert not [w for w in again.seen("warning") if "rebuilt" in w["reason"]]
        assert paths(again.search("manyword2999")) == {str(notes / "many" / "f2999.md")}
        # And once more, killed in the middle of a watched batch.
        again.watching()
        for i in range(0, 3000, 3):
            write(notes / "many" / f"f{i}.md", f"# File {i}\n\nrewritten{i}\n")
        again.wait_for("changed")
        again.kill9()
    finally:
        again.close()
    third = ShardProc("notes", [notes], index_dir)
    try:
        assert third.ready(timeout=60)["files"] == 3002
        assert paths(third.search("rewritten2997")) == {str(notes / "many" / "f2997.md")}
        assert third.search("manyword2997") == []
    finally:
        third.close()


def test_unshare_is_available() -> None:
    """The namespace tests need unshare(1) and unprivileged user namespaces."""
    result = subprocess.run([*USERNS, "true"], capture_output=True, check=False)
    assert result.returncode == 0, result.stderr


def test_an_unusable_cache_directory_means_a_temporary_index(tmp_path: Path, notes: Path) -> None:
    blocker = write(tmp_path / "not-a-dir", "a file where the cache should be\n")
    proc = ShardProc("notes", [notes], blocker / "index")
    try:
        assert proc.ready()["files"] == 2
        (warning,) = [w for w in proc.seen("warning") if "using" in w["reason"]]
        assert "create index directory" in warning["reason"]
        assert paths(proc.search("tuesdays")) == {str(notes / "deploy.md")}
    finally:
        assert proc.close() == 0
