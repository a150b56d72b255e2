"""JSON on the pipes between the daemon and its shards: orjson, and the standard
library's json for the little orjson refuses.

An ask crosses these pipes eight times (a search to each of four shards, and
its result back, ~1.5 kB of passages), and the daemon and every shard parse or
write each line: orjson, a well-kept compiled package, does it 3 to 15 times
faster than json (bench/README.md, "Real text"). It writes UTF-8 as json with
`ensure_ascii=False` does, and its floats in their shortest form ("1e-7" where
json writes "1e-07": the same number read back). What orjson refuses (a lone
surrogate, an integer past 64 bits, nesting past 255 levels, NaN on reading)
goes through json as before, so every line that was read or written still is,
and one that failed still fails the same way. One difference is left: orjson
reads an integer past 64 bits as a float. None crosses these pipes (request
ids, line numbers, counts and sizes are all far smaller), and none is written:
`dumps` hands such a number to json, which writes it whole.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# One encoder, reused (json.dumps with options builds a new one every call).
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(obj: Any) -> bytes:
    """One line: `obj` as compact JSON and a newline."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        return _JSON.encode(obj).encode() + b"\n"


def loads(line: bytes) -> Any:
    """The value of one line (its newline may be there or not)."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)
