"""The shard process's own reading of its pipe: lines however they arrive, inbox ops beside."""

from __future__ import annotations

import json
import time
from pathlib import Path

from shardproc import ShardProc


def test_ops_written_with_the_init_line_are_served_after_loading(tmp_path: Path) -> None:
    proc = ShardProc("working", [], tmp_path / "index", kind="memory")
    try:
        # Nothing sent yet but the init line: now an `add` right behind it, in
        # the same read if the shard is still loading.
        proc.send({"op": "add", "memory_id": "m1", "text": "the lighthouse keeper's log"})
        proc.ready()
        assert [p[0] for p in proc.search("lighthouse")] == ["memory:m1"]
    finally:
        assert proc.close() == 0  # end of stdin ends the shard cleanly


def test_lines_split_and_batched_across_writes_are_all_answered(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.md").write_text("# Alpha\n\nalpha words here\n")
    (notes / "b.md").write_text("# Beta\n\nbeta words here\n")
    proc = ShardProc("notes", [notes], tmp_path / "index", watch=False)
    try:
        proc.ready()
        mark = proc.count()
        lines = b"".join(
            json.dumps({"op": "search", "rid": rid, "query": q, "k": 3}).encode() + b"\n"
            for rid, q in enumerate(["alpha", "beta", "words", "alpha beta"], 100)
        )
        assert proc.proc.stdin is not None
        # Three searches and a half in one write, the rest of the fourth later.
        cut = len(lines) - 10
        proc.proc.stdin.write(lines[:cut])
        proc.proc.stdin.flush()
        time.sleep(0.2)
        proc.proc.stdin.write(lines[cut:])
        proc.proc.stdin.flush()
        for rid in range(100, 104):
            proc.wait_for("result", lambda m, rid=rid: m["rid"] == rid, after=mark)
        got = [m["rid"] for m in proc.seen("result")]
        assert got[-4:] == [100, 101, 102, 103]
        assert {p[0] for p in proc.seen("result")[-1]["passages"]} == {
            str(notes / "a.md"),
            str(notes / "b.md"),
        }
    finally:
        proc.close()
