"""Exact resume and fault tolerance: a run killed at any moment and continued with --resume last ends bit for bit
where an uninterrupted run ends (shuffling, dropout, a warm-up + cosine schedule, gradient accumulation, early
stopping and top-k state all on), and a loadable checkpoint always exists.

Crashes at exact points are made the way a researcher would make them: by editing the generated code
(training_step or checkpoint.save kills its own process when an environment variable says so)."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import assert_identical, make_project, run_dir, run_python

SPEC = {
    "data.dataset": "synthetic",
    "data.synthetic_samples": 600,  # 540 for training: 17 batches of 32 an epoch, the last one 28
    "data.batch_size": 32,
    "model.dropout": 0.2,
    "optim.scheduler": "cosine",
    "optim.warmup_steps": 3,
    "trainer.accumulate_grad_batches": 3,  # windows of 3, 3, 3, 3, 3 and 2 batches: 6 steps an epoch
    "trainer.val_check_interval": 0.5,
    "early_stopping.enabled": True,
    "early_stopping.patience": 50,
    "checkpoint.save_top_k": 2,
    "logging.progress_bar": False,
}
ARGS = ("train.py", "--device", "cpu", "--max-epochs", "3", "--log-every-n-steps", "4", "--ckpt-every-n-steps", "1")
STEPS = 3 * 6

CRASH_POINTS = '''
import os as _os
import signal as _signal
import time as _time

_calls = {"training_step": 0, "save": 0}


def _crash_at(name: str) -> None:
    """Kill this process (as a power cut would) on the Nth call of `name`, N from the environment."""
    _calls[name] += 1
    _time.sleep(float(_os.environ.get(f"SLOW_{name.upper()}", "0")))
    if _calls[name] == int(_os.environ.get(f"CRASH_AT_{name.upper()}", "0")):
        _os.kill(_os.getpid(), _signal.SIGKILL)
'''


def add_crash_points(project: Path) -> None:
    """training_step crashes on its Nth call (CRASH_AT_TRAINING_STEP=N); checkpoint.save crashes between
    writing its temporary file and renaming it (CRASH_AT_SAVE=N) or right after it (CRASH_AFTER_SAVE=N)."""
    steps = (project / "steps.py").read_text()
    step_body = "    images, labels = batch\n    return F.cross_entropy("
    assert step_body in steps
    steps = steps.replace(step_body, '    _crash_at("training_step")\n' + step_body, 1)
    (project / "steps.py").write_text(steps + CRASH_POINTS)
    source = (project / "checkpoint.py").read_text()
    before_rename, after_rename = '    if path.name == "last.pt" and path.exists():\n', "        os.close(folder)\n"
    assert before_rename in source and after_rename in source  # the places save() writes, renames, syncs
    source = source.replace(before_rename, '    _crash_at("save")\n' + before_rename, 1)
    crash_after = (
        '    if _calls["save"] == int(_os.environ.get("CRASH_AFTER_SAVE", "0")):\n        _os.kill(_os.getpid(), 9)\n'
    )
    source = source.replace(after_rename, after_rename + crash_after, 1)
    (project / "checkpoint.py").write_text(source + CRASH_POINTS)


def final_state(out: Path) -> dict:
    """The last checkpoint of the one run in out, less the one setting that differs between runs."""
    state = torch.load(run_dir(out) / "checkpoints/last.pt", weights_only=True)
    state["config"].pop("out_dir")
    return state


def wait_for_a_checkpoint(out: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    """Wait until the run that `process` started in out has saved its first checkpoint (training has begun)."""
    deadline = time.monotonic() + seconds
    while not list(out.glob("*/checkpoints/last.pt")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = make_project(tmp_path_factory.mktemp("resume") / "resume", SPEC)
    add_crash_points(project)
    return project


@pytest.fixture(scope="module")
def reference(project: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, float]:
    """The uninterrupted run: its final state, and how long training took."""
    out = tmp_path_factory.mktemp("reference")
    started = time.monotonic()
    result = run_python(project, *ARGS, "--out-dir", str(out))
    assert result.returncode == 0, result.stderr
    state = final_state(out)
    assert state["global_step"] == STEPS
    return state, time.monotonic() - started


def crash_then_resume(
    project: Path, out: Path, crash: dict[str, str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    crashed = run_python(project, *ARGS, "--out-dir", str(out), env=crash)
    assert crashed.returncode == -signal.SIGKILL, f"it was meant to crash: {crashed.stderr[-2000:]}"
    resumed = run_python(project, *ARGS, "--out-dir", str(out), "--resume", "last", env=env)
    assert resumed.returncode == 0, resumed.stderr
    return resumed


@pytest.mark.parametrize(
    ("crash", "where"),
    [
        ({"CRASH_AT_TRAINING_STEP": "5"}, "inside an accumulation window, epoch 0"),
        ({"CRASH_AT_TRAINING_STEP": "17"}, "on the last batch of epoch 0, before its (short) window's step"),
        ({"CRASH_AT_TRAINING_STEP": "27"}, "inside an accumulation window, epoch 1"),
        ({"CRASH_AFTER_SAVE": "9"}, "right after a checkpoint write"),
        ({"CRASH_AT_SAVE": "14"}, "in the middle of a checkpoint write"),
    ],
)
def test_killed_and_resumed_ends_bit_for_bit_like_an_uninterrupted_run(
    project: Path, reference: tuple[dict, float], tmp_path: Path, crash: dict[str, str], where: str
) -> None:
    resumed = crash_then_resume(project, tmp_path, crash)
    assert "Resumed from" in resumed.stdout, where
    assert_identical(final_state(tmp_path), reference[0])


def test_kill_minus_9_at_random_moments(project: Path, reference: tuple[dict, float], tmp_path: Path) -> None:
    """The "Done when" check: kill -9 from outside at random moments, --resume last to the end, every time."""
    state, duration = reference
    rng = random.Random(2026)
    for attempt in range(3):
        out = tmp_path / f"attempt{attempt}"
        process = subprocess.Popen(
            [sys.executable, *ARGS, "--out-dir", str(out)],
            cwd=project,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_a_checkpoint(out, process)
        time.sleep(rng.uniform(0.0, duration / 4))
        process.kill()
        assert process.wait() == -signal.SIGKILL, "the run finished before it could be killed: make it longer"
        resumed = run_python(project, *ARGS, "--out-dir", str(out), "--resume", "last")
        assert resumed.returncode == 0, resumed.stderr
        assert_identical(final_state(out), state, f"attempt {attempt}")


def test_a_loadable_checkpoint_always_exists_whenever_a_write_is_killed(project: Path, tmp_path: Path) -> None:
    sys.path.insert(0, str(project))
    try:
        import checkpoint
    finally:
        sys.path.remove(str(project))
    for save in (3, 4, 7, 12):  # checkpoint.save killed between its temporary file and the rename, again and again
        crashed = run_python(
            project, *ARGS, "--out-dir", str(tmp_path), "--resume", "last", env={"CRASH_AT_SAVE": str(save)}
        )
        assert crashed.returncode == -signal.SIGKILL
        checkpoints = run_dir(tmp_path) / "checkpoints"  # --resume last went on in the one run
        assert list(checkpoints.glob("*.tmp")), "the half-written file is there"
        found = checkpoint.find("last", checkpoints)
        assert found is not None, f"no loadable checkpoint after a crash in save #{save}"


def test_a_damaged_last_checkpoint_falls_back_to_the_previous_one(
    project: Path, reference: tuple[dict, float], tmp_path: Path
) -> None:
    crashed = run_python(project, *ARGS, "--out-dir", str(tmp_path), env={"CRASH_AT_TRAINING_STEP": "30"})
    assert crashed.returncode == -signal.SIGKILL
    checkpoints = run_dir(tmp_path) / "checkpoints"
    last = checkpoints / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # truncated, as by a full disk
    resumed = run_python(project, *ARGS, "--out-dir", str(tmp_path), "--resume", "last")
    assert resumed.returncode == 0, resumed.stderr
    assert re.search(r"warning: .*last\.pt is damaged .*; trying the one before it", resumed.stderr)
    assert "Resumed from " + str(checkpoints / "last.prev.pt") in resumed.stdout
    assert_identical(final_state(tmp_path), reference[0])

    (checkpoints / "garbage.pt").write_bytes(b"not a checkpoint at all")
    explicit = run_python(project, *ARGS, "--out-dir", str(tmp_path), "--resume", str(checkpoints / "garbage.pt"))
    assert explicit.returncode == 1
    assert "cannot load it" in explicit.stderr and "Traceback" not in explicit.stderr


def test_sigterm_checkpoints_at_the_next_step_and_resumes_exactly(
    project: Path, reference: tuple[dict, float], tmp_path: Path
) -> None:
    process = subprocess.Popen(
        [sys.executable, *ARGS, "--out-dir", str(tmp_path)],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_a_checkpoint(tmp_path, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr
    advice = re.search(r"Stopped by a signal at step \d+; continue with --resume (\S+)", stderr)
    assert advice and advice[1] == run_dir(tmp_path).name, stderr
    resumed = run_python(project, *ARGS, "--out-dir", str(tmp_path), "--resume", advice[1])  # as the message says
    assert resumed.returncode == 0, resumed.stderr
    assert_identical(final_state(tmp_path), reference[0])


def test_ctrl_c_stops_at_the_next_step_and_a_second_one_at_once(project: Path, tmp_path: Path) -> None:
    def start(out: Path) -> subprocess.Popen:
        slow = dict(os.environ, SLOW_TRAINING_STEP="0.5")  # a step takes half a second
        process = subprocess.Popen(
            [sys.executable, *ARGS, "--out-dir", str(out)],
            cwd=project,
            env=slow,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for_a_checkpoint(out, process)
        process.send_signal(signal.SIGINT)
        return process

    once = start(tmp_path / "once")
    _, stderr = once.communicate(timeout=60)
    assert once.returncode == 1 and "Stopped by a signal" in stderr

    twice = start(tmp_path / "twice")
    time.sleep(0.2)  # the first is noted; the step goes on
    twice.send_signal(signal.SIGINT)
    twice.communicate(timeout=60)
    assert twice.returncode == -signal.SIGINT


def test_resume_last_without_a_checkpoint_starts_fresh_and_says_so(project: Path, tmp_path: Path) -> None:
    result = run_python(
        project, "train.py", "--fast-dev-run", "--device", "cpu", "--resume", "last", "--out-dir", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    assert f"--resume last: no run in {tmp_path} has a checkpoint yet; starting a fresh one" in result.stderr
    assert not list(tmp_path.iterdir()), "--fast-dev-run writes nothing"


def test_stale_temporary_files_are_removed_at_start(project: Path, tmp_path: Path) -> None:
    checkpoints = tmp_path / "run" / "checkpoints"  # a run killed before its first checkpoint was whole
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.pt.tmp").write_bytes(b"half a checkpoint")
    result = run_python(project, *ARGS, "--out-dir", str(tmp_path), "--run-name", "run", "--max-epochs", "1")
    assert result.returncode == 0, result.stderr
    assert (checkpoints / "last.pt").is_file(), "the run went on in its folder"
    assert not list(checkpoints.glob("*.tmp"))


def test_every_n_minutes_checkpoints_without_waiting_for_validation(project: Path, tmp_path: Path) -> None:
    args = (
        "train.py",
        "--device",
        "cpu",
        "--max-epochs",
        "3",
        "--log-every-n-steps",
        "1",
        "--ckpt-every-n-minutes",
        "0.00001",
    )
    crashed = run_python(project, *args, "--out-dir", str(tmp_path), env={"CRASH_AT_TRAINING_STEP": "7"})
    assert crashed.returncode == -signal.SIGKILL
    assert (
        torch.load(run_dir(tmp_path) / "checkpoints/last.pt", weights_only=True)["global_step"] == 2
    )  # the first validation is at step 3


def test_resuming_with_another_model_is_refused_and_changed_settings_are_listed(project: Path, tmp_path: Path) -> None:
    crashed = run_python(project, *ARGS, "--out-dir", str(tmp_path), env={"CRASH_AT_TRAINING_STEP": "10"})
    assert crashed.returncode == -signal.SIGKILL
    changed = run_python(
        project, *ARGS, "--out-dir", str(tmp_path), "--resume", "last", "--lr", "0.002", "--max-epochs", "1"
    )
    assert changed.returncode == 0, changed.stderr
    assert "warning: resuming with changed settings: lr 0.001 -> 0.002, max_epochs 3 -> 1" in changed.stderr

    other = tmp_path / "other"
    other_project = make_project(other, {**SPEC, "model.hidden_sizes": [64]})
    refused = run_python(other_project, *ARGS, "--out-dir", str(tmp_path), "--resume", "last")
    assert refused.returncode == 2
    assert "holds a different model, so training cannot resume from it" in refused.stderr
    assert "1.weight: (128, 784) in the checkpoint, (64, 784) now" in refused.stderr
    assert "Traceback" not in refused.stderr


def poison_the_short_batch(project: Path) -> None:
    """Edit training_step so that the loss of each epoch's last (short, 28-sample) batch is NaN."""
    steps = (project / "steps.py").read_text()
    poisoned = steps.replace(
        "    return F.cross_entropy(model(images), labels)",
        "    loss = F.cross_entropy(model(images), labels)\n    return loss * float('nan') if len(labels) == 28 else loss",
    )
    assert poisoned != steps
    (project / "steps.py").write_text(poisoned)


def test_a_non_finite_loss_stops_with_the_step_and_batch_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    project = make_project(tmp_path / "nan", SPEC)
    poison_the_short_batch(project)
    result = run_python(project, *ARGS, "--out-dir", str(tmp_path / "o"))
    assert result.returncode == 1
    # the short batch ends epoch 0 at step 6, which validates and saves: the loss is read there first
    assert "Loss is nan at step 6 (epoch 0, batch 16); stopping" in result.stdout, result.stdout
    last = torch.load(run_dir(tmp_path / "o") / "checkpoints/last.pt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in last["model"].values())


def test_skip_mode_skips_the_step_and_trains_on(tmp_path: Path) -> None:
    project = make_project(tmp_path / "skip", {**SPEC, "trainer.nonfinite_loss": "skip"})
    poison_the_short_batch(project)
    result = run_python(project, *ARGS, "--out-dir", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    skipped = re.findall(
        r"^Skipped step \d+: non-finite gradients \(epoch \d, batch 16\)$", result.stdout, flags=re.MULTILINE
    )
    assert len(skipped) == 3, result.stdout
    last = torch.load(run_dir(tmp_path / "o") / "checkpoints/last.pt", weights_only=True)
    assert last["global_step"] == STEPS - 3
    assert all(torch.isfinite(t).all() for t in last["model"].values())


def test_augmentation_in_data_workers_is_reproducible_across_resumes_and_worker_counts(tmp_path: Path) -> None:
    """Random augmentation added in the dataset, run in persistent worker processes: a run killed mid-epoch and
    resumed ends exactly like an uninterrupted one, and so does a run with another number of workers."""
    project = make_project(tmp_path / "workers", {**SPEC, "data.num_workers": 2})
    add_crash_points(project)
    source = (project / "data.py").read_text()
    augmented = source.replace(
        "        return [self.images[indices], self.labels[indices]]",
        "        images = self.images[indices]  # augmentation, from the global random state: a shift and a flip\n"
        "        images = images.flip(-1) if torch.rand(()) < 0.5 else images\n"
        "        return [torch.roll(images, random.randint(-2, 2), dims=-1), self.labels[indices]]",
    )
    assert augmented != source
    (project / "data.py").write_text(augmented)

    # MKL's multithreaded sgemm on the CPU sums in an order that varies from run to run once worker processes
    # run beside it (2 of 6 uninterrupted runs with 2 workers differ after the first step; none without workers,
    # none with one MKL thread): a defect of its own, reported, and not what this test is about. One MKL thread
    # keeps the comparison on the data pipeline: the workers' augmentation, batch by batch.
    one_thread = {"MKL_NUM_THREADS": "1"}
    reference = run_python(project, *ARGS, "--out-dir", str(tmp_path / "reference"), env=one_thread)
    assert reference.returncode == 0, reference.stderr
    expected = final_state(tmp_path / "reference")

    crash_then_resume(project, tmp_path / "resumed", {"CRASH_AT_TRAINING_STEP": "23", **one_thread}, one_thread)
    assert_identical(final_state(tmp_path / "resumed"), expected)

    one_worker = run_python(project, *ARGS, "--out-dir", str(tmp_path / "one"), "--num-workers", "1", env=one_thread)
    assert one_worker.returncode == 0, one_worker.stderr
    state = final_state(tmp_path / "one")
    assert state["config"].pop("num_workers") == 1 and expected["config"].pop("num_workers") == 2
    assert_identical(state, expected)
