"""Shards that follow their files: restart over an unchanged index, edit to searchable, a
`git checkout` storm. Every number beside its baseline, measured in the same run.

    .venv/bin/python bench/watch.py [--quick] [--json FILE] [--baseline-ref REF]

The baseline code is the daemon as it was before shards kept their index on
disk and watched their files (`--baseline-ref`, a commit of this repository):
its `daemon/` tree is extracted with `git archive` into a temporary directory
and run by the same Python (PYTHONPATH), with the same config.

1. **Restart over the standard library** (`sysconfig.get_paths()["stdlib"]`,
   recursive `*.py`): a real daemon with one shard, started on an empty
   cache (first build), then restarted over its unchanged on-disk index; the
   baseline daemon loads everything at every start. Spawn to every shard
   ready (`Daemon.start`), the shard's own `load_ms`, and the shard's RSS
   after it settles. Restarts of the two are interleaved.
2. **Edit to searchable** on a generated shard of 10,000 Markdown files:
   200 operations (70% edits, 15% new files, 15% deletions), each adding or
   removing a unique word; the time from the write until `ask` finds the
   file for it (or no longer does). The baseline has no watching: the only
   way for it to see an edit is `ifmem reload`, timed until its `ready`.
3. **A `git checkout` storm**: the same tree as a git repository, and a
   branch changing 5,000 of its files. One client asks without pause while
   `git checkout` switches to it; the latencies during the storm (checkout
   start until every change is indexed) against those of the same client
   before it, and the time to converge.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import _daemon
from _stats import Result, finite, fmt_seconds, median, note, percentile, table

REPO = Path(__file__).resolve().parent.parent
# The last commit before shards kept an on-disk index and watched their files.
BASELINE_REF = "dfe2f8a"
MB = 1e6
WORDS = [
    "deploy",
    "rollback",
    "glacier",
    "beacon",
    "valve",
    "pump",
    "harbor",
    "lantern",
    "ledger",
    "quarry",
    "orchard",
    "meadow",
    "canyon",
    "summit",
    "delta",
    "estuary",
    "fjord",
    "tundra",
    "savanna",
    "prairie",
    "marsh",
    "lagoon",
    "reef",
    "atoll",
    "basin",
    "ridge",
    "plateau",
    "crater",
    "geyser",
    "spring",
    "brook",
    "creek",
    "river",
    "stream",
    "torrent",
]


@dataclass(frozen=True)
class Sizes:
    stdlib_glob: str  # under the stdlib directory
    restarts: int
    files: int
    edits: int
    storm_files: int
    reloads: int


FULL = Sizes("**/*.py", 3, 10_000, 200, 5_000, 3)
QUICK = Sizes("json/**/*.py", 1, 1_000, 20, 300, 1)


@dataclass
class Run:
    sizes: Sizes
    work: Path
    baseline_code: Path
    results: list[Result] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def config(name: str, paths: list[str]) -> str:
    return (
        "[daemon]\nheartbeat_interval = 0.5\nheartbeat_timeout = 30\nask_timeout = 30\n\n"
        f'[[shard]]\nname = "{name}"\npaths = {json.dumps(paths)}\nmax_file_bytes = 8388608\n'
    )


def extract_baseline(ref: str, dest: Path) -> Path:
    """The baseline's `daemon/` tree (for PYTHONPATH), from `git archive`."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref, "daemon"], capture_output=True, check=True
    ).stdout
    tar = dest / "baseline.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as t:
        t.extractall(dest, filter="data")
    return dest / "daemon"


def daemon(run: Run, home: str, cfg: str, *, baseline: bool) -> _daemon.Daemon:
    env = {"PYTHONPATH": str(run.baseline_code)} if baseline else {}
    return _daemon.Daemon(run.work / home, cfg, env=env)


def settled_rss(d: _daemon.Daemon, shard: str) -> float:
    """The shard's RSS a few heartbeats after it is ready (MB)."""
    time.sleep(2.0)
    return next(s for s in d.status()["shards"] if s["name"] == shard)["rss_bytes"] / MB


def restart_after_kill(d: _daemon.Daemon, shard: str) -> float:
    """SIGKILL the shard's process; seconds from its successor's spawn to its ready (log)."""
    pid = next(s for s in d.status()["shards"] if s["name"] == shard)["pid"]
    mark = max(seq for seq, *_ in d.events(["shard.ready"]))
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        spawned = [
            ts for _, ts, _, b in d.events(["shard.spawned"], after=mark) if b["shard"] == shard
        ]
        ready = [ts for _, ts, _, b in d.events(["shard.ready"], after=mark) if b["shard"] == shard]
        if spawned and ready:
            return (ready[0] - spawned[0]) / 1e9
        time.sleep(0.05)
    return math.nan


def last_load_ms(d: _daemon.Daemon, shard: str) -> float:
    loads = [b["load_ms"] for *_, b in d.events(["shard.ready"]) if b["shard"] == shard]
    return loads[-1] / 1000


# -- 1. restart over the standard library -----------------------------------------


def bench_restart(run: Run) -> None:
    sz = run.sizes
    stdlib = sysconfig.get_paths()["stdlib"]
    cfg = config("stdlib", [f"{stdlib}/{sz.stdlib_glob}"])
    new = daemon(run, "restart-new", cfg, baseline=False)
    old = daemon(run, "restart-old", cfg, baseline=True)
    rows: dict[str, list[float]] = {k: [] for k in ("old", "old_load", "old_rss", "old_kill")}
    rows |= {k: [] for k in ("new", "new_load", "new_rss", "new_kill")}
    note("stdlib: first build on an empty cache")
    build = new.start(timeout=600)
    build_load = last_load_ms(new, "stdlib")
    build_rss = settled_rss(new, "stdlib")
    files = next(s for s in new.status()["shards"] if s["name"] == "stdlib")["files"]
    new.stop()

    def measure(daemon: _daemon.Daemon, key: str) -> None:
        """One start: its time, the shard's load_ms and RSS, and a restart after SIGKILL."""
        rows[key].append(daemon.start(timeout=600))
        rows[f"{key}_load"].append(last_load_ms(daemon, "stdlib"))
        rows[f"{key}_rss"].append(settled_rss(daemon, "stdlib"))
        rows[f"{key}_kill"].append(restart_after_kill(daemon, "stdlib"))
        daemon.stop()

    for i in range(sz.restarts):
        note(f"stdlib: baseline full load {i + 1}/{sz.restarts}")
        measure(old, "old")
        note(f"stdlib: restart over the unchanged index {i + 1}/{sz.restarts}")
        measure(new, "new")
    m = {k: median(v) for k, v in rows.items()}
    run.details["restart"] = {"files": files, "build_s": build, "build_rss_mb": build_rss} | rows
    label = "full load, before"
    run.results += [
        Result("stdlib: shard restart after SIGKILL, spawn to ready", "s", m["new_kill"],
               m["old_kill"], label, "≤ 1 s", m["new_kill"] <= 1.0),
        Result("stdlib: daemon start to ready, unchanged index", "s", m["new"], m["old"], label),
        Result("stdlib: shard load_ms, unchanged index", "s", m["new_load"], m["old_load"], label),
        Result("stdlib: daemon start to ready, first build", "s", build, m["old"], label,
               "≤ baseline", build <= m["old"]),
        Result("stdlib: shard load_ms, first build", "s", build_load / 1, m["old_load"], label,
               "≤ baseline", build_load <= m["old_load"]),
        Result("stdlib: shard RSS after restart", "MB", m["new_rss"], m["old_rss"], label,
               "≤ 150 MB", m["new_rss"] <= 150),
        Result("stdlib: shard RSS after first build", "MB", build_rss, m["old_rss"], label),
    ]  # fmt: skip


# -- 2. edit to searchable --------------------------------------------------------


def make_tree(root: Path, files: int, seed: int) -> list[Path]:
    rng = random.Random(seed)
    paths = []
    for i in range(files):
        path = root / f"d{i // 100:03d}" / f"note{i:05d}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        body = " ".join(rng.choice(WORDS) for _ in range(200))
        path.write_text(f"# Note {i}\n\n{body}\n")
        paths.append(path)
    return paths


def found(d: _daemon.Daemon, word: str, path: Path) -> bool:
    with d.client(timeout=30) as c:
        reply = c.request("ask", question=word, k=5, shards=["notes"])
    return any(p["path"] == str(path) for p in reply["passages"])


def wait_until(check: Any, start: float, timeout: float = 30.0, interval: float = 0.0) -> float:
    """Poll `check` until true; seconds since `start` (NaN on timeout)."""
    while time.perf_counter() - start < timeout:
        if check():
            return time.perf_counter() - start
        time.sleep(interval)
    return math.nan


def readies(d: _daemon.Daemon) -> int:
    return sum(1 for _ in d.events(["shard.ready"]))


def bench_edits(run: Run, tree: Path, paths: list[Path]) -> None:
    sz = run.sizes
    rng = random.Random(7)
    cfg = config("notes", [str(tree)])
    new = daemon(run, "edits-new", cfg, baseline=False)
    note(f"edits: {sz.files} files, first build")
    new.start(timeout=600)
    alive = list(paths)
    latencies: list[float] = []
    kinds: dict[str, list[float]] = {"edit": [], "create": [], "delete": []}
    for n in range(sz.edits):
        word = f"zq{n}x{rng.randrange(10**6)}"
        kind = rng.choices(["edit", "create", "delete"], [70, 15, 15])[0]
        if kind == "edit":
            path = rng.choice(alive)
            text = path.read_text()
            t0 = time.perf_counter()
            path.write_text(text + f"\n{word}\n")
            took = wait_until(lambda p=path, w=word: found(new, w, p), t0)
        elif kind == "create":
            path = tree / "new" / f"created{n}.md"
            path.parent.mkdir(exist_ok=True)
            t0 = time.perf_counter()
            path.write_text(f"# Created {n}\n\n{word}\n")
            alive.append(path)
            took = wait_until(lambda p=path, w=word: found(new, w, p), t0)
        else:
            path = alive.pop(rng.randrange(len(alive)))
            marker = path.read_text().split()[3]  # a word the file holds
            t0 = time.perf_counter()
            path.unlink()
            took = wait_until(lambda p=path, w=marker: not found(new, w, p), t0)
        latencies.append(took)
        kinds[kind].append(took)
    new.stop()
    note("edits: baseline reloads (no watching: a reload re-reads every file)")
    old = daemon(run, "edits-old", cfg, baseline=True)
    old.start(timeout=600)
    reloads = []
    for _ in range(sz.reloads):
        before = readies(old)
        t0 = time.perf_counter()
        with old.client() as c:
            c.request("reload")
        reloads.append(wait_until(lambda b=before: readies(old) > b, t0, 600))
    old.stop()
    ok = [x for x in latencies if not math.isnan(x)]
    reload = median(reloads)
    p50, p99 = percentile(ok, 50), percentile(ok, 99)
    run.details["edits"] = {"latencies": latencies, "kinds": kinds, "reloads": reloads,
                            "timeouts": len(latencies) - len(ok)}  # fmt: skip
    label = "reload, before"
    run.results += [
        Result(f"edit→searchable p50 ({sz.edits} ops, {sz.files} files)", "s", p50, reload, label),
        Result(f"edit→searchable p99 ({sz.edits} ops, {sz.files} files)", "s", p99, reload, label,
               "≤ 1 s", p99 <= 1.0 and len(ok) == len(latencies)),
    ]  # fmt: skip


# -- 3. a git checkout storm --------------------------------------------------------


def git(tree: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(tree), "-c", "user.name=bench", "-c", "user.email=bench@localhost",
         *args], check=True, capture_output=True,
    )  # fmt: skip


class Asker:
    """A child process asking without pause (so the benchmark's own work, reading the
    log, never delays it), recording (monotonic end time, latency) of each answer."""

    def __init__(self, d: _daemon.Daemon, stop_file: Path) -> None:
        self.stop_file = stop_file
        # A file, not a pipe: a pipe nobody reads until the end would fill and stall it.
        self.out = stop_file.with_suffix(".samples")
        with self.out.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "--asker", str(d.socket), str(stop_file)],
                stdout=out,
                env=d.env,
            )
        self.samples: list[tuple[float, float]] = []
        self.errors = 0

    def finish(self) -> None:
        self.stop_file.touch()
        self.proc.wait(timeout=60)
        for line in self.out.read_text().splitlines():
            if line.startswith("error"):
                self.errors += 1
            else:
                end, latency = line.split()
                self.samples.append((float(end), float(latency)))

    def between(self, start: float, end: float) -> list[float]:
        """Latencies of the asks that were under way at some time in [start, end]."""
        return [lat for t, lat in self.samples if t >= start and t - lat <= end]


def asker_main(socket: str, stop_file: str) -> int:
    """The child of `Asker`: one client, two-word questions, until `stop_file` exists."""
    from ifmemd.wire.protocol import Client

    rng = random.Random(3)
    with Client(Path(socket), timeout=30) as c:
        n = 0
        while n % 20 or not os.path.exists(stop_file):
            q = " ".join(rng.sample(WORDS, 2))
            t0 = time.monotonic()
            try:
                c.request("ask", question=q, k=5, shards=["notes"])
            except Exception as e:  # counted and reported, not hidden
                print(f"error {type(e).__name__}: {e}", flush=True)
            t1 = time.monotonic()
            print(f"{t1} {t1 - t0}", flush=True)
            n += 1
    return 0


def bench_storm(run: Run, tree: Path, paths: list[Path]) -> None:
    sz = run.sizes
    note(f"storm: a branch changing {sz.storm_files} files")
    git(tree, "init", "-q", "-b", "main")
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "-m", "base")
    git(tree, "checkout", "-q", "-b", "storm")
    changed = random.Random(11).sample([p for p in paths if p.exists()], sz.storm_files)
    for i, path in enumerate(changed):
        path.write_text(path.read_text() + f"\nstormword{i}\n")
    git(tree, "commit", "-q", "-am", "storm")
    git(tree, "checkout", "-q", "main")
    d = daemon(run, "storm", config("notes", [str(tree)]), baseline=False)
    d.start(timeout=600)
    asker = Asker(d, run.work / "asker.stop")
    time.sleep(4.0)
    idle_end = time.monotonic()
    mark = max((seq for seq, *_ in d.events(["corpus.changed"])), default=0)
    wanted = {str(p) for p in changed}
    t0 = time.perf_counter()
    storm_start = time.monotonic()
    git(tree, "checkout", "-q", "storm")
    checkout_s = time.perf_counter() - t0

    def converged() -> bool:
        seen: set[str] = set()
        for *_, body in d.events(["corpus.changed"], after=mark):
            seen.update(c["path"] for c in body["changed"])
        return wanted <= seen

    took = wait_until(converged, t0, 300, interval=0.05)
    storm_end = time.monotonic()
    time.sleep(0.5)
    asker.finish()
    sample = random.Random(5).sample(range(sz.storm_files), min(20, sz.storm_files))
    searchable = sum(found(d, f"stormword{i}", changed[i]) for i in sample)
    batches = sum(1 for _ in d.events(["corpus.changed"], after=mark))
    d.stop()
    idle = asker.between(idle_end - 3.0, idle_end)
    storm = asker.between(storm_start, storm_end)
    run.details["storm"] = {
        "checkout_s": checkout_s, "converge_s": took, "batches": batches,
        "asks_idle": len(idle), "asks_storm": len(storm), "errors": asker.errors,
        "sampled_searchable": f"{searchable}/{len(sample)}",
        "storm_p50": percentile(storm, 50), "storm_max": max(storm, default=math.nan),
    }  # fmt: skip
    p99, idle_p99 = percentile(storm, 99), percentile(idle, 99)
    run.results += [
        Result(f"ask p99 during a {sz.storm_files}-file checkout", "s", p99, idle_p99,
               "same client, idle", "≤ 50 ms", p99 <= 0.05 and asker.errors == 0),
        Result("checkout: converged (every change indexed)", "s", took, checkout_s,
               "git checkout itself", "converges", not math.isnan(took)
               and searchable == len(sample)),
    ]  # fmt: skip


PARTS = ("restart", "edits", "storm")


def bench_main(run: Run, parts: Sequence[str] = PARTS) -> None:
    if "restart" in parts:
        bench_restart(run)
    tree = run.work / "notes"
    note(f"writing {run.sizes.files} files")
    paths = make_tree(tree, run.sizes.files, seed=1)
    if "edits" in parts:
        bench_edits(run, tree, paths)
        shutil.rmtree(run.work / "edits-new" / "cache", ignore_errors=True)
    if "storm" in parts:
        bench_storm(run, tree, paths)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--asker"]:
        return asker_main(*argv[1:3])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--baseline-ref", default=BASELINE_REF, help="the commit to compare with")
    ap.add_argument("--only", choices=PARTS, action="append", help="run only this part")
    args = ap.parse_args(argv)
    sz = QUICK if args.quick else FULL
    info = _daemon.machine()
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ifmem-bench-watch-") as tmp:
        work = Path(tmp)
        run = Run(sz, work, extract_baseline(args.baseline_ref, work))
        try:
            bench_main(run, args.only or PARTS)
        except Exception as e:  # a benchmark reports what it has
            note(f"benchmark aborted: {type(e).__name__}: {e}")
            run.details["error"] = f"{type(e).__name__}: {e}"
    load_after = os.getloadavg()[0]
    info["loadavg_1min"] = [load_before, load_after]
    mode = "quick" if args.quick else "full"
    print(f"\nifmem watch benchmark — {mode} run; baseline {args.baseline_ref}")
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['platform']}")
    print(f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after\n")
    print(table(run.results))
    print()
    for key in ("restart", "storm"):
        if key in run.details:
            shown = {k: v for k, v in run.details[key].items() if not isinstance(v, list)}
            print(f"  {key}: {shown}")
    if "edits" in run.details:
        e = run.details["edits"]
        per = {k: fmt_seconds(median(v)) if v else "-" for k, v in e["kinds"].items()}
        print(f"  edits: median by kind {per}; timeouts {e['timeouts']}")
    if "error" in run.details:
        print(f"  ABORTED: {run.details['error']}")
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        payload = {"machine": info, "results": [asdict(r) for r in run.results]}
        args.json.write_text(json.dumps(finite(payload | {"details": run.details}), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
