"""`ifmem stats` arithmetic: tokens summed from events, priced, set against no caching.

Model calls are read from `query.answered`'s `results` and, in logs written
before those held them, from `shard.answered` rows: EVENTS mixes both.
"""

from __future__ import annotations

import pytest
from ifmemd.config import ModelPrice
from ifmemd.usage import report, tally

PRICE = ModelPrice(input=3.0, output=15.0, cache_write=3.75, cache_read=0.3)


def answered(shard: str, model: str, i: int, w: int, r: int, o: int, ts: int = 10) -> tuple:
    body = {
        "shard": shard,
        "mode": "model",
        "model": model,
        "input_tokens": i,
        "cache_creation_input_tokens": w,
        "cache_read_input_tokens": r,
        "output_tokens": o,
    }
    return ("shard.answered", ts, body)


def result(shard: str, model: str, i: int, w: int, r: int, o: int) -> dict:
    """A shard's entry in `query.answered` v2's `results`."""
    usage = {
        "input_tokens": i,
        "cache_creation_input_tokens": w,
        "cache_read_input_tokens": r,
        "output_tokens": o,
    }
    return {"shard": shard, "mode": "model", "model": model, "usage": usage, "passages": []}


EVENTS = [
    answered("docs", "claude-a", 100, 100_000, 0, 500),
    (
        "query.answered",
        10,
        {
            "results": [
                result("docs", "claude-a", 100, 0, 100_000, 500),
                {"shard": "ops", "mode": "fts", "passages": []},
                {"shard": "code", "passages": []},  # local: not a model call
            ]
        },
    ),
    ("shard.answered", 10, {"shard": "docs", "mode": "fts", "passages": []}),
    ("shard.answered", 10, {"shard": "code", "passages": []}),  # local: not a model call
    (
        "shard.warmed",
        10,
        {
            "shard": "docs",
            "model": "claude-a",
            "input_tokens": 10,
            "cache_read_input_tokens": 100_000,
            "output_tokens": 1,
        },
    ),
    (
        "query.answered",
        10,
        {
            "synthesis": {
                "shard": "docs",
                "model": "claude-a",
                "input_tokens": 1000,
                "output_tokens": 200,
            }
        },
    ),
    answered("notes", "mystery", 50, 0, 0, 5),
    answered("docs", "claude-a", 999, 0, 0, 999, ts=1),  # before --since
]


def test_tally_and_price() -> None:
    result = report(tally(EVENTS, since_ns=5), {"claude-a": PRICE})
    docs = next(r for r in result["shards"] if r["shard"] == "docs")
    assert (docs["calls"], docs["warm_calls"], docs["routed_out"]) == (4, 1, 1)
    assert docs["input_tokens"] == 100 + 100 + 10 + 1000
    assert docs["cache_creation_input_tokens"] == 100_000
    assert docs["cache_read_input_tokens"] == 200_000
    assert docs["output_tokens"] == 500 + 500 + 1 + 200
    cost = (1210 * 3.0 + 100_000 * 3.75 + 200_000 * 0.3 + 1201 * 15.0) / 1e6
    uncached = ((1210 + 300_000) * 3.0 + 1201 * 15.0) / 1e6
    assert docs["cost_usd"] == pytest.approx(cost)
    assert docs["uncached_usd"] == pytest.approx(uncached)
    assert docs["saved_usd"] == pytest.approx(uncached - cost)
    notes = next(r for r in result["shards"] if r["shard"] == "notes")
    assert notes["cost_usd"] is None and result["unpriced"] == ["mystery"]
    ops = next(r for r in result["shards"] if r["shard"] == "ops")
    assert (ops["calls"], ops["routed_out"]) == (0, 1)
    total = result["total"]
    assert total["calls"] == 5 and total["routed_out"] == 2
    assert total["input_tokens"] == 1210 + 50
    assert total["cost_usd"] == pytest.approx(cost)  # the unpriced model is left out


def test_nothing_recorded() -> None:
    result = report(tally([]), {})
    assert result["shards"] == [] and result["total"]["calls"] == 0
    assert result["total"]["cost_usd"] == 0.0
