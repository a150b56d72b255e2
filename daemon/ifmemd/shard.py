"""A memory shard: one child process holding one corpus hot, answering searches.

Run by the supervisor as `python -m ifmemd.shard`. It speaks NDJSON over its
pipes and never touches the event log: the supervisor records for it.

  supervisor → shard   {"op":"init", name, kind, paths, max_file_bytes,
                        heartbeat_interval, memories:[{memory_id,text}]}
                       {"op":"search", rid, query, k}
                       {"op":"add", memory_id, text}   {"op":"remove", memory_id}
                       {"op":"reload"}  (re-read the corpus; answers with a new "ready")
  shard → supervisor   {"type":"warning", path, reason}
                       {"type":"ready", files, lines, bytes, tokens, digest, load_ms}
                       {"type":"heartbeat", rss_bytes, served, uptime_s}
                       {"type":"result", rid, passages}  {"type":"error", rid, message}

stdin closing (the supervisor is gone) ends the process.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
import time
from typing import Any, BinaryIO

from ifmemd.chunker import chunk_files, whole_chunk
from ifmemd.corpus import load_corpus
from ifmemd.index import Index

_PR_SET_PDEATHSIG = 1


class _Out:
    """Serialises writes to stdout from the main and the heartbeat thread."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, obj: dict[str, Any]) -> None:
        data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        with self._lock:
            self._stream.write(data)
            self._stream.flush()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _die_with_parent() -> None:
    # If the supervisor is SIGKILLed, its shards must not live on as orphans.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return


def _release_free_memory() -> None:
    """Return freed heap pages to the kernel (glibc's malloc_trim; a no-op elsewhere)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        return


class Shard:
    """The shard's corpus, index and counters."""

    def __init__(self, init: dict[str, Any], out: _Out) -> None:
        self.init = init
        self.name: str = init["name"]
        self.kind: str = init.get("kind", "files")
        self.out = out
        self.started = time.monotonic()
        self.served = 0
        self.index = Index()
        self.ready: dict[str, Any] = {}

    def load(self) -> None:
        """(Re)load the corpus and build its index, then announce `ready`."""
        init, out = self.init, self.out
        load_start = time.perf_counter()
        if self.kind == "memory":
            memories = init.get("memories", [])
            self.index = Index.build(
                c for m in memories for c in whole_chunk(_memory_path(m["memory_id"]), m["text"])
            )
            texts = [m["text"] for m in memories]
            ready = {
                "files": len(memories),
                "lines": sum(t.count("\n") + 1 for t in texts),
                "bytes": sum(len(t.encode()) for t in texts),
                "digest": "",
            }
        else:
            ready = self._load_files()
        # The corpus texts and chunk lists are garbage now (the index holds its
        # own copy), but glibc keeps the freed heap: without this, RSS stays at
        # the load's peak, about twice what the shard holds.
        _release_free_memory()
        ready["tokens"] = ready["bytes"] // 4
        ready["load_ms"] = round((time.perf_counter() - load_start) * 1000, 1)
        self.ready = ready
        out.send({"type": "ready", **ready})

    def _load_files(self) -> dict[str, Any]:
        init = self.init
        corpus = load_corpus(init.get("paths", []), max_bytes=init.get("max_file_bytes"))
        for skipped in corpus.skipped:
            self.out.send({"type": "warning", "path": skipped.path, "reason": skipped.reason})
        self.index = Index.build(chunk_files(corpus.files))
        totals = corpus.totals
        return {
            "files": totals.files,
            "lines": totals.lines,
            "bytes": totals.bytes,
            "digest": corpus.digest,
        }

    def handle(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "search":
            passages = self.index.search(str(msg.get("query", "")), int(msg.get("k", 10)))
            self.served += 1
            self.out.send(
                {"type": "result", "rid": msg["rid"], "passages": [p.to_json() for p in passages]}
            )
        elif op == "add":
            path = _memory_path(msg["memory_id"])
            self.index.add(path, whole_chunk(path, msg["text"]))
        elif op == "remove":
            self.index.remove(_memory_path(msg["memory_id"]))
        elif op == "reload":
            if self.kind != "memory":
                self.load()
        else:
            self.out.send({"type": "error", "rid": msg.get("rid"), "message": f"unknown op {op!r}"})

    def heartbeat(self) -> dict[str, Any]:
        return {
            "type": "heartbeat",
            "rss_bytes": _rss_bytes(),
            "served": self.served,
            "uptime_s": round(time.monotonic() - self.started, 3),
        }


def _memory_path(memory_id: str) -> str:
    return f"memory:{memory_id}"


def _beat(shard: Shard, interval: float) -> None:
    while True:
        shard.out.send(shard.heartbeat())
        time.sleep(interval)


def main() -> int:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when we stop
    out = _Out(sys.stdout.buffer)
    stdin = sys.stdin.buffer
    line = stdin.readline()
    if not line:
        return 0
    init = json.loads(line)
    shard = Shard(init, out)
    # Beat from the start: a long load is not a hang.
    threading.Thread(
        target=_beat, args=(shard, float(init.get("heartbeat_interval", 10))), daemon=True
    ).start()
    shard.load()
    for line in stdin:
        shard.handle(json.loads(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
