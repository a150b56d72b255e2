"""What the model-backed shards cost: tokens and dollars, folded from the event log.

Every model call is recorded with the tokens the API billed: a shard's entry in
the `results` of `query.answered` (mode "model", its `usage`), `shard.warmed`
(keep-warm) and the `synthesis` of `query.answered`. Old logs kept each shard's
result in a `shard.answered` row of its own, read as such a result
(`events.legacy_result`). `tally` sums them per shard and model; `report` prices them
with the config's `[prices]` and sets them against what the same calls would
have cost with no prompt cache (every input token at the full input price),
which is what caching saved. Answers that routing left to a shard's index
(mode "fts") cost nothing and are counted as model calls avoided.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ifmemd.config import ModelPrice
from ifmemd.log.events import USAGE_FIELDS as TOKEN_FIELDS
from ifmemd.log.events import legacy_result


@dataclass(slots=True)
class Tally:
    """Sums for one (shard, model)."""

    calls: int = 0
    warm_calls: int = 0
    routed_out: int = 0
    input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    output_tokens: int = 0

    def add(self, body: Mapping[str, Any]) -> None:
        self.calls += 1
        for f in TOKEN_FIELDS:
            setattr(self, f, getattr(self, f) + int(body.get(f, 0) or 0))

    def tokens(self) -> dict[str, int]:
        return {f: getattr(self, f) for f in TOKEN_FIELDS}

    def cost(self, price: ModelPrice) -> float:
        """US dollars, as billed."""
        return (
            self.input_tokens * price.input
            + self.cache_creation_input_tokens * price.cache_write
            + self.cache_read_input_tokens * price.cache_read
            + self.output_tokens * price.output
        ) / 1e6

    def uncached_cost(self, price: ModelPrice) -> float:
        """US dollars had every input token been sent uncached, at the input price."""
        sent = self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens
        return (sent * price.input + self.output_tokens * price.output) / 1e6


def tally(
    events: Iterable[tuple[str, int, Mapping[str, Any]]], since_ns: int = 0
) -> dict[tuple[str, str], Tally]:
    """Sum every model call in `events` (kind, ts_ns, decoded body) at or after `since_ns`."""
    sums: dict[tuple[str, str], Tally] = {}

    def at(shard: str, model: str) -> Tally:
        return sums.setdefault((shard, model), Tally())

    def result(r: Mapping[str, Any]) -> None:
        mode = r.get("mode")
        if mode == "model":
            at(r["shard"], str(r.get("model", ""))).add(r.get("usage", {}))
        elif mode == "fts":
            at(r["shard"], "").routed_out += 1

    for kind, ts_ns, body in events:
        if ts_ns < since_ns:
            continue
        if kind == "shard.answered":
            result(legacy_result(body))
        elif kind == "shard.warmed":
            t = at(body["shard"], str(body.get("model", "")))
            t.add(body)
            t.warm_calls += 1
        elif kind == "query.answered":
            for r in body.get("results", []):
                result(r)
            synthesis = body.get("synthesis")
            if isinstance(synthesis, dict) and synthesis.get("model"):
                at(str(synthesis.get("shard", "")), str(synthesis["model"])).add(synthesis)
    return sums


def report(sums: Mapping[tuple[str, str], Tally], prices: Mapping[str, ModelPrice]) -> dict:
    """Per shard (and model) and in total: calls, tokens, cost, uncached cost, savings.

    Costs are None for a model with no `[prices]` entry; such models are listed
    in `unpriced` and left out of the dollar totals.
    """
    # Routed-out counts were kept under model "": fold them into the shard's model rows.
    routed: dict[str, int] = {}
    rows_in: dict[tuple[str, str], Tally] = {}
    for (shard, model), t in sums.items():
        if model == "":
            routed[shard] = routed.get(shard, 0) + t.routed_out
        else:
            rows_in[(shard, model)] = t
    rows = []
    total = Tally()
    total_cost = total_uncached = 0.0
    unpriced: set[str] = set()
    for (shard, model), t in sorted(rows_in.items()):
        price = prices.get(model)
        cost = t.cost(price) if price else None
        uncached = t.uncached_cost(price) if price else None
        if price is None:
            unpriced.add(model)
        else:
            total_cost += cost or 0.0
            total_uncached += uncached or 0.0
        total.calls += t.calls
        total.warm_calls += t.warm_calls
        for f in TOKEN_FIELDS:
            setattr(total, f, getattr(total, f) + getattr(t, f))
        rows.append(
            {
                "shard": shard,
                "model": model,
                "calls": t.calls,
                "warm_calls": t.warm_calls,
                "routed_out": routed.pop(shard, 0),
                **t.tokens(),
                "cost_usd": _round(cost),
                "uncached_usd": _round(uncached),
                "saved_usd": _round(None if cost is None else (uncached or 0.0) - cost),
            }
        )
    for shard, n in sorted(routed.items()):  # shards whose model was never called
        rows.append(
            {
                "shard": shard,
                "model": "",
                "calls": 0,
                "warm_calls": 0,
                "routed_out": n,
                **Tally().tokens(),
                "cost_usd": 0.0,
                "uncached_usd": 0.0,
                "saved_usd": 0.0,
            }
        )
    total.routed_out = sum(r["routed_out"] for r in rows)
    return {
        "shards": rows,
        "total": {
            "calls": total.calls,
            "warm_calls": total.warm_calls,
            "routed_out": total.routed_out,
            **total.tokens(),
            "cost_usd": _round(total_cost),
            "uncached_usd": _round(total_uncached),
            "saved_usd": _round(total_uncached - total_cost),
        },
        "unpriced": sorted(unpriced),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
