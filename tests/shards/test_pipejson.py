"""The shard pipes' JSON: orjson's speed, json's results where orjson refuses."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ifmemd.shards import pipejson

texts = st.text(st.characters(exclude_categories=("Cs",)))
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)


@given(values)
def test_a_value_reads_back_as_json_reads_it(value: object) -> None:
    line = pipejson.dumps(value)
    assert line.endswith(b"\n") and b"\n" not in line[:-1]
    assert pipejson.loads(line) == json.loads(line) == value


@pytest.mark.parametrize("value", [2**70, -(2**65), [[[[0]]]] * 1, {"deep": [[]] * 3}])
def test_what_orjson_cannot_write_json_writes(value: object) -> None:
    assert json.loads(pipejson.dumps(value)) == value


def test_deep_nesting_is_written_and_read() -> None:
    deep: list[object] = []
    for _ in range(300):  # orjson stops at 255 levels
        deep = [deep]
    assert pipejson.loads(pipejson.dumps(deep)) == deep


def test_what_json_reads_and_orjson_does_not_is_read() -> None:
    assert pipejson.loads(b'["\\ud800"]') == ["\ud800"]
    assert math.isnan(pipejson.loads(b"[NaN]")[0])


def test_a_lone_surrogate_fails_to_write_as_it_did() -> None:
    # Not UTF-8: a path like this never reached the pipe before either.
    with pytest.raises(UnicodeEncodeError):
        pipejson.dumps({"path": "/tmp/\udcff"})


def test_a_broken_line_is_a_json_error() -> None:
    with pytest.raises(json.JSONDecodeError):
        pipejson.loads(b'{"type": "result", ')
