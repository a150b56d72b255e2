"""Benchmark of how fast model-backed shards come up: spawn → ready, this code against the last.

    .venv/bin/python bench/model_startup.py [--quick] [--json FILE] [--reps N]
                                            [--before REV] [--count-delay S]

A real `ifmemd` with three `backend = "anthropic"` shards (three of
bench/corpus.py's domains, ~120 KB ≈ 33,000 tokens each) and one local shard
of the same size (the fourth domain), through the real `anthropic` SDK, from
the fake Messages API of the tests (tests/fake_anthropic.py). Its token
counter takes `--count-delay` seconds (0.5 by default: a guess at a real
`count_tokens` round trip for 33,000 tokens; the fake itself answers at once).

Measured from the log's timestamps (`shard.spawned` → `shard.ready`, and
→ `shard.model_ready` for the model itself), per shard: how long a Claude
shard takes to be ready against the local shard of the same daemon, and how
long until its model is usable. And the first `ask`, sent the moment the local
shard is ready (when a daemon of local shards would answer): how long from
the daemon's spawn until it is answered, how many shards it names missing, and
how many answered from their index while their model was loading.

`--before REV` runs the very same, repetition by repetition interleaved,
against the daemon of commit REV (its `daemon/` and `cli/` from `git archive`):
by default the last commit where a Claude shard reported ready only after its
SDK import and its token count. `--before ""` skips it. Exits 0 either way.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
sys.path.insert(0, str(REPO / "tests"))  # the fake API is test equipment

import corpus as bench_corpus  # noqa: E402
from _daemon import Daemon, all_ready, machine  # noqa: E402
from _stats import finite, median, note, percentile, timed  # noqa: E402
from fake_anthropic import FakeAnthropic  # noqa: E402

KEY = "sk-ant-bench-not-a-real-key-0000"
MODEL = "claude-bench"
# The last commit before model-backed shards were ready on their index first.
BEFORE_REV = "ffdaaa3"
COUNT_DELAY_S = 0.5
START_TIMEOUT_S = 120.0
ASK_TIMEOUT_S = 10.0  # the daemon's default: a shard slower than this is named missing
SHARD_BYTES = 120_000
QUICK_SHARD_BYTES = 24_000
LOCAL = "headers"  # the domain served by the local shard; the others by Claude


@dataclass(frozen=True)
class Code:
    """A version of ifmemd to run: its label, its command, its PYTHONPATH (if another tree)."""

    label: str
    command: tuple[str, ...] = ()
    pythonpath: str = ""


def config_text(trees: list[bench_corpus.ShardTree], url: str) -> str:
    lines = [
        "[daemon]",
        "heartbeat_interval = 2",
        "heartbeat_timeout = 60",
        f"ask_timeout = {ASK_TIMEOUT_S}",
        "",
        "[anthropic]",
        f'model = "{MODEL}"',
        f'base_url = "{url}"',
        "timeout = 30",
        "max_retries = 0",
    ]
    for tree in trees:
        lines += ["", "[[shard]]", f'name = "{tree.name}"', f'paths = ["{tree.path}/**"]']
        if tree.name != LOCAL:
            lines.append('backend = "anthropic"')
    return "\n".join(lines) + "\n"


def before_tree(rev: str, dest: Path) -> Code:
    """The daemon and CLI of commit `rev`, unpacked under `dest`."""
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "daemon", "cli"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return Code(
        f"before ({rev})",
        (sys.executable, "-m", "ifmemd.main"),
        f"{dest / 'daemon'}:{dest / 'cli'}",
    )


def local_ready(shards: list[dict[str, Any]]) -> bool:
    """The local shard is ready: a daemon of local shards would answer now."""
    return any(s["name"] == LOCAL and s["status"] == "ready" for s in shards)


def one_start(
    code: Code, trees: list[bench_corpus.ShardTree], question: str, home: Path, delay: float
) -> dict[str, Any]:
    """Start one daemon, ask once as soon as its local shard is ready, read the log."""
    env = {"ANTHROPIC_API_KEY": KEY}
    if code.pythonpath:
        env["PYTHONPATH"] = code.pythonpath
    with FakeAnthropic(api_key=KEY) as fake:
        fake.count_delay = delay
        d = Daemon(home, config_text(trees, fake.url), env=env, command=code.command or None)
        try:
            to_local = d.start(START_TIMEOUT_S, until=local_ready)
            asked, result = timed(lambda: d.ask(question, timeout=60))
            d.wait(all_ready, START_TIMEOUT_S)
        finally:
            d.stop()
    first: dict[tuple[str, str], int] = {}
    for _seq, ts, kind, body in d.events(("shard.spawned", "shard.ready", "shard.model_ready")):
        first.setdefault((kind, body["shard"]), ts)
    shards: dict[str, dict[str, float]] = {}
    for tree in trees:
        spawned = first[("shard.spawned", tree.name)]
        ready = first[("shard.ready", tree.name)]
        # Before the change, a shard's model was usable once the shard was ready.
        model = first.get(("shard.model_ready", tree.name), ready)
        shards[tree.name] = {"ready_s": (ready - spawned) / 1e9, "model_s": (model - spawned) / 1e9}
    return {
        "shards": shards,
        "first_ask_s": to_local + asked,  # from the daemon's spawn
        "first_ask_missing": len(result["missing"]),
        "first_ask_from_index": len(result.get("notes", [])),
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians and worst cases over repetitions (and over the Claude shards of each)."""
    claude = [s for r in runs for n, s in r["shards"].items() if n != LOCAL]
    local = [r["shards"][LOCAL] for r in runs]
    ready = [s["ready_s"] for s in claude]
    model = [s["model_s"] for s in claude]
    asks = [r["first_ask_s"] for r in runs]
    return {
        "runs": len(runs),
        "claude_ready_s": {
            "median": median(ready),
            "p90": percentile(ready, 90),
            "max": max(ready),
        },
        "local_ready_s": {"median": median([s["ready_s"] for s in local])},
        "claude_model_s": {"median": median(model), "max": max(model)},
        "first_ask_s": {"median": median(asks), "max": max(asks)},
        "first_ask_missing": sum(r["first_ask_missing"] for r in runs),
        "first_ask_from_index": sum(r["first_ask_from_index"] for r in runs),
    }


def run(codes: list[Code], reps: int, shard_bytes: int, delay: float, work: Path) -> dict:
    trees = bench_corpus.build_shards(work / "corpus", shard_bytes)
    question = bench_corpus.make_questions(trees, n=4)[0].text
    runs: dict[str, list[dict[str, Any]]] = {c.label: [] for c in codes}
    for n, code in enumerate(codes):
        # Unmeasured: the first start of a tree compiles its .pyc files and fills the page cache.
        note(f"{code.label}: warm-up start")
        one_start(code, trees, question, work / f"warm-{n}", delay)
    load = [os.getloadavg()[0]]
    for rep in range(reps):
        # Interleaved, in alternating order: a noisy moment hits every version alike.
        for code in codes if rep % 2 == 0 else codes[::-1]:
            note(f"{code.label}: start {rep + 1}/{reps}")
            home = work / f"{rep}-{codes.index(code)}"
            runs[code.label].append(one_start(code, trees, question, home, delay))
    load.append(os.getloadavg()[0])
    return {
        "shards": {t.name: {"bytes": t.bytes, "backend": "local" if t.name == LOCAL else MODEL}
                   for t in trees},
        "count_delay_s": delay,
        "ask_timeout_s": ASK_TIMEOUT_S,
        "question": question,
        "load_avg_1m": load,
        "machine": machine(),
        "results": {label: summary(r) for label, r in runs.items()},
        "runs": runs,
    }  # fmt: skip


def show(r: dict[str, Any]) -> None:
    sizes = ", ".join(f"{n} {s['bytes']:,} B ({s['backend']})" for n, s in r["shards"].items())
    print(f"model shard start-up: {sizes}")
    print(
        f"  count_tokens takes {r['count_delay_s']:g} s; load average "
        f"{r['load_avg_1m'][0]:.2f} before, {r['load_avg_1m'][1]:.2f} after"
    )
    labels = list(r["results"])
    rows = [
        ("Claude shard spawn→ready, median", lambda x: x["claude_ready_s"]["median"]),
        ("Claude shard spawn→ready, p90", lambda x: x["claude_ready_s"]["p90"]),
        ("Claude shard spawn→ready, max", lambda x: x["claude_ready_s"]["max"]),
        ("local shard spawn→ready, median", lambda x: x["local_ready_s"]["median"]),
        ("Claude spawn→model usable, median", lambda x: x["claude_model_s"]["median"]),
        ("first ask answered (from spawn), median", lambda x: x["first_ask_s"]["median"]),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"  {'':<{width}}" + "".join(f"{label:>22}" for label in labels))
    for name, get in rows:
        print(f"  {name:<{width}}" + "".join(f"{get(r['results'][lb]):>20.3f} s" for lb in labels))
    for name, key in (
        ("first asks: shards missing", "first_ask_missing"),
        ("first asks: shards from their index", "first_ask_from_index"),
    ):
        print(f"  {name:<{width}}" + "".join(f"{r['results'][lb][key]:>22}" for lb in labels))
    n = r["results"][labels[0]]["runs"]
    print(f"  ({n} starts each, interleaved; medians over the 3 Claude shards of every start)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller shards, two starts")
    parser.add_argument("--reps", type=int, help="starts per version (default 5; --quick 2)")
    parser.add_argument(
        "--before", default=BEFORE_REV, help=f"commit to compare with (default {BEFORE_REV})"
    )
    parser.add_argument(
        "--count-delay",
        type=float,
        default=COUNT_DELAY_S,
        help=f"seconds the fake API's token counter takes (default {COUNT_DELAY_S:g})",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    reps = args.reps or (2 if args.quick else 5)
    shard_bytes = QUICK_SHARD_BYTES if args.quick else SHARD_BYTES
    with tempfile.TemporaryDirectory(prefix="ifmem-startup-bench-") as tmp:
        work = Path(tmp)
        codes = [Code("this code")]
        if args.before:
            codes.insert(0, before_tree(args.before, work / "before"))
        result = run(codes, reps, shard_bytes, args.count_delay, work)
    show(result)
    if args.json:
        args.json.write_text(json.dumps(finite(result), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
