"""A memory shard: one child process holding one corpus hot, answering searches.

Run by the supervisor as `python -m ifmemd.shards.shard`. It speaks NDJSON over its
pipes and never touches the event log: the supervisor records for it.

  supervisor → shard   {"op":"init", name, kind, paths, exclude, respect_gitignore,
                        max_file_bytes, watch,
                        heartbeat_interval, memories:[{memory_id,text}]}
                       {"op":"search", rid, query, k[, vector]}
                       {"op":"embed", rid, text}  (a shard with semantic = true)
                       {"op":"add", memory_id, text}   {"op":"remove", memory_id}
                       {"op":"reload"}  (re-check the corpus; answers with a new "ready")
  shard → supervisor   {"type":"warning", path, reason}
                       {"type":"ready", files, lines, bytes, tokens, digest, load_ms
                        [, vectors]}
                       {"type":"watching", mode}   ("inotify" or "polling")
                       {"type":"vectors", queued}  (semantic: passages without
                                                    their vector yet)
                       {"type":"changed", changed:[{path, digest, lines}], removed:[path]}
                       {"type":"heartbeat", rss_bytes, served, uptime_s[, encoded]}
                       {"type":"result", rid, passages:[[path, start_line, end_line,
                                                        score, coverage, snippet, digest], …]}
                       {"type":"result", rid, vector, model}  (to an embed)
                       {"type":"error", rid, message}

A file shard keeps its index on disk (`ifmemd.shards.store`, under
`index_dir` if `init` gives one, else the user cache directory): a start
re-reads only the files that changed since it was written. Unless `watch`
is false, it then watches its paths (`ifmemd.shards.watcher`) and its writer
thread (`ifmemd.shards.writer`) applies each change while this thread goes on
answering: a search sees the last committed batch.

A shard with `semantic = true` names the model of its vectors in `ready`
(`vectors`: `semantic.MODEL`) and answers `embed` with the question's vector
(`semantic.to_wire`: base64 of float32). A `search` may carry that vector: the
coordinator has one shard encode a question and gives the vector to every
shard of the same model, which then need not encode it again (~9 ms of CPU
each). A vector that is not one the model could make is refused (an error
reply); a search without one encodes its question itself. Its heartbeats count
the questions it `encoded`.

A shard whose backend is not `local` also gets `model` (its settings, never
its key) in `init`, and answers `ask` and `synthesize` with its model: see
`ifmemd.shards.modelshard`. It is `ready` (with `model_status: "loading"`) as
soon as its index is built, like a local shard; its model comes up after, in
a background thread (importing the SDK takes seconds, counting the corpus is
an API call), and it then sends `model_ready`. Until then its index answers.
When it cannot serve at all (no usable key, a corpus over its token budget, a
backend package not installed) it sends `{"type":"fatal", reason}` and exits
with status 2; restarting would not help, so the supervisor marks it failed.

stdin closing (the supervisor is gone) ends the process. The main thread reads
stdin itself and answers each search as soon as it has read it; the writer
and the watcher post their ops to it through `Inbox`, which wakes it through a
pipe. (A reader thread handing each line over cost every search two thread
wake-ups, and under load a reader wanting the GIL in the middle of a search.)
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import os
import queue
import select
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import apsw

from ifmemd.errors import IfmemError
from ifmemd.shards import pipejson, semantic, store
from ifmemd.shards.chunker import Chunk, whole_chunk
from ifmemd.shards.corpus import Selection
from ifmemd.shards.ignore import IgnoreRules
from ifmemd.shards.index import Index, SearchIndexError
from ifmemd.shards.llm import ApiKeyError, BackendMissingError, CorpusOverBudgetError
from ifmemd.shards.sync import Batch, IndexUpdateError, Updater
from ifmemd.shards.watcher import Watcher
from ifmemd.shards.writer import IndexWriter
from ifmemd.system.paths import shard_index_dir

_PR_SET_PDEATHSIG = 1
FATAL_EXIT = 2
GIL_SWITCH_S = 0.001
PIPE_READ = 1 << 16
# How many passages an `openai` shard's search offers its model (the budget may take fewer).
MODEL_CANDIDATES = 20
# Passages a step of the writer's vector making encodes (`store.fill_vectors`):
# ~0.4 s of a core for MiniLM, the longest a watched change waits behind it.
FILL_STEP = 8
NOT_BY_MEANING = "this shard does not rank by meaning (semantic = false)"


class Inbox:
    """Ops for the main thread from the others (the writer's, a watcher's failure).

    `put` queues an op and writes a byte to a pipe whose read end (`fd`) the
    main thread polls beside stdin; `take` returns what was queued.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.fd, self._wake = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._wake, False)

    def put(self, msg: dict[str, Any]) -> None:
        self._queue.put(msg)
        # A full pipe already holds a wake-up the main thread has not read.
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake, b"!")

    def take(self) -> list[dict[str, Any]]:
        """The ops queued so far, oldest first."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 4096):
                pass
        out = []
        while not self._queue.empty():
            out.append(self._queue.get_nowait())
        return out


class _Lines:
    """The lines of a pipe read with os.read: what a buffered reader would do,
    without hiding bytes it read ahead from `poll`."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._rest = b""

    def read(self) -> list[bytes] | None:
        """The whole lines one read brought (maybe none); None at end of file."""
        data = os.read(self.fd, PIPE_READ)
        if not data:
            return None
        *lines, self._rest = (self._rest + data).split(b"\n")
        return lines


class _Out:
    """Serialises writes to stdout from the main and the heartbeat thread."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, obj: dict[str, Any]) -> None:
        data = pipejson.dumps(obj)
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


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Pause the cycle collector: a first build makes millions of short-lived tuples
    (freed by reference counting) that it would only walk again and again."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


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
        self.embedder: semantic.Embedder | None = None  # with semantic = true, once loaded
        self.ready: dict[str, Any] = {}
        # A file shard's on-disk index, its writer thread and its watcher.
        self.store: store.Store | None = None
        self.writer: IndexWriter | None = None
        self.watcher: Watcher | None = None
        self.watch_mode = ""
        self._scratch = ""  # a temporary index directory, when the cache cannot be used
        # Ops for this thread from the others: the writer's and the watcher's.
        self.inbox = Inbox()
        # Model-backed shards keep their chunks: the model is sent their text.
        self.model: Any = None
        self.chunks: dict[tuple[str, int, int], Chunk] = {}
        # path → digest of the file version `chunks` were cut from (for the model's citations).
        self.digests: dict[str, str] = {}
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

    def _keep_chunks(self, chunks: list[Chunk], digests: dict[str, str]) -> None:
        if self.model is not None:
            with self._chunks_lock:
                self.chunks = {(c.path, c.start_line, c.end_line): c for c in chunks}
                self.digests = dict(digests)
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
            digests = {_memory_path(m["memory_id"]): _text_digest(m["text"]) for m in memories}
            self.index = Index.build(chunks, digests, self._embedder())
            self._keep_chunks(chunks, digests)
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
        if self.index.by_meaning:
            ready["vectors"] = semantic.MODEL  # shards of one model can share a question's vector
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
        if self.store is None:
            self._open_index()
        assert self.store is not None
        if self.model is not None:
            self._keep_chunks(self._stored_chunks(), self._stored_digests())
        db = self.index.connection
        totals = store.totals(db)
        return {
            "files": totals.files,
            "lines": totals.lines,
            "bytes": totals.bytes,
            "digest": store.corpus_digest(db),
        }

    def _embedder(self) -> semantic.Embedder | None:
        """The embedder of a shard that ranks by meaning too (`semantic = true`), else None."""
        if self.init.get("semantic"):
            self.embedder = semantic.embedder()
        return self.embedder

    def _open_index(self) -> None:
        """Open the on-disk index, bring it up to date, and start following the files."""
        init = self.init
        embedder = self._embedder()
        vectors = semantic.MODEL if embedder is not None else ""
        try:
            opened = store.open_store(_index_dir(init), vectors)
        except store.IndexStoreError as e:
            # No usable cache directory (read-only, full): an index of this run only.
            self._scratch = tempfile.mkdtemp(prefix="ifmem-index-")
            self._warn(str(e.path), f"{e}; using {self._scratch}")
            opened = store.open_store(Path(self._scratch), vectors)
        if opened.rebuilt:
            self._warn(str(opened.path), f"index rebuilt: {opened.rebuilt}")
        rules = IgnoreRules(
            init.get("exclude", []), respect_ignore_files=init.get("respect_gitignore", True)
        )
        selection = Selection(init.get("paths", []), rules=rules)
        updater = Updater(
            opened.db,
            selection,
            max_bytes=init.get("max_file_bytes"),
            queue_vectors=embedder is not None,
        )
        if opened.fresh:
            with store.bulk(opened.db), _no_cycle_collection():
                self._report(updater.scan(build=True, readahead=True))
                store.merge(opened.db)
        else:
            self._report(updater.catch_up())
        self.store = opened
        self.index = Index(opened.connect(), embedder)
        if opened.fresh:
            self.index.prewarm()
        fill = None
        if embedder is not None:
            fill = (
                functools.partial(updater.fill_vectors, embedder.blobs, FILL_STEP),
                updater.queued_vectors,
            )
        self.writer = IndexWriter(updater, self.out.send, self.inbox.put, fill)
        self.writer.start()
        roots = selection.roots()
        if init.get("watch", True) and roots:
            self.watcher = Watcher(
                roots,
                self.writer.changed,
                self._watching,
                self._warn,
                lambda e: self.inbox.put({"op": "_failed", "error": e}),
            )
            self.watcher.start()

    def _report(self, batches: Iterator[Batch]) -> None:
        for batch in batches:
            for skipped in batch.skipped:
                self._warn(skipped.path, skipped.reason)

    def _watching(self, mode: str) -> None:
        """A watch is in place: look again for changes made while it was not."""
        assert self.writer is not None
        self.writer.rescan(full=False)
        if mode != self.watch_mode:
            self.watch_mode = mode
            self.out.send({"type": "watching", "mode": mode})

    def _warn(self, path: str, reason: str) -> None:
        self.out.send({"type": "warning", "path": path, "reason": reason})

    def _stored_chunks(self, paths: list[str] | None = None) -> list[Chunk]:
        """The passages the index holds (of `paths` only, if given), for a model's copy."""
        return [
            Chunk(*row)
            for row in self.index.connection.execute(
                "SELECT f.path, c.start_line, c.end_line, c.body FROM chunk c "
                "JOIN file f ON f.id = c.file ORDER BY f.path, c.start_line"
            )
            if paths is None or row[0] in paths
        ]

    def _stored_digests(self, paths: list[str] | None = None) -> dict[str, str]:
        """path → digest of the file version the index holds (of `paths` only, if given)."""
        return {
            path: digest
            for path, digest in self.index.connection.execute("SELECT path, digest FROM file")
            if paths is None or path in paths
        }

    def handle(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "search":
            vector = None
            if msg.get("vector") is not None:
                try:
                    vector = self._given_vector(msg["vector"])
                except semantic.VectorFormatError as e:
                    self._refuse(msg, str(e))
                    return
            passages = self.index.search(str(msg.get("query", "")), int(msg.get("k", 10)), vector)
            self.served += 1
            self.out.send(
                {"type": "result", "rid": msg["rid"], "passages": [p.to_row() for p in passages]}
            )
        elif op == "embed":
            self._embed(msg)
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
            digest = _text_digest(msg["text"])
            self.index.add(path, chunks, digest)
            self._memory_changed(path, chunks, digest)
        elif op == "remove":
            path = _memory_path(msg["memory_id"])
            self.index.remove(path)
            self._memory_changed(path, [], "")
        elif op == "reload":
            if self.writer is not None:
                # Every file again; the writer posts `_synced`, then `ready` goes.
                self.writer.rescan(full=True, reply=True)
            elif self.kind != "memory":
                self.load()
        elif op == "_synced":
            self._synced(msg["paths"], msg["reload"])
        elif op == "_failed":
            raise msg["error"]
        else:
            self._refuse(msg, f"unknown op {op!r}")

    def _refuse(self, msg: dict[str, Any], why: str) -> None:
        """Answer `msg` with an error saying `why`."""
        self.out.send({"type": "error", "rid": msg.get("rid"), "message": why})

    def _given_vector(self, data: object) -> Any:
        """The question's vector a search came with, checked (see `semantic.from_wire`)."""
        if not self.index.by_meaning:
            raise semantic.VectorFormatError(NOT_BY_MEANING)
        return semantic.from_wire(data)

    def _embed(self, msg: dict[str, Any]) -> None:
        """The question's vector, for the coordinator to give the other shards of this model."""
        if not self.index.by_meaning:
            self._refuse(msg, NOT_BY_MEANING)
            return
        # Not counted in `served` (questions answered): the searches that use it are.
        vector = self.index.question_vector(str(msg.get("text", "")))
        self.out.send(
            {
                "type": "result",
                "rid": msg["rid"],
                "vector": semantic.to_wire(vector),
                "model": semantic.MODEL,
            }
        )

    def _synced(self, paths: list[str], reload: bool) -> None:
        """The writer committed changes to `paths`: refresh a model's copy; answer a reload."""
        if reload:
            self.load()
        elif self.model is not None:
            self._replace_chunks(
                set(paths), self._stored_chunks(paths), self._stored_digests(paths), self.name
            )

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
        with self._chunks_lock:
            digests = dict(self.digests)  # the versions the model holds now
        self.served += 1
        self.model.ask(msg["rid"], question, candidates, digests)

    def _not_a_model_shard(self, msg: dict[str, Any]) -> None:
        why = "this shard has no model backend" if self.model is None else "its model is loading"
        self._refuse(msg, why)

    def _memory_changed(self, path: str, chunks: list[Chunk], digest: str) -> None:
        self._replace_chunks({path}, chunks, {path: digest} if chunks else {}, path)

    def _replace_chunks(
        self, paths: set[str], chunks: list[Chunk], digests: dict[str, str], where: str
    ) -> None:
        """The model's copy: the passages of `paths` are now `chunks`, cut from `digests`."""
        if self.model is None:
            return
        with self._chunks_lock:
            for key in [k for k in self.chunks if k[0] in paths]:
                del self.chunks[key]
            self.chunks.update({(c.path, c.start_line, c.end_line): c for c in chunks})
            for path in paths:
                self.digests.pop(path, None)
            self.digests.update(digests)
            self._chunks_version += 1
            if not self.model.usable.is_set():
                return  # the loading thread takes the new chunks when it is done
            try:
                self.model.load(list(self.chunks.values()), count=False)
            except IfmemError as e:
                self.out.send({"type": "warning", "path": where, "reason": str(e)})

    def close(self) -> None:
        """Stop following the files, let the writer finish its batch, close the index."""
        if self.watcher is not None:
            self.watcher.close()
        if self.writer is not None:
            self.writer.close()
        self.index.close()
        if self.store is not None:
            # The last connection to close folds the WAL into the index file.
            self.store.close()
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def heartbeat(self) -> dict[str, Any]:
        return {
            "type": "heartbeat",
            "rss_bytes": _rss_bytes(),
            "served": self.served,
            "uptime_s": round(time.monotonic() - self.started, 3),
            **({} if self.embedder is None else {"encoded": self.embedder.questions}),
        }


def _memory_path(memory_id: str) -> str:
    return f"memory:{memory_id}"


def _text_digest(text: str) -> str:
    """A remembered note's digest: of its text's UTF-8 bytes, as a file's is of its bytes."""
    return store.file_digest(text.encode("utf-8", "surrogatepass"))


def _index_dir(init: dict[str, Any]) -> Path:
    """Where a file shard keeps its index: `index_dir` from init, else the user cache."""
    given = init.get("index_dir")
    return Path(given) if given else shard_index_dir(init["name"])


def _serve(shard: Shard, stdin: _Lines) -> None:
    """Answer stdin's ops and the inbox's until stdin closes."""
    poller = select.poll()
    poller.register(stdin.fd, select.POLLIN)
    poller.register(shard.inbox.fd, select.POLLIN)
    while True:
        for fd, _ in poller.poll():
            if fd == shard.inbox.fd:
                for msg in shard.inbox.take():
                    shard.handle(msg)
                continue
            lines = stdin.read()
            if lines is None:
                return
            for line in lines:
                shard.handle(pipejson.loads(line))


def _beat(shard: Shard, interval: float) -> None:
    while True:
        shard.out.send(shard.heartbeat())
        time.sleep(interval)


def main() -> int:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when we stop
    # A search hands the GIL back and forth with SQLite many times; while the
    # writer chunks files (pure Python), each hand-back waits out the switch
    # interval. 1 ms instead of 5 keeps asks fast during a burst of changes.
    sys.setswitchinterval(GIL_SWITCH_S)
    # The pipe to the supervisor gets a descriptor of its own, and descriptor 1
    # becomes stderr: whatever a library prints (or a C library writes to fd 1)
    # goes to the journal, not into the protocol.
    out = _Out(os.fdopen(os.dup(sys.stdout.fileno()), "wb"))
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    stdin = _Lines(sys.stdin.fileno())
    lines: list[bytes] | None = []
    while lines == []:
        lines = stdin.read()
    if not lines:
        return 0
    init = pipejson.loads(lines[0])
    shard = Shard(init, out)
    # Beat from the start: a long load is not a hang.
    threading.Thread(
        target=_beat, args=(shard, float(init.get("heartbeat_interval", 10))), daemon=True
    ).start()
    try:
        shard.load()
        # Ops that came with the init line (a memory shard's first `add`, say).
        for line in lines[1:]:
            shard.handle(pipejson.loads(line))
        _serve(shard, stdin)
    except (ApiKeyError, BackendMissingError, CorpusOverBudgetError) as e:
        # No key, a key file others can read, a corpus over its budget: a restart
        # would fail the same way. Say why, and let the supervisor mark us failed.
        out.send({"type": "fatal", "reason": str(e)})
        return FATAL_EXIT
    except (SearchIndexError, IndexUpdateError) as e:
        # The on-disk index is derived data: a damaged one is thrown away, and
        # the restart the supervisor gives us builds it anew.
        if shard.store is not None and isinstance(
            e.__cause__, apsw.CorruptError | apsw.NotADBError
        ):
            store.discard(shard.store.path)
            e = IndexUpdateError("index damaged", f"{e}; deleted it, to be rebuilt on restart")
        out.send({"type": "warning", "path": shard.name, "reason": str(e)})
        return 1
    shard.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
