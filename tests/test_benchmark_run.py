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
ANCHORS = ROOT.parent / "shared" / "anchors"  # run.py's default --anchors
ROWS = [  # figures 1, 4, 5 and 6: against copier's import, benchmarks/startup_anchor.py, DDP's state, file + small run
    "`ltgen new p --gpus 4`",
    "`ltgen regen` (nothing changed)",
    "`ltgen --help`",
    "`ltgen --version`",
    "`ltgen check`",
    "`train.py --fast-dev-run`",
    "FSDP, state per rank (2 ranks)",
    "training on a 20 MB CSV, peak RSS",
    "text training on a 20 MB corpus, peak RSS",  # figures 7 and 8: their own scripts, --quick
    "`prepare.py --workers 1`, 20 MB",
    "`prepare.py --workers 2`, 20 MB",
    "GPT step, activation checkpointing, peak memory",
    "GPT step, activation checkpointing, time",
]
ANCHORED_ROWS = [  # figures 2 and 3: against the shared anchors' floor.py and plain.py
    "emitted loop, per step (tiny task)",
    "MNIST-shaped epoch, time",
    "MNIST-shaped epoch, peak RSS",
]


def run_quick(out: Path, *args: str) -> tuple[subprocess.CompletedProcess, str]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result, (out / "results.md").read_text()


def test_quick_run_reports_every_figure(tmp_path: Path) -> None:
    result, report = run_quick(tmp_path)
    with_anchors = (ANCHORS / "floor.py").is_file() and (ANCHORS / "plain.py").is_file()
    if not with_anchors:  # a checkout without ../shared/anchors: the report says what it could not measure
        assert "figures 2 and 3 not measured: no floor.py and plain.py in" in report
    for label in ROWS + (ANCHORED_ROWS if with_anchors else []):
        row = re.search(rf"^\| {re.escape(label)} \|.*\| (\d+\.\d+)x \|.*\| (yes|no) \|$", report, re.MULTILINE)
        assert row, f"no row with a ratio for {label} in:\n{report}"
        assert float(row[1]) > 0
    for heading in ("## 1.", "## 2.", "## 3.", "## 4.", "## 5.", "## 6.", "## 7.", "## 8."):
        assert heading in report
    assert re.search(r"Python \d+\.\d+.*torch \S+.*ltgen \S+", report)  # machine and versions stamped
    verdict = result.stdout.rstrip().splitlines()[-1]
    if not with_anchors:
        verdict = verdict.removesuffix(" (figures 2 and 3 not measured)")
    assert verdict == "all targets met" or verdict.startswith("targets missed: "), verdict
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "results.png").stat().st_size > 0
    else:  # the chart is optional, but its absence is said, not silent
        assert "chart skipped: matplotlib is not installed" in report
        assert not (tmp_path / "results.png").exists()


def test_without_the_anchors_figures_2_and_3_are_said_to_be_missing(tmp_path: Path) -> None:
    result, report = run_quick(tmp_path / "out", "--rounds", "1", "--anchors", str(tmp_path / "nowhere"))
    assert f"figures 2 and 3 not measured: no floor.py and plain.py in {tmp_path / 'nowhere'}" in report
    assert not any(f"| {label} |" in report for label in ANCHORED_ROWS)
    assert all(f"| {label} |" in report for label in ROWS)
    assert result.stdout.rstrip().endswith("(figures 2 and 3 not measured)")
