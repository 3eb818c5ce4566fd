"""Run folders: every run of an emitted project writes only in --out-dir/RUN/, and --resume names the run it continues."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import make_project, run_python

SPEC = {
    "data.dataset": "synthetic",
    "data.synthetic_samples": 640,
    "model.hidden_sizes": [16],
    "trainer.max_epochs": 1,
    "trainer.num_sanity_val_steps": 0,
    "logging.log_every_n_steps": 2,
    "logging.progress_bar": False,
}
QUICK = ("--device", "cpu", "--limit-val-batches", "2", "--limit-test-batches", "2")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("runs") / "runs_demo", SPEC)


def train(project: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    """python train.py into `out`; fails the test unless it exits 0."""
    result = run_python(project, "train.py", "--out-dir", str(out), *QUICK, *args)
    assert result.returncode == 0, result.stderr
    return result


def digests(folder: Path) -> dict[str, str]:
    """Every file under folder, by relative path, with the SHA-256 of its bytes."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_two_fresh_runs_write_two_folders_and_leave_each_other_byte_identical(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    train(project, out)
    first = digests(out / "version_0")
    train(project, out, "--lr", "0.01")
    assert sorted(p.name for p in out.iterdir()) == ["version_0", "version_1"]
    assert digests(out / "version_0") == first
    for run in ("version_0", "version_1"):  # each a TensorBoard run of its own, with the run's every file inside
        files = digests(out / run)
        assert any(name.startswith("events.out.tfevents") for name in files)
        assert {"config.json", "metrics.csv", "checkpoints/last.pt"} <= set(files)
    assert json.loads((out / "version_1" / "config.json").read_text())["config"]["lr"] == 0.01


def test_resume_last_continues_the_newest_run_and_says_which(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    train(project, out, "--run-name", "older")
    train(project, out, "--run-name", "newer")
    older = digests(out / "older")
    resumed = train(project, out, "--resume", "last", "--max-epochs", "2")
    assert "continuing newer, the newest run" in resumed.stderr
    assert f"Resumed from {out / 'newer' / 'checkpoints' / 'last.pt'} at epoch 1" in resumed.stdout
    assert digests(out / "older") == older
    # Resuming the older run by name makes it the newest: --resume last now continues it.
    train(project, out, "--resume", "older", "--max-epochs", "2")
    again = train(project, out, "--resume", "last", "--max-epochs", "3")
    assert "continuing older" in again.stderr


def test_fast_dev_run_writes_nothing(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    train(project, out, "--fast-dev-run")
    assert not out.exists()


def test_run_names_that_would_mix_runs_are_refused_with_the_fix(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    train(project, out, "--run-name", "baseline")
    before = digests(out)
    taken = run_python(project, "train.py", "--out-dir", str(out), *QUICK, "--run-name", "baseline")
    assert taken.returncode == 2
    assert "--run-name baseline: a run of that name has logs or checkpoints in" in taken.stderr
    assert "--resume baseline" in taken.stderr
    unknown = run_python(project, "train.py", "--out-dir", str(out), *QUICK, "--resume", "baselin")
    assert unknown.returncode == 2
    assert "--resume baselin: no run of that name" in unknown.stderr and "baseline" in unknown.stderr
    two = run_python(project, "train.py", "--out-dir", str(out), *QUICK, "--resume", "baseline", "--run-name", "x")
    assert two.returncode == 2 and "name two runs" in two.stderr
    for bad in ("a/b", "../up", "last", ".hidden"):
        refused = run_python(project, "train.py", "--out-dir", str(out), *QUICK, "--run-name", bad)
        assert refused.returncode == 2 and "run name" in refused.stderr, bad
        assert "Traceback" not in refused.stderr
    assert digests(out) == before


def test_a_run_name_whose_start_failed_before_logging_can_be_used_again(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    (out / "retry").mkdir(parents=True)
    (out / "retry" / "config.json").write_text("{}")  # what a start that failed on its data leaves
    train(project, out, "--run-name", "retry")
    assert (out / "retry" / "checkpoints" / "last.pt").exists()
    assert json.loads((out / "retry" / "config.json").read_text())["run"] == "retry"


def test_config_json_records_the_config_spec_command_torch_and_git_state(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    train(project, out, "--run-name", "outside-git", "--seed", "7")
    record = json.loads((out / "outside-git" / "config.json").read_text())
    assert record["config"]["seed"] == 7 and record["config"]["out_dir"] == str(out)
    assert record["spec"] == (project / "ltgen.toml").read_text()
    assert record["command"][1:] == ["--out-dir", str(out), *QUICK, "--run-name", "outside-git", "--seed", "7"]
    assert record["torch"].split("+")[0].count(".") == 2 and record["git"] is None

    repo = tmp_path / "repo"
    subprocess.run(["cp", "-r", str(project), str(repo)], check=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    train(repo, out, "--run-name", "clean")
    (repo / "model.py").write_text((repo / "model.py").read_text() + "\n# an edit\n")
    train(repo, out, "--run-name", "edited")
    assert json.loads((out / "clean" / "config.json").read_text())["git"] == {"commit": commit, "dirty": False}
    assert json.loads((out / "edited" / "config.json").read_text())["git"] == {"commit": commit, "dirty": True}


def test_resume_from_a_checkpoint_path_continues_its_run_or_starts_a_new_one(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    train(project, out, "--run-name", "a")
    checkpoint = out / "a" / "checkpoints" / "last.pt"
    steps = torch.load(checkpoint, weights_only=True)["global_step"]
    train(project, out, "--resume", str(checkpoint), "--max-epochs", "2")
    assert sorted(p.name for p in out.iterdir()) == ["a"]
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 2 * steps

    elsewhere = tmp_path / "kept.pt"
    elsewhere.write_bytes((out / "a" / "checkpoints" / "last.pt").read_bytes())
    train(project, out, "--resume", str(elsewhere), "--max-epochs", "3")
    assert sorted(p.name for p in out.iterdir()) == ["a", "version_0"]
    assert (out / "version_0" / "config.json").exists()


def test_runs_started_together_never_share_a_folder(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    command = [sys.executable, "train.py", "--out-dir", str(out), *QUICK, "--max-steps", "2"]
    started = [subprocess.Popen(command, cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in "ab"]
    for process in started:
        assert process.wait(timeout=300) == 0, process.stderr.read()
    assert sorted(p.name for p in out.iterdir()) == ["version_0", "version_1"]
    for run in out.iterdir():
        assert (run / "checkpoints" / "last.pt").exists()


def test_predict_uses_the_newest_run(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    train(project, out, "--run-name", "first")
    time.sleep(0.05)
    train(project, out, "--run-name", "second", "--seed", "3")
    image = tmp_path / "digit.png"
    from PIL import Image

    Image.new("L", (28, 28), 200).save(image)
    result = run_python(project, "predict.py", str(image), "--out-dir", str(out), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert str(out / "second" / "checkpoints") in result.stderr + result.stdout
    empty = run_python(project, "predict.py", str(image), "--out-dir", str(tmp_path / "none"), "--device", "cpu")
    assert empty.returncode == 1 and "No checkpoint in" in empty.stderr
