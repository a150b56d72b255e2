"""A real daemon sealing its log: on request, under concurrent appends, by size; and pruning.

Every acknowledged write must be in the log exactly once, in a chain that
`audit verify` accepts across the segments; a restarted daemon rebuilds the
same state; answers recorded in a sealed segment are still found for retries.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import daemonproc as dp
import pytest
from ifmem.main import app
from ifmemd.log import segments
from ifmemd.log.verify import verify_log
from typer.testing import CliRunner

WRITERS = 4
EACH = 40


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[dp.DaemonFactory]:
    with dp.factory(tmp_path) as made:
        yield made


def test_seal_under_concurrent_appends_loses_nothing(daemons: dp.DaemonFactory) -> None:
    daemon = daemons(daemons.default_config() + '\n[log]\ncompress = "zstd"\n')
    acked: dict[str, int] = {}
    sealed: list[dict] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def writer(w: int) -> None:
        try:
            with daemon.client() as client:
                for i in range(EACH):
                    got = client.request("remember", request_id=f"w{w}-{i}", text=f"note {w} {i}")
                    with lock:
                        acked[got["memory_id"]] = got["seq"]
        except BaseException as e:
            errors.append(e)

    def sealer() -> None:
        try:
            with daemon.client() as client:
                for _ in range(3):
                    sealed.append(client.request("seal"))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    threads.append(threading.Thread(target=sealer))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(acked) == WRITERS * EACH and len(sealed) == 3
    # Segments in order, none overlapping (the chain between them is checked below).
    for a, b in itertools.pairwise(sealed):
        assert b["first_seq"] > a["last_seq"]
    events = daemon.events()
    assert [seq for seq, _, _ in events] == list(range(1, len(events) + 1))
    remembered = {b["memory_id"]: seq for seq, k, b in events if k == "memory.remembered"}
    assert remembered == acked
    sealed_rows = [seq for seq, k, _ in events if k == "log.sealed"]
    assert sealed_rows == [s["last_seq"] + 1 for s in sealed]
    report = verify_log(daemon.db_path)
    assert report.ok, report.failure
    assert report.segments == 3

    # The restarted daemon knows every note, from its snapshot and, with none,
    # from a replay across every segment; a retry finds its recorded answer.
    memories = daemon.status()["memories"]
    assert daemon.stop() == 0
    daemon.start()
    assert daemon.status()["memories"] == memories == WRITERS * EACH
    assert daemon.stop() == 0
    (daemon.root / "home/.local/state/ifmem/snapshot.json").unlink()
    daemon.start()
    assert daemon.status()["memories"] == memories
    assert "replayed" in daemon.stderr() and "after snapshot" not in daemon.stderr()
    first = daemon.request("remember", request_id="w0-0", text="note 0 0")
    assert first["replayed"] and first["seq"] == acked[first["memory_id"]]
    # Compressed by the daemon once sealed.
    found = segments.list_segments(daemon.db_path)
    assert len(found) == 3
    dp.wait_for(
        lambda: all(s.compressed for s in segments.list_segments(daemon.db_path)),
        10,
        "every segment compressed",
    )


def test_the_daemon_seals_by_size_and_answers_retries_from_segments(
    daemons: dp.DaemonFactory,
) -> None:
    config = daemons.default_config(heartbeat_interval=5.0, heartbeat_timeout=20.0)
    daemon = daemons(config + '\n[log]\nsegment_events = 30\ncompress = "none"\n')
    answer = daemon.request("ask", request_id="q-early", question="lighthouse beacon")
    with daemon.client() as client:
        for i in range(80):
            client.request("remember", text=f"filler {i}")
    found = segments.list_segments(daemon.db_path)
    assert len(found) >= 2
    assert all(s.last - s.first + 1 >= 30 for s in found)
    assert not any(s.compressed for s in found)
    again = daemon.request("ask", request_id="q-early", question="lighthouse beacon")
    assert again["replayed"] and again["seq"] == answer["seq"] < found[0].last
    assert again["passages"] == answer["passages"]
    assert verify_log(daemon.db_path).ok


def test_prune_through_the_daemon(
    daemons: dp.DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = daemons(daemons.default_config() + '\n[log]\ncompress = "none"\n')
    kept = daemon.request("remember", text="kept across the prune")
    runner = CliRunner()
    monkeypatch.setenv("IFMEM_SOCKET", str(daemon.socket_path))
    db = ["--db", str(daemon.db_path)]
    first = json.loads(runner.invoke(app, ["log", "seal", *db, "--json"]).stdout)
    daemon.request("remember", text="after the first seal")
    second = runner.invoke(app, ["log", "seal", *db, "--json"])
    assert second.exit_code == 0, second.output
    refused = runner.invoke(app, ["log", "prune", "--before", "1", *db])
    assert refused.exit_code == 1 and "nothing to delete" in refused.stderr
    pruned = runner.invoke(app, ["log", "prune", "--before", str(first["last_seq"] + 1), *db])
    assert pruned.exit_code == 0, pruned.output
    assert f"pruned seq 1\u2013{first['last_seq']}" in pruned.stdout
    report = verify_log(daemon.db_path)
    assert report.ok, report.failure
    assert report.first_seq == first["last_seq"] + 1
    # What the pruned events built stays: the daemon saved a snapshot before deleting,
    # and working memory is in the kept log itself (the snapshot may be deleted).
    assert daemon.stop() == 0
    (daemon.root / "home/.local/state/ifmem/snapshot.json").unlink()
    daemon.start()
    hits = daemon.request("ask", question="kept across the prune", shards=["working"])
    assert f"memory:{kept['memory_id']}" in [p["path"] for p in hits["passages"]]
    assert daemon.status()["memories"] == 2


def test_a_prune_right_after_a_seal_deletes_the_segment_compressed_or_not(
    daemons: dp.DaemonFactory,
) -> None:
    # Compressed in the background (zstd, the default): the prune may come
    # before, during or after the .zst replaces the .db.
    daemon = daemons()
    folder = segments.segments_dir(daemon.db_path)
    for round_ in range(3):
        daemon.request("remember", text=f"round {round_}")
        sealed = daemon.request("seal")
        pruned = daemon.request("prune", before_seq=sealed["last_seq"] + 1)
        assert pruned["first_kept_seq"] == sealed["last_seq"] + 1
        gone = Path(sealed["segment"]).name.removesuffix(".zst")
        left = sorted(p.name for p in folder.iterdir() if p.name.startswith(gone))
        assert left == [], (pruned, left)
    report = verify_log(daemon.db_path)
    assert report.ok, report.failure


_KILLED_SEAL = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from ifmemd.log import maintenance, segments
    from ifmemd.log.keys import load_signer

    segments.after_step = lambda step: step == "moved" and os.kill(os.getpid(), signal.SIGKILL)
    maintenance.seal_files(Path(sys.argv[1]), load_signer(Path(sys.argv[2])), None, compress=True)
    """
)


def test_the_daemon_finishes_a_seal_killed_after_the_move(daemons: dp.DaemonFactory) -> None:
    daemon = daemons(daemons.default_config() + '\n[log]\ncompress = "zstd"\n')
    notes = [daemon.request("remember", text=f"before the crash {i}") for i in range(5)]
    assert daemon.stop() == 0
    key = daemon.root / "home/.local/share/ifmem/signing.key"
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_SEAL, str(daemon.db_path), str(key)], capture_output=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert not daemon.db_path.exists()  # moved, and no live file yet
    [plain] = segments.list_segments(daemon.db_path)
    assert not plain.compressed

    daemon.start()
    # The start continued the log from the segment and compressed it.
    dp.wait_for(
        lambda: all(s.compressed for s in segments.list_segments(daemon.db_path)),
        10,
        "the leftover segment compressed",
    )
    assert daemon.status()["memories"] == len(notes)
    events = daemon.events()
    assert [seq for seq, _, _ in events] == list(range(1, len(events) + 1))
    sealed = [seq for seq, kind, _ in events if kind == "log.sealed"]
    assert sealed == [plain.last + 1]
    assert verify_log(daemon.db_path).ok
