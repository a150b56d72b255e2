"""Sealing and pruning straight on the files, for when no daemon serves the log.

`ifmem log seal` and `ifmem log prune` go through the running daemon when
there is one (its writer is the only one that may append). Without one they
come here: the log's folder is locked exclusively (a daemon starting
meanwhile waits for it), an interrupted seal is finished first, and the work
is the same as the daemon's (`segments`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ifmemd.errors import LogMissingError
from ifmemd.log import segments
from ifmemd.log import snapshot as snapshots
from ifmemd.log.chain import LogChain
from ifmemd.log.eventlog import EventLog, Record
from ifmemd.log.events import encode
from ifmemd.log.keys import Signer
from ifmemd.log.replay import replay
from ifmemd.log.segments import PrunePlan, Segment
from ifmemd.log.state import Memory


def seal_files(
    live: Path, signer: Signer, checkpoints_path: Path | None, *, compress: bool
) -> Segment:
    """Seal the live file `live` into a segment (compressed if `compress`)."""
    require_log(live)
    with segments.locked(live):
        segments.recover(live, signer)
        new, segment, _first = segments.seal(EventLog.open(live, signer), checkpoints_path)
        new.close()
        return segments.compress(segment) if compress else segment


def prune_files(
    live: Path,
    signer: Signer,
    snapshot_path: Path | None,
    *,
    before_seq: int | None = None,
    before_ns: int | None = None,
) -> tuple[PrunePlan, Record]:
    """Record `log.pruned`, save a snapshot standing on it (what the deleted events
    built, working memory first, lives on there), then delete the sealed segments
    wholly before the bound."""
    require_log(live)
    with segments.locked(live):
        segments.recover(live, signer)
        with LogChain.open(live) as chain:
            plan = segments.plan_prune(
                chain.segments, chain.first_row_after, before_seq=before_seq, before_ns=before_ns
            )
            memories = replay(chain, snapshot_path=snapshot_path).state.memories.values()
            events = [*carried_memories(memories, plan.first_kept_seq, chain)]
        events.append(("log.pruned", plan.fields()))
        with EventLog.open(live, signer) as log:
            *_, record = log.append_batch([(kind, encode(kind, body)) for kind, body in events])
        if snapshot_path is not None:
            with LogChain.open(live) as chain:
                state = replay(chain, snapshot_path=snapshot_path).state
                snapshots.save(snapshot_path, chain.log_id, state)
        segments.delete_pruned(plan)
        return plan, record


def carried_memories(
    memories: Iterable[Memory], first_kept_seq: int, chain: LogChain
) -> list[tuple[str, dict[str, object]]]:
    """A `memory.remembered` again for each note of working memory remembered
    before `first_kept_seq`: appended before `log.pruned`, they keep working
    memory the fold of the log that is kept (not of a snapshot, which may be
    deleted). Each repeats its note's fields (its request id too, so that a
    retry still finds its answer) and says which seq it carries (`carried_from`).
    """
    events: list[tuple[str, dict[str, object]]] = []
    for memory in sorted(memories, key=lambda m: m.seq):
        if memory.seq >= first_kept_seq:
            continue
        record = chain.record(memory.seq)  # gone if an earlier prune took it
        body = dict(record.data()) if record is not None else {}
        kept = {k: body[k] for k in ("rid", "source") if k in body}
        fields = {"memory_id": memory.memory_id, "text": memory.text, **kept}
        events.append(("memory.remembered", {**fields, "carried_from": memory.seq}))
    return events


def require_log(live: Path) -> None:
    """Refuse a log that is not there (neither its live file nor a segment): opened
    to write, it would be made, and an empty log then verifies as "ok"."""
    if not live.exists() and not segments.list_segments(live):
        raise LogMissingError(live)
