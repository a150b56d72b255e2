"""`audit verify` over sealed segments: tampering with whole files is named, pruning is not.

The log has three sealed segments (seq 1-10, 11-20, 21-30) and a live file
(31-35). An attacker with file access edits a segment, deletes one from the
middle, renames two to swap their order, or puts another log's segment in the
place of one; each is reported with the file it concerns. `ifmem log prune`
deletes the oldest segments after recording `log.pruned`, which verify accepts
as the start of the log, and nothing else.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import logfactory as lf
import pytest
from ifmem.main import app
from ifmemd.errors import NothingToPruneError
from ifmemd.log import checkpoint as cp
from ifmemd.log import maintenance, segments, snapshot
from ifmemd.log.chain import LogChain
from ifmemd.log.eventlog import EventLog
from ifmemd.log.keys import Signer
from ifmemd.log.replay import replay
from ifmemd.log.verify import DUPLICATED, FOREIGN, GAP, MODIFIED, REORDERED, TRUNCATED, verify_log
from typer.testing import CliRunner


def build(root: Path, signer: Signer, *, compress: bool = False) -> Path:
    db = root / "data" / "events.db"
    lf.build(db, signer, 10)
    for start in (100, 200):
        maintenance.seal_files(db, signer, root / "checkpoints", compress=compress)
        with EventLog.open(db, signer) as log:
            log.append_batch(lf.items(9, start))
    maintenance.seal_files(db, signer, root / "checkpoints", compress=compress)
    with EventLog.open(db, signer) as log:
        log.append_batch(lf.items(4, 300))
    return db


@pytest.fixture
def db(tmp_path: Path, signer: Signer) -> Path:
    return build(tmp_path, signer)


def seg(db: Path, n: int) -> Path:
    return segments.list_segments(db)[n].path


def test_a_whole_segmented_log_verifies(db: Path, tmp_path: Path) -> None:
    report = verify_log(db, checkpoints=cp.read_file(tmp_path / "checkpoints"))
    assert report.ok, report.failure
    assert (report.rows, report.head_seq, report.segments, report.checkpoints) == (35, 35, 3, 3)
    assert report.pruned_note == ""


def test_a_modified_row_in_a_segment_is_named_with_its_segment(db: Path) -> None:
    path = seg(db, 1)
    os.chmod(path, 0o600)
    with lf.tamper(path) as conn:
        values = list(lf.row(conn, 14))
        values[3] = b'{"memory_id":"m13","text":"rewritten","v":1}'
        lf.replace_row(conn, 14, tuple(values))
    f = verify_log(db).failure
    assert f is not None
    assert (f.seq, f.reason) == (14, MODIFIED)
    assert path.name in f.detail


def test_a_segment_removed_from_the_middle_is_a_gap(db: Path) -> None:
    middle = seg(db, 1)
    middle.unlink()
    f = verify_log(db).failure
    assert f is not None
    assert (f.seq, f.reason) == (11, GAP)
    assert "seq 11\u201320 are missing" in f.detail
    assert seg(db, 0).name in f.detail and seg(db, 1).name in f.detail


def test_the_oldest_segment_removed_without_prune_is_a_gap(db: Path) -> None:
    seg(db, 0).unlink()
    f = verify_log(db).failure
    assert f is not None
    assert (f.seq, f.reason) == (1, GAP)
    assert "no log.pruned" in f.detail


def test_segments_renamed_to_swap_their_order_are_named(db: Path) -> None:
    a, b = seg(db, 0), seg(db, 1)
    tmp = a.with_name("swap")
    os.rename(a, tmp)
    os.rename(b, a)
    os.rename(tmp, b)
    f = verify_log(db).failure
    assert f is not None
    assert (f.seq, f.reason) == (1, REORDERED)
    assert a.name in f.detail and "seq 11\u201320" in f.detail


def test_a_segment_of_another_log_in_its_place_is_named(
    db: Path, tmp_path: Path, signer: Signer
) -> None:
    other = build(tmp_path / "other", signer)
    target = seg(db, 1)
    os.chmod(target, 0o600)
    shutil.copyfile(seg(other, 1), target)
    f = verify_log(db).failure
    assert f is not None
    assert (f.seq, f.reason) == (11, FOREIGN)
    assert target.name in f.detail and lf.log_id_of(other).hex() in f.detail


def test_a_copy_of_a_segment_under_another_name_is_a_duplicate(db: Path) -> None:
    first = seg(db, 0)
    shutil.copyfile(first, first.with_name("events-000000000005-000000000010.db"))
    f = verify_log(db).failure
    assert f is not None
    assert (f.seq, f.reason) == (5, DUPLICATED), f


def test_prune_deletes_whole_old_segments_and_verify_starts_from_its_anchor(
    db: Path, tmp_path: Path, signer: Signer
) -> None:
    checkpoints = cp.read_file(tmp_path / "checkpoints")
    with pytest.raises(NothingToPruneError, match="does not end before seq 10"):
        maintenance.prune_files(db, signer, None, before_seq=10)
    plan, record = maintenance.prune_files(db, signer, None, before_seq=25)
    assert [s.name for s in plan.doomed] == [
        "events-000000000001-000000000010.db",
        "events-000000000011-000000000020.db",
    ]
    # Before it, each note of working memory remembered in seq 1-20 is remembered
    # again (seq 36-40): the kept log alone still folds into working memory.
    assert (plan.first_kept_seq, record.seq, record.kind) == (21, 41, "log.pruned")
    with LogChain.open(db) as chain:
        carried = [chain.record(seq) for seq in range(36, 41)]
    assert {r.kind for r in carried} == {"memory.remembered"}
    assert all(r.data()["carried_from"] < 21 for r in carried)
    assert [s.first for s in segments.list_segments(db)] == [21]
    report = verify_log(db, checkpoints=checkpoints)
    assert report.ok, report.failure
    assert report.pruned_note == "verified from seq 21; seq 1\u201320 pruned at seq 41"
    assert (report.rows, report.first_seq) == (21, 21)
    audit = CliRunner().invoke(app, ["audit", "verify", "--db", str(db)])
    assert audit.exit_code == 0, audit.output
    assert "verified from seq 21; seq 1\u201320 pruned at seq 41" in audit.stdout
    with LogChain.open(db) as chain:
        result = replay(chain)
    assert result.state.seq == 41 and "pruned before seq 21" in result.snapshot_note
    assert result.from_snapshot == 0  # none was given
    shown = CliRunner().invoke(app, ["replay", "--db", str(db)])
    assert shown.exit_code == 0, shown.output
    assert "rebuilt from 21 events" in shown.stdout and "pruned before seq 21" in shown.stdout
    assert f"working memory: {len(result.state.memories)} item(s)" in shown.stdout
    before = CliRunner().invoke(app, ["replay", "--db", str(db), "--upto", "3"])
    assert before.exit_code == 1 and "pruned before seq 21" in before.stderr

    # Another gap is still refused, and a truncated tail still caught.
    seg(db, 0).unlink()
    f = verify_log(db).failure
    assert f is not None and (f.seq, f.reason) == (1, GAP)


def test_a_checkpoint_still_catches_a_truncated_tail_after_prune(
    db: Path, tmp_path: Path, signer: Signer
) -> None:
    _, pruned = maintenance.prune_files(db, signer, None, before_seq=11)
    with EventLog.open(db, signer) as log:
        log.append_batch(lf.items(3, 400))
        checkpoint = cp.Checkpoint.make(signer, log.log_id, log.head_seq, log.head_hash)
    with lf.tamper(db) as conn:
        conn.execute("DELETE FROM events WHERE seq > ?", (pruned.seq,))
    f = verify_log(db, checkpoints=[checkpoint]).failure
    assert f is not None and f.reason == TRUNCATED


def test_a_prune_killed_midway_still_verifies_under_its_anchor(db: Path, signer: Signer) -> None:
    # log.pruned is durable before the first unlink; a kill after deleting only
    # the oldest of the doomed segments leaves a log without a hole.
    with LogChain.open(db) as chain:
        plan = segments.plan_prune(chain.segments, chain.first_row_after, before_seq=25)
    with EventLog.open(db, signer) as log:
        log.append_batch([("log.pruned", lf.encode("log.pruned", plan.fields()))])
    plan.doomed[0].path.unlink()
    report = verify_log(db)
    assert report.ok, report.failure
    assert report.pruned_note.startswith("verified from seq 11;")
    # A second prune finishes it.
    maintenance.prune_files(db, signer, None, before_seq=25)
    assert verify_log(db).pruned_note.startswith("verified from seq 21;")


def test_an_anchor_that_does_not_match_the_kept_row_is_refused(db: Path, signer: Signer) -> None:
    with LogChain.open(db) as chain:
        plan = segments.plan_prune(chain.segments, chain.first_row_after, before_seq=11)
    forged = {"first_kept_seq": plan.first_kept_seq, "prev_hash": "ab" * 32}
    with EventLog.open(db, signer) as log:
        log.append_batch([("log.pruned", lf.encode("log.pruned", forged))])
    segments.delete_pruned(plan)
    f = verify_log(db).failure
    assert f is not None and (f.seq, f.reason) == (11, MODIFIED)


def test_prune_by_date_and_the_snapshot_keeps_the_state(tmp_path: Path, signer: Signer) -> None:
    db = build(tmp_path, signer, compress=True)
    snap_path = tmp_path / "snapshot.json"
    with LogChain.open(db) as chain:
        whole = replay(chain).state
        boundary = chain.first_row_after(chain.segments[0]).ts_ns
    maintenance.prune_files(db, signer, snap_path, before_ns=boundary + 1)
    assert [s.first for s in segments.list_segments(db)] == [11, 21]
    notes = {m.memory_id: m.text for m in whole.memories.values()}
    snap, why = snapshot.load(snap_path)
    assert snap is not None, why
    assert {m.memory_id: m.text for m in snap.state.memories.values()} == notes
    with LogChain.open(db) as chain:
        again = replay(chain, snapshot_path=snap_path).state
        # The snapshot is derived data: without it, the kept log holds working memory.
        alone = replay(chain).state
    assert {m.memory_id: m.text for m in again.memories.values()} == notes
    assert {m.memory_id: m.text for m in alone.memories.values()} == notes
    assert verify_log(db).ok
