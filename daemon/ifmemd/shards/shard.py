"""A memory shard: one child process holding one corpus hot, answering searches.

Run by the supervisor as `python -m ifmemd.shards.shard`. It speaks NDJSON over its
pipes and never touches the event log: the supervisor records for it.

  supervisor → shard   {"op":"init", name, kind, paths, max_file_bytes,
                        heartbeat_interval, memories:[{memory_id,text}]}
                       {"op":"search", rid, query, k}
                       {"op":"add", memory_id, text}   {"op":"remove", memory_id}
                       {"op":"reload"}  (re-read the corpus; answers with a new "ready")
  shard → supervisor   {"type":"warning", path, reason}
                       {"type":"ready", files, lines, bytes, tokens, digest, load_ms}
                       {"type":"heartbeat", rss_bytes, served, uptime_s}
                       {"type":"result", rid, passages:[[path, start_line, end_line,
                                                        score, coverage, snippet], …]}
                       {"type":"error", rid, message}

A shard whose backend is not `local` also gets `model` (its settings, never
its key) in `init`, and answers `ask` and `synthesize` with its model: see
`ifmemd.shards.modelshard`. It is `ready` (with `model_status: "loading"`) as
soon as its index is built, like a local shard; its model comes up after, in
a background thread (importing the SDK takes seconds, counting the corpus is
an API call), and it then sends `model_ready`. Until then its index answers.
When it cannot serve at all (no usable key, a corpus over its token budget, a
backend package not installed) it sends `{"type":"fatal", reason}` and exits
with status 2; restarting would not help, so the supervisor marks it failed.

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

from ifmemd.errors import IfmemError
from ifmemd.shards.chunker import Chunk, chunk_files, whole_chunk
from ifmemd.shards.corpus import load_corpus
from ifmemd.shards.index import Index
from ifmemd.shards.llm import ApiKeyError, BackendMissingError, CorpusOverBudgetError

_PR_SET_PDEATHSIG = 1
FATAL_EXIT = 2
# How many passages an `openai` shard's search offers its model (the budget may take fewer).
MODEL_CANDIDATES = 20

# One encoder, reused (json.dumps with options builds a new one every call).
_PIPE_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


class _Out:
    """Serialises writes to stdout from the main and the heartbeat thread."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, obj: dict[str, Any]) -> None:
        data = _PIPE_JSON.encode(obj).encode() + b"\n"
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
        # Model-backed shards keep their chunks: the model is sent their text.
        self.model: Any = None
        self.chunks: dict[tuple[str, int, int], Chunk] = {}
        # Guards `chunks` between the main thread and the model's loading thread;
        # the version tells that thread the chunks changed while it counted them.
        self._chunks_lock = threading.Lock()
        self._chunks_version = 0

    def _start_model(self) -> None:
        settings = self.init.get("model")
        if settings and self.model is None:
            from ifmemd.shards.modelshard import ModelRunner

            self.model = ModelRunner(
                self.name, self.init.get("description", ""), settings, self.out
            )

    def _keep_chunks(self, chunks: list[Chunk]) -> None:
        if self.model is not None:
            with self._chunks_lock:
                self.chunks = {(c.path, c.start_line, c.end_line): c for c in chunks}
                self._chunks_version += 1

    def load(self) -> None:
        """(Re)load the corpus and build its index, then announce `ready`."""
        init, out = self.init, self.out
        load_start = time.perf_counter()
        self._start_model()
        if self.kind == "memory":
            memories = init.get("memories", [])
            chunks = [
                c for m in memories for c in whole_chunk(_memory_path(m["memory_id"]), m["text"])
            ]
            self.index = Index.build(chunks)
            self._keep_chunks(chunks)
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
        if self.model is not None:
            # Its index answers from now on; the model's own count comes with `model_ready`.
            ready |= {"model": self.model.model, "token_source": "estimate"}
            ready["model_status"] = "loading"
        ready["load_ms"] = round((time.perf_counter() - load_start) * 1000, 1)
        self.ready = ready
        out.send({"type": "ready", **ready})
        if self.model is not None:
            threading.Thread(target=self._load_model, name="model-load", daemon=True).start()

    def _load_model(self) -> None:
        """Bring the model up after `ready` (SDK import, token count), then send `model_ready`.

        Runs in its own thread while the main one serves searches. A fatal
        error (SDK missing, corpus over budget) ends the process from here, as
        it would have at load: the main thread is blocked reading stdin.
        """
        assert self.model is not None
        model, start = self.model, time.perf_counter()
        with self._chunks_lock:
            version, chunks = self._chunks_version, list(self.chunks.values())
        try:
            extra = model.load(chunks)  # counted by the API; over the budget raises
            with self._chunks_lock:
                if self._chunks_version != version:  # working memory changed meanwhile
                    model.load(list(self.chunks.values()), count=False)
        except (BackendMissingError, CorpusOverBudgetError) as e:
            self.out.send({"type": "fatal", "reason": str(e)})
            os._exit(FATAL_EXIT)
        except Exception as e:  # a bug or an SDK surprise: exit so the supervisor restarts us
            reason = model.redact(f"model load failed: {type(e).__name__}: {e}")
            print(f"ifmemd shard {self.name!r}: {reason}", file=sys.stderr, flush=True)
            os._exit(1)
        warning = extra.pop("warning", None)
        if warning:
            self.out.send({"type": "warning", "path": f"model:{model.model}", "reason": warning})
        load_ms = round((time.perf_counter() - start) * 1000, 1)
        # A backend that counts nothing (openai: passages go with each question) keeps
        # the index's estimate.
        counted = {"tokens": self.ready["tokens"], "token_source": "estimate"} | extra
        self.out.send({"type": "model_ready", **counted, "load_ms": load_ms})

    def _load_files(self) -> dict[str, Any]:
        init = self.init
        corpus = load_corpus(init.get("paths", []), max_bytes=init.get("max_file_bytes"))
        for skipped in corpus.skipped:
            self.out.send({"type": "warning", "path": skipped.path, "reason": skipped.reason})
        chunks = chunk_files(corpus.files)
        self.index = Index.build(chunks)
        self._keep_chunks(chunks)
        del chunks
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
                {"type": "result", "rid": msg["rid"], "passages": [p.to_row() for p in passages]}
            )
        elif op == "ask":
            self._ask(msg)
        elif op == "synthesize":
            if self.model is None or not self.model.usable.is_set():
                self._not_a_model_shard(msg)
            else:
                self.model.synthesize(msg["rid"], str(msg.get("question", "")), msg["answers"])
        elif op == "add":
            path = _memory_path(msg["memory_id"])
            chunks = whole_chunk(path, msg["text"])
            self.index.add(path, chunks)
            self._memory_changed(path, chunks)
        elif op == "remove":
            path = _memory_path(msg["memory_id"])
            self.index.remove(path)
            self._memory_changed(path, [])
        elif op == "reload":
            if self.kind != "memory":
                self.load()
        else:
            self.out.send({"type": "error", "rid": msg.get("rid"), "message": f"unknown op {op!r}"})

    def _ask(self, msg: dict[str, Any]) -> None:
        """A question for the model; the answer comes later, from a worker thread."""
        if self.model is None or not self.model.usable.is_set():
            self._not_a_model_shard(msg)
            return
        question = str(msg.get("question", ""))
        candidates: list[Chunk] = []
        if self.model.needs_passages:
            # The index is searched here, on the main thread: it is not thread-safe.
            hits = self.index.search(question, max(int(msg.get("k", 10)), MODEL_CANDIDATES))
            candidates = [
                c for p in hits if (c := self.chunks.get((p.path, p.start_line, p.end_line)))
            ]
        self.served += 1
        self.model.ask(msg["rid"], question, candidates)

    def _not_a_model_shard(self, msg: dict[str, Any]) -> None:
        why = "this shard has no model backend" if self.model is None else "its model is loading"
        self.out.send({"type": "error", "rid": msg.get("rid"), "message": why})

    def _memory_changed(self, path: str, chunks: list[Chunk]) -> None:
        if self.model is None:
            return
        with self._chunks_lock:
            for key in [k for k in self.chunks if k[0] == path]:
                del self.chunks[key]
            self.chunks.update({(c.path, c.start_line, c.end_line): c for c in chunks})
            self._chunks_version += 1
            if not self.model.usable.is_set():
                return  # the loading thread takes the new chunks when it is done
            try:
                self.model.load(list(self.chunks.values()), count=False)
            except IfmemError as e:
                self.out.send({"type": "warning", "path": path, "reason": str(e)})

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
    try:
        shard.load()
        for line in stdin:
            shard.handle(json.loads(line))
    except (ApiKeyError, BackendMissingError, CorpusOverBudgetError) as e:
        # No key, a key file others can read, a corpus over its budget: a restart
        # would fail the same way. Say why, and let the supervisor mark us failed.
        out.send({"type": "fatal", "reason": str(e)})
        return FATAL_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
