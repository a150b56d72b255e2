"""Fixtures of the benchmarks' smoke tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchrun import QuickRunner, runner


@pytest.fixture
def quick_run(tmp_path: Path) -> QuickRunner:
    """Run a benchmark's `--quick` mode in this test's folder (see benchrun.runner)."""
    return runner(tmp_path)
