"""Benchmark of remote shards: asks through a localhost SSH remote against the same shards local.

    .venv/bin/python bench/remote.py [--quick] [--json FILE] [--keep DIR]

Three real daemons on this machine, in worlds of their own (bench/_daemon.py),
over the same corpus (bench/corpus.py: the four shard trees of bench/ask.py):

- `remote`: the four shards, behind a real sshd on 127.0.0.1 (a throwaway host
  key and user key; the key's forced command is `ifmem proxy`);
- `direct` (the baseline): the same four shards, local;
- `via ssh`: one shard `team` with `remote = "ssh://…@127.0.0.1:PORT"`.

1. Latency: one connected client per daemon asks every question for several
   rounds, `direct` and `via ssh` interleaved question by question so that a
   noisy moment hits both; p50 and p99 of each.
2. Throughput: 32 clients (4 processes × 8 threads, each a closed loop) ask
   for a fixed time, `direct` then `via ssh`, twice; the median asks/s.

The SSH path does all the direct path does (the remote daemon answers) plus a
second daemon's coordination and log, ssh and sshd encrypting both ways, and
the proxy's relay, all on the same cores: this is the cost of the transport on
one machine, not of a network. A benchmark reports: exit status 0 whether or
not anything is fast.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import _daemon
import corpus as bench_corpus
from _stats import Result, finite, median, note, percentile, table
from ifmemd.errors import IfmemError
from ifmemd.wire.protocol import Client

K = 5
CLIENTS = 32
CLIENT_PROCESSES = 4


@dataclass(frozen=True)
class Sizes:
    shard_bytes: int
    questions: int
    rounds: int
    load_s: float


FULL = Sizes(shard_bytes=400_000, questions=40, rounds=5, load_s=8.0)
QUICK = Sizes(shard_bytes=60_000, questions=10, rounds=2, load_s=1.5)
LOCAL = "same shards local"  # every baseline: the same shards, asked directly


class Sshd:
    """sshd on 127.0.0.1 with throwaway keys, whose one key may only run `ifmem proxy`."""

    def __init__(self, root: Path, remote_socket: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.user = getpass.getuser()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        host_pub = self._keygen("host_key")
        user_pub = self._keygen("user_key")
        ifmem = _daemon.BIN / "ifmem"
        (root / "authorized_keys").write_text(
            f'restrict,command="IFMEM_SOCKET={remote_socket} exec {ifmem} proxy" {user_pub}\n'
        )
        (root / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_pub}\n")
        (root / "sshd_config").write_text(
            f"ListenAddress 127.0.0.1\nPort {self.port}\nHostKey {root / 'host_key'}\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\nPidFile {root / 'sshd.pid'}\n"
            f"AllowUsers {self.user}\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def _keygen(self, name: str) -> str:
        path = self.root / name
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
        return " ".join(path.with_name(name + ".pub").read_text().split()[:2])

    def start(self) -> None:
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        with (self.root / "sshd.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [sshd, "-D", "-e", "-f", str(self.root / "sshd_config")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 10
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise _daemon.DaemonError("sshd did not start: see " + str(self.root))
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def shard(self) -> str:
        options = [
            *("-F", "none", "-i", str(self.root / "user_key"), "-o", "IdentitiesOnly=yes"),
            *("-o", f"UserKnownHostsFile={self.root / 'known_hosts'}"),
            *("-o", "StrictHostKeyChecking=yes"),
        ]
        return (
            '[[shard]]\nname = "team"\n'
            f'remote = "ssh://{self.user}@127.0.0.1:{self.port}"\n'
            f"ssh_options = {json.dumps(options)}\n"
        )


def files_config(trees: Sequence[bench_corpus.ShardTree]) -> str:
    lines = ["[daemon]", "heartbeat_timeout = 120", "ask_timeout = 60", ""]
    for tree in trees:
        lines += ["[[shard]]", f"name = {json.dumps(tree.name)}"]
        lines += [f"paths = [{json.dumps(str(tree.path))}]", ""]
    return "\n".join(lines)


def ask_latencies(
    daemons: dict[str, _daemon.Daemon], questions: Sequence[str], rounds: int
) -> dict[str, list[float]]:
    """Seconds per ask for each daemon, interleaved question by question."""
    clients = {name: d.client() for name, d in daemons.items()}
    out: dict[str, list[float]] = {name: [] for name in daemons}
    try:
        for _ in range(rounds):
            for q in questions:
                for name, c in clients.items():
                    t0 = time.perf_counter()
                    c.request("ask", question=q, k=K)
                    out[name].append(time.perf_counter() - t0)
    finally:
        for c in clients.values():
            c.close()
    return out


def load_worker(socket_path: str, questions: Sequence[str], threads: int, seconds: float) -> int:
    """In a process of its own: `threads` closed-loop clients for `seconds`; asks answered."""
    done = [0] * threads
    stop_at = time.monotonic() + seconds

    def loop(i: int) -> None:
        with Client(socket_path, timeout=120) as c:
            n = i
            while time.monotonic() < stop_at:
                c.request("ask", question=questions[n % len(questions)], k=K)
                done[i] += 1
                n += threads

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(done)


def asks_per_s(daemon: _daemon.Daemon, questions: Sequence[str], seconds: float) -> float:
    per = CLIENTS // CLIENT_PROCESSES
    with concurrent.futures.ProcessPoolExecutor(CLIENT_PROCESSES) as pool:
        t0 = time.perf_counter()
        futures = [
            pool.submit(load_worker, str(daemon.socket), questions, per, seconds)
            for _ in range(CLIENT_PROCESSES)
        ]
        total = sum(f.result() for f in futures)
        return total / (time.perf_counter() - t0)


def run(sz: Sizes, work: Path, results: list[Result], details: dict[str, Any]) -> None:
    note("copying the corpus")
    trees = bench_corpus.build_shards(work / "corpus", sz.shard_bytes)
    questions = [q.text for q in bench_corpus.make_questions(trees, sz.questions)]
    details["corpus"] = [t.summary() for t in trees]
    remote = _daemon.Daemon(work / "remote", files_config(trees))
    sshd = Sshd(work / "sshd", remote.socket)
    direct = _daemon.Daemon(work / "direct", files_config(trees))
    via = _daemon.Daemon(
        work / "via", "[daemon]\nheartbeat_timeout = 120\nask_timeout = 60\n\n" + sshd.shard()
    )
    started: list[Any] = []
    try:
        for name, what in (("remote", remote), ("sshd", sshd), ("direct", direct), ("via", via)):
            note(f"starting {name}")
            what.start(60) if isinstance(what, _daemon.Daemon) else what.start()
            started.append(what)
        # The same answers both ways (the remote's paths with its host before them).
        first = questions[0]
        d, v = direct.ask(first, K), via.ask(first, K)
        same = [p["citation"] for p in d["passages"]] == [
            p["citation"].split(":", 1)[1] for p in v["passages"]
        ]
        details["same_passages"] = same
        note("latency, one client each, interleaved")
        lat = ask_latencies({"direct": direct, "via": via}, questions, sz.rounds)
        for p, label in ((50, "p50"), (99, "p99")):
            results.append(
                Result(
                    f"ask {label}, 1 client, via ssh",
                    "s",
                    percentile(lat["via"], p),
                    percentile(lat["direct"], p),
                    LOCAL,
                )
            )
        details["latency_s"] = lat
        note(f"throughput, {CLIENTS} clients, {sz.load_s:g} s a run")
        rates: dict[str, list[float]] = {"direct": [], "via": []}
        for _ in range(2):
            rates["direct"].append(asks_per_s(direct, questions, sz.load_s))
            rates["via"].append(asks_per_s(via, questions, sz.load_s))
        results.append(
            Result(
                f"asks/s, {CLIENTS} clients, via ssh",
                "rate",
                median(rates["via"]),
                median(rates["direct"]),
                LOCAL,
            )
        )
        details["rates"] = rates
    finally:
        for what in reversed(started):
            what.stop()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--keep", type=Path, metavar="DIR", help="work in DIR and keep it")
    args = ap.parse_args(argv)
    sz = QUICK if args.quick else FULL
    mode = "quick" if args.quick else "full"
    info = _daemon.machine()
    results: list[Result] = []
    details: dict[str, Any] = {}
    load_before = os.getloadavg()[0]
    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            work = args.keep
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ifm-remote-")))
        try:
            run(sz, work, results, details)
        except (IfmemError, _daemon.DaemonError, OSError, subprocess.SubprocessError) as e:
            note(f"benchmark aborted: {type(e).__name__}: {e}")
            details["error"] = f"{type(e).__name__}: {e}"
    load_after = os.getloadavg()[0]
    info["loadavg_1min"] = [load_before, load_after]
    print()
    print(f"ifmem remote-shard benchmark — {mode} run; k={K}; {sz.rounds} rounds")
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['platform']}")
    print(f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after")
    print(f"same passages both ways: {details.get('same_passages')}")
    print()
    print(table(results))
    if args.json:
        doc = {
            "mode": mode,
            "sizes": asdict(sz),
            "machine": info,
            "results": [asdict(r) for r in results],
            "details": details,
        }
        args.json.write_text(json.dumps(finite(doc), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
