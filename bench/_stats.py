"""Small statistics and formatting helpers shared by the benchmarks.

Benchmarks report the median over repetitions (robust to one slow run on a
shared machine) and, for latencies, nearest-rank percentiles of each run.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


def finite(obj: Any) -> Any:
    """`obj` with NaN (no baseline) as None, so that it can be written as JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def median(values: Sequence[float]) -> float:
    """The median of `values` (nan for none)."""
    return statistics.median(values) if values else math.nan


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank `p`-th percentile (0 < p <= 100) of `values`."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def ratio(value: float, baseline: float) -> float:
    """value / baseline, nan when the baseline is zero or missing."""
    if not baseline or math.isnan(baseline) or math.isnan(value):
        return math.nan
    return value / baseline


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """Run `fn` once; return (seconds, its result)."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def fmt_rate(per_s: float) -> str:
    """A rate as '12,345/s'."""
    return "-" if math.isnan(per_s) else f"{per_s:,.0f}/s"


def fmt_seconds(s: float) -> str:
    """A duration with a unit that keeps three significant figures."""
    if math.isnan(s):
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def fmt_ratio(r: float) -> str:
    return "-" if math.isnan(r) else f"{r:.2f}×"


class Row(Protocol):
    """A result line of a benchmark table."""

    metric: str
    value: float
    baseline: float
    baseline_label: str
    target: str
    passed: bool | None

    @property
    def ratio(self) -> float: ...

    def show(self, v: float) -> str: ...

    def cells(self) -> list[str]: ...


def cells(r: Row) -> list[str]:
    """One table row: metric, value, baseline (with its label), ratio, target, verdict."""
    base = r.show(r.baseline)
    if r.baseline_label and not math.isnan(r.baseline):
        base += f" ({r.baseline_label})"
    verdict = "-" if r.passed is None else ("PASS" if r.passed else "FAIL")
    return [r.metric, r.show(r.value), base, fmt_ratio(r.ratio), r.target or "-", verdict]


@dataclass
class Result:
    """One line of a table: a value beside its baseline, in seconds ("s"),
    megabytes ("MB"), a rate per second ("rate") or a plain factor ("x")."""

    metric: str
    unit: str
    value: float
    baseline: float = math.nan
    baseline_label: str = ""
    target: str = ""
    passed: bool | None = None

    @property
    def ratio(self) -> float:
        return ratio(self.value, self.baseline)

    def show(self, v: float) -> str:
        if math.isnan(v):
            return "-"
        if self.unit == "s":
            return fmt_seconds(v)
        if self.unit == "rate":
            return f"{v:,.0f}/s"
        if self.unit == "MB":
            return f"{v:.1f} MB"
        return f"{v:.3g}"

    def cells(self) -> list[str]:
        return cells(self)


def table(results: Sequence[Row]) -> str:
    """The results as an aligned text table with a header rule."""
    head = ["metric", "value", "baseline", "ratio", "target", "result"]
    rows = [head] + [r.cells() for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def note(msg: str) -> None:
    """Progress for the person running the benchmark, on stderr."""
    print(msg, file=sys.stderr, flush=True)
