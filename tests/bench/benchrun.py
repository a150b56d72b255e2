"""A benchmark's `--quick` run, as a user starts it: what the smoke tests share."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[2] / "bench"


@dataclass(frozen=True)
class QuickRun:
    """What a benchmark printed, and the document its `--json` wrote."""

    stdout: str
    doc: dict[str, Any]


QuickRunner = Callable[..., QuickRun]


def runner(tmp_path: Path) -> QuickRunner:
    """Runs `bench/SCRIPT --quick ARGS… --json FILE`; it must exit 0 and not abort."""

    def run(script: str, *args: str, timeout: float = 170) -> QuickRun:
        out = tmp_path / f"{Path(script).stem}.json"
        proc = subprocess.run(
            [sys.executable, str(BENCH / script), "--quick", *args, "--json", str(out)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert "benchmark aborted" not in proc.stderr, proc.stderr
        return QuickRun(proc.stdout, json.loads(out.read_text()))

    return run
