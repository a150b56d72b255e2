"""Sealing and pruning straight on the files, for when no daemon serves the log.

`ifmem log seal` and `ifmem log prune` go through the running daemon when
there is one (its writer is the only one that may append). Without one they
come here: the log's folder is locked exclusively (a daemon starting
meanwhile waits for it), an interrupted seal is finished first, and the work
is the same as the daemon's (`segments`).
"""

from __future__ import annotations

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


def seal_files(
    live: Path, signer: Signer, checkpoints_path: Path | None, *, compress: bool
) -> Segment:
    """Seal the live file `live` into a segment (compressed if `compress`)."""
    require_log(live)
    with segments.locked(live, exclusive=True):
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
    with segments.locked(live, exclusive=True):
        segments.recover(live, signer)
        with LogChain.open(live) as chain:
            plan = segments.plan_prune(
                chain.segments, chain.first_row_after, before_seq=before_seq, before_ns=before_ns
            )
        with EventLog.open(live, signer) as log:
            [record] = log.append_batch([("log.pruned", encode("log.pruned", plan.fields()))])
        if snapshot_path is not None:
            with LogChain.open(live) as chain:
                state = replay(chain, snapshot_path=snapshot_path).state
                snapshots.save(snapshot_path, chain.log_id, state)
        segments.delete_pruned(plan)
        return plan, record


def require_log(live: Path) -> None:
    """Refuse a log that is not there (neither its live file nor a segment): opened
    to write, it would be made, and an empty log then verifies as "ok"."""
    if not live.exists() and not segments.list_segments(live):
        raise LogMissingError(live)
