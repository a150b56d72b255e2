"""How a remote shard reads the remote daemon's answers, without ssh: the reply an ask
gets from each answer line, well-formed or not."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
from ifmemd.config import DaemonConfig, parse_config
from ifmemd.remote import RemoteShard, make_handle
from ifmemd.supervisor import Pending, ShardUnavailableError

PASSAGE = {
    "path": "/srv/docs/beacon.md",
    "start_line": 2,
    "end_line": 4,
    "score": 0.03,
    "coverage": 1.0,
    "snippet": "A lighthouse beacon",
    "digest": "ef" * 32,
}
QUOTE = {"log_id": "ab" * 16, "seq": 7, "hash": "cd" * 32}


def remote_shard() -> RemoteShard:
    config = parse_config('[[shard]]\nname = "team"\nremote = "ssh://me@buildhost"\n', "t.toml")
    team = config.shard("team")
    assert team is not None
    handle = make_handle(team, DaemonConfig(), time.monotonic)
    assert isinstance(handle, RemoteShard)
    return handle


def answer(handle: RemoteShard, msg: dict[str, Any]) -> Pending:
    pending = Pending(1, anyio.Event())
    handle._waiters[1] = pending
    handle._on_answer(1, msg)
    assert pending.done.is_set()
    return pending


@pytest.mark.anyio
async def test_an_answer_becomes_host_prefixed_rows_and_a_quote() -> None:
    handle = remote_shard()
    reply = handle.outcome(answer(handle, {"ok": True, "result": {"passages": [PASSAGE], **QUOTE}}))
    [p] = handle.passages(reply)
    assert (p.path, p.start_line, p.end_line) == ("buildhost:/srv/docs/beacon.md", 2, 4)
    assert p.digest == "ef" * 32  # the version the remote cut it from
    assert reply["remote"] == QUOTE
    assert handle.served == 1
    assert p.similarity is None  # the remote's shards do not rank by meaning


@pytest.mark.anyio
async def test_a_remote_passage_found_by_meaning_keeps_its_similarity() -> None:
    handle = remote_shard()
    found = {**PASSAGE, "similarity": 0.62}
    reply = handle.outcome(answer(handle, {"ok": True, "result": {"passages": [found], **QUOTE}}))
    [p] = handle.passages(reply)
    assert p.similarity == 0.62


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("result", "says"),
    [
        ({"passages": [PASSAGE]}, "no log_id, seq, hash of the remote's record; upgrade"),
        ({"passages": [{"path": "/x"}], **QUOTE}, "KeyError: 'start_line'"),
        ({"passages": 5, **QUOTE}, "TypeError"),
        ("not an object", "TypeError"),
    ],
)
async def test_an_answer_in_another_shape_fails_the_ask_only(result: Any, says: str) -> None:
    handle = remote_shard()
    pending = answer(handle, {"ok": True, "result": result})
    with pytest.raises(ShardUnavailableError) as caught:
        handle.outcome(pending)
    assert "remote sent an answer this ifmem cannot read" in caught.value.reason
    assert says in caught.value.reason
    assert handle.served == 0


@pytest.mark.anyio
async def test_a_remote_error_is_the_asks_reason() -> None:
    handle = remote_shard()
    error = {"code": "unavailable", "message": "no shard answered: docs: failed"}
    with pytest.raises(ShardUnavailableError) as caught:
        handle.outcome(answer(handle, {"ok": False, "error": error}))
    assert caught.value.reason == "remote: no shard answered: docs: failed (unavailable)"
