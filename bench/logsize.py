"""Benchmark of the event log's size over time, and of a simulated year of it.

    .venv/bin/python bench/logsize.py [--quick] [--days N] [--json FILE] [--keep DIR]

1. Real events: a real `ifmemd` with four shards (three over the bench
   corpus, bench/corpus.py: Debian docs, the Python stdlib, site-packages;
   and `working`, empty) answers the bench questions (k=5, as `ifmem ask` asks) and beats
   for a while (1 s heartbeats, to collect rounds quickly; a round's body
   differs from a 10 s round's only in its numbers). Its log holds the events
   as this version writes them: per ask `query.received` and `query.answered`
   with every shard's result, per heartbeat round one `shard.heartbeats`.
2. Before and after: the same asks and heartbeats are also encoded as ifmem
   wrote them before (git dfe2f8a: one `shard.answered` per shard result, with
   path, lines and score of each passage; `query.answered` v1 without
   results; one `shard.heartbeat` per heartbeat, each its own commit). Each
   shape is written through the real `EventLog` into fresh files: bytes per
   ask and per heartbeat round, and one day at the defaults (4 shards, 10 s
   heartbeats: 8,640 rounds; 1,000 asks) as a live file and zstd-compressed
   as a sealed segment is.
3. A simulated year (--days, default 365): a day of those events, repeated,
   written through the real `LogWriter` in batches with an injected clock
   advancing over the days, sealing at the defaults (1,000,000 events or 30
   days; --segment-days); then every segment compressed, the first half of the year pruned
   (`log.pruned` first), `audit verify` of what is left (2 processes), and
   start-up replay from a snapshot standing 1,000 events before the head.

A benchmark reports: the exit status is 0 whether or not targets are met.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import _daemon
import anyio
import corpus as bench_corpus
import zstandard
from _stats import finite, note
from ask import K, shard_config
from ifmemd.log import maintenance, segments
from ifmemd.log import snapshot as snapshots
from ifmemd.log.chain import LogChain
from ifmemd.log.eventlog import EventLog
from ifmemd.log.events import encode
from ifmemd.log.keys import Signer
from ifmemd.log.logformat import canonical_json
from ifmemd.log.replay import replay
from ifmemd.log.segments import Segment
from ifmemd.log.verify import verify_log
from ifmemd.log.writer import LogWriter

MB = 1e6
DAY_NS = 86400 * 10**9
ASKS_PER_DAY = 1000
HEARTBEAT_S = 10
ROUNDS_PER_DAY = 86400 // HEARTBEAT_S
SEGMENT_EVENTS = 1_000_000
YEAR_BATCH = 500  # events per commit in the simulated year
TARGET_LIVE_MB = 5.0
TARGET_SEALED_MB = 2.0
TARGET_VERIFY_S = 180.0
TARGET_REPLAY_S = 1.0

Batch = list[tuple[str, bytes]]
# What a `shard.answered` passage held (git dfe2f8a, ShardAnswer.event_body).
OLD_PASSAGE_FIELDS = ("path", "start_line", "end_line", "score")


# -- 1. real events -------------------------------------------------------------------


def collect(work: Path, quick: bool) -> tuple[list[tuple[dict, dict]], list[dict], int]:
    """Asks (received, answered) and heartbeat rounds from a real daemon's log."""
    # Three corpus shards and `working`: the four shard processes of the issue's
    # "defaults (4 shards, 10 s heartbeats)".
    trees = bench_corpus.build_shards(work / "corpus", 40_000 if quick else 800_000)[:3]
    questions = bench_corpus.make_questions(trees, 20 if quick else 100)
    daemon = _daemon.Daemon(work / "daemon", shard_config(trees, 1.0))
    try:
        daemon.start(120)
        for q in questions:
            daemon.ask(q.text, k=K)
        time.sleep(3 if quick else 15)
    finally:
        daemon.stop()
    received: dict[Any, dict] = {}
    asks: list[tuple[dict, dict]] = []
    rounds: list[dict] = []
    for _seq, _ts, kind, body in daemon.events(
        ("query.received", "query.answered", "shard.heartbeats")
    ):
        body.pop("v", None)
        if kind == "query.received":
            received[body["qid"]] = body
        elif kind == "query.answered":
            asks.append((received.pop(body["qid"]), body))
        elif len(body["beats"]) == len(trees) + 1:  # a full round: every shard (and working)
            rounds.append(body)
    return asks, rounds, len(trees) + 1


# -- 2. the two encodings -------------------------------------------------------------


def _fresh_qid(received: dict, answered: dict) -> tuple[dict, dict]:
    qid = str(uuid.uuid4())
    return {**received, "qid": qid}, {**answered, "qid": qid}


def ask_batches_after(received: dict, answered: dict) -> list[Batch]:
    """One ask as this version commits it: the question, then the answer with its results."""
    received, answered = _fresh_qid(received, answered)
    return [
        [("query.received", encode("query.received", received))],
        [("query.answered", encode("query.answered", answered))],
    ]


def ask_batches_before(received: dict, answered: dict) -> list[Batch]:
    """The same ask as ifmem wrote it before (git dfe2f8a, ShardAnswer.event_body):
    the question; then one `shard.answered` per result and a v1 answer, in one commit."""
    received, answered = _fresh_qid(received, answered)
    answer = [("query.received", encode("query.received", received))]
    per_shard: Batch = []
    for r in answered["results"]:
        body = {
            "qid": answered["qid"],
            "shard": r["shard"],
            "ms": r["ms"],
            "passages": [
                {k: row[answered["passage_fields"].index(k)] for k in OLD_PASSAGE_FIELDS}
                for row in r["passages"]
            ],
        }
        body |= {k: v for k, v in r.items() if k not in ("shard", "ms", "passages", "usage")}
        body |= r.get("usage", {})
        per_shard.append(("shard.answered", canonical_json({**body, "v": 1})))
    v1 = {k: v for k, v in answered.items() if k not in ("results", "passage_fields")}
    return [answer, [*per_shard, ("query.answered", canonical_json({**v1, "v": 1}))]]


def round_batches_after(round_: dict) -> list[Batch]:
    return [[("shard.heartbeats", encode("shard.heartbeats", round_))]]


def round_batches_before(round_: dict) -> list[Batch]:
    """One `shard.heartbeat` (v2) per heartbeat, each committed as it arrived."""
    return [
        [
            (
                "shard.heartbeat",
                canonical_json(
                    {"shard": name, "rss_bytes": rss, "served": served, "uptime_s": up, "v": 2}
                ),
            )
        ]
        for name, beats in round_["beats"].items()
        for rss, served, up in beats
    ]


def file_bytes(path: Path, signer: Signer, batches: Sequence[Batch]) -> int:
    """The size of a fresh log holding `batches`, once closed (its -wal folded in)."""
    with EventLog.open(path, signer) as log:
        for batch in batches:
            log.append_batch(batch)
    return path.stat().st_size


def empty_bytes(path: Path, signer: Signer) -> int:
    with EventLog.open(path, signer):
        pass
    return path.stat().st_size


def day_batches(
    asks: Sequence[tuple[dict, dict]], rounds: Sequence[dict], shape: str
) -> list[Batch]:
    """One day at the defaults, in time order: a round every 10 s, 1,000 asks spread over it."""
    ask_fn = ask_batches_after if shape == "after" else ask_batches_before
    round_fn = round_batches_after if shape == "after" else round_batches_before
    rng = random.Random(1)
    asks_at = sorted(rng.randrange(ROUNDS_PER_DAY) for _ in range(ASKS_PER_DAY))
    out: list[Batch] = []
    a = 0
    for r in range(ROUNDS_PER_DAY):
        out += round_fn(rounds[r % len(rounds)])
        while a < len(asks_at) and asks_at[a] == r:
            out += ask_fn(*asks[a % len(asks)])
            a += 1
    return out


def zstd_bytes(path: Path) -> int:
    """What the file takes sealed and compressed, as `segments.compress` writes it."""
    return len(zstandard.ZstdCompressor(level=segments.ZSTD_LEVEL).compress(path.read_bytes()))


def measure_sizes(
    work: Path, asks: list[tuple[dict, dict]], rounds: list[dict], shards: int
) -> dict[str, Any]:
    signer = Signer.generate()
    n_asks = 2000
    n_rounds = 2000
    out: dict[str, Any] = {"shards": shards, "sample_asks": len(asks), "sample_rounds": len(rounds)}
    for shape in ("before", "after"):
        folder = work / shape
        folder.mkdir(parents=True, exist_ok=True)
        base = empty_bytes(folder / "empty.db", signer)
        ask_fn = ask_batches_after if shape == "after" else ask_batches_before
        round_fn = round_batches_after if shape == "after" else round_batches_before
        ask_b = [b for i in range(n_asks) for b in ask_fn(*asks[i % len(asks)])]
        round_b = [b for i in range(n_rounds) for b in round_fn(rounds[i % len(rounds)])]
        per_ask = (file_bytes(folder / "asks.db", signer, ask_b) - base) / n_asks
        per_round = (file_bytes(folder / "rounds.db", signer, round_b) - base) / n_rounds
        day = day_batches(asks, rounds, shape)
        day_path = folder / "day.db"
        live = file_bytes(day_path, signer, day) - base
        out[shape] = {
            "events_per_ask": sum(len(b) for b in ask_fn(*asks[0])),
            "events_per_round": sum(len(b) for b in round_fn(rounds[0])),
            "bytes_per_ask": per_ask,
            "bytes_per_round": per_round,
            "events_per_day": sum(len(b) for b in day),
            "live_mb_per_day": live / MB,
            "sealed_zstd_mb_per_day": zstd_bytes(day_path) / MB,
        }
    return out


# -- 3. a simulated year --------------------------------------------------------------


def year_batches(day: list[Batch], days: int) -> Iterator[tuple[int, Batch]]:
    """(day number, batch of about YEAR_BATCH events) over `days` days of `day`."""
    for d in range(days):
        pending: Batch = []
        for batch in day:
            pending += batch
            if len(pending) >= YEAR_BATCH:
                yield d, pending
                pending = []
        if pending:
            yield d, pending


async def write_year(
    db: Path, signer: Signer, day: list[Batch], days: int, segment_days: float
) -> dict[str, Any]:
    log = EventLog.open(db, signer)
    start = time.time_ns()
    now = [start]
    log.clock = lambda: now[0]
    per_day = sum(len(b) for b in day)
    sealed: list[Segment] = []
    writer = LogWriter(
        log,
        checkpoint_every=1000,
        checkpoints_path=db.parent / "checkpoints",
        segment_events=SEGMENT_EVENTS,
        segment_age_s=segment_days * 86400,
        after_seal=lambda s: sealed.append(s) if s is not None else None,
    )
    t0 = time.perf_counter()
    done = 0
    async with anyio.create_task_group() as tg:
        await tg.start(writer.run)
        for d, batch in year_batches(day, days):
            # The clock moves through the day with the events.
            now[0] = start + d * DAY_NS + (done % per_day) * DAY_NS // per_day
            await writer.append_many([(k, json.loads(b)) for k, b in batch])
            done += len(batch)
        await writer.close()
    write_s = time.perf_counter() - t0
    writer.log.close()
    return {"events": done, "write_s": write_s, "start_ns": start, "segments": len(sealed)}


def simulate_year(work: Path, day: list[Batch], days: int, segment_days: float) -> dict[str, Any]:
    db = work / "year" / "data" / "events.db"
    signer = Signer.generate()
    out: dict[str, Any] = {"days": days, "segment_days": segment_days}
    # Every checkpoint is also printed to stderr, as the daemon does for the journal.
    with open(work / "year-checkpoints.stderr", "w") as err, contextlib.redirect_stderr(err):
        out |= anyio.run(write_year, db, signer, day, days, segment_days)
    t0 = time.perf_counter()
    for segment in segments.list_segments(db):
        segments.compress(segment)
    out["compress_s"] = time.perf_counter() - t0
    found = segments.list_segments(db)
    out["sealed_zstd_bytes"] = sum(s.path.stat().st_size for s in found)
    out["live_bytes"] = db.stat().st_size
    note(f"year: {out['events']:,} events in {out['write_s']:.0f} s, {len(found)} segments")

    half = out["start_ns"] + days * DAY_NS // 2
    t0 = time.perf_counter()
    plan, _record = maintenance.prune_files(db, signer, None, before_ns=half)
    out["prune_s"] = time.perf_counter() - t0
    out["pruned_segments"] = len(plan.doomed)
    out["first_kept_seq"] = plan.first_kept_seq
    note(f"year: pruned {len(plan.doomed)} segments, kept from seq {plan.first_kept_seq}")

    t0 = time.perf_counter()
    report = verify_log(db, jobs=2)
    out["verify_s"] = time.perf_counter() - t0
    out["verify_ok"] = report.ok
    out["verify_rows"] = report.rows
    out["verify_note"] = report.pruned_note or str(report.failure)
    note(f"year: audit verify {out['verify_s']:.0f} s: {out['verify_note']}")

    snap_path = work / "year" / "snapshot.json"
    with LogChain.open(db) as chain:
        head = chain.head_seq
        state = replay(chain, upto=head - 1000).state
        snapshots.save(snap_path, chain.log_id, state)
    t0 = time.perf_counter()
    with LogChain.open(db) as chain:
        result = replay(chain, snapshot_path=snap_path)
    out["replay_s"] = time.perf_counter() - t0
    out["replayed"] = result.replayed
    out["replay_from"] = result.from_snapshot
    return out


# -- report ---------------------------------------------------------------------------


def report(sizes: dict[str, Any], year: dict[str, Any] | None) -> None:
    b, a = sizes["before"], sizes["after"]
    print()
    print(f"event log size — {sizes['shards']} shards, k={K}, real asks and heartbeat rounds")
    print(f"{'':28}{'before':>12}{'after':>12}{'after/before':>14}")
    rows = [
        ("events per ask", "events_per_ask", "{:.0f}"),
        ("bytes per ask", "bytes_per_ask", "{:,.0f}"),
        ("events per heartbeat round", "events_per_round", "{:.0f}"),
        ("bytes per heartbeat round", "bytes_per_round", "{:,.0f}"),
        ("events per day", "events_per_day", "{:,.0f}"),
        ("live MB/day", "live_mb_per_day", "{:.2f}"),
        ("sealed + zstd MB/day", "sealed_zstd_mb_per_day", "{:.2f}"),
    ]
    for label, key, fmt in rows:
        print(f"{label:28}{fmt.format(b[key]):>12}{fmt.format(a[key]):>12}{a[key] / b[key]:>14.2f}")
    live_ok = a["live_mb_per_day"] <= TARGET_LIVE_MB
    sealed_ok = a["sealed_zstd_mb_per_day"] <= TARGET_SEALED_MB
    print(
        f"targets: live <= {TARGET_LIVE_MB} MB/day {'met' if live_ok else 'MISSED'}; "
        f"sealed+zstd <= {TARGET_SEALED_MB} MB/day {'met' if sealed_ok else 'MISSED'}"
    )
    if year is None:
        return
    print()
    print(f"simulated {year['days']} days ({year['events']:,} events, {year['segments']} seals):")
    print(
        f"  written through LogWriter in {year['write_s']:.0f} s, sealing every "
        f"{year['segment_days']:g} days; compressed in {year['compress_s']:.0f} s"
    )
    print(
        f"  on disk: {year['sealed_zstd_bytes'] / MB:.0f} MB of sealed zstd segments, "
        f"{year['live_bytes'] / MB:.0f} MB live"
    )
    print(
        f"  pruned the first half: {year['pruned_segments']} segments, in {year['prune_s']:.1f} s"
    )
    verdict = "met" if year["verify_ok"] and year["verify_s"] <= TARGET_VERIFY_S else "MISSED"
    print(
        f"  audit verify (2 processes): {year['verify_s']:.0f} s for {year['verify_rows']:,} rows, "
        f"{year['verify_note']} (target <= {TARGET_VERIFY_S:.0f} s: {verdict})"
    )
    verdict = "met" if year["replay_s"] <= TARGET_REPLAY_S else "MISSED"
    print(
        f"  start-up replay from a snapshot at seq {year['replay_from']:,}: "
        f"{year['replay_s'] * 1000:.0f} ms for {year['replayed']} events "
        f"(target <= {TARGET_REPLAY_S:g} s: {verdict})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small corpus, 3 simulated days")
    ap.add_argument("--days", type=int, help="days to simulate (default 365; 0: none)")
    ap.add_argument(
        "--segment-days",
        type=float,
        help="segment_age in days (default 30, the config's default; --quick: 1)",
    )
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--keep", type=Path, metavar="DIR", help="work in DIR and keep it")
    args = ap.parse_args(argv)
    days = args.days if args.days is not None else (3 if args.quick else 365)
    segment_days = args.segment_days or (1.0 if args.quick else 30.0)
    info = _daemon.machine()
    info["loadavg_1min_before"] = os.getloadavg()[0]
    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            work = args.keep
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ifmem-logsize-")))
        note("collecting real events from a daemon over the bench corpus")
        asks, rounds, shards = collect(work, args.quick)
        note(f"{len(asks)} asks, {len(rounds)} full heartbeat rounds; measuring both encodings")
        sizes = measure_sizes(work / "sizes", asks, rounds, shards)
        year = None
        if days:
            year = simulate_year(work, day_batches(asks, rounds, "after"), days, segment_days)
    info["loadavg_1min_after"] = os.getloadavg()[0]
    report(sizes, year)
    print(
        f"\nmachine: {info['cpu']}, {info['cores']} cores; load average (1 min) "
        f"{info['loadavg_1min_before']:.2f} before, {info['loadavg_1min_after']:.2f} after"
    )
    if args.json:
        doc = {"machine": info, "sizes": sizes, "year": year}
        args.json.write_text(json.dumps(finite(doc), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
