"""The registry of event kinds: their current version, their fields, their upcasters.

Every body carries `"v"`. Writing always uses a kind's current version;
reading upcasts older bodies step by step (`upcast_v1_v2`, …) and never
rewrites stored rows. Kinds are looked up in this explicit registry, never
imported by a name read from data.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ifmemd.errors import UnknownEventError
from ifmemd.log.logformat import canonical_json

Body = dict[str, Any]
Upcaster = Callable[[Body], Body]


@dataclass(frozen=True, slots=True)
class EventType:
    """One kind of event: its current version, required fields, and upcasters."""

    kind: str
    version: int
    required: frozenset[str]
    upcasters: Mapping[int, Upcaster] = field(default_factory=dict)  # from version n to n+1
    # Written by older versions of ifmem only: still read, never written again.
    legacy: bool = False


REGISTRY: dict[str, EventType] = {}


def register(
    kind: str, required: str = "", version: int = 1, legacy: bool = False, **upcasters: Upcaster
) -> None:
    """Add a kind; `upcasters` are named `v1`, `v2`, … (each lifts that version by one)."""
    ups = {int(name[1:]): fn for name, fn in upcasters.items()}
    missing = set(range(1, version)) - set(ups)
    if missing:
        raise ValueError(f"{kind}: no upcaster from version(s) {sorted(missing)}")
    REGISTRY[kind] = EventType(kind, version, frozenset(required.split()), ups, legacy)


def upcast_heartbeat_v1_v2(body: Body) -> Body:
    """Heartbeats v1 reported RSS in KiB (`rss_kb`); v2 reports bytes (`rss_bytes`)."""
    out = {k: v for k, v in body.items() if k != "rss_kb"}
    out["rss_bytes"] = int(body.get("rss_kb", 0)) * 1024
    out["v"] = 2
    return out


register("daemon.started", "pid version")
register("daemon.stopping", "reason")
register("checkpoint", "seq hash")
register("shard.spawned", "shard pid")
register("shard.ready", "shard files lines tokens digest load_ms")
# A model-backed shard's model came up after its `shard.ready`: the tokens it counted.
register("shard.model_ready", "shard model tokens token_source load_ms")


def upcast_answered_v1_v2(body: Body) -> Body:
    """`query.answered` v1 left each shard's result to a `shard.answered` row of its own
    (read as a result by `legacy_result`); v2 holds them in `results`."""
    return {**body, "results": [], "v": 2}


# Before every heartbeat round was one `shard.heartbeats` event, each heartbeat was a row.
register(
    "shard.heartbeat",
    "shard rss_bytes served uptime_s",
    version=2,
    legacy=True,
    v1=upcast_heartbeat_v1_v2,
)
# One heartbeat round: `beats` maps each shard heard from to its heartbeats in the
# round (each [rss_bytes, served, uptime_s]); `silent` names the running shards that
# sent none.
register("shard.heartbeats", "beats silent")
register("shard.exited", "shard code")
register("shard.restarting", "shard delay_s restarts")
register("shard.failed", "shard reason")
register("shard.warning", "shard path reason")
# One batch of file changes a shard indexed: changed [{path, digest, lines}], removed [path].
register("corpus.changed", "shard changed removed")
register("query.received", "qid question shards")
# Before `query.answered` v2 held every shard's result, each was a row of its own.
register("shard.answered", "qid shard passages", legacy=True)
# A keep-warm call that renewed a shard's prompt cache: what it cost, in tokens.
register("shard.warmed", "shard model")
# `results`: one per shard that answered, {shard, ms, passages}, each passage an
# array of the values named by the body's `passage_fields`; for a model-backed
# shard also `mode` ("model", or "fts" when routing left its model out), and for a
# model's answer `model`, `usage` (the four token counts), `answer`, `citations`,
# `unverified`, `verified`.
register("query.answered", "qid passages missing results", version=2, v1=upcast_answered_v1_v2)
register("query.failed", "qid reason")
register("query.abandoned", "qid reason")
register("memory.remembered", "memory_id text")
register("memory.forgotten", "memory_id")
register("client.denied", "uid pid reason")
register("config.loaded", "shards")
# The first row of a live file that continues a sealed segment.
register("log.sealed", "segment first_seq last_seq")
# Sealed segments holding seq 1..first_kept_seq-1 were deleted; `prev_hash` is the
# hash of the last deleted row, the anchor verification starts from.
register("log.pruned", "first_kept_seq prev_hash")


def encode(kind: str, fields: Mapping[str, Any]) -> bytes:
    """The canonical body of a new event of `kind`, at its current version."""
    etype = REGISTRY.get(kind)
    if etype is None:
        raise UnknownEventError(0, kind, "not a registered event kind")
    if etype.legacy:
        raise UnknownEventError(0, kind, "written by older versions of ifmem only; not written now")
    missing = etype.required - fields.keys()
    if missing:
        raise UnknownEventError(0, kind, f"missing field(s) {', '.join(sorted(missing))}")
    return canonical_json({**fields, "v": etype.version})


def decode(seq: int, kind: str, body: bytes) -> Body:
    """A stored body, parsed and upcast to its kind's current version."""
    etype = REGISTRY.get(kind)
    if etype is None:
        raise UnknownEventError(seq, kind, "kind unknown to this version of ifmem")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise UnknownEventError(seq, kind, f"body is not JSON: {e}") from e
    if not isinstance(data, dict):
        raise UnknownEventError(seq, kind, "body is not a JSON object")
    v = data.get("v")
    if not isinstance(v, int) or v < 1:
        raise UnknownEventError(seq, kind, f"bad version {v!r}")
    if v > etype.version:
        raise UnknownEventError(
            seq, kind, f"version {v} is newer than this ifmem knows ({etype.version}); upgrade"
        )
    while v < etype.version:
        data = etype.upcasters[v](data)
        v += 1
    return data


USAGE_FIELDS = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
)


def legacy_result(body: Mapping[str, Any]) -> Body:
    """A `shard.answered` body as the shard's entry in `query.answered` v2's `results`."""
    out = {k: v for k, v in body.items() if k not in ("qid", "v", *USAGE_FIELDS)}
    if body.get("mode") == "model":
        out["usage"] = {f: body.get(f, 0) for f in USAGE_FIELDS}
    return out
