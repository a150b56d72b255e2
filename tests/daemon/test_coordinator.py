"""Rank fusion and model routing (coordinator.py), on hand-made shard answers."""

from __future__ import annotations

import dataclasses
import time

import pytest
from ifmemd.config import DaemonConfig, ShardConfig
from ifmemd.coordinator import RRF_K, ShardAnswer, _sharing, fuse, route
from ifmemd.shards.index import Passage
from ifmemd.supervisor import ReplyGroup, ShardHandle


def p(path: str, score: float = 1.0, coverage: float = 0.0, start: int = 1) -> Passage:
    return Passage(path, start, start + 2, score, f"text of {path}", coverage)


def test_fusion_ranks_by_reciprocal_rank_weighted_by_coverage() -> None:
    answers = [
        ShardAnswer("docs", (p("/docs/a.md", coverage=0.25), p("/docs/b.md", coverage=1.0))),
        ShardAnswer("working", (p("memory:m1", coverage=1.0),)),
    ]
    fused = fuse(answers, 3)
    # Both first hits rank 1, but the memory covers the whole question.
    assert [e["citation"] for e in fused] == [
        "memory:m1:1-3",
        "/docs/b.md:1-3",
        "/docs/a.md:1-3",
    ]
    assert fused[0]["score"] == round(1.25 / (RRF_K + 1), 6)
    assert fused[0]["shard"] == "working" and fused[0]["coverage"] == 1.0


def test_fusion_merges_the_same_passage_from_two_shards_and_cuts_at_k() -> None:
    shared = p("/same.md", coverage=0.5)
    answers = [
        ShardAnswer("a", (shared, p("/a.md", coverage=0.5))),
        ShardAnswer("b", (shared,)),
        ShardAnswer("c", (), missing="no answer within 1 s"),
    ]
    fused = fuse(answers, 1)
    assert [e["citation"] for e in fused] == ["/same.md:1-3"]
    assert fused[0]["score"] == round(2 * 0.75 / (RRF_K + 1), 6)


def test_fusion_weighs_a_similarity_in_place_of_the_coverage_floor() -> None:
    # Two shards ranking by meaning: the passage like the question in meaning
    # wins though it covers fewer of its words.
    like = dataclasses.replace(p("/stdlib/tempfile.py", coverage=0.2), similarity=0.7)
    unlike = dataclasses.replace(p("/man/find.1.txt", coverage=0.5), similarity=0.1)
    fused = fuse([ShardAnswer("man", (unlike,)), ShardAnswer("stdlib", (like,))], 2)
    assert [e["citation"] for e in fused] == ["/stdlib/tempfile.py:1-3", "/man/find.1.txt:1-3"]
    assert fused[0]["score"] == round((0.7 + 0.2) / (RRF_K + 1), 6)
    assert fused[0]["similarity"] == 0.7
    # Without similarities, coverage decides, and the answer has no such field.
    plain = fuse(
        [
            ShardAnswer("man", (p("/man/find.1.txt", coverage=0.5),)),
            ShardAnswer("stdlib", (p("/stdlib/tempfile.py", coverage=0.2),)),
        ],
        2,
    )
    assert plain[0]["citation"] == "/man/find.1.txt:1-3"
    assert all("similarity" not in e for e in plain)


def test_fusion_keeps_the_order_of_a_remote_answer_which_was_fused_already() -> None:
    # The remote's coordinator ranked these by the same formula; by coverage
    # alone the third would come first here.
    ranked = (
        p("host:/a.md", coverage=0.2),
        p("host:/b.md", coverage=0.2),
        p("host:/c.md", coverage=1.0),
    )
    remote = {"log_id": "ab" * 16, "seq": 7, "hash": "cd" * 32}
    fused = fuse([ShardAnswer("far", ranked, remote=remote), ShardAnswer("working")], 3)
    assert [e["path"] for e in fused] == ["host:/a.md", "host:/b.md", "host:/c.md"]
    assert fused[0]["score"] == round(0.45 / (RRF_K + 1), 6)
    # A local shard's list is weighed by coverage as before.
    local = fuse([ShardAnswer("near", ranked)], 3)
    assert local[0]["path"] == "host:/c.md"


def test_fusion_of_nothing_is_empty() -> None:
    assert fuse([ShardAnswer("a"), ShardAnswer("b", missing="down")], 5) == []


def handle(name: str, backend: str = "anthropic") -> ShardHandle:
    model = "claude-test" if backend != "local" else None
    config = ShardConfig(name=name, paths=("/x",), backend=backend, model=model)  # type: ignore[arg-type]
    h = ShardHandle(config, DaemonConfig(), time.monotonic)
    if config.uses_model:
        h.model_status = "ready"  # as its `model_ready` message would set it
    return h


def test_routing_prefers_coverage_over_raw_bm25() -> None:
    handles = [handle("big"), handle("small"), handle("local", backend="local")]
    answers = [
        # bm25 from a big corpus dwarfs a small one's; coverage is comparable.
        ShardAnswer("big", (p("/big.md", score=9.0, coverage=0.34),)),
        ShardAnswer("small", (p("/small.md", score=0.01, coverage=1.0),)),
        ShardAnswer("local", (p("/local.md", score=50.0, coverage=1.0),)),
    ]
    assert route(handles, answers, 1) == [1]
    assert route(handles, answers, 5) == [1, 0]  # local shards never cost a model call


def test_routing_breaks_coverage_ties_by_bm25_and_skips_empty_or_missing() -> None:
    handles = [handle("a"), handle("b"), handle("c"), handle("d")]
    answers = [
        ShardAnswer("a", (p("/a.md", score=1.0, coverage=0.5),)),
        ShardAnswer("b", (p("/b.md", score=2.0, coverage=0.5),)),
        ShardAnswer("c", ()),  # its index found nothing: not worth a paid call
        ShardAnswer("d", (), missing="down"),
    ]
    assert route(handles, answers, 5) == [1, 0]


@pytest.mark.parametrize("top_n", [0, 1, 2])
def test_routing_asks_at_most_top_n(top_n: int) -> None:
    handles = [handle(n) for n in "abc"]
    answers = [ShardAnswer(n, (p(f"/{n}.md", coverage=0.5),)) for n in "abc"]
    assert len(route(handles, answers, top_n)) == top_n


def test_routing_skips_a_shard_covering_the_question_far_worse_than_the_best() -> None:
    # "what does RestartSec do": the systemd docs cover it; the history shard's
    # best passage ("How long does memory run for?") shares one word of three.
    handles = [handle("systemd"), handle("history"), handle("notes")]
    answers = [
        ShardAnswer("systemd", (p("/unit.md", score=4.0, coverage=1.0),)),
        ShardAnswer("history", (p("/history.md", score=6.0, coverage=0.34),)),
        ShardAnswer("notes", (p("/notes.md", score=1.0, coverage=0.67),)),
    ]
    assert route(handles, answers, 3, min_coverage_ratio=0.5) == [0, 2]
    assert route(handles, answers, 3, min_coverage_ratio=0.7) == [0]
    # Off (0): only route_top_n limits the calls, as before.
    assert route(handles, answers, 3, min_coverage_ratio=0.0) == [0, 2, 1]
    # The ratio is relative to the best: equally weak shards are all asked.
    weak = [dataclasses.replace(a, passages=(p(f"/{a.shard}", coverage=0.1),)) for a in answers]
    assert route(handles, weak, 3, min_coverage_ratio=1.0) == [0, 1, 2]


def test_routing_never_asks_a_model_that_is_still_loading() -> None:
    handles = [handle("up"), handle("loading")]
    handles[1].model_status = "loading"  # ready on its index; SDK and count still to come
    answers = [
        ShardAnswer("up", (p("/up.md", coverage=0.5),)),
        ShardAnswer("loading", (p("/loading.md", coverage=1.0),)),
    ]
    assert route(handles, answers, 2) == [0]


def test_only_ready_shards_of_one_model_share_a_question_vector() -> None:
    handles = [handle(name, backend="local") for name in ("restarting", "a", "b", "c", "d")]
    for h, model in zip(handles, ("m", "m", "m", "n", "o"), strict=True):
        h.vectors = model  # named by each one's `ready`
        h.status = "ready"
        h.process = object()  # type: ignore[assignment]  # as when it runs
    # Its process exited: it keeps the model it named, and cannot encode.
    handles[0].status, handles[0].process = "restarting", None
    handles[4].vectors = "n"
    assert _sharing(handles, [0, 1, 2, 3, 4]) == {"m": [1, 2], "n": [3, 4]}
    # A model only one asked shard ranks by is not shared: nothing to save.
    assert _sharing(handles, [0, 1, 3]) == {}


def test_a_reply_group_waits_for_requests_sent_after_the_first_replies_came() -> None:
    # fan_out asks the ready shards, then each shard still starting once it is
    # ready: the first replies may all be in before those requests go out.
    group = ReplyGroup()
    group.expect()
    group.finished_one()
    assert group.done.is_set()
    group.expect()  # a shard that was starting, asked now
    assert not group.done.is_set()  # its reply is still to come: wait for it
    group.finished_one()
    assert group.done.is_set()
