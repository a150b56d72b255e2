"""Benchmark of asking: a real ifmemd against re-reading the files with `rg`, in one run.

    .venv/bin/python bench/ask.py [--quick] [--json FILE] [--keep DIR]

Everything runs under one temporary directory, with the same questions for
every contender:

1. Corpus (bench/corpus.py): four shards of ~800 KB (~200,000 tokens) of real
   text from this machine — Debian docs, the Python stdlib, site-packages, C
   headers — copied into a fixed tree; ~50 seeded questions generated from it.
2. Baseline: what an agent does without a memory: per question, `rg -i -n -F
   -e TERM … DIR` over the same four trees, as a subprocess, output captured.
3. ifmem in the daemon: a real `ifmemd` with the four shards (+ `working`);
   one connected client asks every question for several rounds (p50/p99),
   interleaved round by round with the rg baseline; then 32 clients ask for a
   fixed time (asks/s): 32 connections, each a closed loop (its next question
   goes when its answer arrives), driven from 4 processes with non-blocking
   sockets and pre-encoded requests so that the clients, on the same 2 cores,
   take as little CPU from the daemon as they can. Also the CPU the daemon,
   each shard and the clients spend per ask (from /proc), which says what
   bounds the rate whatever else runs on the machine.
4. `ifmem ask` as a whole process (median wall time), with `python -c pass`
   as the floor.
5. Shard start: `load_ms` from `shard.ready`, spawn→ready from the log's
   `shard.spawned`/`shard.ready` timestamps; RSS per shard from `status`
   (read after a heartbeat that follows the load; the full run keeps the
   default 10 s heartbeat interval, the quick run uses 1 s).
6. Fsync: each ask commits the log twice (query.received, then the answer),
   so the bench also measures the fsync latency of its directory, and the
   single-client latency with the event log on tmpfs, to separate durable
   commits from search and transport.
7. Scale: one shard of ~10 million tokens (~40 MB), all domains mixed: load
   time, RSS and single-client query latency, against rg over the same tree.

A benchmark reports: the exit status is 0 whether or not targets are met.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import selectors
import shutil
import socket as socket_mod
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import _daemon
import corpus as bench_corpus
from _stats import Result, finite, fmt_seconds, median, note, percentile, table
from corpus import Question, ShardTree
from ifmemd.wire import protocol
from ifmemd.wire.protocol import Client

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
BIN = Path(sys.executable).parent
K = 5  # passages per answer, as `ifmem ask` asks by default
MB = 1e6


@dataclass(frozen=True)
class Sizes:
    """How much work each part does; `--quick` shrinks everything."""

    shard_bytes: int  # per shard (4 bytes ≈ 1 token)
    scale_bytes: int  # the one big shard
    questions: int
    rounds: int  # timed single-client rounds over all questions (each with an rg round)
    scale_rounds: int
    load_seconds: float  # the 32-client run
    clients: int
    client_procs: int
    cli_runs: int  # `ifmem ask` and `python -c pass` runs
    fsyncs: int
    ready_timeout: float
    scale_ready_timeout: float
    heartbeat: float  # the daemon's heartbeat_interval (10 s is the default)


FULL = Sizes(800_000, 40_000_000, 50, 5, 3, 10.0, 32, 4, 20, 200, 120.0, 1200.0, 10.0)
QUICK = Sizes(40_000, 1_000_000, 50, 1, 1, 1.5, 32, 2, 3, 20, 60.0, 60.0, 1.0)


# -- results ---------------------------------------------------------------------------


def at_most(limit: float) -> Callable[[float], bool]:
    return lambda v: not math.isnan(v) and v <= limit


def at_least(limit: float) -> Callable[[float], bool]:
    return lambda v: not math.isnan(v) and v >= limit


# -- the baseline: rg per question ---------------------------------------------------------


def rg_command(rg: str, q: Question, dirs: Sequence[Path]) -> list[str]:
    cmd = [rg, "-i", "-n", "-F"]
    for term in q.terms:
        cmd += ["-e", term]
    return cmd + [str(d) for d in dirs]


def rg_once(rg: str, q: Question, dirs: Sequence[Path]) -> tuple[float, int]:
    """Seconds for one rg run over `dirs` and the bytes it printed."""
    cmd = rg_command(rg, q, dirs)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, check=False)
    return time.perf_counter() - t0, len(out.stdout)


# -- a daemon under test --------------------------------------------------------------------


def shard_config(trees: Sequence[ShardTree], heartbeat: float, semantic: bool = False) -> str:
    """ifmem.toml for a daemon over `trees`, one shard each (`semantic`: ranking by meaning)."""
    lines = ["[daemon]", f"heartbeat_interval = {heartbeat:g}", "heartbeat_timeout = 120", ""]
    for tree in trees:
        lines += [
            "[[shard]]",
            f"name = {json.dumps(tree.name)}",
            f"description = {json.dumps(tree.description)}",
            f"paths = [{json.dumps(str(tree.path))}]",
            *(["semantic = true"] if semantic else []),
            "",
        ]
    return "\n".join(lines)


class Daemon(_daemon.Daemon):
    """The shared bench daemon over shard trees, with what this benchmark reads of its log."""

    def __init__(
        self,
        home: Path,
        shards: Sequence[ShardTree],
        heartbeat: float,
        db_dir: Path | None = None,
        semantic: bool = False,
    ) -> None:
        super().__init__(home, shard_config(shards, heartbeat, semantic), db_dir=db_dir)
        self.heartbeat = heartbeat

    def shard_events(self) -> dict[str, dict[str, float]]:
        """Per shard: spawn→ready seconds and load_ms, from the event log."""
        spawned: dict[str, int] = {}
        out: dict[str, dict[str, float]] = {}
        for _seq, ts_ns, kind, b in self.events(("shard.spawned", "shard.ready")):
            if kind == "shard.spawned":
                spawned[b["shard"]] = ts_ns
            elif b["shard"] in spawned and b["shard"] not in out:
                out[b["shard"]] = {
                    "spawn_to_ready_s": (ts_ns - spawned[b["shard"]]) / 1e9,
                    "load_ms": float(b["load_ms"]),
                    "tokens": float(b["tokens"]),
                    "files": float(b["files"]),
                }
        return out

    def fan_out_ms(self, after_seq: int, upto_seq: int) -> tuple[list[float], list[float]]:
        """Per question answered in (after_seq, upto_seq]: when its first and its
        last shard replied, in ms after the fan-out began (each shard's `ms` in the
        `results` of `query.answered`; shards answered without being woken, like
        an empty `working`, left out)."""
        per_question: dict[Any, list[float]] = {}
        for _seq, _ts, _kind, b in self.events(("query.answered",), after_seq, upto_seq):
            woken = [r["ms"] for r in b["results"] if r["ms"] > 0]
            if woken:
                per_question[b["qid"]] = woken
        return (
            [min(v) for v in per_question.values()],
            [max(v) for v in per_question.values()],
        )

    def rss(self, wait_s: float | None = None) -> dict[str, int]:
        """rss_bytes per shard from `status`, by default after a heartbeat that follows the load."""
        time.sleep(self.heartbeat + 0.3 if wait_s is None else wait_s)
        return {s["name"]: int(s["rss_bytes"]) for s in self.status()["shards"]}


# -- measurements -----------------------------------------------------------------------------


def ask_round(client: Client, questions: Sequence[Question]) -> tuple[list[float], list[dict]]:
    lat, answers = [], []
    for q in questions:
        t0 = time.perf_counter()
        result = client.request("ask", question=q.text, k=K)
        lat.append(time.perf_counter() - t0)
        answers.append(result)
    return lat, answers


def hit(q: Question, answer: dict) -> bool:
    """Whether an identifier question's answer cites the file the identifier came from."""
    suffix = f"/{q.shard}/{q.source}"
    return any(p["path"].endswith(suffix) for p in answer["passages"])


def fsync_latency(directory: Path, n: int) -> list[float]:
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    out = []
    try:
        for _ in range(n):
            os.write(fd, b"x" * 512)
            t0 = time.perf_counter()
            os.fdatasync(fd)
            out.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_run(
    socket: Path, qfile: Path, sz: Sizes, work: Path, pids: dict[str, int]
) -> dict[str, Any]:
    """`sz.clients` connected clients in `sz.client_procs` processes, asking for a fixed time.

    Also the CPU each server process (`pids`) and the clients spent per ask.
    """
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    per = [sz.clients // sz.client_procs] * sz.client_procs
    for i in range(sz.clients % sz.client_procs):
        per[i] += 1
    start_at = time.time() + 1.0 + 0.2 * sz.client_procs
    procs = []
    for i, threads in enumerate(per):
        out = work / f"load-{i}.json"
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--load-worker",
            str(socket),
            str(qfile),
            str(start_at),
            str(sz.load_seconds),
            str(threads),
            str(i),
            str(out),
        ]
        procs.append((subprocess.Popen(cmd), out))
    count, total, client_cpu, lat, errors = 0, 0, 0.0, [], 0
    for p, out in procs:
        p.wait()
        if p.returncode == 0 and out.exists():
            d = json.loads(out.read_text())
            count += d["count"]
            total += d["total"]
            client_cpu += d["cpu_s"]
            lat += d["latencies"]
            errors += d["errors"]
        else:
            errors += 1
    cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
    per_ask = {name: s / total if total else math.nan for name, s in cpu.items()}
    per_ask["clients"] = client_cpu / total if total else math.nan
    return {
        "cpu_per_ask_s": per_ask,
        "asks_per_s": count / sz.load_seconds,
        "p50": percentile(lat, 50),
        "p99": percentile(lat, 99),
        "errors": errors,
        "conns_per_proc": per,
    }


class _LoadConnection:
    """One closed-loop client of the 32-client run: one ask in flight at a time.

    Requests are pre-encoded (only the id changes) and an answer is only
    looked at for `"ok":true`, so the clients, which share the machine's
    cores with the daemon, spend as little CPU as they can.
    """

    def __init__(self, path: str, tag: str, requests: Sequence[bytes], first: int) -> None:
        self.tag, self.requests, self.n = tag, requests, first
        self.buf = b""
        self.sent_at = 0.0
        self.sock = socket_mod.socket(socket_mod.AF_UNIX, socket_mod.SOCK_STREAM)
        self.sock.settimeout(60)
        self.sock.connect(path)
        self.sock.sendall(protocol.encode(protocol.client_hello()))
        hello = self._line()
        if b'"version"' not in hello:
            raise RuntimeError(f"handshake refused: {hello!r}")
        self.sock.setblocking(False)

    def _line(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("daemon closed the connection")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def send(self) -> None:
        body = self.requests[self.n % len(self.requests)]
        self.n += 1
        self.sent_at = time.perf_counter()
        self.sock.sendall(b'{"id":"%s-%d",%s' % (self.tag.encode(), self.n, body))

    def answers(self) -> list[bytes]:
        """The whole answer lines received so far (reads what is there, never blocks)."""
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("daemon closed the connection")
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        return lines


def load_worker(argv: Sequence[str]) -> int:
    """One client process of the 32-client run (called as `ask.py --load-worker …`)."""
    path, qfile, start_at, seconds, conns, proc_no, out = argv
    questions = bench_corpus.load_questions(Path(qfile))
    # Each request line without its leading `{"id":…,`: the question, k and op.
    requests = [protocol.encode({"op": "ask", "question": q.text, "k": K})[1:] for q in questions]
    start, end = float(start_at), float(start_at) + float(seconds)
    clients = [
        _LoadConnection(path, f"p{proc_no}c{i}", requests, int(proc_no) * 97 + i * 13)
        for i in range(int(conns))
    ]
    selector = selectors.DefaultSelector()
    for c in clients:
        selector.register(c.sock, selectors.EVENT_READ, c)
    count = total = errors = 0
    lats: list[float] = []
    while time.time() < start:
        time.sleep(0.001)
    cpu0 = time.process_time()
    for c in clients:
        c.send()
    running = len(clients)
    while running:
        for key, _ in selector.select(timeout=60):
            c = key.data
            try:
                lines = c.answers()
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                errors += 1
                selector.unregister(c.sock)
                running -= 1
                continue
            for line in lines:
                done = time.perf_counter()
                total += 1
                if b'"ok":true' not in line:
                    errors += 1
                if time.time() > end:
                    selector.unregister(c.sock)
                    running -= 1
                    break
                count += 1
                lats.append(done - c.sent_at)
                c.send()
    cpu = time.process_time() - cpu0
    for c in clients:
        c.sock.close()
    data = {"count": count, "total": total, "cpu_s": cpu, "errors": errors, "latencies": lats}
    Path(out).write_text(json.dumps(data))
    return 0


def wall(cmd: Sequence[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=False, env=env)
    return time.perf_counter() - t0


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Run:
    sz: Sizes
    work: Path
    rg: str | None
    results: list[Result] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def add(
        self,
        metric: str,
        unit: str,
        value: float,
        baseline: float = math.nan,
        label: str = "",
        target: tuple[str, Callable[[float], bool]] | None = None,
    ) -> None:
        self.results.append(
            Result(
                metric,
                unit,
                value,
                baseline,
                label,
                target[0] if target else "",
                target[1](value) if target else None,
            )
        )


def bench_main(run: Run) -> None:
    sz, work = run.sz, run.work
    note("building the corpus…")
    t0 = time.perf_counter()
    trees = bench_corpus.build_shards(work / "corpus", sz.shard_bytes)
    questions = bench_corpus.make_questions(trees, sz.questions)
    qfile = work / "questions.json"
    bench_corpus.save_questions(qfile, questions)
    dirs = [t.path for t in trees]
    run.details["corpus"] = [t.summary() for t in trees]
    run.details["questions"] = [asdict(q) for q in questions]
    note(
        f"  {len(questions)} questions; shards "
        + ", ".join(f"{t.name} {len(t.files)} files {t.bytes / MB:.2f} MB" for t in trees)
        + f" ({time.perf_counter() - t0:.1f} s)"
    )

    note("starting ifmemd with 4 shards…")
    daemon = Daemon(work / "d4", trees, sz.heartbeat)
    try:
        all_ready = daemon.start(sz.ready_timeout)
        note(f"  all shards ready {all_ready:.2f} s after spawning ifmemd")
        rss = daemon.rss()
        client = daemon.client()
        # Warm-up: one untimed pass (and answers for the hit rate).
        _, answers = ask_round(client, questions)
        ident = [(q, a) for q, a in zip(questions, answers, strict=True) if q.kind == "identifier"]
        hits = sum(hit(q, a) for q, a in ident)
        note(f"single client, {sz.rounds} rounds of {len(questions)} (each beside an rg round)…")
        ask_lat: list[float] = []
        rg_lat: list[float] = []
        rg_bytes: list[int] = []
        timed_from = daemon.status()["log"]["seq"]
        for _ in range(sz.rounds):
            if run.rg:
                for q in questions:
                    s, b = rg_once(run.rg, q, dirs)
                    rg_lat.append(s)
                    rg_bytes.append(b)
            lat, _ = ask_round(client, questions)
            ask_lat += lat
        client.close()
        first_reply, last_reply = daemon.fan_out_ms(timed_from, daemon.status()["log"]["seq"])
        note(f"{sz.clients} clients in {sz.client_procs} processes for {sz.load_seconds:g} s…")
        status = daemon.status()
        assert daemon.proc is not None
        pids = {"daemon": daemon.proc.pid, **{s["name"]: s["pid"] for s in status["shards"]}}
        load = load_run(daemon.socket, qfile, sz, work, pids)
        note(f"`ifmem ask` as a process, {sz.cli_runs} runs…")
        cli, floor = [], []
        for i in range(sz.cli_runs):
            q = questions[i % len(questions)]
            cli.append(
                wall(
                    [str(BIN / "ifmem"), "ask", "--socket", str(daemon.socket), q.text],
                    env=daemon.env,
                )
            )
            floor.append(wall([sys.executable, "-c", "pass"]))
        shard_rss = daemon.rss(wait_s=0.0)
    finally:
        daemon.stop()
    events = daemon.shard_events()

    rg_p50, rg_p99 = percentile(rg_lat, 50), percentile(rg_lat, 99)
    ask_p50, ask_p99 = percentile(ask_lat, 50), percentile(ask_lat, 99)
    rg_label = "rg"
    run.add(
        "ask p50, 1 client, in daemon", "s", ask_p50, rg_p50, rg_label, ("≤ 2 ms", at_most(2e-3))
    )
    run.add(
        "ask p99, 1 client, in daemon", "s", ask_p99, rg_p99, rg_label, ("≤ 10 ms", at_most(10e-3))
    )
    rg_rate = 1 / median(rg_lat) if rg_lat else math.nan
    # rg is CPU-bound and this machine has few cores: its best rate is cores / latency.
    rg_par = (os.cpu_count() or 1) * rg_rate
    run.add(
        f"asks/s, {sz.clients} clients ({sz.client_procs} procs)",
        "rate",
        load["asks_per_s"],
        rg_par,
        "rg × cores",
        ("≥ 1,000/s", at_least(1000)),
    )
    # Where the single-client time goes: the fan-out's share, from the log.
    run.add("fan-out, first shard reply, median", "s", median(first_reply) / 1000)
    run.add("fan-out, last shard reply, median", "s", median(last_reply) / 1000)
    run.add(f"ask p99 under {sz.clients} clients", "s", load["p99"])
    run.add(
        "`ifmem ask` whole process, median",
        "s",
        median(cli),
        median(rg_lat),
        rg_label,
        ("≤ 150 ms", at_most(0.150)),
    )
    run.add("`python -c pass` (floor)", "s", median(floor))
    if ident:
        run.add("identifier questions citing their file", "x", hits / len(ident))
    run.details["single_client"] = {
        "p50": ask_p50,
        "p90": percentile(ask_lat, 90),
        "p99": ask_p99,
        "max": max(ask_lat),
        "n": len(ask_lat),
    }
    run.details["rg"] = {
        "p50": rg_p50,
        "p99": rg_p99,
        "n": len(rg_lat),
        "median_output_bytes": median(rg_bytes),
    }
    run.details["load"] = load
    run.details["hits"] = {"identifier_questions": len(ident), "cited_source": hits}

    # Shard start and memory.
    per_shard = {}
    for tree in trees:
        ev = events.get(tree.name, {})
        budget = 4 * tree.bytes + 30 * MB
        per_shard[tree.name] = {
            "bytes": tree.bytes,
            "load_ms": ev.get("load_ms", math.nan),
            "spawn_to_ready_s": ev.get("spawn_to_ready_s", math.nan),
            "rss_bytes": shard_rss.get(tree.name, rss.get(tree.name, 0)),
            "rss_after_load": rss.get(tree.name, 0),
            "rss_budget": budget,
        }
    run.details["shards"] = per_shard
    rg_one = []
    if run.rg:
        for tree in trees:
            rg_one.append(rg_once(run.rg, questions[0], [tree.path])[0])
    worst_load = max(s["load_ms"] for s in per_shard.values()) / 1e3
    worst_spawn = max(s["spawn_to_ready_s"] for s in per_shard.values())
    tokens = median([t.bytes / 4 for t in trees])
    run.add(
        f"shard load_ms, worst of 4 (~{tokens / 1e3:.0f}K tokens)",
        "s",
        worst_load,
        median(rg_one),
        "one rg pass",
        ("≤ 1 s", at_most(1.0)),
    )
    run.add(
        "shard spawn→ready, worst of 4",
        "s",
        worst_spawn,
        median(rg_one),
        "one rg pass",
        ("≤ 1 s", at_most(1.0)),
    )
    worst = max(per_shard.values(), key=lambda s: s["rss_bytes"] / s["rss_budget"])
    run.add(
        "shard RSS, worst vs its budget",
        "MB",
        worst["rss_bytes"] / MB,
        worst["bytes"] / MB,
        "corpus",
        (
            "≤ 4×corpus + 30 MB",
            lambda _v: all(s["rss_bytes"] <= s["rss_budget"] for s in per_shard.values()),
        ),
    )

    # Where the single-client latency goes: fsync of the bench directory, and the
    # same asks with the event log on tmpfs.
    fs = fsync_latency(work, sz.fsyncs)
    run.details["fsync"] = {"p50": percentile(fs, 50), "p99": percentile(fs, 99)}
    run.add("fdatasync of the bench dir, p50 (2 per ask)", "s", percentile(fs, 50))
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        with tempfile.TemporaryDirectory(prefix="ifmem-bench-ask-", dir=shm) as tmpfs:
            note("single client again, event log on tmpfs…")
            d = Daemon(work / "d4-tmpfs", trees, sz.heartbeat, db_dir=Path(tmpfs))
            try:
                d.start(sz.ready_timeout)
                with d.client() as c:
                    ask_round(c, questions)
                    lat: list[float] = []
                    for _ in range(sz.rounds):
                        lat += ask_round(c, questions)[0]
            finally:
                d.stop()
        run.add("ask p50, 1 client, log on tmpfs", "s", percentile(lat, 50), rg_p50, rg_label)
        run.add("ask p99, 1 client, log on tmpfs", "s", percentile(lat, 99), rg_p99, rg_label)
        run.details["single_client_tmpfs"] = {
            "p50": percentile(lat, 50),
            "p99": percentile(lat, 99),
        }

    bench_scale(run, questions)


def bench_scale(run: Run, questions: Sequence[Question]) -> None:
    sz, work = run.sz, run.work
    note(f"building the scale corpus (~{sz.scale_bytes / MB:.0f} MB)…")
    tree = bench_corpus.build_scale(work / "scale", sz.scale_bytes)
    run.details["scale_corpus"] = tree.summary()
    mixed = "distinct" if tree.repeated == 1 else f"repeated ×{tree.repeated}"
    note(f"  {len(tree.files)} files, {tree.bytes / MB:.1f} MB ({mixed}); starting ifmemd…")
    daemon = Daemon(work / "d1", [tree], sz.heartbeat)
    try:
        daemon.start(sz.scale_ready_timeout)
        rss = daemon.rss()
        lat: list[float] = []
        rg_lat: list[float] = []
        with daemon.client() as client:
            ask_round(client, questions)
            for _ in range(sz.scale_rounds):
                if run.rg:
                    for q in questions:
                        rg_lat.append(rg_once(run.rg, q, [tree.path])[0])
                lat += ask_round(client, questions)[0]
    finally:
        daemon.stop()
    ev = daemon.shard_events().get(tree.name, {})
    tokens = tree.bytes / 4
    label = f"{tokens / 1e6:.1f}M tokens"
    rg_p50, rg_p99 = percentile(rg_lat, 50), percentile(rg_lat, 99)
    run.add(f"scale: load_ms ({label}, {mixed})", "s", ev.get("load_ms", math.nan) / 1e3)
    run.add("scale: spawn→ready", "s", ev.get("spawn_to_ready_s", math.nan))
    run.add("scale: ask p50, 1 client", "s", percentile(lat, 50), rg_p50, "rg")
    run.add(
        "scale: ask p99, 1 client",
        "s",
        percentile(lat, 99),
        rg_p99,
        "rg",
        ("≤ 25 ms", at_most(25e-3)),
    )
    budget = 4 * tree.bytes + 30 * MB
    run.add(
        "scale: shard RSS",
        "MB",
        rss.get(tree.name, 0) / MB,
        tree.bytes / MB,
        "corpus",
        (f"≤ {budget / MB:.0f} MB", at_most(budget / MB)),
    )
    run.details["scale"] = {
        **ev,
        "rss_bytes": rss.get(tree.name, 0),
        "p50": percentile(lat, 50),
        "p99": percentile(lat, 99),
        "rg_p50": rg_p50,
        "rg_p99": rg_p99,
    }


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--load-worker"]:
        return load_worker(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke test (<30 s)")
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--keep", type=Path, metavar="DIR", help="work in DIR and keep it")
    args = ap.parse_args(argv)
    sz = QUICK if args.quick else FULL
    mode = "quick" if args.quick else "full"
    rg = shutil.which("rg")
    info = _daemon.machine()
    note(f"ifmem ask benchmark ({mode}); {info['cpu']}, {info['cores']} cores")
    if rg is None:
        note("rg not found: the baseline is skipped (`make bench-setup` installs ripgrep)")
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            work = args.keep
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ifmem-bench-ask-")))
        run = Run(sz, work, rg)
        try:
            bench_main(run)
        except Exception as e:  # a benchmark reports what it has
            note(f"benchmark aborted: {type(e).__name__}: {e}")
            run.details["error"] = f"{type(e).__name__}: {e}"
    took = time.perf_counter() - started
    print()
    print(
        f"ifmem ask benchmark — {mode} run; k={K}; {len(run.details.get('questions', []))} "
        f"questions; {sz.rounds} timed rounds"
    )
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, {info['platform']}, "
        f"Python {info['python']}; rg {'found' if rg else 'MISSING'}"
    )
    load_after = os.getloadavg()[0]
    info["loadavg_1min"] = [load_before, load_after]
    print(
        f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after "
        "(anything else running on the machine inflates the latencies)"
    )
    print()
    print(table(run.results))
    print()
    shards = run.details.get("shards", {})
    for name, s in shards.items():
        print(
            f"  shard {name}: {s['bytes'] / MB:.2f} MB, load {s['load_ms']:.0f} ms, "
            f"spawn→ready {s['spawn_to_ready_s'] * 1e3:.0f} ms, RSS {s['rss_bytes'] / MB:.1f} MB "
            f"(budget {s['rss_budget'] / MB:.1f} MB)"
        )
    load = run.details.get("load")
    if load:
        print(
            f"  {sz.clients} clients: connections per process {load['conns_per_proc']}, "
            f"p50 {fmt_seconds(load['p50'])}, errors {load['errors']}"
        )
        cpu = load["cpu_per_ask_s"]
        print(
            "  CPU per ask under load: "
            + ", ".join(f"{name} {fmt_seconds(v)}" for name, v in cpu.items())
            + f"; all {fmt_seconds(sum(v for v in cpu.values() if not math.isnan(v)))}"
        )
    if "error" in run.details:
        print(f"  ABORTED: {run.details['error']}")
    failed = [r.metric for r in run.results if r.passed is False]
    print(
        f"targets: {sum(r.passed is True for r in run.results)} met, {len(failed)} missed; "
        f"total {took:.0f} s"
    )
    if args.json:
        doc = {
            "mode": mode,
            "machine": info,
            "sizes": asdict(sz),
            "results": [finite({**asdict(r), "ratio": r.ratio}) for r in run.results],
            "details": finite(run.details),
            "seconds": took,
        }
        args.json.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
