"""Times as the CLI reads (`--since`) and prints them."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")


def parse_since(text: str, now_ns: int | None = None) -> int:
    """Nanoseconds since the epoch for `30s`, `5m`, `2h`, `1d`, `1w` ago or an ISO 8601 time.

    Raises ValueError with a message naming the accepted forms.
    """
    now_ns = time.time_ns() if now_ns is None else now_ns
    m = _RELATIVE.match(text.strip())
    if m:
        return now_ns - int(float(m.group(1)) * _UNITS[m.group(2)] * 1_000_000_000)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"cannot read time {text!r}: use a duration ago (30s, 5m, 2h, 1d, 1w) "
            "or an ISO 8601 time (2026-11-21T14:00, UTC unless an offset is given)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1_000_000_000)


def format_ns(ts_ns: int) -> str:
    """An event time as UTC ISO 8601 with milliseconds."""
    dt = datetime.fromtimestamp(ts_ns / 1e9, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def since_option(text: str | None) -> int:
    """A `--since` option as nanoseconds since the epoch (0 when absent); exit 2 if unreadable."""
    from ifmem.exits import USAGE, fail

    if text is None:
        return 0
    try:
        return parse_since(text)
    except ValueError as e:
        fail(str(e), USAGE)
