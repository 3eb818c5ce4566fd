"""[debug] profiler: `python train.py --profile N` runs torch.profiler over N training steps after 3 of warm-up, writes
a trace TensorBoard's profiler plugin and Perfetto open (a Chrome-trace JSON) and a table of the ops that took the
most time (printed, and saved as ops.txt), then stops: no test pass, and no run folder, checkpoint or log that a
real run or --resume last could trip over. Off (the default), train.py has no trace of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import rendered, run_python, spec_text
from test_module_shapes import golden_project

ENV = {"OMP_NUM_THREADS": "1"}
SYNTHETIC = {"debug.profiler": True, "data.synthetic_samples": 600, "data.batch_size": 16}


def files(project: Path) -> set[str]:
    """The files in the project's folder, by their path in it."""
    return {str(path.relative_to(project)) for path in project.rglob("*") if path.is_file()}


@pytest.mark.parametrize(
    ("golden", "profile_dir"),
    [
        ("mnist", "outputs/profile"),  # runs write in --out-dir, and so does the profile
        ("minimal", "profile"),  # no checkpoints and no logs: the project writes no run folders
    ],
)
def test_profile_traces_n_steps_after_the_warm_up_prints_the_slowest_ops_and_writes_nothing_else(
    tmp_path: Path, golden: str, profile_dir: str
) -> None:
    project = golden_project(golden, tmp_path / golden, SYNTHETIC)
    generated = files(project)
    result = run_python(project, "train.py", "--device", "cpu", "--dataset", "synthetic", "--profile", "2", env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]

    (trace,) = (name for name in files(project) - generated if name.endswith(".pt.trace.json"))
    assert files(project) - generated == {trace, f"{profile_dir}/ops.txt"}, "no run folder, checkpoint or log"
    assert trace.startswith(f"{profile_dir}/")

    events = json.loads((project / trace).read_text())["traceEvents"]
    names = {event.get("name") for event in events}
    assert "aten::addmm" in names, "the MLP's Linear layers"
    # Step 0 is skipped and steps 1-2 warm the profiler up; steps 3 and 4 are the 2 asked for, then the run stops.
    steps = sorted(name for name in names if str(name).startswith("ProfilerStep#"))
    assert steps == ["ProfilerStep#3", "ProfilerStep#4"]

    table = (project / profile_dir / "ops.txt").read_text()
    assert "Self CPU %" in table and "Self CPU time total" in table and "aten::" in table
    assert table.strip() in result.stdout
    assert "Test:" not in result.stdout, "a profiling run ends after its steps"


def test_a_profile_longer_than_an_epoch_times_no_validation(tmp_path: Path) -> None:
    """Epochs of 2 batches, 5 steps profiled: the epochs' ends validate nothing, and no sanity check runs."""
    project = golden_project("mnist", tmp_path / "mnist", SYNTHETIC)
    args = ("--device", "cpu", "--dataset", "synthetic", "--profile", "2", "--limit-train-batches", "2")
    result = run_python(project, "train.py", *args, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "val_loss" not in result.stdout + result.stderr
    table = (project / "outputs/profile/ops.txt").read_text()
    calls = {line.split()[0]: line.split()[-1] for line in table.splitlines() if line.split()[:1] == ["aten::addmm"]}
    assert calls == {"aten::addmm": "4"}, "2 steps of 2 Linear layers, forward only (backward uses mm)"


def test_profile_refuses_to_resume_a_run(tmp_path: Path) -> None:
    project = golden_project("mnist", tmp_path / "mnist", SYNTHETIC)
    result = run_python(project, "train.py", "--device", "cpu", "--profile", "2", "--resume", "last", env=ENV)
    assert result.returncode == 2
    assert result.stderr.strip() == "--profile profiles the first steps of a fresh run: drop --resume"


def test_profile_must_be_a_count_of_steps(tmp_path: Path) -> None:
    project = golden_project("mnist", tmp_path / "mnist", SYNTHETIC)
    result = run_python(project, "train.py", "--profile", "0", env=ENV)
    assert result.returncode == 2 and "--profile: 0 is out of range" in result.stderr, result.stderr


def test_off_train_py_has_no_profiler_code() -> None:
    train_py = rendered(spec_text("mnist"))["train.py"]
    assert "profile" not in train_py.lower()
    on = rendered(spec_text("mnist", {"debug.profiler": True}))["train.py"]
    assert "torch.profiler.profile(" in on and "--profile" in on
