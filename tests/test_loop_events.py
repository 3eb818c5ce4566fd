"""Where the loop's events fall when a step is skipped, a signal arrives or a run is resumed: an epoch's validation
is scheduled by batch index and never lost, TensorBoard curves across a resume hold every point exactly once, and
a DDP project with compile and accumulation still runs as one plain process."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
import torch

from conftest import make_project, rendered, run_dir, run_python, spec_text
from ltgen.spec import SpecError, parse
from test_resume import add_crash_points

CPU = ("--device", "cpu", "--no-progress-bar")
# 600 synthetic samples: 540 for training, 17 batches of 32 an epoch (the last one of 28).
SPEC = {
    "data.dataset": "synthetic",
    "data.synthetic_samples": 600,
    "data.batch_size": 32,
    "trainer.num_sanity_val_steps": 0,
    "checkpoint.save_top_k": 0,
}
BATCHES = 17


def curves(out_dir: Path) -> dict[str, list[int]]:
    """The steps of every scalar, as TensorBoard shows them: the event files of out_dir's one run folder read as
    one run, in order, so that a resumed writer's purge_step drops what the killed run logged after its checkpoint."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = EventAccumulator(str(run_dir(out_dir)))
    run.Reload()
    return {tag: [event.step for event in run.Scalars(tag)] for tag in run.Tags()["scalars"]}


def validations(stdout: str) -> list[int]:
    """The steps at which validation ran, from the `step N: val_loss ...` lines."""
    return [int(step) for step in re.findall(r"^step (\d+): val_loss", stdout, flags=re.MULTILINE)]


def call_on_batch(project: Path, batch: int, code: str) -> None:
    """Make training_step run `code` (with `loss` bound) on its Nth call, counting from 1, as a user's edit would."""
    steps = (project / "steps.py").read_text()
    edited = steps.replace(
        "    images, labels = batch\n    return F.cross_entropy(model(images), labels)\n",
        "    global _calls\n"
        "    _calls += 1\n"
        "    images, labels = batch\n"
        "    loss = F.cross_entropy(model(images), labels)\n"
        f"    if _calls == {batch}:\n"
        f"        {code}\n"
        "    return loss\n",
        1,
    )
    assert edited != steps
    (project / "steps.py").write_text(edited + "\n_calls = 0\n")


def test_a_skipped_step_on_the_last_batch_still_validates_the_epoch(tmp_path: Path) -> None:
    """Validation is scheduled by batch index, whether or not the optimizer stepped (Lightning's
    `_should_check_val_fx` looks at the batch, not at the step)."""
    project = make_project(tmp_path / "skip", {**SPEC, "trainer.nonfinite_loss": "skip"})
    call_on_batch(project, BATCHES, "loss = loss * float('nan')")
    result = run_python(project, "train.py", *CPU, "--max-epochs", "2", "--out-dir", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    assert "Skipped step 16: non-finite gradients (epoch 0, batch 16)" in result.stdout
    assert validations(result.stdout) == [16, 33]  # epoch 0 validated although its last step was skipped
    last = torch.load(run_dir(tmp_path / "o") / "checkpoints/last.pt", weights_only=True)
    assert (last["epoch"], last["global_step"], last["batch_in_epoch"]) == (2, 33, 0)


def test_a_signal_on_an_epochs_last_batch_validates_that_epoch_exactly_once_across_the_resume(tmp_path: Path) -> None:
    """SIGTERM during the last batch of epoch 0: the run finishes that step and its validation, saves and stops;
    the resumed run starts epoch 1 and does not validate epoch 0 again."""
    project = make_project(tmp_path / "sig", SPEC)
    call_on_batch(
        project, BATCHES, f"import os; 'SIGTERM_ME' in os.environ and os.kill(os.getpid(), {signal.SIGTERM:d})"
    )
    out = tmp_path / "o"
    stopped = run_python(project, "train.py", *CPU, "--max-epochs", "2", "--out-dir", str(out), env={"SIGTERM_ME": "1"})
    assert stopped.returncode == 1 and "Stopped by a signal at step 17" in stopped.stderr
    saved = torch.load(run_dir(out) / "checkpoints/last.pt", weights_only=True)
    assert (saved["epoch"], saved["global_step"], saved["batch_in_epoch"]) == (1, 17, 0)

    resumed = run_python(project, "train.py", *CPU, "--max-epochs", "2", "--out-dir", str(out), "--resume", "last")
    assert resumed.returncode == 0, resumed.stderr
    assert validations(stopped.stdout) + validations(resumed.stdout) == [17, 34]
    assert curves(out)["val_loss"] == [17, 34]


def test_tensorboard_keeps_every_point_exactly_once_across_a_kill_and_a_resume(tmp_path: Path) -> None:
    """purge_step drops only what the killed run logged after its checkpoint: the points logged at the
    checkpoint's own step (validation metrics, train loss, lr) survive, and none is logged twice."""
    project = make_project(tmp_path / "tb", SPEC)
    add_crash_points(project)
    args = (*CPU, "--max-epochs", "2", "--log-every-n-steps", "4")
    reference = run_python(project, "train.py", *args, "--out-dir", str(tmp_path / "ref"))
    assert reference.returncode == 0, reference.stderr
    expected = curves(tmp_path / "ref")
    assert expected["val_loss"] == [17, 34] and 16 in expected["train_loss"] and 17 in expected["train_loss"]

    out = tmp_path / "o"
    killed = run_python(project, "train.py", *args, "--out-dir", str(out), env={"CRASH_AT_TRAINING_STEP": "27"})
    assert killed.returncode == -signal.SIGKILL  # 9 steps after the checkpoint at step 17, 2 of them logged
    resumed = run_python(project, "train.py", *args, "--out-dir", str(out), "--resume", "last")
    assert resumed.returncode == 0, resumed.stderr
    assert curves(out) == expected


def test_a_ddp_project_with_compile_and_accumulation_runs_as_one_plain_process(tmp_path: Path) -> None:
    """`python train.py` on a multi-GPU project is one process without DDP: accumulation must not ask the compiled
    model for DDP's no_sync(). torch.compile is switched off through its own environment variable to keep the test
    fast: its wrapper, which is what matters here, stays."""
    project = make_project(
        tmp_path / "ddp",
        {**SPEC, "cluster.gpus": 2, "trainer.compile": True, "trainer.accumulate_grad_batches": 2},
    )
    result = run_python(
        project,
        "train.py",
        *CPU,
        "--max-epochs",
        "1",
        "--limit-train-batches",
        "4",
        "--out-dir",
        str(tmp_path / "o"),
        env={"TORCH_COMPILE_DISABLE": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert torch.load(run_dir(tmp_path / "o") / "checkpoints/last.pt", weights_only=True)["global_step"] == 2


def test_tf32_is_a_spec_choice() -> None:
    """[trainer] tf32 (default true) keeps TF32 matmuls in float32 on CUDA; false asks for full float32 (PyTorch
    would otherwise still use TF32 in cuDNN convolutions)."""
    on = rendered(spec_text("p"))["train.py"]
    off = rendered(spec_text("p", {"trainer.tf32": False}))["train.py"]
    assert 'torch.backends.cuda.matmul.fp32_precision = "tf32"' in on and '"ieee"' not in on
    assert 'torch.backends.cudnn.conv.fp32_precision = "ieee"' in off and '"tf32"' not in off


def test_best_checkpoints_without_last_pt(tmp_path: Path) -> None:
    """save_last = false with top-k: the best checkpoints are still ranked, kept and used by the test pass."""
    project = make_project(tmp_path / "nolast", {**SPEC, "checkpoint.save_last": False, "checkpoint.save_top_k": 1})
    result = run_python(project, "train.py", *CPU, "--max-epochs", "2", "--out-dir", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    checkpoints = run_dir(tmp_path / "o") / "checkpoints"
    assert [p.name for p in checkpoints.iterdir()] in (["epoch=0-step=17.pt"], ["epoch=1-step=34.pt"])


def test_overfit_batches_beyond_the_data_uses_all_batches_and_ends(tmp_path: Path) -> None:
    """Lightning takes min(overfit_batches, batches there are); more than there are must not spin forever."""
    project = make_project(tmp_path / "overfit", {**SPEC, "debug.overfit_batches": 5})
    out = tmp_path / "o"
    result = run_python(
        project, "train.py", *CPU, "--max-epochs", "2", "--overfit-batches", "40", "--out-dir", str(out), timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert torch.load(run_dir(out) / "checkpoints/last.pt", weights_only=True)["global_step"] == 2 * BATCHES


def test_sanity_validation_of_all_batches_and_fast_dev_run_validating_on_an_off_epoch(tmp_path: Path) -> None:
    """num_sanity_val_steps = -1 runs the whole validation set before training (Lightning's "all"), and
    --fast-dev-run validates once even when check_val_every_n_epoch would skip epoch 0 (Lightning forces 1)."""
    spec = {**SPEC, "trainer.num_sanity_val_steps": -1, "trainer.check_val_every_n_epoch": 2}
    project = make_project(tmp_path / "sanity", spec)
    steps = (project / "steps.py").read_text()
    docstring = '    """Metrics of one batch; train.py averages them over the validation set as val_<name>."""\n'
    assert docstring in steps
    (project / "steps.py").write_text(steps.replace(docstring, docstring + '    print("VALIDATION BATCH")\n'))
    args = ("--max-epochs", "1", "--limit-test-batches", "1", "--out-dir", str(tmp_path / "o"))
    result = run_python(project, "train.py", *CPU, *args)
    assert result.returncode == 0, result.stderr
    # 60 held-out samples: 2 batches, both in the sanity pass; then 1 test batch (test_step calls validation_step)
    assert result.stdout.count("VALIDATION BATCH") == 2 + 1
    assert validations(result.stdout) == []  # epoch 0 is not a validation epoch
    fast = run_python(project, "train.py", *CPU, "--fast-dev-run")
    assert fast.returncode == 0, fast.stderr
    assert validations(fast.stdout) == [1]


def test_a_zero_learning_rate_is_refused_by_the_spec_as_by_train_py() -> None:
    """The spec and the emitted flag checks agree: a learning rate must be a number > 0 and at most 1e4."""
    with pytest.raises(SpecError) as caught:
        parse(spec_text("p", {"optim.lr": 0.0}))
    assert "optim.lr: expected a number > 0.0 and <= 10000.0, got 0.0" in str(caught.value)
    with pytest.raises(SpecError) as caught:  # far above, Adam's float32 update overflows at the first step
        parse(spec_text("p", {"optim.lr": 1e300}))
    assert "optim.lr: expected a number > 0.0 and <= 10000.0, got 1e+300" in str(caught.value)


def test_resuming_with_fewer_batches_finishes_the_interrupted_epoch(tmp_path: Path) -> None:
    """A checkpoint from the middle of an epoch resumed with a --limit-train-batches that epoch has already passed:
    the epoch ends there, with its end-of-epoch work (here the per-epoch schedule step), and training goes on."""
    spec = {
        **SPEC,
        "optim.scheduler": "step",
        "optim.step_size": 1,
        "optim.gamma": 0.5,
        "optim.scheduler_interval": "epoch",
    }
    project = make_project(tmp_path / "fewer", spec)
    add_crash_points(project)
    out = tmp_path / "o"
    args = (*CPU, "--max-epochs", "3", "--ckpt-every-n-steps", "1", "--out-dir", str(out))
    killed = run_python(project, "train.py", *args, env={"CRASH_AT_TRAINING_STEP": str(BATCHES + 12)})
    assert killed.returncode == -signal.SIGKILL  # last.pt: epoch 1, batch 11
    resumed = run_python(project, "train.py", *args, "--resume", "last", "--limit-train-batches", "9")
    assert resumed.returncode == 0, resumed.stderr
    last = torch.load(run_dir(out) / "checkpoints/last.pt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (3, BATCHES + 11 + 9)
    assert last["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3 * 0.5**3)
