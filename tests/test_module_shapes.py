"""[debug] param_summary (on by default): the summary train.py prints at start gives every top-level layer, beside
its parameter count, the shapes going in and out of it for one batch of the data's real shapes (Lightning's
ModelSummary with example_input_array), for the model of every golden project; and running that batch changes
nothing of training: the weights after a few steps are bit for bit those of a run without the summary."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import GOLDEN, assert_identical, rendered, run_dir, run_python
from ltgen import place, spec

GOLDENS = sorted(p.name for p in GOLDEN.iterdir() if (p / "ltgen.toml").is_file())
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # the runs share the CPU: one thread each
BATCH = 4
# Small versions of the goldens' models (the shapes are what is checked, not the model's size).
SMALL = {
    "gpt": {"model.n_layer": 2, "model.n_head": 2, "model.n_embd": 32, "data.block_size": 16},
    "resnet": {"model.depth": 10, "model.width": 8},
}
# A row of each golden's summary, as a reader checks it: layer, type, shape in, shape out.
ROWS = {
    "cifar10": "stage4 Sequential [4, 32, 8, 8] [4, 64, 4, 4]",  # CIFAR-10's 32x32 images, halved by stages 2-4
    "cluster": "1 Linear [4, 784] [4, 128]",  # MNIST's 28x28 images, flattened
    "demo": "0 Conv2d [4, 1, 28, 28] [4, 16, 28, 28]",
    "fsdp": "lm_head Linear [4, 16, 32] [4, 16, 29]",  # block_size 16, n_embd 32, the synthetic text's 29 characters
    "gan": "discriminator Discriminator [4, 1, 28, 28] [4]",  # one logit per image
    "minimal": "3 Linear [4, 128] [4, 10]",
    "mnist": "4 Linear [4, 128] [4, 10]",
    "tabular": "1 Linear [4, 8] [4, 128]",  # the synthetic table's 8 features
    "textlm": "blocks ModuleList [4, 16, 32] [4, 16, 32]",  # a ModuleList: its first block's input, its last's output
}
SHAPES = r"\[[\d, ]*\](?:, \[[\d, ]*\])*"  # [4, 784], or several: [4, 16], [16]
# 3 steps on synthetic images, with one batch of validation and of test.
RUN = ["--device", "cpu", "--dataset", "synthetic", "--batch-size", "8", "--max-steps", "3"]
RUN += ["--num-sanity-val-steps", "0", "--limit-val-batches", "1", "--limit-test-batches", "1"]
ROW = re.compile(rf"^(\S+) +(\w+) +[\d,]+  ({SHAPES}) +({SHAPES})$")


def golden_project(name: str, path: Path, overrides: dict[str, object]) -> Path:
    """Golden project `name` as `ltgen new` writes it from its ltgen.toml, with a smaller model and `overrides`."""
    text = (GOLDEN / name / "ltgen.toml").read_text()
    arch = spec.parse(text)["model"]["arch"]
    text = spec.with_values(text, {**SMALL.get(arch, {}), "logging.progress_bar": False, **overrides})
    place.write_new(rendered(text), text, path)
    return path


@pytest.fixture(scope="module")
def fast_dev_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess]:
    """`python train.py --fast-dev-run` of every golden on synthetic data (the summary on), run side by side."""
    started = {}
    for name in GOLDENS:
        project = golden_project(name, tmp_path_factory.mktemp(name) / name, {"debug.param_summary": True})
        command = [
            "train.py",
            "--fast-dev-run",
            "--device",
            "cpu",
            "--dataset",
            "synthetic",
            "--batch-size",
            str(BATCH),
        ]
        started[name] = subprocess.Popen(
            [sys.executable, *command], cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
        )
    finished = {}
    for name, process in started.items():
        stdout, stderr = process.communicate(timeout=600)
        finished[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return finished


@pytest.mark.parametrize("name", GOLDENS)
def test_the_summary_gives_every_top_level_layer_its_input_and_output_shapes(
    name: str, fast_dev_runs: dict[str, subprocess.CompletedProcess]
) -> None:
    result = fast_dev_runs[name]
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("layer "))
    end = next(i for i, line in enumerate(lines) if " parameters (" in line)
    assert lines[header].split() == ["layer", "type", "params", "in", "out"]
    layers = lines[header + 1 : end]
    assert layers, result.stdout
    rows = [ROW.match(line) for line in layers]
    assert all(rows), f"a layer without both shapes:\n{result.stdout}"  # a layer the forward pass never ran shows -
    readable = {f"{row[1]} {row[2]} {row[3]} {row[4]}" for row in rows}
    assert ROWS[name] in readable, result.stdout


def test_the_summary_changes_nothing_of_training(tmp_path: Path) -> None:
    """A ResNet with batch norm, dropout and augmentation: the summary's forward pass in eval mode leaves the
    running statistics and every random stream as they were, so the weights, the optimizer and the random states
    saved after 3 steps are the same bit for bit with the summary and without it."""
    states = []
    for summary in (True, False):
        overrides = {"debug.param_summary": summary, "model.dropout": 0.5, "trainer.precision": "32"}
        project = golden_project("cifar10", tmp_path / f"summary_{summary}", overrides)
        assert ("example_input(" in (project / "train.py").read_text()) is summary
        out = tmp_path / f"out_{summary}"
        result = run_python(project, "train.py", *RUN, "--out-dir", str(out), env={"OMP_NUM_THREADS": "1"})
        assert result.returncode == 0, result.stderr[-3000:]
        assert ("parameters (" in result.stdout) is summary
        states.append(torch.load(run_dir(out) / "checkpoints" / "last.pt", weights_only=False))
    with_summary, without = states
    for key in ("model", "optimizer", "rng"):
        assert_identical(with_summary[key], without[key], key)
