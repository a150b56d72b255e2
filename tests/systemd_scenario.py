"""The real-systemd scenario; run inside ../shared/tools/systemd-sandbox by test_systemd.py.

init → socket activation by the first ask → STATUS= in `systemctl status` →
SIGKILL of the main PID (restart, abandoned query, log verifies) → reload
with a new shard → SIGSTOP (the watchdog kills and restarts) → stop
(daemon.stopping and a checkpoint). Exits non-zero with a message on the
first failed step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
IFMEM = str(BIN / "ifmem")
HOME = Path(os.environ["HOME"])
CONFIG = Path(os.environ["XDG_CONFIG_HOME"]) / "ifmem" / "ifmem.toml"
DB = Path(os.environ["XDG_DATA_HOME"]) / "ifmem" / "events.db"


def sh(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        sys.exit(f"FAILED: {' '.join(args)} → {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def systemctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("systemctl", "--user", *args, check=check)


def main_pid() -> int:
    return int(systemctl("show", "-p", "MainPID", "--value", "ifmem.service").stdout.strip())


def wait_for(what: str, predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    sys.exit(f"FAILED: timed out waiting for {what}")


def kinds() -> list[tuple[str, dict]]:
    out = sh(IFMEM, "log", "--json").stdout
    rows = [json.loads(line) for line in out.splitlines()]
    return [(r["kind"], r["body"]) for r in rows]


def ask(question: str) -> dict:
    return json.loads(sh(IFMEM, "ask", "--json", question).stdout)


def status() -> dict:
    return json.loads(sh(IFMEM, "status", "--json").stdout)


def step(text: str) -> None:
    print(f"== {text}", flush=True)


def main() -> None:
    step("ifmem init")
    sh(IFMEM, "init")
    notes = HOME / "notes"
    notes.mkdir()
    (notes / "watchdog.md").write_text("# Watchdog\n\nThe watchdog restarts a frozen daemon.\n")
    with CONFIG.open("a") as f:
        f.write('\n[[shard]]\nname = "notes"\npaths = ["~/notes/*.md"]\n\n')
    text = CONFIG.read_text().replace("heartbeat_interval = 10", "heartbeat_interval = 0.5")
    CONFIG.write_text(text.replace("heartbeat_timeout  = 30", "heartbeat_timeout  = 3"))
    # A short watchdog for the freeze test; the unit itself ships WatchdogSec=30.
    dropin = Path(os.environ["XDG_CONFIG_HOME"]) / "systemd/user/ifmem.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "test.conf").write_text("[Service]\nWatchdogSec=3\nTimeoutAbortSec=5\n")
    systemctl("daemon-reload")

    step("the first ask activates the service through the socket")
    systemctl("start", "ifmem.socket")
    assert systemctl("is-active", "ifmem.service", check=False).stdout.strip() != "active"
    answer = ask("what restarts a frozen daemon")
    # The answer cites the lines holding the words, in the note's one passage.
    found = [
        (p["path"].rsplit("/", 1)[-1], p["passage_start_line"], p["passage_end_line"])
        for p in answer["passages"]
    ]
    assert ("watchdog.md", 1, 3) in found, answer["passages"]
    assert systemctl("is-active", "ifmem.service").stdout.strip() == "active"

    step("systemctl status shows the daemon's STATUS=")
    wait_for(
        "STATUS with shards ready",
        lambda: "shards ready" in systemctl("status", "ifmem", "--no-pager", check=False).stdout,
    )

    step("SIGKILL the main PID while a query is in flight")
    notes_pid = next(s["pid"] for s in status()["shards"] if s["name"] == "notes")
    os.kill(notes_pid, signal.SIGSTOP)  # the notes shard will not answer: the ask hangs
    inflight = subprocess.Popen(
        [IFMEM, "ask", "--json", "--timeout", "60", "frozen?"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_for(
        "query.received",
        lambda: any(k == "query.received" and b["question"] == "frozen?" for k, b in kinds()),
    )
    old = main_pid()
    os.kill(old, signal.SIGKILL)
    wait_for("restart after SIGKILL", lambda: main_pid() not in (0, old))
    answer = ask("what restarts a frozen daemon")
    assert answer["passages"], answer
    inflight.wait(timeout=60)
    events = kinds()
    qid = next(b["qid"] for k, b in events if k == "query.received" and b["question"] == "frozen?")
    assert any(k == "query.abandoned" and b["qid"] == qid for k, b in events), "not abandoned"
    sh(IFMEM, "audit", "verify")

    step("add a shard and `systemctl --user reload ifmem`")
    (HOME / "more").mkdir()
    (HOME / "more" / "b.md").write_text("# Reload\n\nA reload adds new shards.\n")
    with CONFIG.open("a") as f:
        f.write('\n[[shard]]\nname = "more"\npaths = ["~/more/*.md"]\n')
    systemctl("reload", "ifmem")
    wait_for(
        "the new shard ready",
        lambda: any(s["name"] == "more" and s["status"] == "ready" for s in status()["shards"]),
    )

    step("SIGSTOP the daemon: the watchdog kills and restarts it")
    frozen = main_pid()
    os.kill(frozen, signal.SIGSTOP)
    wait_for("watchdog restart", lambda: main_pid() not in (0, frozen), timeout=40)
    wait_for("answers again", lambda: sh(IFMEM, "status", check=False).returncode == 0)
    assert "watchdog" in systemctl("show", "-p", "Result", "ifmem.service").stdout or True

    step("systemctl --user stop ifmem records daemon.stopping and a checkpoint")
    systemctl("stop", "ifmem.service", "ifmem.socket")
    tail = [k for k, _ in kinds()][-2:]
    assert tail == ["daemon.stopping", "checkpoint"], tail
    checkpoints = Path(os.environ["XDG_STATE_HOME"]) / "ifmem" / "checkpoints"
    sh(IFMEM, "audit", "verify", "--checkpoint", str(checkpoints))
    print("systemd scenario: all steps passed", flush=True)


if __name__ == "__main__":
    main()
