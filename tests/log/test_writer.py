"""The group-commit writer: concurrent producers, durable acknowledgements, checkpoints."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest
from ifmemd.errors import StoreError
from ifmemd.log import checkpoint as cp
from ifmemd.log import segments
from ifmemd.log.chain import LogChain
from ifmemd.log.eventlog import EventLog, Record
from ifmemd.log.verify import verify_log
from ifmemd.log.writer import LogWriter, WriterClosedError
from ifmemd.system import durable

PRODUCERS = 64
PER_PRODUCER = 5


def fields(token: str) -> dict[str, str]:
    return {"memory_id": token, "text": f"text of {token}"}


def token_of(record: Record) -> str:
    return json.loads(record.body)["memory_id"]


@pytest.mark.anyio
async def test_concurrent_producers_share_commits_and_get_durable_records(
    log: EventLog,
) -> None:
    writer = LogWriter(log)
    committed: list[Record] = []
    writer.on_commit = lambda records, _fields: committed.extend(records)
    called: list[str] = []  # the order in which producers handed their events over
    results: dict[str, Record] = {}
    not_yet_visible: list[int] = []
    with EventLog.open_readonly(log.path) as reader:

        async def producer(p: int) -> None:
            last_seq = 0
            for i in range(PER_PRODUCER):
                token = f"p{p}-{i}"
                called.append(token)
                record = await writer.append("memory.remembered", fields(token))
                # Acknowledged means committed: another connection sees it at once.
                if reader.record(record.seq) != record:
                    not_yet_visible.append(record.seq)
                assert record.seq > last_seq
                last_seq = record.seq
                results[token] = record
                await anyio.sleep(0)

        async with anyio.create_task_group() as tg:
            await tg.start(writer.run)
            async with anyio.create_task_group() as producers:
                for p in range(PRODUCERS):
                    producers.start_soon(producer, p)
            await writer.close()

    total = PRODUCERS * PER_PRODUCER
    assert not_yet_visible == []
    assert len(results) == total
    assert sorted(r.seq for r in results.values()) == list(range(1, total + 1))
    # Group commit: events that arrive together share one transaction.
    assert 1 <= writer.batches < total
    # Order: seq order is the order the events were handed to the writer, and
    # on_commit sees them in that same order.
    stored = list(log.records())
    assert [token_of(r) for r in stored] == called
    assert committed == stored
    for token, record in results.items():
        assert token_of(record) == token
    assert verify_log(log.path, jobs=1).ok


@pytest.mark.anyio
async def test_checkpoint_every_n_events(
    log: EventLog, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    checkpoints_path = tmp_path / "state" / "checkpoints"
    writer = LogWriter(log, checkpoint_every=5, checkpoints_path=checkpoints_path)
    async with anyio.create_task_group() as tg:
        await tg.start(writer.run)
        for i in range(23):
            await writer.append("memory.remembered", fields(f"m{i}"))
        await writer.close()

    published = cp.read_file(checkpoints_path)
    assert len(published) >= 3
    stderr_lines = [line for line in capfd.readouterr().err.splitlines() if cp.TAG in line]
    assert stderr_lines == [c.line() for c in published]
    rows = {r.seq: r for r in log.records()}
    previous = 0
    for c in published:
        assert c.log_id == log.log_id
        assert c.key_id == log.signer.key_id
        assert c.signature_holds(log.signer.public_key)
        assert rows[c.seq].hash == c.hash
        assert c.seq - previous >= 5
        previous = c.seq
        # Each checkpoint is followed by a `checkpoint` event naming it.
        events = [r for r in rows.values() if r.kind == "checkpoint" and r.data()["seq"] == c.seq]
        assert len(events) == 1
        assert events[0].seq > c.seq
        assert events[0].data() == {"seq": c.seq, "hash": c.hash.hex(), "v": 1}
    report = verify_log(log.path, checkpoints=published, jobs=1)
    assert report.ok, report.failure


@pytest.mark.anyio
async def test_close_drains_the_queue_and_later_appends_fail(log: EventLog) -> None:
    writer = LogWriter(log)
    results: list[Record] = []

    async def one(i: int) -> None:
        results.append(await writer.append("memory.remembered", fields(f"m{i}")))

    async with anyio.create_task_group() as tg:
        await tg.start(writer.run)
        for i in range(40):
            tg.start_soon(one, i)
        # Let every producer queue its event, then close before the writer commits.
        await anyio.wait_all_tasks_blocked()
        await writer.close()
        assert len(results) == 40
        assert log.head_seq == 40
        with pytest.raises(WriterClosedError, match="not recorded"):
            await writer.append("memory.remembered", fields("late"))
    assert log.head_seq == 40
    assert [r.seq for r in log.records()] == list(range(1, 41))


@pytest.mark.anyio
async def test_a_failed_batch_fails_only_its_producers(
    log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = LogWriter(log)
    async with anyio.create_task_group() as tg:
        await tg.start(writer.run)
        await writer.append("memory.remembered", fields("before"))

        real_append = log.append_batch
        batches: list[list[str]] = []
        heads: list[tuple[int, bytes]] = []

        def fail_second(items: Sequence[tuple[str, bytes]]) -> list[Record]:
            heads.append((log.head_seq, log.head_hash))
            batches.append([json.loads(body)["memory_id"] for _, body in items])
            if len(batches) == 2:
                raise StoreError("append event", log.path, "disk full")
            return real_append(items)

        monkeypatch.setattr(log, "append_batch", fail_second)
        outcome: dict[str, object] = {}

        async def producer(p: int) -> None:
            for i in range(3):
                token = f"c{p}-{i}"
                try:
                    outcome[token] = await writer.append("memory.remembered", fields(token))
                except StoreError as e:
                    outcome[token] = e

        async with anyio.create_task_group() as producers:
            for p in range(20):
                producers.start_soon(producer, p)

        # The writer keeps serving after a failed batch.
        later = await writer.append("memory.remembered", fields("after"))
        await writer.close()

    assert len(batches) >= 3
    failed = {t for t, o in outcome.items() if isinstance(o, StoreError)}
    assert failed == set(batches[1])
    for token in failed:
        assert "disk full" in str(outcome[token])
    # The failed batch did not move the head: the next batch chains onto the
    # head the failed one started from.
    assert heads[2] == heads[1]
    stored = [token_of(r) for r in log.records()]
    assert stored[0] == "before"
    assert stored[-1] == "after"
    assert not failed & set(stored)
    succeeded = {t for t, o in outcome.items() if isinstance(o, Record)}
    assert succeeded | failed == set(outcome)
    assert succeeded == set(stored) - {"before", "after"}
    assert later.seq == log.head_seq == len(stored) == 1 + len(succeeded) + 1
    assert verify_log(log.path, jobs=1).ok


@pytest.mark.anyio
async def test_a_failed_first_batch_leaves_the_head_unchanged(
    log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = LogWriter(log)
    async with anyio.create_task_group() as tg:
        await tg.start(writer.run)
        first = await writer.append("memory.remembered", fields("before"))
        head = (log.head_seq, log.head_hash)
        real_append = log.append_batch
        calls = 0

        def fail_once(items: Sequence[tuple[str, bytes]]) -> list[Record]:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise StoreError("append event", log.path, "disk full")
            return real_append(items)

        monkeypatch.setattr(log, "append_batch", fail_once)
        with pytest.raises(StoreError, match="disk full"):
            await writer.append("memory.remembered", fields("lost"))
        assert (log.head_seq, log.head_hash) == head
        after = await writer.append("memory.remembered", fields("after"))
        await writer.close()
    assert after.seq == first.seq + 1
    assert after.prev == first.hash
    assert [token_of(r) for r in log.records()] == ["before", "after"]


@pytest.mark.anyio
async def test_a_checkpoint_that_cannot_be_written_does_not_stop_the_writer(
    log: EventLog,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    checkpoints_path = tmp_path / "state" / "checkpoints"
    writer = LogWriter(log, checkpoint_every=3, checkpoints_path=checkpoints_path)
    failures = 0

    def fsync_fails_once(fd: int) -> None:
        nonlocal failures
        if failures == 0:
            failures += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        os.fsync(fd)

    monkeypatch.setattr(durable, "fsync", fsync_fails_once)
    records = []
    async with anyio.create_task_group() as tg:
        await tg.start(writer.run)
        for i in range(10):
            records.append(await writer.append("memory.remembered", fields(f"m{i}")))
        await writer.close()
    assert failures == 1
    assert [token_of(r) for r in records] == [f"m{i}" for i in range(10)]
    assert "No space left on device" in capfd.readouterr().err
    # The checkpoint that failed is published after the next commit instead.
    published = cp.read_file(checkpoints_path)
    assert published[0].seq == 4
    assert all(log.record(c.seq).hash == c.hash for c in published)
    assert verify_log(log.path, checkpoints=published, jobs=1).ok


@pytest.mark.anyio
async def test_the_writer_seals_by_count_and_by_age(tmp_path: Path, log: EventLog) -> None:
    writer = LogWriter(log, segment_events=10)
    sealed: list[object] = []
    writer.after_seal = sealed.append
    async with anyio.create_task_group() as tg:
        await tg.start(writer.run)
        for i in range(25):
            await writer.append("memory.remembered", fields(f"m{i}"))
        # Ten events, then the new file's `log.sealed` and nine more, then again.
        assert [(s.first, s.last) for s in segments.list_segments(log.path)] == [(1, 10), (11, 20)]
        writer.segment_events = None
        writer.segment_age_s = 0.05
        await anyio.sleep(0.1)
        await writer.append("memory.remembered", fields("late"))
        await writer.close()
    found = segments.list_segments(log.path)
    assert [(s.first, s.last) for s in found] == [(1, 10), (11, 20), (21, 28)]
    assert len(sealed) == 3 and all(s is not None for s in sealed)
    writer.log.close()
    with LogChain.open(log.path) as chain:
        tokens = [
            json.loads(r.body)["memory_id"] for r in chain.records() if r.kind != "log.sealed"
        ]
    assert tokens == [f"m{i}" for i in range(25)] + ["late"]
    assert verify_log(log.path).ok


@pytest.mark.anyio
async def test_a_seal_a_reader_blocks_is_refused_and_appends_go_on(log: EventLog) -> None:
    writer = LogWriter(log)
    async with anyio.create_task_group() as tg:
        await tg.start(writer.run)
        await writer.append("memory.remembered", fields("a"))
        with EventLog.open_readonly(log.path) as reader:
            rows = reader.rows(0)
            next(rows)  # a read left open holds the -wal
            with pytest.raises(StoreError, match="a reader holds the log open"):
                await writer.seal()
            del rows
        record = await writer.append("memory.remembered", fields("b"))
        assert record.seq == 2 and writer.log.path == log.path
        segment = await writer.seal()
        assert (segment.first, segment.last) == (1, 2)
        await writer.close()
    writer.log.close()
