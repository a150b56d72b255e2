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


REGISTRY: dict[str, EventType] = {}


def register(kind: str, required: str = "", version: int = 1, **upcasters: Upcaster) -> None:
    """Add a kind; `upcasters` are named `v1`, `v2`, … (each lifts that version by one)."""
    ups = {int(name[1:]): fn for name, fn in upcasters.items()}
    missing = set(range(1, version)) - set(ups)
    if missing:
        raise ValueError(f"{kind}: no upcaster from version(s) {sorted(missing)}")
    REGISTRY[kind] = EventType(kind, version, frozenset(required.split()), ups)


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
register("shard.heartbeat", "shard rss_bytes served uptime_s", version=2, v1=upcast_heartbeat_v1_v2)
register("shard.exited", "shard code")
register("shard.restarting", "shard delay_s restarts")
register("shard.failed", "shard reason")
register("shard.warning", "shard path reason")
# One batch of file changes a shard indexed: changed [{path, digest, lines}], removed [path].
register("corpus.changed", "shard changed removed")
register("query.received", "qid question shards")
# Optional fields: for a model-backed shard, `mode` ("model", or "fts" when routing left
# its model out), `model`, the four token counts, `answer`, `citations`, `unverified`,
# `verified`.
register("shard.answered", "qid shard passages")
# A keep-warm call that renewed a shard's prompt cache: what it cost, in tokens.
register("shard.warmed", "shard model")
register("query.answered", "qid passages missing")
register("query.failed", "qid reason")
register("query.abandoned", "qid reason")
register("memory.remembered", "memory_id text")
register("memory.forgotten", "memory_id")
register("client.denied", "uid pid reason")
register("config.loaded", "shards")


def encode(kind: str, fields: Mapping[str, Any]) -> bytes:
    """The canonical body of a new event of `kind`, at its current version."""
    etype = REGISTRY.get(kind)
    if etype is None:
        raise UnknownEventError(0, kind, "not a registered event kind")
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
