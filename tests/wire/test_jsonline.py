"""jsonline must read and write exactly what the json package does, without importing it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ifmemd.wire import jsonline

# Any JSON value; lone surrogates (exclude_categories=()) and integers past 64 bits included.
texts = st.text(st.characters(exclude_categories=()))
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)


@given(values, st.booleans())
def test_dumps_is_json_dumps(value: object, ascii: bool) -> None:
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=ascii, allow_nan=False)
    assert jsonline.dumps(value, ascii=ascii) == expected


@given(values, st.sampled_from(["", " ", "\n", " \t\r\n "]))
def test_loads_is_json_loads(value: object, blank: str) -> None:
    text = blank + json.dumps(value) + blank
    assert jsonline.loads(text) == json.loads(text)


@pytest.mark.parametrize(
    "text", ["", " ", "{", "[1,]", "[1] x", "{} {}", '{"a" 1}', "tru", '"\\x"', "01", "\x00"]
)
def test_loads_fails_as_json_does(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as ours:
        jsonline.loads(text)
    with pytest.raises(json.JSONDecodeError) as theirs:
        json.loads(text)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"a": -Infinity}'])
def test_loads_refuses_nan_and_infinities(text: str) -> None:
    with pytest.raises(ValueError, match="is not valid JSON"):
        jsonline.loads(text)


def test_dumps_refuses_what_json_refuses() -> None:
    with pytest.raises(ValueError, match="Out of range float"):
        jsonline.dumps({"score": float("nan")})
    with pytest.raises(TypeError, match="not JSON serializable"):
        jsonline.dumps({"path": object()})
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        jsonline.dumps(loop)
    # An error leaves no marker behind: the same objects encode afterwards.
    shared = [1]
    with pytest.raises(TypeError):
        jsonline.dumps([shared, object()])
    assert jsonline.dumps([shared, shared]) == "[[1],[1]]"


def test_deep_nesting_is_a_recursion_error() -> None:
    with pytest.raises(RecursionError):
        jsonline.loads("[" * 100_000 + "]" * 100_000)


def test_importing_it_imports_neither_json_nor_re() -> None:
    code = (
        "import sys; from ifmemd.wire import jsonline; "
        "print('json' in sys.modules, 're' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
