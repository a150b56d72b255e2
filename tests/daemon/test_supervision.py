"""Supervision against a real daemon: shards killed, hung, crash-looping, reloaded.

Every test runs the installed `ifmemd` with real shard processes and short
heartbeats (0.2 s, timeout 1 s); nothing of ours is mocked.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import daemonproc as dp
import pytest
from ifmemd.errors import IfmemError
from ifmemd.wire.protocol import RemoteError


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[dp.DaemonFactory]:
    with dp.factory(tmp_path) as made:
        yield made


@pytest.fixture
def daemon(daemons: dp.DaemonFactory) -> dp.DaemonProc:
    return daemons()


def kinds_after(d: dp.DaemonProc, seq: int, shard: str) -> list[tuple[int, str, dict]]:
    """Shard lifecycle events (no heartbeats) of `shard` after `seq`."""
    return [
        e
        for e in d.events(
            "shard.exited", "shard.restarting", "shard.spawned", "shard.ready", "shard.failed"
        )
        if e[0] > seq and e[2].get("shard") == shard
    ]


def head(d: dp.DaemonProc) -> int:
    return d.status()["log"]["seq"]


def test_a_sigkilled_shard_is_back_and_answering_within_a_second(daemon: dp.DaemonProc) -> None:
    client = daemon.client()
    before = head(daemon)
    old = daemon.shard_pids()["docs"]

    start = time.monotonic()
    os.kill(old, signal.SIGKILL)
    while True:
        docs = next(s for s in client.request("status")["shards"] if s["name"] == "docs")
        if docs["status"] == "ready" and docs["pid"] != old:
            answer = client.request("ask", question="lighthouse beacon", shards=["docs"])
            if answer["passages"] and not answer["missing"]:
                break
        assert time.monotonic() - start < 5.0, f"docs never came back: {docs}"
        time.sleep(0.005)
    elapsed = time.monotonic() - start

    assert elapsed < 1.0, f"the shard took {elapsed:.3f} s to answer again"
    assert answer["passages"][0]["path"].endswith("beacon.md")
    new = docs["pid"]
    assert dp.pid_alive(new) and not dp.pid_alive(old)
    assert docs["restarts"] == 1

    events = kinds_after(daemon, before, "docs")
    assert [k for _, k, _ in events] == [
        "shard.exited",
        "shard.restarting",
        "shard.spawned",
        "shard.ready",
    ]
    assert events[0][2]["code"] == -signal.SIGKILL
    assert events[1][2]["delay_s"] == pytest.approx(0.1)
    assert events[1][2]["restarts"] == 1
    assert events[2][2]["pid"] == new
    # The other shards were not touched.
    assert kinds_after(daemon, before, "code") == []


def test_a_shard_that_cannot_be_started_is_retried_and_the_daemon_goes_on(
    daemons: dp.DaemonFactory,
) -> None:
    # Out of descriptors: idle clients hold every one the daemon may have.
    d = daemons(daemons.default_config(max_clients=1000), prefix=["prlimit", "--nofile=64"])
    old = d.shard_pids()["docs"]
    before = head(d)
    with dp.descriptors_exhausted(d, 80):
        os.kill(old, signal.SIGKILL)

        def spawn_failed() -> bool:
            return any(
                body.get("code") == 127 and "cannot start its process" in body.get("reason", "")
                for _, _, body in kinds_after(d, before, "docs")
            )

        dp.wait_for(spawn_failed, 10.0, "a restart that cannot start the process")
        assert d.running, d.diagnostics()
    # Descriptors free again, the next restart brings it back.
    dp.wait_for(
        lambda: d.shard("docs")["status"] == "ready" and d.shard("docs")["pid"] != old,
        20.0,
        "docs back",
    )
    answer = d.request("ask", question="lighthouse beacon", shards=["docs"])
    assert answer["passages"][0]["path"].endswith("beacon.md")


def test_shards_that_die_before_reading_their_init_fail_and_the_daemon_goes_on(
    daemons: dp.DaemonFactory, tmp_path: Path
) -> None:
    # As after an upgrade that broke an import: every shard process exits at once.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os, sys\nif sys.argv and sys.argv[0] == '-m':\n    os._exit(3)\n"
    )
    d = daemons(start=False)
    own_env = d.env
    d.env = lambda: {**own_env(), "PYTHONPATH": f"{site}:{own_env().get('PYTHONPATH', '')}"}
    d.start(wait=False)

    def all_failed() -> bool:
        status = d._try_status()
        return status is not None and all(s["status"] == "failed" for s in status["shards"])

    dp.wait_for(all_failed, 30.0, "every shard failed", d.diagnostics)
    assert d.running, d.diagnostics()
    reasons = {body["reason"] for _, _, body in d.events("shard.failed")}
    assert reasons and all("exited" in r for r in reasons), reasons


def test_a_second_daemon_on_the_same_log_is_refused(daemons: dp.DaemonFactory) -> None:
    first = daemons()
    second = daemons(start=False, db=first.db_path)
    second.env = first.env  # the same user's key, as two starts by one user would have
    second.start(wait=False)
    assert second.proc is not None and second.proc.wait(60) == 1
    assert "another ifmemd writes this log" in second.stderr()
    assert first.request("remember", text="the first one still writes")["memory_id"]


def test_sighup_while_stopping_neither_reloads_nor_kills(daemons: dp.DaemonFactory) -> None:
    d = daemons()
    assert d.proc is not None
    d.proc.send_signal(signal.SIGTERM)
    while d.proc.poll() is None:  # SIGHUP all through the stop, to its last moment
        with contextlib.suppress(ProcessLookupError):
            d.proc.send_signal(signal.SIGHUP)
        time.sleep(0.005)
    assert d.proc.returncode == 0, d.diagnostics()
    assert [k for _, k, _ in d.events("config.loaded", "daemon.stopping")][-1] == "daemon.stopping"


def test_a_stopped_shard_is_killed_after_the_heartbeat_timeout_and_replaced(
    daemon: dp.DaemonProc,
) -> None:
    client = daemon.client()
    before = head(daemon)
    old = daemon.shard_pids()["docs"]

    stopped_at = time.monotonic()
    os.kill(old, signal.SIGSTOP)
    # A question to every shard is still answered while docs hangs: docs is named as
    # missing once it has been killed, instead of holding the answer hostage.
    answer = client.request("ask", question="valve opened")
    asked_for = time.monotonic() - stopped_at
    assert asked_for < 3.0
    assert answer["passages"][0]["path"].endswith("valve.py")
    assert [m["shard"] for m in answer["missing"]] == ["docs"]
    # Other shards keep serving on their own meanwhile.
    assert client.request("ask", question="glacier", shards=["code"])["missing"] == []

    docs = daemon.wait_shard(
        "docs", lambda s: s["pid"] != old and s["status"] == "ready", "replaced"
    )
    took = time.monotonic() - stopped_at
    # The last beat came at most one interval before the stop: no kill before then.
    assert took >= dp.HEARTBEAT_TIMEOUT - dp.HEARTBEAT_INTERVAL
    assert not dp.pid_alive(old)
    events = kinds_after(daemon, before, "docs")
    assert [k for _, k, _ in events] == [
        "shard.exited",
        "shard.restarting",
        "shard.spawned",
        "shard.ready",
    ]
    # Killed with SIGKILL: a stopped process ignores anything less.
    assert events[0][2]["code"] == -signal.SIGKILL
    assert events[2][2]["pid"] == docs["pid"]
    answer = client.request("ask", question="lighthouse", shards=["docs"])
    assert answer["passages"] and not answer["missing"]


def test_heartbeats_are_recorded_as_one_event_per_round(daemon: dp.DaemonProc) -> None:
    client = daemon.client()
    before = head(daemon)
    pids = daemon.shard_pids()
    started = time.monotonic()
    time.sleep(12 * dp.HEARTBEAT_INTERVAL)
    rounds = [e for e in daemon.events() if e[0] > before and e[1].startswith("shard.heartbeat")]
    elapsed = time.monotonic() - started
    assert {k for _, k, _ in rounds} == {"shard.heartbeats"}
    # One event a round, not one a heartbeat (4 shards would give 4 a round).
    assert len(rounds) <= elapsed / dp.HEARTBEAT_INTERVAL + 1
    heard: dict[str, int] = {}
    for _, _, body in rounds:
        for name, beats in body["beats"].items():
            heard[name] = heard.get(name, 0) + len(beats)
            for rss_bytes, served, uptime_s in beats:
                assert rss_bytes > 0 and uptime_s > 0 and served >= 0
    # Every shard's heartbeats are all there: about one an interval each.
    for name in pids:
        assert heard.get(name, 0) >= len(rounds) - 2, (name, heard, len(rounds))

    # A shard that stops beating is named silent in the rounds it misses.
    stopped = head(daemon)
    os.kill(pids["docs"], signal.SIGSTOP)
    try:
        time.sleep(4 * dp.HEARTBEAT_INTERVAL)
        later = [b for seq, _, b in daemon.events("shard.heartbeats") if seq > stopped]
        assert any("docs" in b["silent"] and "docs" not in b["beats"] for b in later), later
        assert all("code" in b["beats"] or "code" in b["silent"] for b in later)
    finally:
        os.kill(pids["docs"], signal.SIGCONT)
    assert client.request("status")["log"]["seq"] > stopped


def test_a_shard_that_keeps_dying_is_marked_failed_and_the_others_keep_serving(
    daemons: dp.DaemonFactory,
) -> None:
    d = daemons(daemons.default_config(restart_intensity=(2, 30)))
    client = d.client()
    before = head(d)
    killed: list[int] = []
    for _ in range(3):
        pid = d.wait_shard(
            "docs", lambda s: s["pid"] not in killed and s["status"] == "ready", "running again"
        )["pid"]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    docs = d.wait_shard("docs", lambda s: s["status"] == "failed", "marked failed")
    assert docs["restarts"] == 2
    assert "exited 3 times in 30 s" in docs["failure"]
    assert "ifmem reload" in docs["failure"]
    failed = d.events("shard.failed")
    assert len(failed) == 1 and failed[0][2]["shard"] == "docs"
    assert "ifmem reload" in failed[0][2]["reason"]
    assert [k for _, k, _ in kinds_after(d, before, "docs")][-2:] == [
        "shard.exited",
        "shard.failed",
    ]
    # No restart is attempted after the failure.
    time.sleep(0.5)
    assert d.shard("docs")["status"] == "failed"
    assert not any(dp.pid_alive(p) for p in killed)
    assert len(d.events("shard.spawned")) == len(killed) + 2  # docs x3, code, working

    answer = client.request("ask", question="pump water")
    assert answer["passages"][0]["path"].endswith("pump.py")
    assert answer["missing"] and answer["missing"][0]["shard"] == "docs"
    assert "ifmem reload" in answer["missing"][0]["reason"]
    assert sorted(answer["shards"]) == ["code", "working"]

    # A reload gives the failed shard a fresh start.
    changes = client.request("reload")
    assert changes["restarted"] == ["docs"]
    docs = d.wait_shard("docs", lambda s: s["status"] == "ready", "ready after reload")
    assert docs["restarts"] == 0 and docs["failure"] is None
    assert client.request("ask", question="glacier", shards=["docs"])["passages"]


def test_reload_restarts_only_the_shard_whose_config_changed(
    daemons: dp.DaemonFactory, tmp_path: Path
) -> None:
    d = daemons()
    pids = d.shard_pids()
    extra = tmp_path / "more-docs"
    extra.mkdir()
    (extra / "orchard.md").write_text("# Orchard\n\nApple trees in the orchard blossom.\n")
    d.config_path.write_text(
        dp.config_text(
            {
                "docs": [str(daemons.corpus["docs"] / "*.md"), str(extra / "*.md")],
                "code": [str(daemons.corpus["code"] / "*.py")],
            }
        )
    )
    changes = d.request("reload")
    assert changes == {
        "added": [],
        "removed": [],
        "restarted": ["docs"],
        "kept": ["code", "working"],
    }
    status = d.wait_ready()
    now = {s["name"]: s["pid"] for s in status["shards"]}
    assert now["docs"] != pids["docs"]
    assert not dp.pid_alive(pids["docs"])
    assert now["code"] == pids["code"]
    assert now["working"] == pids["working"]
    answer = d.request("ask", question="apple orchard", shards=["docs"])
    assert answer["passages"][0]["path"] == str(extra / "orchard.md")
    loaded = d.events("config.loaded")
    assert loaded and loaded[-1][2]["restarted"] == ["docs"]
    # The old process's end is on the record, for replay and the auditor.
    exited = [body for _, _, body in d.events("shard.exited")]
    assert [(e["shard"], e.get("reason")) for e in exited] == [("docs", "stopped")]


def test_a_broken_config_on_reload_is_refused_with_its_line_and_changes_nothing(
    daemon: dp.DaemonProc,
) -> None:
    pids = daemon.shard_pids()
    good = daemon.config_path.read_text()
    broken = good.replace('name = "code"', 'name = "code"\nbackend = "carrier-pigeon"')
    assert broken != good
    line = broken.splitlines().index('backend = "carrier-pigeon"') + 1
    daemon.config_path.write_text(broken)
    loaded_before = len(daemon.events("config.loaded"))

    with pytest.raises(RemoteError) as caught:
        daemon.request("reload")
    assert caught.value.code == "bad_request"
    assert f"{daemon.config_path}:{line}:" in caught.value.message
    assert "backend" in caught.value.message
    assert "nothing changed" in caught.value.message

    status = daemon.status()
    assert {s["name"]: s["pid"] for s in status["shards"]} == pids
    assert all(s["status"] == "ready" for s in status["shards"])
    assert len(daemon.events("config.loaded")) == loaded_before
    assert daemon.request("ask", question="pump", shards=["code"])["passages"]


def test_sighup_reloads(daemons: dp.DaemonFactory, tmp_path: Path) -> None:
    d = daemons()
    pids = d.shard_pids()
    # A broken config first: refused on stderr with its line, nothing changes.
    d.config_path.write_text(d.config_path.read_text() + "\n[daemon.oops]\n")
    os.kill(d.pid, signal.SIGHUP)
    dp.wait_for(lambda: "reload refused" in d.stderr(), 5.0, "the refusal", d.diagnostics)
    assert f"{d.config_path}:" in d.stderr()
    assert d.shard_pids() == pids

    # Then a good one that changes only `code`.
    d.config_path.write_text(
        dp.config_text(
            {
                "docs": [str(daemons.corpus["docs"] / "*.md")],
                "code": [str(daemons.corpus["code"] / "pump.py")],
            }
        )
    )
    os.kill(d.pid, signal.SIGHUP)

    def reloaded() -> dict | None:
        status = d.status()
        code = next(s for s in status["shards"] if s["name"] == "code")
        return status if code["pid"] != pids["code"] and code["status"] == "ready" else None

    status = dp.wait_for(reloaded, 5.0, "code to restart after SIGHUP", d.diagnostics)
    now = {s["name"]: s["pid"] for s in status["shards"]}
    assert now["docs"] == pids["docs"] and now["working"] == pids["working"]
    code = next(s for s in status["shards"] if s["name"] == "code")
    assert code["files"] == 1
    assert d.request("ask", question="valve", shards=["code"])["passages"] == []


def test_a_shard_being_restarted_by_reload_is_never_unknown(daemons: dp.DaemonFactory) -> None:
    d = daemons()
    errors: list[str] = []
    listed: list[list[str]] = []
    answers: list[dict] = []
    latencies: list[float] = []
    done = threading.Event()

    def hammer() -> None:
        with d.client() as c:
            while not done.is_set():
                listed.append([s["name"] for s in c.request("status")["shards"]])
                started = time.monotonic()
                try:
                    answers.append(c.request("ask", question="valve", shards=["code"]))
                except RemoteError as e:
                    errors.append(f"{e.code}: {e.message}")
                latencies.append(time.monotonic() - started)

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        for glob in ("valve.py", "*.py", "valve.py"):
            time.sleep(0.1)
            d.config_path.write_text(
                dp.config_text(
                    {
                        "docs": [str(daemons.corpus["docs"] / "*.md")],
                        "code": [str(daemons.corpus["code"] / glob)],
                    }
                )
            )
            assert d.request("reload")["restarted"] == ["code"]
        time.sleep(0.1)
    finally:
        done.set()
        thread.join(10)
    # With its only shard restarting, an ask may fail as unavailable, never as unknown.
    assert all(e.startswith("unavailable: no shard answered: code:") for e in errors), errors
    # An ask that arrives while the new process starts waits for it to load (well
    # under a second here), not for the whole ask_timeout.
    assert max(latencies) < 2.0, sorted(latencies)[-5:]
    assert all(names == ["docs", "code", "working"] for names in listed), listed
    # Each answer either has code's passage or names code as missing; none drops it silently.
    for a in answers:
        assert a["shards"] == ["code"] or [m["shard"] for m in a["missing"]] == ["code"], a
    assert any(a["shards"] == ["code"] for a in answers)


def test_removing_a_shard_while_it_is_being_asked_keeps_the_daemon_up(
    daemons: dp.DaemonFactory,
) -> None:
    d = daemons()
    with_code = dp.config_text(
        {
            "docs": [str(daemons.corpus["docs"] / "*.md")],
            "code": [str(daemons.corpus["code"] / "*.py")],
        }
    )
    without_code = dp.config_text({"docs": [str(daemons.corpus["docs"] / "*.md")]})
    done = threading.Event()
    codes: list[str] = []
    broken: list[str] = []
    answered = 0

    def hammer() -> None:
        nonlocal answered
        try:
            with d.client() as c:
                while not done.is_set():
                    try:
                        c.request("ask", question="valve", shards=["code"])
                        answered += 1
                    except RemoteError as e:
                        codes.append(e.code)
        except IfmemError as e:  # the connection broke: the daemon fell over
            broken.append(repr(e))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(12):
            d.config_path.write_text(without_code if i % 2 == 0 else with_code)
            d.request("reload")
            time.sleep(0.03)
    finally:
        done.set()
        for t in threads:
            t.join(10)
    assert broken == [], d.diagnostics()
    assert d.running
    assert set(codes) <= {"not_found", "unavailable"}, set(codes)
    assert answered > 0
    assert [s["name"] for s in d.wait_ready()["shards"]] == ["docs", "working", "code"]


def test_an_ask_no_shard_answers_is_a_recorded_failure(daemons: dp.DaemonFactory) -> None:
    d = daemons(daemons.default_config(ask_timeout=0.5))
    client = d.client()
    os.kill(d.shard_pids()["docs"], signal.SIGSTOP)
    try:
        with pytest.raises(RemoteError) as failed:
            client.request("ask", request_id="q-frozen", question="beacon", shards=["docs"])
        assert failed.value.code == "unavailable"
        assert "no shard answered" in str(failed.value) and "docs" in str(failed.value)
        # A retry of the same id gets the same recorded failure, not a second attempt.
        with pytest.raises(RemoteError, match="failed"):
            client.request("ask", request_id="q-frozen", question="beacon", shards=["docs"])
    finally:
        os.kill(d.shard_pids()["docs"], signal.SIGCONT)
    failures = [body for _, _, body in d.events("query.failed") if body["qid"] == "q-frozen"]
    assert len(failures) == 1
    assert not [b for _, _, b in d.events("query.answered") if b["qid"] == "q-frozen"]


def test_stopping_lets_every_shard_exit_on_its_own(daemon: dp.DaemonProc) -> None:
    # Shards end at end-of-file on stdin, within the grace period: none is
    # SIGKILLed, though two tasks race to reap each one.
    assert daemon.stop() == 0
    stopped = [b for _, _, b in daemon.events("shard.exited") if b.get("reason") == "stopped"]
    assert sorted(b["shard"] for b in stopped) == ["code", "docs", "working"]
    assert all(b["code"] == 0 for b in stopped), stopped
