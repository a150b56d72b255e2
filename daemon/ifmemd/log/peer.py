"""Cross-checking remote answers against the remote's own log (`audit verify --peer`).

A remote shard's result, as this log records it, quotes the remote log's
answer: `remote: {log_id, seq, hash}` beside the passages it gave. The quote
holds when the peer log verifies (chain and signatures, `verify_log`) up to
and past that seq, its row at `seq` is a `query.answered` whose hash is the
quoted one, and that answer's passages are the ones recorded here (paths
with their `host:` prefix, same lines, same order). Each quote that does
not hold is named with the local seq that records it and why.

Where in a body the result sits (inside a `query.answered`'s `results`, or
a `shard.answered` of an older log) does not matter: every object carrying a
`remote` quote is checked. Both logs are read across their sealed segments.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ifmemd.log.chain import LogChain
from ifmemd.log.verify import Report, verify_log


@dataclass(frozen=True, slots=True)
class Quote:
    """A remote answer as the local log recorded it."""

    local_seq: int
    shard: str
    qid: Any
    log_id: str
    seq: int
    hash: str
    passages: tuple[tuple[str, int, int], ...]


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A quote the peer log does not back, and why."""

    quote: Quote
    reason: str

    def __str__(self) -> str:
        q = self.quote
        return (
            f"local seq {q.local_seq} (question {q.qid!r}, shard {q.shard!r}) "
            f"quotes remote seq {q.seq}: {self.reason}"
        )


@dataclass(frozen=True, slots=True)
class PeerReport:
    """What cross-checking one peer log found."""

    path: Path
    verified: Report
    checked: int
    mismatches: tuple[Mismatch, ...]

    @property
    def ok(self) -> bool:
        return self.verified.ok and not self.mismatches

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "db": str(self.path),
            "log_id": self.verified.log_id.hex(),
            "verify": self.verified.to_json(),
            "checked": self.checked,
            "mismatches": [
                {
                    "local_seq": m.quote.local_seq,
                    "qid": m.quote.qid,
                    "shard": m.quote.shard,
                    "remote_seq": m.quote.seq,
                    "reason": m.reason,
                }
                for m in self.mismatches
            ],
        }


def _objects(value: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object within `value`, itself included."""
    if isinstance(value, dict):
        yield value
        for v in value.values():
            yield from _objects(v)
    elif isinstance(value, list):
        for v in value:
            yield from _objects(v)


def _passages(
    result: dict[str, Any], fields: list[str] | None = None
) -> tuple[tuple[str, int, int], ...]:
    """(path, start_line, end_line) of each passage of `result`: objects, or arrays
    of the values `fields` names (a `query.answered`'s `results` and `passage_fields`)."""
    rows = [
        dict(zip(fields, p, strict=False)) if isinstance(p, list) and fields else p
        for p in result.get("passages", [])
    ]
    return tuple(
        (str(p.get("path")), p.get("start_line", 0), p.get("end_line", 0))
        for p in rows
        if isinstance(p, dict)
    )


def quotes(log: LogChain) -> Iterator[Quote]:
    """Every remote answer the log records, in seq order."""
    for record in log.records():
        if b'"remote":{' not in record.body:
            continue  # cheap: canonical JSON, so a quote always reads like this
        body = record.data()
        for obj in _objects(body):
            quote = obj.get("remote")
            if not isinstance(quote, dict) or not {"log_id", "seq", "hash"} <= quote.keys():
                continue
            yield Quote(
                record.seq,
                str(obj.get("shard", "")),
                obj.get("qid", body.get("qid")),
                str(quote["log_id"]),
                quote["seq"],
                str(quote["hash"]),
                _passages(obj, body.get("passage_fields")),
            )


def _check(peer: LogChain, quote: Quote, bad_from: int | None) -> str | None:
    """Why `quote` is not backed by the verified `peer`, or None when it is."""
    if not isinstance(quote.seq, int) or isinstance(quote.seq, bool):
        return f"seq {quote.seq!r} is not a number"
    if bad_from is not None and quote.seq >= bad_from:
        return f"the peer log does not verify from seq {bad_from} on"
    record = peer.record(quote.seq)
    if record is None:
        return "the peer log has no such row"
    if record.kind != "query.answered":
        return f"the peer's row is a {record.kind}, not a query.answered"
    if record.hash.hex() != quote.hash:
        return f"hash {quote.hash[:16]}… quoted, the peer's row has {record.hash.hex()[:16]}…"
    theirs = _passages(record.data())
    # Ours are the peer's paths with its host before a colon, the same lines, in order.
    if len(theirs) != len(quote.passages) or not all(
        path.endswith(":" + their_path) and (start, end) == (their_start, their_end)
        for (path, start, end), (their_path, their_start, their_end) in zip(
            quote.passages, theirs, strict=True
        )
    ):
        return "the passages recorded here are not the ones the peer answered"
    return None


def cross_check(local: Path, peer: Path, *, jobs: int | None = None) -> PeerReport:
    """Check every quote of `peer`'s log in the `local` log against the peer log."""
    verified = verify_log(peer, jobs=jobs)
    bad_from = verified.failure.seq if verified.failure is not None else None
    peer_id = verified.log_id.hex()
    checked = 0
    mismatches: list[Mismatch] = []
    with LogChain.open(local) as mine, LogChain.open(peer) as theirs:
        for quote in quotes(mine):
            if quote.log_id != peer_id:
                continue  # another remote's answer: another peer log vouches for it
            checked += 1
            reason = _check(theirs, quote, bad_from)
            if reason is not None:
                mismatches.append(Mismatch(quote, reason))
    return PeerReport(peer, verified, checked, tuple(mismatches))
