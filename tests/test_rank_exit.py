"""How a rank ends under torchrun (DDP and FSDP, 2 gloo ranks): with the run's exit status, and never through
Python's shutdown while the process group's threads are alive.

torch keeps those threads past destroy_process_group (DDP's and DTensor's internals hold on to the group). One
that lets go of a tensor after Python has begun to shut down aborts the rank with SIGABRT, so a finished run (a
SLURM job) is reported as failed. That race is rare, so these tests look at its cause: a sitecustomize.py records,
on each rank, the threads alive when Python's shutdown begins (its atexit handlers run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_project, run_dir

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
RUN = ("--device", "cpu", "--num-sanity-val-steps", "0", "--max-epochs", "1", "--limit-val-batches", "2")
# 600 synthetic images, batches of 16 per rank: 17 steps an epoch.
SPEC = {
    "data.dataset": "synthetic",
    "data.synthetic_samples": 600,
    "data.batch_size": 16,
    "model.dropout": 0.0,
    "trainer.precision": "32",
    "cluster.gpus": 2,
    "logging.progress_bar": False,
}
PROBE = """
import atexit, os, pathlib

if "RANK" in os.environ:  # a rank, not torchrun's agent
    probe = pathlib.Path(os.environ["EXIT_PROBE"])
    rank = os.environ["RANK"]
    (probe / f"started-{rank}").touch()

    def record_threads() -> None:
        tasks = pathlib.Path("/proc/self/task")
        names = [(task / "comm").read_text().strip() for task in tasks.iterdir()]
        (probe / f"shutdown-{rank}").write_text("\\n".join(names))

    atexit.register(record_threads)
"""


def torchrun(cwd: Path, probe: Path, *args: str) -> subprocess.CompletedProcess:
    """Run `args` on 2 ranks under torchrun, with the probe loaded into each rank."""
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(PROBE)
    path = os.pathsep.join(filter(None, [str(probe), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "EXIT_PROBE": str(probe), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*TORCHRUN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def threads_at_shutdown(probe: Path) -> dict[str, list[str]]:
    """For each rank that went through Python's shutdown, the names of its threads at that moment."""
    assert sorted(p.name for p in probe.glob("started-*")) == ["started-0", "started-1"], "the probe ran on both ranks"
    return {p.name: p.read_text().split("\n") for p in probe.glob("shutdown-*")}


def test_the_probe_sees_a_rank_that_goes_through_pythons_shutdown(tmp_path: Path) -> None:
    """The control: a script that returns normally after destroy_process_group is seen by the probe."""
    script = tmp_path / "plain.py"
    script.write_text(
        "import torch.distributed as dist\n"
        "dist.init_process_group('gloo')\n"
        "dist.barrier()\n"
        "dist.destroy_process_group()\n"
    )
    result = torchrun(tmp_path, tmp_path / "probe", str(script))
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(threads_at_shutdown(tmp_path / "probe")) == ["shutdown-0", "shutdown-1"]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_finished_run_ends_every_rank_without_pythons_shutdown_while_gloo_threads_live(
    strategy: str, tmp_path: Path
) -> None:
    project = make_project(tmp_path / strategy, {**SPEC, "cluster.strategy": strategy})
    result = torchrun(project, tmp_path / "probe", "train.py", *RUN, "--out-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("Test: test_loss") == 1, "everything rank 0 prints is flushed before it ends"
    live = {
        rank: [name for name in names if "gloo" in name]
        for rank, names in threads_at_shutdown(tmp_path / "probe").items()
    }
    assert not any(live.values()), f"Python shut down with the process group's threads alive: {live}"


def test_a_run_stopped_by_a_nonfinite_loss_still_exits_1_under_torchrun(tmp_path: Path) -> None:
    project = make_project(tmp_path / "nan", {**SPEC, "cluster.strategy": "fsdp"})
    steps = (project / "steps.py").read_text()
    loss = "return F.cross_entropy(model(images), labels)"
    assert loss in steps
    (project / "steps.py").write_text(steps.replace(loss, loss + ' * float("nan")', 1))
    result = torchrun(project, tmp_path / "probe", "train.py", *RUN, "--out-dir", str(tmp_path / "out"))
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Loss is nan at step" in result.stdout
    assert not threads_at_shutdown(tmp_path / "probe"), "both ranks ended without Python's shutdown"


def test_a_bad_checkpoint_under_torchrun_is_one_message_and_exit_1_without_pythons_shutdown(tmp_path: Path) -> None:
    """A SystemExit from inside main (here: --resume of a file that is no checkpoint) also goes through end_process."""
    project = make_project(tmp_path / "bad", SPEC)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    result = torchrun(project, tmp_path / "probe", "train.py", *RUN, "--resume", str(garbage))
    assert result.returncode == 1
    assert result.stderr.count("cannot load it (not a checkpoint") == 2, "each rank says it once"
    assert not threads_at_shutdown(tmp_path / "probe")


def test_end_process_in_a_single_process_is_systemexit(tmp_path: Path) -> None:
    """Plain `python train.py` of a distributed project has no group to leave: end_process raises SystemExit."""
    project = make_project(tmp_path / "single", SPEC)
    script = (
        "from distributed import end_process\n"
        "try:\n"
        "    end_process('the message')\n"
        "except SystemExit as stopped:\n"
        "    print('SystemExit', repr(stopped.code))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=project, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout.strip() == "SystemExit 'the message'", result.stderr


def test_a_signal_stop_under_torchrun_keeps_every_tensorboard_point_logged_before_it(tmp_path: Path) -> None:
    """The rank ends with os._exit, so its writer must be closed first: its last points are still in its buffers."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    project = make_project(tmp_path / "signal", SPEC)
    steps = (project / "steps.py").read_text()
    loss = "    return F.cross_entropy(model(images), labels)\n"
    assert loss in steps
    signal_at_step_9 = (
        "    global _calls\n"
        "    _calls += 1\n"
        "    if _calls == 9 and os.environ['RANK'] == '1':  # as if SLURM signalled this rank\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
    )
    (project / "steps.py").write_text(
        "import os\nimport signal\n" + steps.replace(loss, signal_at_step_9 + loss, 1) + "\n_calls = 0\n"
    )
    out = tmp_path / "out"
    result = torchrun(project, tmp_path / "probe", "train.py", *RUN, "--log-every-n-steps", "1", "--out-dir", str(out))
    assert result.returncode == 1 and "Stopped by a signal at step 9" in result.stderr, result.stderr[-3000:]
    run = EventAccumulator(str(run_dir(out)))
    run.Reload()
    assert [event.step for event in run.Scalars("train_loss")] == list(range(1, 10))
    assert not threads_at_shutdown(tmp_path / "probe")
