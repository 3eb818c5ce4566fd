"""benchmarks/run.py --quick runs to the end and reports every figure with a ratio (timings are noisy: the targets
themselves are not asserted here).

    pytest tests/test_benchmark_run.py
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = [
    "`ltgen new p --gpus 4`",
    "`ltgen regen` (nothing changed)",
    "`ltgen --help`",
    "`ltgen --version`",
    "`ltgen check`",
    "emitted loop, per step (tiny task)",
    "MNIST-shaped epoch, time",
    "MNIST-shaped epoch, peak RSS",
    "`train.py --fast-dev-run`",
]


def test_quick_run_reports_every_figure(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "results.md").read_text()
    for label in ROWS:
        row = re.search(rf"^\| {re.escape(label)} \|.*\| (\d+\.\d+)x \|.*\| (yes|no) \|$", report, re.MULTILINE)
        assert row, f"no row with a ratio for {label} in:\n{report}"
        assert float(row[1]) > 0
    for heading in ("## 1.", "## 2.", "## 3.", "## 4."):
        assert heading in report
    assert re.search(r"Python \d+\.\d+.*torch \S+.*ltgen \S+", report)  # machine and versions stamped
    verdict = result.stdout.rstrip().splitlines()[-1]
    assert verdict == "all targets met" or verdict.startswith("targets missed: "), verdict
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "results.png").stat().st_size > 0
    else:  # the chart is optional, but its absence is said, not silent
        assert "chart skipped: matplotlib is not installed" in report
        assert not (tmp_path / "results.png").exists()
