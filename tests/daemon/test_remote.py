"""Remote shards over a real sshd on 127.0.0.1: another ifmemd, in its own world, as a shard.

Two real daemons: the remote (shards `docs` and `code`) behind a real sshd
whose authorized key forces `ifmem proxy`, and the local one, with a local
shard of its own and the remote as shard `team`. Nothing here talks to any
address but 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import daemonproc as dp
import ifmemd
import logfactory as lf
import pytest
from ifmemd.config import parse_config
from ifmemd.log.eventlog import EventLog
from ifmemd.remote import ssh_command
from sshd import Sshd, keygen

ASK_TIMEOUT = 3.0
NOBODY = 65534
SYSTEM_PYTHON = next(
    (p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.access(p, os.X_OK)), None
)


class World:
    """The remote daemon, the sshd in front of it, and a way to make local daemons."""

    def __init__(self, made: dp.DaemonFactory, tmp_path: Path) -> None:
        self.made = made
        self.remote = made()
        self.sshd = Sshd(tmp_path / "sshd", self.remote.socket_path).start()
        (tmp_path / "local").mkdir()
        self.local_docs = tmp_path / "local" / "notes.md"
        self.local_docs.write_text("# Notes\n\nThe local notes mention a harbour crane.\n")

    def config(
        self, url: str | None = None, *, remote_shards: list[str] | None = None, **daemon: Any
    ) -> str:
        text = dp.config_text(
            {"notes": [str(self.local_docs)]},
            ask_timeout=ASK_TIMEOUT,
            restart_intensity=daemon.pop("restart_intensity", (20, 60)),
            **daemon,
        )
        lines = [
            "",
            "[[shard]]",
            'name = "team"',
            f'remote = "{url or self.sshd.url}"',
            "ssh_options = [" + ", ".join(f'"{o}"' for o in self.sshd.ssh_options()) + "]",
        ]
        if remote_shards is not None:
            lines.append("remote_shards = [" + ", ".join(f'"{n}"' for n in remote_shards) + "]")
        return text + "\n".join(lines) + "\n"

    def local(self, config: str | None = None, *, wait: bool = True) -> dp.DaemonProc:
        """A local daemon with shard `team` on the remote (its `docs` unless `config` says)."""
        d = self.made(config or self.config(remote_shards=["docs"]), start=False)
        d.start(wait=wait)
        if not wait:
            # Whatever becomes of `team`, the local shards come up.
            dp.wait_for(
                lambda: (
                    (status := d._try_status())
                    and all(s["status"] == "ready" for s in status["shards"] if s["name"] != "team")
                ),
                dp.START_TIMEOUT_S,
                "the local shards ready",
            )
        return d


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with dp.factory(tmp_path) as made:
        w = World(made, tmp_path)
        try:
            yield w
        finally:
            w.sshd.stop()


def team_results(local: dp.DaemonProc, qid: str) -> list[dict[str, Any]]:
    """Shard `team`'s recorded results for question `qid` (wherever the log keeps them)."""
    found = []
    for _, kind, body in local.events("shard.answered", "query.answered"):
        if body.get("qid") != qid:
            continue
        if kind == "shard.answered" and body["shard"] == "team":
            found.append(body)
        for result in body.get("results", []) if kind == "query.answered" else []:
            if result.get("shard") == "team":
                fields = body["passage_fields"]
                rows = [dict(zip(fields, p, strict=True)) for p in result["passages"]]
                found.append({**result, "passages": rows})
    return found


def test_asks_are_answered_across_ssh_with_the_remote_log_quoted(world: World) -> None:
    local = world.local()
    team = local.shard("team")
    assert team["status"] == "ready" and team["remote"] == world.sshd.url
    remote_log = world.remote.status()["log"]
    assert team["remote_log_id"] == remote_log["log_id"]

    answer = local.request("ask", request_id="q1", question="lighthouse beacon")
    top = answer["passages"][0]
    assert top["shard"] == "team"
    assert top["citation"].startswith("127.0.0.1:" + str(world.made.corpus["docs"]))
    assert "beacon.md:" in top["citation"]
    assert answer["missing"] == []

    # The local log quotes the remote's signed answer, and the remote's log holds it.
    [recorded] = team_results(local, "q1")
    quoted = recorded["remote"]
    assert quoted["log_id"] == remote_log["log_id"]
    with EventLog.open_readonly(world.remote.db_path) as log:
        record = log.record(quoted["seq"])
    assert record is not None and record.kind == "query.answered"
    assert record.hash.hex() == quoted["hash"]
    theirs = record.data()["passages"]
    assert [f"127.0.0.1:{p['path']}" for p in theirs] == [p["path"] for p in recorded["passages"]]

    # remote_shards = ["docs"]: the remote's code shard is never asked.
    code = local.request("ask", question="valve opened")
    assert all(p["shard"] != "team" or "valve" not in p["path"] for p in code["passages"])


def test_many_asks_share_one_ssh_connection(world: World) -> None:
    local = world.local()
    ssh_pid = local.shard("team")["pid"]
    got: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def asker(c: int) -> None:
        try:
            with local.client() as client:
                for i in range(5):
                    got.append(client.request("ask", request_id=f"c{c}-{i}", question="glacier"))
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=asker, args=(c,)) for c in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(got) == 40
    assert all(a["passages"][0]["path"].endswith("glacier.md") for a in got)
    assert all(a["passages"][0]["shard"] == "team" for a in got)
    assert local.shard("team")["pid"] == ssh_pid  # one ssh for all of them
    assert local.events("shard.spawned")  # and it was spawned once
    assert sum(1 for _, _, b in local.events("shard.spawned") if b["shard"] == "team") == 1


def test_remote_killed_then_restarted(world: World) -> None:
    local = world.local()
    world.remote.kill9()
    # Named missing within the ask deadline; the local shard still answers.
    answer = local.request("ask", question="harbour crane lighthouse")
    assert answer["passages"][0]["shard"] == "notes"
    [missing] = answer["missing"]
    assert missing["shard"] == "team"
    exited = dp.wait_for(
        lambda: [b for _, _, b in local.events("shard.exited") if b["shard"] == "team"],
        10.0,
        "the log to record the remote's end",
    )
    # The remote's proxy saw its daemon go and ended the session.
    assert "closed the connection" in exited[0]["reason"]
    # Reconnecting while it is down: the remote's proxy says why, and the log keeps it.
    dp.wait_for(
        lambda: any(
            "cannot reach ifmemd" in b.get("reason", "") for _, _, b in local.events("shard.exited")
        ),
        10.0,
        "a reconnect to find no daemon there",
    )
    world.remote.start()
    local.wait_shard("team", lambda s: s["status"] == "ready", "reconnected", timeout=20.0)
    again = local.request("ask", question="lighthouse beacon")
    assert again["passages"][0]["shard"] == "team"
    assert again["missing"] == []


def test_hung_remote_is_named_missing_then_killed_and_reconnected(world: World) -> None:
    # The ask's deadline comes before the heartbeat's: the ask names it missing first.
    local = world.local(world.config(remote_shards=["docs"], heartbeat_timeout=2 * ASK_TIMEOUT))
    os.kill(world.remote.pid, signal.SIGSTOP)
    try:
        answer = local.request("ask", question="harbour crane")
        assert [m["shard"] for m in answer["missing"]] == ["team"]
        assert f"no answer within {ASK_TIMEOUT:g} s" in answer["missing"][0]["reason"]
        dp.wait_for(
            lambda: any(
                "ssh killed" in b.get("reason", "") for _, _, b in local.events("shard.exited")
            ),
            20.0,
            "the watchdog to kill the ssh of a silent remote",
        )
    finally:
        os.kill(world.remote.pid, signal.SIGCONT)
    local.wait_shard("team", lambda s: s["status"] == "ready", "reconnected", timeout=20.0)
    assert local.request("ask", question="glacier")["passages"][0]["shard"] == "team"


def test_changed_host_key_is_refused_and_named(world: World) -> None:
    world.sshd.stop()
    world.sshd.new_host_key()  # known_hosts still holds the old one
    world.sshd.start()
    local = world.local(wait=False)
    entry = local.wait_shard("team", lambda s: s["status"] == "failed", "failed", timeout=20.0)
    assert "Host key verification failed" in entry["failure"]
    [failed] = [b for _, _, b in local.events("shard.failed") if b["shard"] == "team"]
    assert "Host key verification failed" in failed["reason"]
    # Failed at once: a restart would meet the same key.
    assert not [b for _, _, b in local.events("shard.restarting") if b["shard"] == "team"]
    answer = local.request("ask", question="harbour crane")
    assert answer["passages"][0]["shard"] == "notes"
    assert "Host key verification failed" in answer["missing"][0]["reason"]


def test_host_down_is_named_and_no_prompt_blocks(world: World) -> None:
    port = world.sshd.port
    world.sshd.stop()
    local = world.local(world.config(f"ssh://{world.sshd.user}@127.0.0.1:{port}"), wait=False)
    dp.wait_for(
        lambda: any(
            "Connection refused" in b.get("reason", "") for _, _, b in local.events("shard.exited")
        ),
        10.0,
        "ssh's reason in the log",
    )
    answer = local.request("ask", question="harbour crane")
    assert answer["passages"][0]["shard"] == "notes"
    assert [m["shard"] for m in answer["missing"]] == ["team"]


def test_unknown_remote_shard_fails_the_shard(world: World) -> None:
    local = world.local(world.config(remote_shards=["nosuch"]), wait=False)
    entry = local.wait_shard("team", lambda s: s["status"] == "failed", "failed", timeout=20.0)
    assert "no shard named 'nosuch'" in entry["failure"]


def audit(*args: str) -> subprocess.CompletedProcess[str]:
    ifmem = str(Path(dp.ifmemd_command()[0]).with_name("ifmem"))
    return subprocess.run(
        [ifmem, "audit", "verify", *args], capture_output=True, text=True, timeout=60
    )


def test_audit_verify_peer_holds_then_names_a_changed_byte(world: World) -> None:
    local = world.local()
    for i, question in enumerate(["lighthouse beacon", "glacier", "fox jumps"]):
        local.request("ask", request_id=f"a{i}", question=question)
    local.stop()
    world.remote.stop()
    db, peer = str(local.db_path), str(world.remote.db_path)

    ok = audit("--db", db, "--peer", peer)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "3 remote answer(s) recorded here match it" in ok.stdout

    # One byte of the remote's recorded answer to a1, changed in its log.
    [quoted] = team_results(local, "a1")
    seq = quoted["remote"]["seq"]
    with lf.tamper(world.remote.db_path) as conn:
        values = lf.row(conn, seq)
        body = bytearray(values[3])
        at = body.index(b"glacier")
        body[at] ^= 0x20  # "glacier" -> "Glacier"
        lf.replace_row(conn, seq, (*values[:3], bytes(body), *values[4:]))

    bad = audit("--db", db, "--peer", peer)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"first bad seq {seq}: modified" in bad.stdout
    assert (
        f"(question 'a1', shard 'team') quotes remote seq {seq}: "
        f"the peer log does not verify from seq {seq} on" in bad.stdout
    )
    # The answer before it still matches; the local log itself is intact.
    assert "(question 'a0'" not in bad.stdout
    assert bad.stdout.startswith("ok: ")


def test_a_refused_key_fails_the_shard_at_once(world: World, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger_key"
    keygen(stranger)  # not in authorized_keys
    config = world.config(remote_shards=["docs"]).replace(str(world.sshd.user_key), str(stranger))
    local = world.local(config, wait=False)
    entry = local.wait_shard("team", lambda s: s["status"] == "failed", "failed", timeout=20.0)
    assert "Permission denied" in entry["failure"]
    assert not [b for _, _, b in local.events("shard.restarting") if b["shard"] == "team"]


def test_ssh_options_cannot_turn_batch_mode_off() -> None:
    # ssh keeps the first value of an option: ifmem's come first.
    team = parse_config(
        '[[shard]]\nname = "team"\nremote = "ssh://me@h:2"\n'
        'ssh_options = ["-o", "BatchMode=no", "-v"]\n',
        "ifmem.toml",
    ).shard("team")
    assert team is not None and team.remote is not None
    command = ssh_command(team, team.remote)
    assert command[:4] == ["ssh", "-T", "-o", "BatchMode=yes"]
    assert command.index("BatchMode=yes") < command.index("BatchMode=no")
    assert command[-5:] == ["2", "--", "me@h", "ifmem", "proxy"]


def test_an_unreachable_remote_fails_by_the_restart_intensity(world: World) -> None:
    port = world.sshd.port
    world.sshd.stop()
    url = f"ssh://{world.sshd.user}@127.0.0.1:{port}"
    local = world.local(world.config(url, restart_intensity=(2, 60)), wait=False)
    entry = local.wait_shard("team", lambda s: s["status"] == "failed", "failed", timeout=20.0)
    assert "restart_intensity allows 2" in entry["failure"]
    restarts = [b for _, _, b in local.events("shard.restarting") if b["shard"] == "team"]
    assert [b["restarts"] for b in restarts] == [1, 2]


def test_ssh_ends_when_the_local_daemon_is_killed(world: World) -> None:
    local = world.local()
    ssh_pid = local.shard("team")["pid"]
    assert dp.pid_alive(ssh_pid)
    local.kill9()
    # Its stdin (our pipe) ends with us: ssh passes the end on, the remote's
    # proxy ends its side, and the session closes.
    dp.wait_for(lambda: not dp.pid_alive(ssh_pid), 10.0, "ssh to end after the daemon")
    assert world.remote.status()["clients"] == 1  # only this status request


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or SYSTEM_PYTHON is None,
    reason="needs root and setpriv to run the remote's proxy as another user",
)
def test_the_remote_refuses_a_proxy_run_by_another_user(world: World, tmp_path: Path) -> None:
    """The remote's peer check applies to whoever runs `ifmem proxy`: here the forced
    command drops to uid 65534, and the socket is opened up so that only that check
    stands in the way. The shard fails at once, with the remote's reason."""
    remote = world.remote
    remote.socket_dir.chmod(0o755)
    remote.socket_path.chmod(0o666)
    # A system Python runs the proxy as nobody: the venv's may live under root's home.
    daemon_dir = Path(ifmemd.__file__).parents[1]
    as_nobody = (
        f"exec setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups {SYSTEM_PYTHON} -I -c "
        "'import sys; sys.path.insert(0, sys.argv[1]); "
        "from ifmemd.wire.proxy import run; run(sys.argv[2])' "
        f"{daemon_dir} {remote.socket_path}"
    )
    sshd = Sshd(tmp_path / "sshd-nobody", remote.socket_path, command=as_nobody).start()
    try:
        config = world.config(sshd.url, remote_shards=["docs"]).replace(
            str(world.sshd.root), str(sshd.root)
        )
        local = world.local(config, wait=False)
        entry = local.wait_shard("team", lambda s: s["status"] == "failed", "failed", 20.0)
    finally:
        sshd.stop()
    assert "(denied)" in entry["failure"] and str(NOBODY) in entry["failure"]
    denied = [b for _, _, b in remote.events("client.denied")]
    assert [b["uid"] for b in denied] == [NOBODY]
