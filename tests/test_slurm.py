"""The generated launch/slurm.sbatch on a real single-node SLURM cluster (started here, without systemd):
it trains to the end, and the time-limit signal mid-run gives requeue -> resume -> completion."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import torch

from conftest import make_project, run_python
from slurm_cluster import LocalSlurm

# As generated, but for the test machine: its two CPUs, and a time limit (the partition stays the default).
SPEC = {
    "data.dataset": "synthetic",
    "data.synthetic_samples": 1280,
    "cluster.gpus": 2,
    "cluster.slurm.enabled": True,
    "cluster.slurm.cpus_per_task": 2,
    "cluster.slurm.time": "00:10:00",
}


def job_output(project: Path, job: str) -> str:
    path = project / f"{project.name}-{job}.out"
    return path.read_text(errors="replace") if path.exists() else ""


def files_under(folder: Path) -> dict[str, bytes]:
    """Every file under folder: its path relative to folder -> its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_the_generated_sbatch_trains_to_the_end(cluster: LocalSlurm, tmp_path: Path) -> None:
    project = make_project(tmp_path / "slurmjob", SPEC)
    job = cluster.submit(
        project / "launch/slurm.sbatch", "--max-epochs", "2", "--limit-train-batches", "5", cwd=project
    )
    info = cluster.wait(job, timeout=300)
    output = job_output(project, job)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), output[-3000:]
    assert output.count("Test: test_loss") == 1
    state = torch.load(project / f"outputs/slurm-{job}/checkpoints/last.pt", weights_only=True)
    assert state["global_step"] == 10 and len(state["rng"]) == 2


def test_the_time_limit_signal_requeues_the_job_which_resumes_its_own_run_and_completes(
    cluster: LocalSlurm, tmp_path: Path
) -> None:
    """Another run in the same outputs folder holds the newest checkpoint (the one `--resume last` alone would
    take): the requeued job still continues its own run, slurm-JOB, and leaves the other run's files as they were."""
    project = make_project(tmp_path / "requeue", {**SPEC, "model.arch": "cnn"})
    other = project / "outputs/other"
    trained = run_python(project, "train.py", "--device", "cpu", "--max-steps", "2", "--run-name", "other")
    assert trained.returncode == 0, trained.stderr[-3000:]
    future = time.time() + 24 * 3600  # saved "later" than anything the job saves
    for path in (other / "checkpoints").iterdir():
        os.utime(path, (future, future))
    before = files_under(other)
    assert "checkpoints/last.pt" in before

    args = ("--max-epochs", "6", "--log-every-n-steps", "2", "--no-progress-bar")
    job = cluster.submit(project / "launch/slurm.sbatch", *args, cwd=project)
    deadline = time.monotonic() + 240
    while "step " not in job_output(project, job):  # the first validation: training is well under way
        assert cluster.job_info(job)["JobState"] in ("PENDING", "RUNNING"), job_output(project, job)
        assert time.monotonic() < deadline, "training never got going"
        time.sleep(0.5)
    cluster.run("scancel", "--signal=USR2", "--full", job)

    info = cluster.wait(job, timeout=600)
    output = job_output(project, job)
    assert (info["JobState"], info["Restarts"]) == ("COMPLETED", "1"), output[-4000:]
    stopped_at = int(re.search(r"Saved a checkpoint at step (\d+) for the requeued job", output).group(1))
    assert f"Requeueing job {job}" in output
    assert re.search(rf"Resumed from outputs/slurm-{job}/checkpoints/last.pt at epoch \d+, step {stopped_at}\b", output)
    assert output.count("Test: test_loss") == 1, "the first run stopped before its test pass; the second finished"
    state = torch.load(project / f"outputs/slurm-{job}/checkpoints/last.pt", weights_only=True)
    assert state["global_step"] == 6 * 9  # 1152 training samples, 64 x 2 per step: 9 steps an epoch
    assert sorted(path.name for path in (project / "outputs").iterdir()) == ["other", f"slurm-{job}"]
    assert files_under(other) == before, "the other run is untouched"
