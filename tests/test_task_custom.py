"""The custom preset: data.py and model.py stubs that say what to fill in and run out of the box on random
tensors of [data] input_shape and num_classes, with the custom stub model or an mlp; predict.py on a saved tensor."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import make_project, run_python

CPU = ("--device", "cpu", "--no-progress-bar")
CUSTOM = {
    "data.dataset": "custom",
    "model.arch": "custom",
    "data.input_shape": [2, 6, 5],
    "data.num_classes": 4,
    "data.synthetic_samples": 600,
    "data.batch_size": 32,
}


@pytest.fixture(scope="module")
def custom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("custom") / "custom", CUSTOM)


def test_stubs_are_clean_say_what_to_fill_in_and_their_smoke_test_passes(custom: Path) -> None:
    for command in (
        ["ruff", "check", "--no-cache", "."],
        ["black", "--check", "."],
        [sys.executable, "-m", "pytest", "-q", "tests"],
    ):
        result = subprocess.run(command, cwd=custom, capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, f"{command}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    data, model = (custom / "data.py").read_text(), (custom / "model.py").read_text()
    assert "INPUT_SHAPE = [2, 6, 5]" in data and "NUM_CLASSES = 4" in data
    assert "class CustomDataset(Dataset)" in data and data.count("# Fill in") == 3
    assert "class Net(nn.Module)" in model and "# Replace" in model
    assert "# Your loss" in (custom / "steps.py").read_text()


def test_the_stub_dataset_runs_before_a_line_is_written_and_learns(custom: Path, tmp_path: Path) -> None:
    # No --dataset: the "custom" dataset itself, whose stand-in serves the same random samples as synthetic.
    result = run_python(custom, "train.py", *CPU, "--fast-dev-run")
    assert result.returncode == 0, result.stderr
    assert "Test: test_loss" in result.stdout
    out = tmp_path / "out"
    result = run_python(custom, "train.py", *CPU, "--max-epochs", "4", "--lr", "0.01", "--out-dir", str(out))
    assert result.returncode == 0, result.stderr
    assert float(re.findall(r"val_acc ([0-9.]+)", result.stdout)[-1]) > 0.4, result.stdout[-1000:]  # chance: 0.25

    inputs = torch.randn(37, 2, 6, 5)
    torch.save(inputs, tmp_path / "inputs.pt")
    result = run_python(custom, "predict.py", str(tmp_path / "inputs.pt"), "--out-dir", str(out), "--batch-size", "8")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(result.stdout.splitlines()))
    assert len(rows) == 37 and list(rows[0]) == ["index", "prediction", "probability"]
    assert [int(r["index"]) for r in rows] == list(range(37))
    assert all(int(r["prediction"]) in range(4) and 0.25 <= float(r["probability"]) <= 1 for r in rows)

    torch.save(inputs[0], tmp_path / "one.pt")  # one input, no batch dimension
    result = run_python(
        custom, "predict.py", str(tmp_path / "one.pt"), "--out-dir", str(out), "--output", str(tmp_path / "p.csv")
    )
    assert result.returncode == 0, result.stderr
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 2

    torch.save(torch.randn(3, 2, 6, 4), tmp_path / "wrong.pt")
    result = run_python(custom, "predict.py", str(tmp_path / "wrong.pt"), "--out-dir", str(out))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "shape [3, 2, 6, 4], where the model takes (N, *[2, 6, 5])" in result.stderr


def test_custom_data_with_an_mlp(tmp_path: Path) -> None:
    project = make_project(tmp_path / "mlp", {**CUSTOM, "model.arch": "mlp"})
    for tool in (["ruff", "check", "--no-cache", "."], ["black", "--check", "."]):
        result = subprocess.run(tool, cwd=project, capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, f"{tool}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    result = run_python(project, "train.py", *CPU, "--fast-dev-run", "--dataset", "synthetic")
    assert result.returncode == 0, result.stderr
    assert "Test: test_loss" in result.stdout
