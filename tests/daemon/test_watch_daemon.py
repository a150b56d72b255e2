"""A real daemon follows its shards' files: each applied batch is a `corpus.changed` event,
answers cite the new text with the digest of the file version, and a shard that had to
fall back to polling says so in `status` and `doctor`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import daemonproc as dp
import pytest
from ifmemd.system import doctor


def digest(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=32).hexdigest()


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[dp.DaemonFactory]:
    with dp.factory(tmp_path) as made:
        yield made


def ask(daemon: dp.DaemonProc, question: str) -> dict[str, Any]:
    return daemon.request("ask", question=question, shards=["docs"])


def changes_of(daemon: dp.DaemonProc, path: Path) -> list[dict[str, Any]]:
    return [
        body
        for _, _, body in daemon.events("corpus.changed")
        if any(c["path"] == str(path) for c in body["changed"]) or str(path) in body["removed"]
    ]


def test_edits_are_recorded_and_answers_cite_the_new_version(
    factory: dp.DaemonFactory,
) -> None:
    daemon = factory()
    daemon.wait_shard("docs", lambda s: s["watch"] == "inotify", "watching")
    beacon = factory.corpus["docs"] / "beacon.md"
    before = ask(daemon, "lighthouse")["passages"]
    assert [p["digest"] for p in before] == [digest(beacon)]

    beacon.write_text("# Beacon\n\nA lighthouse lantern guides ships past the reef.\n")
    (event,) = dp.wait_for(lambda: changes_of(daemon, beacon), 10, "corpus.changed")
    assert event["shard"] == "docs"
    assert event["changed"] == [{"path": str(beacon), "digest": digest(beacon), "lines": 3}]

    reply = ask(daemon, "lighthouse")
    (passage,) = reply["passages"]
    assert "reef" in passage["snippet"] and "fog" not in passage["snippet"]
    assert passage["digest"] == digest(beacon)
    assert ask(daemon, "fog keepers wick")["passages"] == []
    # The log holds the same digests as the reply.
    (answered,) = [b for _, _, b in daemon.events("query.answered") if b["qid"] == reply["qid"]]
    assert [p["digest"] for p in answered["passages"]] == [digest(beacon)]

    beacon.unlink()
    dp.wait_for(
        lambda: any(str(beacon) in e["removed"] for e in changes_of(daemon, beacon)),
        10,
        "the removal to be recorded",
    )
    assert ask(daemon, "lighthouse")["passages"] == []


def test_a_restart_reopens_the_index_and_sees_what_changed_meanwhile(
    factory: dp.DaemonFactory,
) -> None:
    daemon = factory()
    glacier = factory.corpus["docs"] / "glacier.md"
    daemon.stop()
    glacier.write_text("# Glacier\n\nGlacier ice calves into the fjord.\n")
    daemon.start()
    (passage,) = ask(daemon, "fjord")["passages"]
    assert passage["path"] == str(glacier) and passage["digest"] == digest(glacier)
    cache = daemon.root / "home" / ".cache" / "ifmem" / "shards" / "docs" / "index.db"
    assert cache.exists()
    assert not [
        b for _, _, b in daemon.events("shard.warning") if "index rebuilt" in b["reason"]
    ]


def test_polling_fallback_is_shown_by_status_and_doctor(
    factory: dp.DaemonFactory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    docs = factory.corpus["docs"]
    for i in range(12):
        (docs / f"topic{i}").mkdir()
        (docs / f"topic{i}" / "n.md").write_text(f"# Topic {i}\n")
    # inotify limits are per user namespace: lowered for this daemon alone.
    limit = 'echo 4 > /proc/sys/user/max_inotify_watches && exec "$@"'
    config = dp.config_text({"docs": [str(docs)]})
    daemon = factory(
        config, prefix=["unshare", "--user", "--map-root-user", "sh", "-c", limit, "sh"]
    )
    daemon.wait_shard("docs", lambda s: s["watch"] == "polling", "polling")
    warnings = [
        b for _, _, b in daemon.events("shard.warning") if "inotify watches" in b["reason"]
    ]
    assert len(warnings) == 1 and "polling" in warnings[0]["reason"]

    (docs / "topic3" / "n.md").write_text("# Topic 3\n\nPolled pelicans.\n")
    dp.wait_for(lambda: ask(daemon, "pelicans")["passages"], 10, "the polled change")

    monkeypatch.setenv("IFMEM_SOCKET", str(daemon.socket_path))
    check = doctor._daemon()
    assert check.verdict == doctor.WARN and "docs" in check.detail
    assert "max_user_watches" in check.fix

    from ifmem import client

    client.status(daemon.socket_path, as_json=False)
    out = capsys.readouterr().out
    assert "polling" in out and "inotify watches ran out" in out
