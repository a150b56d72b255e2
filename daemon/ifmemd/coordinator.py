"""The coordinator: fan a question out to shards, fuse their rankings, cite every passage.

Each shard searches its own corpus; rankings are merged by reciprocal rank
fusion (RRF, k=60), which needs no comparable scores across shards. A shard
that fails or does not answer in time is named in the answer as missing; the
answer is still given.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import anyio

from ifmemd.index import Passage
from ifmemd.supervisor import ShardHandle, ShardUnavailableError

RRF_K = 60


@dataclass(frozen=True, slots=True)
class ShardAnswer:
    """One shard's ranked passages, or why it gave none."""

    shard: str
    passages: tuple[Passage, ...] = ()
    missing: str = ""
    ms: float = 0.0


def fuse(answers: list[ShardAnswer], k: int) -> list[dict[str, Any]]:
    """Merge ranked lists by reciprocal rank fusion; the top `k`, best first."""
    fused: dict[tuple[str, int, int], dict[str, Any]] = {}
    for answer in answers:
        for rank, p in enumerate(answer.passages, 1):
            key = (p.path, p.start_line, p.end_line)
            entry = fused.get(key)
            if entry is None:
                entry = fused[key] = {
                    "citation": f"{p.path}:{p.start_line}-{p.end_line}",
                    "path": p.path,
                    "start_line": p.start_line,
                    "end_line": p.end_line,
                    "shard": answer.shard,
                    "score": 0.0,
                    "snippet": p.snippet,
                }
            entry["score"] += 1.0 / (RRF_K + rank)
    ranked = sorted(fused.values(), key=lambda e: (-e["score"], e["path"], e["start_line"]))
    for entry in ranked:
        entry["score"] = round(entry["score"], 6)
    return ranked[:k]


async def _ask_one(handle: ShardHandle, question: str, k: int, timeout: float) -> ShardAnswer:
    start = time.perf_counter()
    with anyio.move_on_after(timeout):
        # A shard still loading its corpus for the first time is worth waiting for.
        if handle.status == "starting":
            await handle.ready_event.wait()
        try:
            passages = await handle.search(question, k)
        except ShardUnavailableError as e:
            return ShardAnswer(handle.name, missing=e.reason)
        ms = round((time.perf_counter() - start) * 1000, 2)
        return ShardAnswer(handle.name, tuple(passages), ms=ms)
    return ShardAnswer(handle.name, missing=f"no answer within {timeout:g} s")


async def fan_out(
    handles: list[ShardHandle], question: str, k: int, timeout: float
) -> list[ShardAnswer]:
    """Ask every shard in parallel, each bounded by `timeout`."""
    answers: list[ShardAnswer | None] = [None] * len(handles)

    async def one(i: int, handle: ShardHandle) -> None:
        answers[i] = await _ask_one(handle, question, k, timeout)

    async with anyio.create_task_group() as tg:
        for i, handle in enumerate(handles):
            if handle.status in ("failed", "stopped"):
                answers[i] = ShardAnswer(handle.name, missing=handle.failure or handle.status)
            else:
                tg.start_soon(one, i, handle)
    return [a for a in answers if a is not None]
