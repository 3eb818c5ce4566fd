"""benchmarks/gpu.py runs on a CUDA machine only, once; its CPU-side self-check (--dry-run) runs here: every golden
at every precision generates and its command line is the project's, one step trains on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.py"
GOLDENS = ("mnist", "demo", "cluster", "minimal", "cifar10", "textlm", "tabular")
PRECISIONS = ("32", "16-mixed", "bf16-mixed")
NO_CUDA = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # as on CI's machines, also where a GPU is at hand


def test_dry_run_generates_every_check_and_trains_one_step_on_the_cpu() -> None:
    command = [sys.executable, str(SCRIPT), "--dry-run"]
    result = subprocess.run(command, env=NO_CUDA, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    checks = {(line["check"], line["golden"], line["precision"]): line for line in lines}
    for golden in GOLDENS:
        for precision in PRECISIONS:
            line = checks[("run", golden, precision)]
            assert line["status"] in ("planned", "rendered") and line["ok"], line
            assert "--dataset synthetic" in line["command"] and "--device cpu" in line["command"], line
    for name in ("compile", "overhead", "gpt2_small", "batch_size_finder"):
        assert any(c == name and line["ok"] for (c, _, _), line in checks.items()), name
    step = checks[("cpu_step", "textlm", "32")]
    assert step["status"] == "passed" and step["weights_finite"] and step["tokens_per_s"] > 0, step
    assert checks[("hand_loop", "mnist", "32")]["status"] == "passed"
    assert "rendered" in result.stdout.splitlines()[-1]  # the summary table's last line counts the statuses


def test_without_cuda_it_refuses_to_run() -> None:
    command = [sys.executable, str(SCRIPT)]
    result = subprocess.run(command, env=NO_CUDA, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert "needs a CUDA device" in result.stderr and "--dry-run" in result.stderr
