"""The coordinator: fan a question out to shards, fuse their rankings, cite every passage.

Each shard searches its own corpus; rankings are merged by reciprocal rank
fusion (RRF, k=60), which needs no comparable scores across shards. A shard
that fails or does not answer in time is named in the answer as missing; the
answer is still given.

Model-backed shards cost money per call, so a question is routed (`ask_shards`):
every shard first searches its own index, which is free, and only the
`route_top_n` model-backed shards whose index matched best (by how much of the
question their best passage covers; none that matched nothing, nor one covering
far less than the best: `route_min_coverage_ratio`) are asked their model. The
others give their index's passages, recorded with `mode: "fts"`. A question
that names its shards skips routing: the user chose.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

import anyio

from ifmemd.log.events import USAGE_FIELDS
from ifmemd.shards.index import Passage, PassageFormatError
from ifmemd.shards.llm import call_deadline
from ifmemd.supervisor import Pending, ReplyGroup, ShardHandle, ShardUnavailableError

RRF_K = 60
# A passage matching none of the question's words still counts a little (rank alone).
COVERAGE_FLOOR = 0.25
# Each passage of a remote's (already fused) answer weighs at most this much of the one
# before it: strictly less, so that no tie lets the path order reorder the remote's list.
REMOTE_STEP = 1 - 1e-6
MODEL_NOT_READY = "its model is not ready yet ({}): answered from its index"
# Beyond the shard's own deadline for a model call with all its retries.
MODEL_SLACK_S = 5.0
# Of an ask's timeout, how much one shard may take to encode the question for
# the others of its model; past it, each encodes the question itself.
EMBED_TIMEOUT_SHARE = 0.5
# A shard that let an embed go unanswered that long is not asked to encode for
# the others for this long: stuck, it would hold up every ask by the share above.
EMBED_BACKOFF_S = 30.0
# A passage is logged with every field the shard gave it but its excerpt (the
# excerpts of the passages the client got are in the answer beside it; the rest
# would make an ask's record several times larger), as an array of values in
# this order, which the answer names once as `passage_fields`: an ask's record
# would otherwise repeat the same five keys for each of some twenty passages.
# Nor the similarity of a shard ranking by meaning: the passages the client got
# carry it in the answer, and an ask's record keeps the shape it had without it.
LOGGED_PASSAGE_FIELDS = tuple(
    f.name for f in dataclasses.fields(Passage) if f.name not in ("snippet", "similarity")
)


@dataclass(frozen=True, slots=True)
class ShardAnswer:
    """One shard's ranked passages, or why it gave none.

    `reply` is the model's answer when the shard's model was asked; `routed_out`
    says a model-backed shard answered from its index alone, and `note` why,
    when it was not routing's choice (its model is not up yet). `remote` names
    a remote shard's signed answer in its own log: `{log_id, seq, hash}`.
    """

    shard: str
    passages: tuple[Passage, ...] = ()
    missing: str = ""
    ms: float = 0.0
    reply: dict[str, Any] | None = None
    routed_out: bool = False
    remote: dict[str, Any] | None = None
    note: str = ""

    @property
    def top_score(self) -> float:
        return max((p.score for p in self.passages), default=0.0)

    @property
    def top_coverage(self) -> float:
        return max((p.coverage for p in self.passages), default=0.0)

    def result_body(self) -> dict[str, Any]:
        """This shard's entry in `query.answered`'s `results`: passages, and for a model's
        answer its text, citations and the tokens it was billed for."""
        body: dict[str, Any] = {
            "shard": self.shard,
            "ms": self.ms,
            "passages": [[getattr(p, f) for f in LOGGED_PASSAGE_FIELDS] for p in self.passages],
        }
        if self.routed_out:
            body["mode"] = "fts"
        if self.remote is not None:
            body["remote"] = self.remote
        if self.note:
            body["note"] = self.note
        if self.reply is not None:
            usage = self.reply.get("usage", {})
            body |= {
                "mode": "model",
                "model": self.reply.get("model", ""),
                "usage": {f: int(usage.get(f, 0)) for f in USAGE_FIELDS},
                "answer": self.reply.get("text", ""),
                "verified": bool(self.reply.get("verified")),
                "citations": self.reply.get("citations", []),
                "unverified": self.reply.get("unverified", []),
            }
        return body

    def answer_json(self) -> dict[str, Any] | None:
        """The model's answer as the client sees it, or None."""
        if self.reply is None:
            return None
        return {
            "shard": self.shard,
            "model": self.reply.get("model", ""),
            "text": self.reply.get("text", ""),
            "verified": bool(self.reply.get("verified")),
            "citations": self.reply.get("citations", []),
            "unverified": self.reply.get("unverified", []),
        }


def fuse(answers: list[ShardAnswer], k: int) -> list[dict[str, Any]]:
    """Merge ranked lists by reciprocal rank fusion; the top `k`, best first.

    Plain RRF ties every shard's first hit at 1/61, and bm25 cannot break the
    tie (it is not comparable across corpora: a tiny shard scores near zero).
    So each contribution is weighted by the passage's coverage of the
    question's content words, which is comparable: (COVERAGE_FLOOR + coverage).
    A passage of a shard that ranks by meaning says how like the question it
    is (the cosine of their vectors, comparable across such shards: one
    model); that similarity then stands in for the floor, so that a passage
    in other words than the question, which covers little of it, still
    counts by what it means: (similarity + coverage).
    """
    fused: dict[tuple[str, int, int], dict[str, Any]] = {}
    for answer in answers:
        cap = math.inf
        for rank, p in enumerate(answer.passages, 1):
            key = (p.path, p.start_line, p.end_line)
            entry = fused.get(key)
            if entry is None:
                # The answer cites the lines holding the question's words;
                # the whole passage they were found in comes beside them.
                first, last = p.span
                entry = fused[key] = {
                    "citation": f"{p.path}:{first}-{last}",
                    "path": p.path,
                    "start_line": first,
                    "end_line": last,
                    "passage_start_line": p.start_line,
                    "passage_end_line": p.end_line,
                    "shard": answer.shard,
                    "score": 0.0,
                    "coverage": p.coverage,
                    "snippet": p.snippet,
                    "digest": p.digest,
                }
                if p.similarity is not None:
                    entry["similarity"] = p.similarity
            like = COVERAGE_FLOOR if p.similarity is None else p.similarity
            weight = (like + p.coverage) / (RRF_K + rank)
            if answer.remote is not None:
                # A remote's answer was fused by its own coordinator, by this formula: its
                # order is final. Weighed by coverage again, it would be reordered (fusing
                # is not idempotent), and the same shards would rank one way locally and
                # another through ssh. So its weights only ever decrease down its list.
                weight = min(weight, cap)
                cap = weight * REMOTE_STEP
            entry["score"] += weight
    ranked = sorted(fused.values(), key=lambda e: (-e["score"], e["path"], e["start_line"]))
    for entry in ranked:
        entry["score"] = round(entry["score"], 6)
    return ranked[:k]


async def fan_out(
    handles: list[ShardHandle], question: str, k: int, timeout: float
) -> list[ShardAnswer]:
    """Ask every shard at once, all bounded by one `timeout`.

    Every request is written before any reply is awaited, and the asker
    wakes once, when the last reply is in (a `ReplyGroup`): the shards work
    in parallel, and no task, cancel scope or wake-up is spent per shard
    (they cost more than a shard's own pipe round trip). A shard still loading
    its corpus for the first time is waited for (within the timeout) after
    the ready ones have been asked.

    Shards that rank by meaning with one model would each encode the question
    (~9 ms of CPU apiece, most of such a search): when two or more are ready,
    one of them encodes it (`embed`) while the others' searches run, and the
    vector goes with the search to each (`_question_vector`; if it fails or is
    late, each encodes the question itself).
    """
    start = time.perf_counter()
    answers: list[ShardAnswer | None] = [None] * len(handles)
    sent: dict[int, Pending] = {}
    group = ReplyGroup()

    async def submit(i: int, vector: str | None = None) -> None:
        fields: dict[str, Any] = {"query": question, "k": k}
        if vector is not None:
            fields["vector"] = vector
        try:
            sent[i] = await handles[i].submit("search", group, **fields)
        except ShardUnavailableError as e:
            answers[i] = ShardAnswer(handles[i].name, missing=e.reason)

    starting: list[int] = []
    asked: list[int] = []
    try:
        with anyio.move_on_after(timeout):
            for i, handle in enumerate(handles):
                if handle.status in ("failed", "stopped"):
                    answers[i] = ShardAnswer(handle.name, missing=handle.failure or handle.status)
                elif handle.status == "starting":
                    starting.append(i)
                elif handle.ready and handle.empty is not None and handle.empty():
                    answers[i] = ShardAnswer(handle.name, ())  # an empty memory finds nothing
                else:
                    asked.append(i)
            sharing = _sharing(handles, asked)
            shared = {i for members in sharing.values() for i in members}
            for i in asked:
                if i not in shared:
                    await submit(i)
            for model, members in sharing.items():
                vector = await _question_vector(
                    [handles[i] for i in members], model, question, timeout * EMBED_TIMEOUT_SHARE
                )
                for i in members:
                    await submit(i, vector)
            for i in starting:
                await handles[i].ready_event.wait()
                await submit(i)
            if group.outstanding:
                await group.done.wait()
    finally:
        for i, pending in sent.items():
            handles[i].discard(pending)
    for i, pending in sent.items():
        if pending.done.is_set():
            answers[i] = _answer(handles[i], pending, start)
    late = f"no answer within {timeout:g} s"
    return [
        a if a is not None else ShardAnswer(h.name, missing=late)
        for a, h in zip(answers, handles, strict=True)
    ]


def _sharing(handles: list[ShardHandle], asked: list[int]) -> dict[str, list[int]]:
    """The ready shards of `asked` that can share a question's vector: model →
    indices into `handles`, for each model that two or more of them rank by (a
    local shard names it when ready; a remote's coordinator shares its own)."""
    by_model: dict[str, list[int]] = {}
    for i in asked:
        # `vectors` outlives the process that named it: a restarting shard keeps it.
        if handles[i].vectors and handles[i].ready:
            by_model.setdefault(handles[i].vectors, []).append(i)
    return {model: members for model, members in by_model.items() if len(members) > 1}


async def _question_vector(
    members: list[ShardHandle], model: str, question: str, timeout: float
) -> str | None:
    """The question's vector (as the shard pipe carries it) from the least busy of
    `members`, or None if it fails or takes longer than `timeout`: each shard then
    encodes the question itself, as when it is asked alone.

    A stuck shard looks least busy (the requests it left unanswered were given
    up on): one that let an embed time out is passed over for EMBED_BACKOFF_S.
    """
    now = time.monotonic()
    willing = [h for h in members if now - h.embed_late_at >= EMBED_BACKOFF_S]
    if not willing:
        return None
    encoder = min(willing, key=lambda h: h.outstanding)
    try:
        pending = await encoder.submit("embed", text=question)
    except ShardUnavailableError:
        return None
    try:
        with anyio.move_on_after(timeout):
            await pending.done.wait()
    finally:
        encoder.discard(pending)
    if not pending.done.is_set():
        encoder.embed_late_at = time.monotonic()
        return None
    if pending.reply is None:
        return None
    vector = pending.reply.get("vector")
    if pending.reply.get("model") != model or not isinstance(vector, str):
        return None
    return vector


def _answer(handle: ShardHandle, pending: Pending, start: float) -> ShardAnswer:
    """A shard's answer from its reply to a search (or why there is none)."""
    try:
        reply = handle.outcome(pending)
        passages = handle.passages(reply)
    except ShardUnavailableError as e:
        return ShardAnswer(handle.name, missing=e.reason)
    except PassageFormatError as e:
        return ShardAnswer(handle.name, missing=f"bad reply: {e.reason}")
    ms = round((pending.at - start) * 1000, 2)
    return ShardAnswer(handle.name, tuple(passages), ms=ms, remote=reply.get("remote"))


def route(
    handles: list[ShardHandle],
    answers: list[ShardAnswer],
    top_n: int,
    *,
    min_coverage_ratio: float = 0.0,
) -> list[int]:
    """Which model-backed shards to ask their model: indices into `handles`.

    The `top_n` whose index matched best, best first; a shard whose index found
    nothing for the question is not worth a paid call. "Best" is first how much
    of the question a shard's best passage covers (comparable across shards),
    then bm25 (comparable only within a shard, so only a tie-break). Nor is a
    shard whose best passage covers less than `min_coverage_ratio` of what the
    best shard's covers: it matched a stray word, not the question.
    """
    candidates = [
        i
        for i, (h, a) in enumerate(zip(handles, answers, strict=True))
        if h.model_ready and not a.missing and a.passages
    ]
    candidates.sort(key=lambda i: (-answers[i].top_coverage, -answers[i].top_score, i))
    if candidates:
        floor = min_coverage_ratio * answers[candidates[0]].top_coverage
        candidates = [i for i in candidates if answers[i].top_coverage >= floor]
    return candidates[:top_n]


def model_deadline(handle: ShardHandle) -> float:
    """How long to wait for a model answer: the shard's own deadline, and a little."""
    cfg = handle.config
    return call_deadline(cfg.timeout, cfg.max_retries) + MODEL_SLACK_S


async def _ask_model(handle: ShardHandle, question: str, k: int) -> ShardAnswer:
    start = time.perf_counter()
    deadline = model_deadline(handle)
    with anyio.move_on_after(deadline):
        try:
            reply = await handle.ask_model(question, k)
        except ShardUnavailableError as e:
            return ShardAnswer(handle.name, missing=f"model unavailable: {e.reason}")
        ms = round((time.perf_counter() - start) * 1000, 2)
        passages = tuple(
            Passage(
                c["path"],
                c["start_line"],
                c["end_line"],
                1.0 / n,
                c.get("cited_text", ""),
                digest=c.get("digest", ""),
            )
            for n, c in enumerate(reply.get("citations", []), 1)
        )
        return ShardAnswer(handle.name, passages, ms=ms, reply=reply)
    return ShardAnswer(handle.name, missing=f"no model answer within {deadline:g} s")


async def ask_shards(
    handles: list[ShardHandle],
    question: str,
    k: int,
    timeout: float,
    *,
    route_top_n: int,
    route_min_coverage_ratio: float = 0.0,
    routed: bool = True,
) -> list[ShardAnswer]:
    """Every shard's answer: its index's passages, or its model's for the shards routed to.

    With `routed` False (the user named the shards), every model-backed shard
    that is up is asked its model.
    """
    answers = await fan_out(handles, question, k, timeout)
    if routed:
        chosen = route(handles, answers, route_top_n, min_coverage_ratio=route_min_coverage_ratio)
    else:
        chosen = [
            i
            for i, (h, a) in enumerate(zip(handles, answers, strict=True))
            if h.model_ready and not a.missing
        ]

    async def one(i: int) -> None:
        answers[i] = await _ask_model(handles[i], question, k)

    if chosen:  # an empty task group still costs ~9 µs an ask
        async with anyio.create_task_group() as tg:
            for i in chosen:
                tg.start_soon(one, i)
    for i, handle in enumerate(handles):
        if handle.config.uses_model and i not in chosen and not answers[i].missing:
            note = "" if handle.model_ready else MODEL_NOT_READY.format(handle.model_status)
            answers[i] = dataclasses.replace(answers[i], routed_out=True, note=note)
    return answers


async def synthesize(
    handle: ShardHandle, question: str, answers: list[ShardAnswer]
) -> dict[str, Any]:
    """One more model call (on `handle`) merging the model answers; keeps every citation.

    Never fails the question: a synthesis that cannot be made says why instead.
    """
    given = [
        {"shard": a.shard, "text": a.reply["text"], "citations": a.reply.get("citations", [])}
        for a in answers
        if a.reply is not None
    ]
    deadline = model_deadline(handle)
    with anyio.move_on_after(deadline):
        try:
            reply = await handle.synthesize(question, given)
        except ShardUnavailableError as e:
            return {"shard": handle.name, "error": e.reason}
        usage = reply.get("usage", {})
        return {
            "shard": handle.name,
            "model": reply.get("model", ""),
            "text": reply.get("text", ""),
            "citations": reply.get("citations", []),
            "invented": reply.get("invented", []),
            **{f: int(usage.get(f, 0)) for f in USAGE_FIELDS},
        }
    return {"shard": handle.name, "error": f"no synthesis within {deadline:g} s"}
