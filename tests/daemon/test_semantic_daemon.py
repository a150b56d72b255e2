"""A real daemon with a `semantic = true` shard: it answers by words as soon as it is
ready, `status` tells how many passages still wait for their vector, and once none
do, every passage it cites carries its similarity to the question."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import daemonproc as dp
import pytest


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[dp.DaemonFactory]:
    with dp.factory(tmp_path) as made:
        yield made


def test_vectors_are_made_after_ready_and_status_counts_them(
    factory: dp.DaemonFactory,
) -> None:
    config = factory.default_config().replace(
        'name = "docs"\n', 'name = "docs"\nsemantic = true\n', 1
    )
    daemon = factory(config)
    status = {s["name"]: s for s in daemon.request("status")["shards"]}
    assert "vectors_queued" in status["docs"]
    assert "vectors_queued" not in status["code"]  # not a semantic shard
    daemon.wait_shard("docs", lambda s: s["vectors_queued"] == 0, "every vector made")
    answer = daemon.request("ask", question="what does the beacon do", shards=["docs"])
    assert answer["passages"]
    assert all(isinstance(p["similarity"], float) for p in answer["passages"])
