"""JSON for the socket protocol, from the standard library's C encoder and scanner, without
importing the `json` package.

`import json` imports `re` (and through it enum, functools, collections): ~6 ms,
as much as the rest of `ifmem ask`'s imports together, in a process whose whole
cost must stay under 3x a bare interpreter (cli/ifmem/fast.py). The parsing
and the encoding here are json's own C code (`_json`: what `json.loads` and
`json.dumps` call); only json's Python wrapper is left out (it skips
whitespace with a regular expression). So the results are json's, byte for
byte (a property test holds the two together), and any failure is reported by
`json.loads` itself, imported then: the same exception, the same message.

Where `_json` is missing or has another signature (another Python), the json
package does everything.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# JSON's whitespace (RFC 8259): what json's wrapper skips around a document.
_BLANK = " \t\n\r"


class _Context:
    """What `_json.make_scanner` reads its settings from (as from a `json.JSONDecoder`)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")


def _not_serializable(obj: object) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _stdlib_loads(text: str) -> Any:
    import json

    return json.loads(text, parse_constant=_Context.parse_constant)


def _stdlib_dumps(obj: object, ascii: bool) -> str:
    import json

    return json.dumps(obj, separators=(",", ":"), ensure_ascii=ascii, allow_nan=False)


try:
    from _json import encode_basestring, encode_basestring_ascii, make_encoder, make_scanner

    _SCAN: Callable[[str, int], tuple[Any, int]] | None = make_scanner(_Context())
    _ESCAPE = {True: encode_basestring_ascii, False: encode_basestring}
    # Checks that this `_json` takes json's arguments: the markers (for circular
    # references), the default, the string escape, the indent, the separators,
    # sort_keys, skipkeys and allow_nan.
    make_encoder(
        {}, _not_serializable, encode_basestring_ascii, None, ":", ",", False, False, False
    )
except (ImportError, TypeError):
    _SCAN = None


def loads(text: str) -> Any:
    """Parse one JSON document, as `json.loads` does, NaN and Infinity refused (ValueError)."""
    if _SCAN is None:
        return _stdlib_loads(text)
    start = len(text) - len(text.lstrip(_BLANK))
    try:
        value, end = _SCAN(text, start)
    except StopIteration:
        return _stdlib_loads(text)  # raises json's "Expecting value"
    if end != len(text) and text[end:].strip(_BLANK):
        return _stdlib_loads(text)  # raises json's "Extra data"
    return value


def dumps(obj: object, *, ascii: bool = True) -> str:
    """Compact JSON, as `json.dumps(obj, separators=(",", ":"), ensure_ascii=ascii,
    allow_nan=False)`; ValueError for NaN, infinities or a circular reference."""
    if _SCAN is None:
        return _stdlib_dumps(obj, ascii)
    # A fresh encoder a call, as json makes one: the markers dict it is given
    # tracks the containers being encoded, and an error leaves some behind.
    encode = make_encoder(
        {}, _not_serializable, _ESCAPE[ascii], None, ":", ",", False, False, False
    )
    return "".join(encode(obj, 0))
