"""Crash test: SIGKILL a process appending under load; nothing it acknowledged is lost.

A child process appends with the real `LogWriter` from 16 concurrent producers
and prints `seq token` for every append that returned (flushed, so the test
sees it before the kill). The test kills it at a random moment, several times
over the same log, then checks the log verifies and holds every acknowledged
token at the seq it was acknowledged with.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from ifmemd.log import checkpoint as cp
from ifmemd.log.eventlog import EventLog
from ifmemd.log.verify import verify_log

ITERATIONS = 3
PRODUCERS = 16

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import anyio

    from ifmemd.log.eventlog import EventLog
    from ifmemd.log.keys import load_or_create_signer
    from ifmemd.log.writer import LogWriter

    db, key, run = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]


    async def main() -> None:
        log = EventLog.open(db, load_or_create_signer(key))
        writer = LogWriter(log, checkpoint_every=50, checkpoints_path=db.parent / "checkpoints")

        async def producer(p: int) -> None:
            i = 0
            while True:
                token = f"{run}-{p}-{i}"
                record = await writer.append(
                    "memory.remembered", {"memory_id": token, "text": "x" * (i % 300)}
                )
                print(record.seq, token, flush=True)
                i += 1

        async with anyio.create_task_group() as tg:
            await tg.start(writer.run)
            for p in range(PRODUCERS):
                tg.start_soon(producer, p)


    anyio.run(main)
    """
).replace("PRODUCERS", str(PRODUCERS))


def run_and_kill(script: Path, db: Path, key: Path, run: str, delay: float) -> list[str]:
    """Start the child, kill it `delay` seconds after its first acknowledgement."""
    errors = db.parent.parent / f"{run}.stderr"
    lines: list[str] = []
    first = threading.Event()
    with (
        errors.open("w") as err,
        subprocess.Popen(
            [sys.executable, str(script), str(db), str(key), run],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        ) as child,
    ):

        def read() -> None:
            assert child.stdout is not None
            for line in child.stdout:
                lines.append(line)
                first.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            if not first.wait(30):
                raise AssertionError(
                    f"the child acknowledged nothing in 30 s; stderr:\n{errors.read_text()}"
                )
            time.sleep(delay)
            assert child.poll() is None, f"the child died on its own:\n{errors.read_text()}"
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            reader.join(10)
    assert child.returncode == -signal.SIGKILL
    # A line cut short by the kill was never a whole acknowledgement.
    return [line for line in lines if line.endswith("\n")]


@pytest.mark.slow  # three child processes and a full signature check: 4-6 s
def test_acknowledged_appends_survive_sigkill(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    db = tmp_path / "data" / "events.db"
    key = tmp_path / "keys" / "signing.key"
    acknowledged: dict[str, int] = {}
    for n in range(ITERATIONS):
        delay = rng.uniform(0.2, 1.0)
        for line in run_and_kill(script, db, key, f"run{n}", delay):
            seq, token = line.split()
            acknowledged[token] = int(seq)
        assert any(t.startswith(f"run{n}-") for t in acknowledged), f"seed {seed}: run {n}"

        # Between kills, the chain (signatures are checked once, at the end).
        report = verify_log(db, jobs=1, signatures=False)
        assert report.ok, f"seed {seed}, run {n}, delay {delay:.2f}: {report.failure}"

    # Every checkpoint the children published is still held by the log.
    checkpoints = cp.read_file(db.parent / "checkpoints")
    report = verify_log(db, checkpoints=checkpoints, jobs=1)
    assert report.ok, f"seed {seed}: {report.failure}"
    assert report.rows == report.head_seq
    assert report.checkpoints == len(checkpoints) > 0

    with EventLog.open_readonly(db) as log:
        stored = {
            json.loads(body)["memory_id"]: seq
            for seq, _ts, kind, body, *_ in log.rows(0)
            if kind == "memory.remembered"
        }
        head = log.head_seq
    lost = {t: s for t, s in acknowledged.items() if stored.get(t) != s}
    assert not lost, f"seed {seed}: acknowledged but not stored at that seq: {sorted(lost)[:10]}"
    assert head >= len(acknowledged)
    assert len(acknowledged) > ITERATIONS * PRODUCERS
