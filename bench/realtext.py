"""Benchmark on real text: answer quality and speed of ifmemd against `rg`, in one run.

    .venv/bin/python bench/realtext.py [--quick] [--in-process] [--json FILE] [--keep DIR]
                                       [--questions FILE]

1. Corpus (bench/realcorpus.py): four shards of man pages, standard-library
   sources and documentation, ~3 MB, from a fixed file list.
2. Questions (bench/questions/realtext.toml): hand-written, each with its gold
   citations; a third phrased in other words than the text uses. `--questions
   bench/questions/realtext-heldout.toml` asks the held-out set instead: written
   later, never tuned on, to tell whether a ranking change tuned on the first
   set carries over.
3. Quality: recall@5 and MRR of ifmem's answers (a real daemon, 4 shards +
   `working`) overall, per shard and for the paraphrased questions, beside
   `rg` re-reading the files with the question's words (bench/gold.py); and
   how many lines a citation spans (median), which is what a reader must read.
4. Speed: one client asks every question for several rounds (p50/p99),
   interleaved round by round with `rg` over the same trees; 32 clients ask
   for a fixed time (asks/s, errors; bench/ask.py's load driver); `ifmem ask`
   as a whole process against `python -c pass`.

`--in-process` skips the daemon and speed: each shard's index is built in
this process and the answers fused as the coordinator does, for a quick look
at quality while changing chunking or ranking. `--definitions` indexes the
whole standard-library tree (modules and their tests, ~40,000 passages) and
prints where each of a few "where is X implemented" questions ranks the
passage defining X, beside bm25 alone. A benchmark reports: the exit status
is 0 whether or not targets are met.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import ask
import gold
import realcorpus
from _daemon import machine
from _stats import finite, fmt_seconds, note, percentile, ratio
from corpus import ShardTree

K = ask.K
# Rounds of every question timed in --in-process (CPU time of the shards' searches).
IN_PROCESS_ROUNDS = 5
# How long a --semantic daemon may take to make its passages' vectors (every one encoded).
SEMANTIC_READY_S = 1800.0
MB = 1e6


def all_vectors(shards: list[dict[str, Any]]) -> bool:
    """Every semantic shard has made the vectors of all its passages."""
    return all(s.get("vectors_queued", 0) == 0 for s in shards)  # None: not told yet


def cited(answer: dict[str, Any]) -> list[gold.Cited]:
    return [gold.Cited(p["path"], p["start_line"], p["end_line"]) for p in answer["passages"]]


def in_process_answers(
    trees: Sequence[ShardTree], questions: Sequence[gold.Labelled], semantic: bool
) -> tuple[list, dict[str, Any]]:
    """Each question's fused top K from indexes built here, as the coordinator fuses them,
    and the CPU time of the four searches of an ask (the first pass warms the caches)."""
    from ifmemd.coordinator import ShardAnswer, fuse
    from ifmemd.shards.chunker import chunk_files
    from ifmemd.shards.corpus import load_corpus
    from ifmemd.shards.index import Index

    embedder = None
    if semantic:
        from ifmemd.shards import semantic as dense

        embedder = dense.embedder()
    indexes = {}
    started = time.process_time()
    for tree in trees:
        corpus = load_corpus([str(tree.path)])
        indexes[tree.name] = Index.build(chunk_files(corpus.files), embedder=embedder)
    build_s = time.process_time() - started
    out = []
    for q in questions:
        answers = [ShardAnswer(name, tuple(ix.search(q.text, K))) for name, ix in indexes.items()]
        out.append({"passages": fuse(answers, K)})
    cpu: list[float] = []
    for _ in range(IN_PROCESS_ROUNDS):
        for q in questions:
            t0 = time.process_time()
            for ix in indexes.values():
                ix.search(q.text, K)
            cpu.append(time.process_time() - t0)
    return out, {
        "build_cpu_s": build_s,
        "search_cpu_p50": percentile(cpu, 50),
        "search_cpu_p99": percentile(cpu, 99),
    }


def passage_lines(trees: Sequence[ShardTree]) -> list[int]:
    """How many lines each passage of the corpus spans, as the shards cut them."""
    from ifmemd.shards.chunker import chunk_files
    from ifmemd.shards.corpus import load_corpus

    return [
        c.end_line - c.start_line + 1
        for tree in trees
        for c in chunk_files(load_corpus([str(tree.path)]).files)
    ]


def quality(
    questions: Sequence[gold.Labelled],
    answers: Sequence[dict[str, Any]],
    rg: str | None,
    trees: Sequence[ShardTree],
) -> dict[str, Any]:
    ranks = [gold.rank_of_answer(q, cited(a), K) for q, a in zip(questions, answers, strict=True)]
    out: dict[str, Any] = {
        "ifmem": {
            name: asdict(s) | {"recall": s.recall, "mrr": s.mrr}
            for name, s in gold.score(questions, ranks).items()
        },
        "ranks": ranks,
        "cited_lines": [c.end - c.start + 1 for a in answers for c in cited(a)],
    }
    if rg:
        dirs = [t.path for t in trees]
        rg_ranks = [gold.rank_of_answer(q, gold.rg_cited(rg, q, dirs), K) for q in questions]
        out["rg"] = {
            name: asdict(s) | {"recall": s.recall, "mrr": s.mrr}
            for name, s in gold.score(questions, rg_ranks).items()
        }
        out["rg_ranks"] = rg_ranks
    return out


def speed(
    work: Path,
    trees: Sequence[ShardTree],
    questions: Sequence[gold.Labelled],
    sz: ask.Sizes,
    rg: str | None,
    semantic: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The daemon's answers (first, untimed pass) and the speed figures beside rg's."""
    qfile = work / "questions.json"
    qfile.write_text(
        json.dumps(
            [
                {
                    "text": q.text,
                    "terms": q.words(),
                    "kind": "natural",
                    "shard": q.shard,
                    "source": "",
                }
                for q in questions
            ]
        )
    )
    dirs = [t.path for t in trees]
    # A --keep directory's earlier run: its index (under cache/) is reused, its log is
    # not, or the load run's request ids, answered before, get their recorded answers.
    for stale in ("data", "state"):
        shutil.rmtree(work / "d4" / stale, ignore_errors=True)
    daemon = ask.Daemon(work / "d4", trees, sz.heartbeat, semantic=semantic)
    out: dict[str, Any] = {}
    try:
        out["all_ready_s"] = daemon.start(sz.ready_timeout)
        if semantic:
            # The shards are ready on their words; they then run the sentence
            # encoder over every passage (~15-25 passages/s a core): minutes,
            # not seconds. Quality and speed are measured once all are made.
            t0 = time.perf_counter()
            daemon.wait(all_vectors, SEMANTIC_READY_S)
            out["vectors_s"] = out["all_ready_s"] + time.perf_counter() - t0
        out["rss_ready"] = daemon.rss(wait_s=0.0)
        client = daemon.client()
        answers = [client.request("ask", question=q.text, k=K) for q in questions]
        note(f"single client, {sz.rounds} rounds of {len(questions)} (each beside an rg round)…")
        ask_lat: list[float] = []
        rg_lat: list[float] = []
        for _ in range(sz.rounds):
            if rg:
                for q in questions:
                    t0 = time.perf_counter()
                    subprocess.run(gold.rg_command(rg, q, dirs), capture_output=True, check=False)
                    rg_lat.append(time.perf_counter() - t0)
            for q in questions:
                t0 = time.perf_counter()
                client.request("ask", question=q.text, k=K)
                ask_lat.append(time.perf_counter() - t0)
        client.close()
        out["ask"] = {
            "p50": percentile(ask_lat, 50),
            "p99": percentile(ask_lat, 99),
            "n": len(ask_lat),
        }
        out["rg"] = {"p50": percentile(rg_lat, 50), "p99": percentile(rg_lat, 99), "n": len(rg_lat)}
        note(f"{sz.clients} clients in {sz.client_procs} processes for {sz.load_seconds:g} s…")
        status = daemon.status()
        assert daemon.proc is not None
        pids = {"daemon": daemon.proc.pid, **{s["name"]: s["pid"] for s in status["shards"]}}
        out["load"] = ask.load_run(daemon.socket, qfile, sz, work, pids)
        out["rss_after_load"] = daemon.rss()
        note(f"`ifmem ask` as a process, {sz.cli_runs} runs…")
        out["cli"] = cli_runs(daemon, questions, sz.cli_runs, work)
        out["shards"] = daemon.shard_events()
    finally:
        daemon.stop()
    return answers, out


def cli_runs(
    daemon: ask.Daemon, questions: Sequence[gold.Labelled], runs: int, work: Path
) -> dict[str, float]:
    """Median wall time of `ifmem ask` as a whole process, beside `python -c pass`.

    `median`: as installed, ifmem's modules compiled to bytecode (pip and the
    .deb compile them; an editable install does when Python may write its
    caches). `median_source`: from a copy of them without bytecode and with
    PYTHONDONTWRITEBYTECODE set, so every run compiles them (an editable
    install on a machine that sets it). Runs of the three alternate.
    """
    import compileall

    import ifmem
    import ifmemd

    packages = [Path(ifmemd.__file__).parent, Path(ifmem.__file__).parent]
    for package in packages:
        compileall.compile_dir(package, quiet=1)
    source = work / "cli-source"
    shutil.rmtree(source, ignore_errors=True)  # a --keep directory's earlier run
    for package in packages:
        shutil.copytree(
            package, source / package.name, ignore=shutil.ignore_patterns("__pycache__")
        )
    from_source = {
        **daemon.env,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")])),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    cli, cli_source, floor = [], [], []
    for i in range(runs):
        q = questions[i % len(questions)]
        cmd = [str(ask.BIN / "ifmem"), "ask", "--socket", str(daemon.socket), q.text]
        cli.append(ask.wall(cmd, env=daemon.env))
        cli_source.append(ask.wall(cmd, env=from_source))
        floor.append(ask.wall([sys.executable, "-c", "pass"]))
    return {
        "median": statistics.median(cli),
        "median_source": statistics.median(cli_source),
        "floor": statistics.median(floor),
    }


# (question, file, line of the definition) over the standard-library tree.
DEFINITIONS = (
    ("where is mkdtemp implemented", "tempfile.py", "def mkdtemp("),
    ("where is NamedTemporaryFile defined", "tempfile.py", "def NamedTemporaryFile("),
    ("where is shutil.rmtree implemented", "shutil.py", "def rmtree("),
    ("how is the lru_cache decorator implemented", "functools.py", "def lru_cache("),
    ("where is the JSONDecoder class", "json/decoder.py", "class JSONDecoder("),
    ("where is textwrap.dedent defined", "textwrap.py", "def dedent("),
)
STDLIB_TREE = ("*.py", "test/*.py", "json/*.py", "logging/*.py", "asyncio/*.py", "email/*.py")


def definitions() -> None:
    """Rank of each definition over the stdlib tree: ifmem's, and bm25's alone."""
    import sysconfig

    from ifmemd.shards import rerank
    from ifmemd.shards.chunker import chunk_files
    from ifmemd.shards.corpus import load_corpus
    from ifmemd.shards.index import Index

    root = Path(sysconfig.get_paths()["stdlib"])
    corpus = load_corpus([str(root / pattern) for pattern in STDLIB_TREE])
    index = Index.build(chunk_files(corpus.files))
    print(f"definitions over the stdlib tree: {len(corpus.files)} files, {len(index)} passages")
    print(f"  {'question':<46}{'ifmem':>6}{'bm25':>6}  first answer")
    for question, rel, head in DEFINITIONS:
        text = (root / rel).read_text()
        line = text[: text.index(head)].count("\n") + 1
        path = str(root / rel)

        def rank(cited: list[tuple[str, int, int]], path: str = path, line: int = line) -> str:
            for n, (p, a, b) in enumerate(cited, 1):
                if p == path and a <= line <= b:
                    return str(n)
            return f">{len(cited)}"

        hits = index.search(question, rerank.CANDIDATES)
        plan = index._plan(question)
        assert plan is not None
        alone = [index._passage(r)[:3] for r, _ in index._rank(plan, rerank.CANDIDATES)]
        ours = [(p.path, p.start_line, p.end_line) for p in hits]
        first = f"{Path(hits[0].path).relative_to(root)}:{hits[0].span[0]}" if hits else "-"
        print(f"  {question:<46}{rank(ours):>6}{rank(alone):>6}  {first}")


def report(doc: dict[str, Any]) -> None:
    q = doc["quality"]
    print(
        f"quality: recall@{K} and MRR ({len(q['ranks'])} questions of "
        f"{Path(doc['questions_file']).name})"
    )
    print(f"  {'group':<22}{'n':>4}  {'ifmem R@5':>9} {'MRR':>6}  {'rg R@5':>7} {'MRR':>6}")
    for name, s in q["ifmem"].items():
        r = q.get("rg", {}).get(name, {})
        print(
            f"  {name:<22}{s['n']:>4}  {s['recall']:>9.2f} {s['mrr']:>6.2f}  "
            f"{r.get('recall', math.nan):>7.2f} {r.get('mrr', math.nan):>6.2f}"
        )
    lines = q["cited_lines"]
    print(
        f"  lines per citation: median {statistics.median(lines):.0f}; "
        f"passages of the corpus: median {doc['passage_lines_median']:.0f} lines"
    )
    cost = doc.get("in_process")
    if cost:
        print(
            f"CPU of the 4 shards' searches per ask, in process: p50 "
            f"{fmt_seconds(cost['search_cpu_p50'])}, p99 {fmt_seconds(cost['search_cpu_p99'])} "
            f"({IN_PROCESS_ROUNDS} rounds); building the 4 indexes: {cost['build_cpu_s']:.1f} s CPU"
        )
    s = doc.get("speed")
    if not s:
        return
    print("speed (real text, 4 shards)")
    print(
        f"  first build, start to all shards ready: {s['all_ready_s']:.1f} s"
        + (f", to every passage's vector made: {s['vectors_s']:.1f} s" if "vectors_s" in s else "")
        + "; shard RSS after load: "
        + ", ".join(f"{n} {v / MB:.1f} MB" for n, v in sorted(s["rss_after_load"].items()))
    )
    rows = [
        ("ask p50, 1 client, in daemon", s["ask"]["p50"], s["rg"]["p50"], "≤ 3 ms"),
        ("ask p99, 1 client, in daemon", s["ask"]["p99"], s["rg"]["p99"], "≤ 8 ms"),
        ("`ifmem ask` whole process", s["cli"]["median"], s["cli"]["floor"], "≤ 3× floor"),
    ]
    if "median_source" in s["cli"]:
        rows.append(
            ("  the same, no bytecode cache", s["cli"]["median_source"], s["cli"]["floor"], "")
        )
    for name, v, base, target in rows:
        print(
            f"  {name:<32}{fmt_seconds(v):>10}  baseline {fmt_seconds(base):>9}  "
            f"ratio {ratio(v, base):6.3g}" + (f"  target {target}" if target else "")
        )
    load = s["load"]
    print(
        f"  asks/s at {doc['sizes']['clients']} clients: {load['asks_per_s']:,.0f}/s "
        f"(p50 {fmt_seconds(load['p50'])}, p99 {fmt_seconds(load['p99'])}, "
        f"errors {load['errors']}); target ≥ 1,000/s"
    )
    print(
        "  CPU per ask under load: "
        + ", ".join(f"{n} {fmt_seconds(v)}" for n, v in load["cpu_per_ask_s"].items())
    )
    print("  baseline for p50/p99: rg over the same four trees, same questions, same run;")
    print("  for `ifmem ask`: `python -c pass`; ifmem's modules compiled to bytecode as installed")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds, shorter load run")
    ap.add_argument("--in-process", action="store_true", help="quality only, no daemon")
    ap.add_argument(
        "--semantic",
        action="store_true",
        help="shards rank by meaning too (semantic = true; needs ifmem[semantic])",
    )
    ap.add_argument(
        "--definitions", action="store_true", help="definitions first, over the stdlib tree"
    )
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--keep", type=Path, metavar="DIR", help="work in DIR and keep it")
    ap.add_argument(
        "--questions",
        type=Path,
        metavar="FILE",
        default=gold.QUESTIONS,
        help="the labelled questions (default: bench/questions/realtext.toml)",
    )
    args = ap.parse_args(argv)
    if args.definitions:
        definitions()
        return 0
    sz = ask.QUICK if args.quick else ask.FULL
    rg = shutil.which("rg")
    info = machine()
    info["loadavg_before"] = os.getloadavg()
    started = time.perf_counter()
    doc: dict[str, Any] = {"machine": info, "sizes": asdict(sz)}
    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            work = args.keep
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ifmem-real-")))
        built = realcorpus.build(work / "corpus")
        trees = built.trees
        doc["corpus"] = [t.summary() for t in trees]
        doc["missing"] = built.missing
        note(
            "corpus: "
            + ", ".join(f"{t.name} {len(t.files)} files {t.bytes / MB:.2f} MB" for t in trees)
            + (f"; missing here: {', '.join(built.missing)}" if built.missing else "")
        )
        absent = {f"{t.name}/{f}" for t in trees for f in t.files}
        labelled = gold.load(args.questions)
        questions = [q for q in labelled if all(f"{q.shard}/{g.path}" in absent for g in q.gold)]
        doc["questions_file"] = str(args.questions)
        doc["skipped_questions"] = len(labelled) - len(questions)
        doc["passage_lines_median"] = statistics.median(passage_lines(trees))
        doc["semantic"] = args.semantic
        if args.in_process:
            answers, doc["in_process"] = in_process_answers(trees, questions, args.semantic)
        else:
            answers, doc["speed"] = speed(work, trees, questions, sz, rg, args.semantic)
        doc["quality"] = quality(questions, answers, rg, trees)
        doc["questions"] = [
            {
                "text": q.text,
                "shard": q.shard,
                "paraphrase": q.paraphrase,
                "rank": r,
                "rg_rank": rr,
                "cited": [p["citation"] for p in a["passages"]],
            }
            for q, r, rr, a in zip(
                questions,
                doc["quality"]["ranks"],
                doc["quality"].get("rg_ranks", [0] * len(questions)),
                answers,
                strict=True,
            )
        ]
    info["loadavg_after"] = os.getloadavg()
    doc["seconds"] = time.perf_counter() - started
    print(
        f"ifmem on real text — {'in-process' if args.in_process else 'daemon'}"
        f"{', quick' if args.quick else ''}{', semantic' if args.semantic else ''}; k={K}"
    )
    print(
        f"machine: {info['cpu']}, {info['cores']} cores; load average (1 min) "
        f"{info['loadavg_before'][0]:.2f} before, {info['loadavg_after'][0]:.2f} after"
    )
    report(doc)
    if args.json:
        args.json.write_text(json.dumps(finite(doc), indent=1, allow_nan=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
