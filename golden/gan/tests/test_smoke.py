"""Smoke test: does the whole loop run? One batch of train, val and test on synthetic data."""

import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def test_fast_dev_run(tmp_path: Path) -> None:
    out_dir = tmp_path / "outputs"
    command = [
        sys.executable,
        "train.py",
        "--fast-dev-run",
        "--device",
        "cpu",
        "--dataset",
        "synthetic",
        "--out-dir",
        str(out_dir),
    ]
    result = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    assert "Test: test_loss" in result.stdout
    assert not out_dir.exists(), "--fast-dev-run must write nothing"
