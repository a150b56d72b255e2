"""Benchmark of what model-backed shards cost: ifmem (routing + prompt caching) against naive.

    .venv/bin/python bench/llm_cost.py [--quick] [--json FILE] [--keep DIR] [--ratio R]

A real `ifmemd` with four `backend = "anthropic"` shards (bench/corpus.py's
four domains, ~30,000 tokens each by default) answers 20 seeded questions,
through the real `anthropic` SDK, from the local fake Messages API of the
tests (tests/fake_anthropic.py), which bills prompt caching as the API does
(a prefix of at least 1,024 tokens is cached; writes and reads are reported).

Compared, in billed-equivalent input tokens (uncached input x 1, cache writes
x 1.25, cache reads x 0.1: Anthropic's multipliers for the 5-minute cache):

- naive: every question sent to every shard's model with the shard's whole
  corpus, uncached: 20 x 4 calls, each the corpus plus the question;
- ifmem: what the fake API billed for the calls ifmem made: only the
  `route_top_n = 2` shards whose local index matched best are asked, and
  each shard's corpus is read from the cache after its first question.

Also shown: the input tokens sent without the caching discount (what routing
alone saves), model calls made, cache writes and reads, and a cross-check that
the tokens recorded in the event log (what `ifmem stats` reads) equal what the
API billed. Target: ifmem <= 15% of naive. The exit status is 0 either way.

The same questions are asked twice in the run, each time of a fresh daemon
and a fresh fake API (an empty prompt cache): with `route_min_coverage_ratio`
off (0) and at its default. The table above is the default's; below it, what
the ratio saves (model calls, billed tokens) and what it costs in answers: how
often, for a question taken from one file of one shard, that shard's model was
asked, a model answer cites that file, and the passages include it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
sys.path.insert(0, str(REPO / "tests"))  # the fake API is test equipment

import corpus as bench_corpus  # noqa: E402
from _daemon import Daemon  # noqa: E402
from fake_anthropic import FakeAnthropic, tokens  # noqa: E402
from ifmemd.config import CoordinatorConfig  # noqa: E402

KEY = "sk-ant-bench-not-a-real-key-0000"
MODEL = "claude-bench"
CACHE_WRITE = 1.25
CACHE_READ = 0.1
TARGET = 0.15
ROUTE_TOP_N = 2
DEFAULT_RATIO = CoordinatorConfig().route_min_coverage_ratio
START_TIMEOUT_S = 180.0
USAGE = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")


@dataclass(frozen=True)
class Sizes:
    shard_bytes: int
    questions: int


FULL = Sizes(shard_bytes=120_000, questions=20)
QUICK = Sizes(shard_bytes=24_000, questions=8)


def billed(usage: dict[str, int]) -> float:
    """Billed-equivalent input tokens of one call."""
    return (
        usage.get("input_tokens", 0)
        + CACHE_WRITE * usage.get("cache_creation_input_tokens", 0)
        + CACHE_READ * usage.get("cache_read_input_tokens", 0)
    )


def config_text(trees: list[bench_corpus.ShardTree], url: str, min_coverage_ratio: float) -> str:
    lines = [
        "[daemon]",
        "heartbeat_interval = 2",
        "heartbeat_timeout = 60",
        "ask_timeout = 30",
        "",
        "[anthropic]",
        f'model = "{MODEL}"',
        f'base_url = "{url}"',
        "timeout = 30",
        "max_retries = 2",
        "",
        "[coordinator]",
        f"route_top_n = {ROUTE_TOP_N}",
        f"route_min_coverage_ratio = {min_coverage_ratio}",
        "",
        f'[prices."{MODEL}"]',
        "input = 3.0",
        "output = 15.0",
    ]
    for tree in trees:
        lines += [
            "",
            "[[shard]]",
            f'name = "{tree.name}"',
            f"description = {json.dumps(tree.description)}",
            f'paths = ["{tree.path}/**"]',
            'backend = "anthropic"',
        ]
    return "\n".join(lines) + "\n"


def ask_all(
    trees: list[bench_corpus.ShardTree],
    questions: list[bench_corpus.Question],
    workdir: Path,
    min_coverage_ratio: float,
) -> dict[str, Any]:
    """One daemon, one fresh fake API (an empty prompt cache): every question asked once."""
    with FakeAnthropic(api_key=KEY, min_cache_tokens=1024) as fake:
        config = config_text(trees, fake.url, min_coverage_ratio)
        daemon = Daemon(workdir, config, env={"ANTHROPIC_API_KEY": KEY})
        try:
            load_s = daemon.start(START_TIMEOUT_S)
            results = [daemon.ask(q.text) for q in questions]
        finally:
            daemon.stop()
        calls = fake.messages()
        failed_calls = len(fake.messages(None)) - len(calls)
    # The corpus as the model counts it: the API's count, once the model is up.
    models = [b for _s, _t, _k, b in daemon.events(("shard.model_ready",))]
    results_of_shards = [
        r for _s, _t, _k, b in daemon.events(("query.answered",)) for r in b["results"]
    ]
    return {
        "load_s": load_s,
        "results": results,
        "calls": calls,
        "failed_calls": failed_calls,
        "corpus_tokens": {b["shard"]: b["tokens"] for b in models},
        "sources": {b["shard"]: b["token_source"] for b in models},
        "recorded": {
            f: sum(r.get("usage", {}).get(f, 0) for r in results_of_shards) for f in USAGE
        },
    }


def hit_rates(
    trees: list[bench_corpus.ShardTree],
    questions: list[bench_corpus.Question],
    results: list[dict[str, Any]],
) -> dict[str, Any]:
    """Over the questions taken from one file of one shard: how often the answer found it.

    - model: that shard's model was asked (routing chose it);
    - cited: a model answer cites that file;
    - passages: the fused passages (k = 5) include that file.
    """
    roots = {t.name: t.path for t in trees}
    scored = [(q, r) for q, r in zip(questions, results, strict=True) if q.source]

    def rate(found: int) -> float:
        return round(found / len(scored), 4) if scored else 0.0

    def resolved(path: str) -> str:
        return str(Path(path).resolve())

    model = cited = passages = 0
    for q, r in scored:
        source = resolved(str(roots[q.shard] / q.source))
        answers = r.get("answers", [])
        model += any(a["shard"] == q.shard for a in answers)
        cited += any(resolved(c["path"]) == source for a in answers for c in a["citations"])
        passages += any(resolved(p["path"]) == source for p in r["passages"])
    return {
        "questions": len(scored),
        "model": rate(model),
        "cited": rate(cited),
        "passages": rate(passages),
    }


def run(sizes: Sizes, workdir: Path, ratio: float = DEFAULT_RATIO) -> dict[str, Any]:
    trees = bench_corpus.build_shards(workdir / "corpus", sizes.shard_bytes)
    questions = bench_corpus.make_questions(trees, n=sizes.questions)
    # Before and after, in the same run: the coverage ratio off, then on.
    off = ask_all(trees, questions, workdir / "ratio-off", 0.0)
    on = ask_all(trees, questions, workdir / "ratio-on", ratio)

    corpus_tokens, sources = on["corpus_tokens"], on["sources"]
    calls, results = on["calls"], on["results"]
    api = {f: sum(c.usage.get(f, 0) for c in calls) for f in USAGE}
    model_shards = [t.name for t in trees]
    naive = sum(corpus_tokens[s] + tokens(q.text) for q in questions for s in model_shards)
    ifmem = sum(billed(c.usage) for c in calls)
    sent = sum(api[f] for f in USAGE[:3])
    routed = [len(r.get("answers", [])) for r in results]

    def routing(run: dict[str, Any], ratio: float) -> dict[str, Any]:
        return {
            "route_min_coverage_ratio": ratio,
            "model_calls": len(run["calls"]),
            "billed_input_tokens": round(sum(billed(c.usage) for c in run["calls"]), 1),
            "output_tokens": sum(c.usage.get("output_tokens", 0) for c in run["calls"]),
            "hits": hit_rates(trees, questions, run["results"]),
        }

    before, after = routing(off, 0.0), routing(on, ratio)
    return {
        "questions": len(questions),
        "shards": {t.name: {"bytes": t.bytes, "tokens": corpus_tokens[t.name]} for t in trees},
        "token_source": sorted(set(sources[s] for s in model_shards)),
        "load_s": round(on["load_s"], 2),
        "model_calls": len(calls),
        "failed_calls": on["failed_calls"] + off["failed_calls"],
        "naive_calls": len(questions) * len(model_shards),
        "answers_per_question_max": max(routed),
        "unverified_answers": sum(
            1 for r in results for a in r.get("answers", []) if not a["verified"]
        ),
        "missing": sum(len(r["missing"]) for run in (off, on) for r in run["results"]),
        "api_usage": api,
        "log_matches_api": on["recorded"] == api,
        "naive_input_tokens": naive,
        "sent_input_tokens": sent,
        "billed_input_tokens": round(ifmem, 1),
        "routing_ratio": round(sent / naive, 4),
        "ratio": round(ifmem / naive, 4),
        "target": TARGET,
        "met": ifmem / naive <= TARGET,
        "coverage_ratio": {
            "off": before,
            "on": after,
            "saved_calls": before["model_calls"] - after["model_calls"],
            "saved_billed_input_tokens": round(
                before["billed_input_tokens"] - after["billed_input_tokens"], 1
            ),
        },
    }


def show(r: dict[str, Any]) -> None:
    print(f"LLM cost: {r['questions']} questions over {len(r['shards'])} Claude shards")
    for name, s in r["shards"].items():
        print(f"  shard {name:<10} {s['bytes']:>9,} bytes  {s['tokens']:>8,} tokens")
    print(f"  corpus tokens counted by: {', '.join(map(str, r['token_source']))}")
    u = r["api_usage"]
    rows = [
        ("model calls (naive / ifmem)", f"{r['naive_calls']} / {r['model_calls']}"),
        ("cache writes / reads (tokens)",
         f"{u['cache_creation_input_tokens']:,} / {u['cache_read_input_tokens']:,}"),
        ("naive input tokens (uncached, every shard)", f"{r['naive_input_tokens']:,}"),
        ("ifmem input tokens sent (routing only)", f"{r['sent_input_tokens']:,}"),
        ("ifmem billed-equivalent input tokens", f"{r['billed_input_tokens']:,.0f}"),
        ("routing alone: sent / naive", f"{r['routing_ratio']:.1%}"),
        ("ifmem / naive (target <= 15%)", f"{r['ratio']:.1%}  {'met' if r['met'] else 'MISSED'}"),
        ("log tokens == API tokens", str(r["log_matches_api"])),
        ("unverified answers / missing shards", f"{r['unverified_answers']} / {r['missing']}"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    c = r["coverage_ratio"]
    n = c["on"]["hits"]["questions"]
    ratio = c["on"]["route_min_coverage_ratio"]
    print(f"route_min_coverage_ratio, off (0) against on ({ratio:g}), same questions:")
    print(f"  {'':<34}{'off':>12}{'on':>12}")
    counts = [
        ("model calls", "model_calls"),
        ("billed input tokens", "billed_input_tokens"),
        ("output tokens", "output_tokens"),
    ]
    for label, key in counts:
        print(f"  {label:<34}{c['off'][key]:>12,.0f}{c['on'][key]:>12,.0f}")
    hits = [
        ("  its shard's model asked", "model"),
        ("  a model answer cites it", "cited"),
        ("  the passages include it", "passages"),
    ]
    for label, key in hits:
        print(f"  {label:<34}{c['off']['hits'][key]:>12.1%}{c['on']['hits'][key]:>12.1%}")
    print(f"  (hit rates over the {n} questions taken from one file of one shard)")
    print(f"  saved: {c['saved_calls']} calls, {c['saved_billed_input_tokens']:,.0f} billed tokens")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller shards, fewer questions")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    parser.add_argument(
        "--ratio",
        type=float,
        default=DEFAULT_RATIO,
        help=f"route_min_coverage_ratio to compare with 0 (default: {DEFAULT_RATIO:g})",
    )
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = run(sizes, args.keep, args.ratio)
    else:
        with tempfile.TemporaryDirectory(prefix="ifmem-llm-bench-") as tmp:
            result = run(sizes, Path(tmp), args.ratio)
    show(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
