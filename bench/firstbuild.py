"""A shard's first index build over the standard library, beside the code before it.

    .venv/bin/python bench/firstbuild.py [--quick] [--json FILE] [--rounds N]
                                         [--baseline-ref REF] [--before-ref REF]

Real daemons, one shard over `sysconfig.get_paths()["stdlib"]` + `/**/*.py`,
each start on an empty cache. Three codes, their starts interleaved round by
round (the order rotates, so a burst of load on the shared machine does not
fall on one of them): the baseline (`--baseline-ref`, the daemon before
shards kept an on-disk index: it loads everything at every start), the code
before this change (`--before-ref`), and this working tree. Each older code
is extracted with `git archive` and run by the same Python (PYTHONPATH).

Reported per code: the shard's `load_ms` (its `shard.ready` event), and the
CPU seconds of the shard process and the children it reaped (its read-ahead
process), from /proc after ready: on a loaded machine the wall time swings
with the other processes, the CPU time much less.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import _daemon
from _stats import Result, finite, median, note, table
from watch import config, extract_baseline

BASELINE_REF = "dfe2f8a"  # the last commit before shards kept an on-disk index
BEFORE_REF = "122289c"  # main before the first build was made faster


@dataclass(frozen=True)
class Sizes:
    stdlib_glob: str
    rounds: int


FULL = Sizes("**/*.py", 3)
QUICK = Sizes("json/**/*.py", 1)


def shard_cpu_s(d: _daemon.Daemon, shard: str) -> float:
    """CPU seconds (user + system) of the shard's process and its reaped children."""
    pid = next(s for s in d.status()["shards"] if s["name"] == shard)["pid"]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime are fields 14-17 of stat(5); [0] here is field 3.
    ticks = sum(int(f) for f in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def one_build(code: Path | None, home: Path, cfg: str) -> tuple[float, float]:
    """Start a daemon on an empty cache; (shard load_ms in s, shard CPU s)."""
    env = {"PYTHONPATH": str(code)} if code else {}
    d = _daemon.Daemon(home, cfg, env=env)
    try:
        d.start(timeout=900)
        load = [b["load_ms"] for *_, b in d.events(["shard.ready"]) if b["shard"] == "stdlib"]
        cpu = shard_cpu_s(d, "stdlib")
    finally:
        d.stop()
    return load[-1] / 1000, cpu


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small tree, one round (smoke test)")
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--rounds", type=int, help="starts of each code (default 3)")
    ap.add_argument("--baseline-ref", default=BASELINE_REF, help="the code the target is set by")
    ap.add_argument("--before-ref", default=BEFORE_REF, help="the code before this change")
    args = ap.parse_args(argv)
    sz = QUICK if args.quick else FULL
    rounds = args.rounds or sz.rounds
    stdlib = sysconfig.get_paths()["stdlib"]
    cfg = config("stdlib", [f"{stdlib}/{sz.stdlib_glob}"])
    info = _daemon.machine()
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    loads: dict[str, list[float]] = {"baseline": [], "before": [], "new": []}
    cpus: dict[str, list[float]] = {k: [] for k in loads}
    with tempfile.TemporaryDirectory(prefix="ifmem-bench-firstbuild-") as tmp:
        work = Path(tmp)
        codes: dict[str, Path | None] = {"new": None}
        for name, ref in (("baseline", args.baseline_ref), ("before", args.before_ref)):
            (work / name).mkdir()
            codes[name] = extract_baseline(ref, work / name)
        order = list(loads)
        for i in range(rounds):
            for name in order[i % 3 :] + order[: i % 3]:
                note(f"round {i + 1}/{rounds}: {name}")
                load, cpu = one_build(codes[name], work / f"{name}-{i}", cfg)
                loads[name].append(load)
                cpus[name].append(cpu)
    load_after = os.getloadavg()[0]
    m = {k: median(v) for k, v in loads.items()}
    c = {k: median(v) for k, v in cpus.items()}
    label = "full load, baseline"
    results = [
        Result("stdlib first build, shard load_ms", "s", m["new"], m["baseline"], label,
               "≤ baseline", m["new"] <= m["baseline"]),
        Result("stdlib first build, shard CPU", "s", c["new"], c["baseline"], label),
        Result("  before this change: load_ms", "s", m["before"], m["baseline"], label),
        Result("  before this change: CPU", "s", c["before"], c["baseline"], label),
    ]  # fmt: skip
    mode = "quick" if args.quick else "full"
    print(f"\nifmem first-build benchmark — {mode} run, {rounds} round(s); baseline "
          f"{args.baseline_ref}, before {args.before_ref}")  # fmt: skip
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['platform']}")
    print(f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after\n")
    print(table(results))
    print()
    for name in loads:
        shown = ", ".join(f"{x:.2f}" for x in loads[name])
        spent = ", ".join(f"{x:.2f}" for x in cpus[name])
        print(f"  {name}: load_ms s [{shown}], CPU s [{spent}]")
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        machine = info | {"loadavg_1min": [load_before, load_after]}
        results_json = [asdict(r) for r in results]
        payload = {"machine": machine, "results": results_json, "loads": loads, "cpus": cpus}
        args.json.write_text(json.dumps(finite(payload), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
