"""The generated launch/sweep.sbatch on a real single-node SLURM cluster (tests/slurm_cluster.py): a job array of
4 trials, 2 at once; one running task is sent the requeue signal mid-trial, requeues itself and resumes its trial,
which ends bit for bit as the same trial run uninterrupted; all 4 finish and `python sweep.py report` ranks them."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from conftest import make_project, run_python
from slurm_cluster import LocalSlurm
from test_sweep import GRID, add_test_hooks, assert_same_weights, trial

# The grid of tests/test_sweep.py (4 trials, parallel = 2), with SLURM: one CPU and one (pretend) GPU a task, so
# the test cluster's 2 CPUs and 2 GPUs run 2 tasks at once.
SPEC = {**GRID, "cluster.slurm.enabled": True, "cluster.slurm.cpus_per_task": 1, "cluster.slurm.time": "00:10:00"}
# A SLURM project's train.py stops for a signal at its next logging step: one every 2 steps.
FLAGS = ("--log-every-n-steps", "2")


def task_output(project: Path, job: str, task: int) -> str:
    path = project / f"{project.name}-sweep_{job}_{task}.out"
    return path.read_text(errors="replace") if path.exists() else ""


def wait_for_array(cluster: LocalSlurm, job: str, timeout: float) -> None:
    """Until no task of the array is pending or running (a requeued task is pending again)."""
    deadline = time.monotonic() + timeout
    while cluster.run("squeue", "--noheader", "--array", "--jobs", job, check=False).stdout.strip():
        assert time.monotonic() < deadline, f"job array {job} not done after {timeout} s"
        time.sleep(1)


def test_a_sweep_array_requeues_a_signalled_trial_which_resumes_bit_for_bit_and_all_4_finish(
    cluster: LocalSlurm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = add_test_hooks(make_project(tmp_path / "slurmsweep", SPEC))
    script = (project / "launch/sweep.sbatch").read_text()
    assert "#SBATCH --array=0-3%2\n" in script and "#SBATCH --output=%x_%A_%a.out\n" in script
    monkeypatch.setenv("SLOW_STEP", "0.3")  # sbatch passes the environment on: time to signal a trial mid-run
    job = cluster.submit(project / "launch/sweep.sbatch", *FLAGS, cwd=project)  # train.py flags for every trial
    sweep_dir = project / "outputs/sweep-1"
    log = sweep_dir / "trial-000/train.log"
    deadline = time.monotonic() + 180
    while not (log.exists() and "step 8:" in log.read_text()):  # the first epoch's validation: mid-trial
        assert time.monotonic() < deadline, task_output(project, job, 0)[-3000:]
        time.sleep(0.2)
    # The requeue signal to the task's step, as SLURM sends it before the time limit. (scancel of the array task
    # itself, as tests/test_slurm.py signals its job, gets "Job can not be altered now" here and tries again and
    # again for 18 s, signalling the requeued trial too.)
    cluster.run("scancel", "--signal=USR2", f"{job}_0.0")

    wait_for_array(cluster, job, timeout=300)
    for task in range(4):
        info = cluster.job_info(f"{job}_{task}")
        restarts = "1" if task == 0 else "0"
        assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", restarts), task_output(
            project, job, task
        )[-3000:]
        assert trial(sweep_dir, task)["status"] == "finished"
    output = task_output(project, job, 0)
    assert f"Requeueing task {job}_0" in output
    stopped_at = int(re.search(r"Saved a checkpoint at step (\d+) for the requeued job", output)[1])
    assert 8 <= stopped_at < 16
    assert re.search(rf"Resumed from \S+trial-000/checkpoints/last.pt at epoch \d, step {stopped_at}\b", output)
    assert output.count("Test: test_loss") == 1, "the first run stopped before its test pass; the second finished"

    reference = tmp_path / "reference"  # trial 0 again, here and uninterrupted
    rerun = run_python(
        project, "sweep.py", "trial", "0", "--out-dir", str(reference), "--", *FLAGS, env={"SLOW_STEP": "0"}
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert_same_weights(sweep_dir / "trial-000", reference / "sweep-1/trial-000")

    report = run_python(project, "sweep.py", "report")
    assert report.returncode == 0, report.stderr
    ranked = re.findall(r"^(\d) +trial-00(\d) .* finished$", report.stdout, flags=re.MULTILINE)
    assert [rank for rank, _ in ranked] == ["1", "2", "3", "4"], report.stdout
    assert sorted(index for _, index in ranked) == ["0", "1", "2", "3"]
