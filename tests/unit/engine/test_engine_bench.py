"""The engine benchmark still runs and prints its figures (its speed is measured, not asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_the_benchmark_prints_its_figure_line() -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "bench.engine", "--events", "3000", "--rules", "50"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=True,
    )
    lines = finished.stdout.splitlines()
    assert re.fullmatch(r"engine_eps=\d+ rules=50 events=3000", lines[0])
    figures = dict(line.split("=", 1) for line in lines[1:])
    assert int(figures["engine_decisions"]) > 0
