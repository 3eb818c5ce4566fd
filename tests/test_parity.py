"""Lightning parity: the emitted loop means what PyTorch Lightning 2.6 means by the same words (limits, the
schedule's length, batch limits, early stopping, min_epochs / min_steps, val_check_interval, top-k, the
scheduler interval, 16-mixed on the CPU, progress in log files, the last checkpoint, resuming with more epochs).

Each test pins one rule of Lightning's, named in its docstring (each checked against Lightning 2.6 itself).
Where the rule is about validation values, the generated steps.py is edited the way a researcher would edit it:
validation_step reports the val_loss values listed in the environment variable VAL_LOSSES, one per call, and
fails with an IndexError past the end of the list, so a run that validates more often than expected cannot pass."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import make_project, run_dir, run_python, spec_text
from ltgen.cli import app

# 320 synthetic samples: 32 held out for validation (4 batches of 10), 288 for training: 29 batches of 10
# (the last one 8), and a test set of 53 (6 batches).
DATA = {"data.dataset": "synthetic", "data.synthetic_samples": 320, "data.batch_size": 10}
TRAIN_BATCHES = 29
# One validation batch and no sanity pass: every validation_step call is one validation, one scripted value.
SCRIPTED = "--num-sanity-val-steps 0 --limit-val-batches 1"

SCRIPTED_VALIDATION = '''

import os as _os

_scripted = [float(v) for v in _os.environ.get("VAL_LOSSES", "").split(",") if v]
_validations = 0


def validation_step(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
    """The generated validation_step, with loss replaced by the next value of VAL_LOSSES (when set)."""
    global _validations
    metrics = _generated_validation_step(model, batch)
    if _scripted:
        metrics["loss"] = torch.tensor(_scripted[_validations], device=batch[0].device)
        _validations += 1
    return metrics
'''


def script_validation(project: Path) -> Path:
    """Make validation_step report the val_loss values in VAL_LOSSES; test_step keeps the real metrics."""
    steps = project / "steps.py"
    source = steps.read_text()
    assert source.count("def validation_step(") == 1 and "return validation_step(model, batch)" in source
    source = source.replace("def validation_step(", "def _generated_validation_step(")
    source = source.replace("return validation_step(model, batch)", "return _generated_validation_step(model, batch)")
    steps.write_text(source + SCRIPTED_VALIDATION)
    return project


def train(
    project: Path,
    flags: str,
    out: Path,
    losses: tuple[float | str, ...] = (),
    progress_bar: bool = False,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """`python train.py --device cpu FLAGS --out-dir OUT` in project, the scripted val_loss values in VAL_LOSSES.
    Limits that a broken loop would never reach end in a timeout (subprocess.TimeoutExpired: the test fails)."""
    bar = () if progress_bar else ("--no-progress-bar",)
    env = {"VAL_LOSSES": ",".join(map(str, losses))}
    args = ("--device", "cpu", *bar, *flags.split(), "--out-dir", str(out))
    return run_python(project, "train.py", *args, env=env, timeout=timeout)


def validation_steps(stdout: str) -> list[int]:
    """The global step of every validation, from the lines `step N: val_loss ...`."""
    return [int(m) for m in re.findall(r"^step (\d+): val_loss", stdout, flags=re.MULTILINE)]


def early_stop_message(stdout: str) -> str:
    """The one line that says why early stopping asked to stop."""
    (message,) = [line for line in stdout.splitlines() if line.startswith("Early stopping")]
    return message


def names_step(message: str, step: int) -> bool:
    return re.search(rf"\bstep {step}\b", message) is not None


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    assert "Traceback" not in text
    return lines[0]


def load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def last_state(out: Path) -> dict:
    """last.pt of the one run in out."""
    return load(run_dir(out) / "checkpoints/last.pt")


def lr_of(state: dict) -> float:
    return state["optimizer"]["param_groups"][0]["lr"]


def top_k_files(out: Path) -> set[str]:
    """The top-k checkpoints of the one run in out."""
    return {p.name for p in (run_dir(out) / "checkpoints").glob("epoch=*.pt")}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic data, a cosine schedule (no warm-up), the progress bar on, validation once an epoch."""
    return make_project(tmp_path_factory.mktemp("parity") / "base", DATA)


@pytest.fixture(scope="module")
def finished(base: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """A finished run of 2 epochs of 5 batches (10 steps), the progress bar on, the output captured (no tty)."""
    out = tmp_path_factory.mktemp("finished")
    result = train(base, "--limit-train-batches 5 --log-every-n-steps 2 --max-epochs 2", out, progress_bar=True)
    assert result.returncode == 0, result.stderr
    assert last_state(out)["global_step"] == 10
    return out, result


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Early stopping (patience and both thresholds out of reach: the tests set them by flag), validation twice
    an epoch, and the scripted validation_step."""
    spec = {
        **DATA,
        "trainer.val_check_interval": 0.5,
        "early_stopping.enabled": True,
        "early_stopping.patience": 100,
        "early_stopping.stopping_threshold": -1000.0,
        "early_stopping.divergence_threshold": 1000.0,
    }
    return script_validation(make_project(tmp_path_factory.mktemp("parity") / "scripted", spec))


@pytest.fixture(scope="module")
def ranked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Top-k checkpoints on val_loss (no early stopping), validation once an epoch, the scripted validation_step."""
    return script_validation(make_project(tmp_path_factory.mktemp("parity") / "ranked", DATA))


# --- 1. Limits are reached at >= (Lightning's _is_max_limit_reached) ---


@pytest.mark.parametrize("limit", ["--max-epochs 1", "--max-steps 5"])
def test_resuming_a_run_already_past_its_limit_trains_nothing(
    base: Path, finished: tuple[Path, subprocess.CompletedProcess], tmp_path: Path, limit: str
) -> None:
    """Lightning's limits are reached when `current >= maximum` (`_is_max_limit_reached`), not at `==`: a run
    resumed past its max_epochs or max_steps is done at once. It says so, exits 0, and leaves last.pt as it was."""
    out = tmp_path / "out"
    shutil.copytree(finished[0], out)
    last = run_dir(out) / "checkpoints/last.pt"
    before = (last.read_bytes(), last.stat().st_mtime_ns)
    result = train(base, f"--limit-train-batches 5 {limit} --resume last", out, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Nothing to train" in result.stdout
    assert validation_steps(result.stdout) == []
    assert (last.read_bytes(), last.stat().st_mtime_ns) == before
    assert load(last)["global_step"] == 10


def test_a_negative_max_epochs_other_than_minus_one_is_refused(base: Path, tmp_path: Path) -> None:
    """Lightning's fit loop raises "`max_epochs` must be a non-negative integer or -1" for max_epochs < -1;
    here one line, exit 2, nothing written."""
    result = train(base, "--max-epochs -5", tmp_path, timeout=60)
    assert result.returncode == 2
    assert "--max-epochs -5" in one_line(result.stderr)
    assert not list(tmp_path.rglob("*.pt"))


# --- 2. The schedule's length is Lightning's estimated_stepping_batches ---


def test_the_schedule_ends_where_training_ends(base: Path, tmp_path: Path) -> None:
    """Lightning's `trainer.estimated_stepping_batches` is min(max_epochs x ceil(batches / accumulate),
    max_steps): with a max_steps far beyond one epoch, a cosine schedule sized by it ends (lr ~0) at the end of
    that epoch, not near its peak."""
    result = train(base, "--limit-train-batches 5 --max-epochs 1 --max-steps 100000", tmp_path)
    assert result.returncode == 0, result.stderr
    state = last_state(tmp_path)
    assert state["global_step"] == 5
    assert (state["total_steps"], state["scheduler"]["T_max"]) == (5, 5)
    assert lr_of(state) < 1e-3 * 1e-6  # the peak is 1e-3: the cosine has reached its end


# --- 6. limit_*_batches that select no batch ---


@pytest.mark.parametrize("flag", ["--limit-train-batches", "--limit-val-batches"])
def test_a_batch_limit_that_selects_no_batch_is_refused_before_training(base: Path, tmp_path: Path, flag: str) -> None:
    """Lightning uses int(limit x batches) batches, and raises when a fractional limit rounds that to none
    ("You requested to check 0.0001 of the train_dataloader but 0.0001 * 29 < 1 ... Try at least ..."): here
    exit 2 with one line naming the flag, before any training: no validation, no checkpoint, no test."""
    result = train(base, f"{flag} 0.0001", tmp_path, timeout=60)
    assert result.returncode == 2
    assert flag in one_line(result.stderr)
    assert validation_steps(result.stdout) == [] and "Test:" not in result.stdout
    assert not list(tmp_path.rglob("*.pt"))


def test_no_train_batches_with_no_epoch_limit_exits_at_once(base: Path, tmp_path: Path) -> None:
    """max_epochs = -1 and epochs of zero batches would never reach max_steps (a loop without end): the same
    refusal, exit 2, promptly."""
    result = train(base, "--max-epochs -1 --max-steps 10 --limit-train-batches 0.0001", tmp_path, timeout=60)
    assert result.returncode == 2
    assert "--limit-train-batches" in one_line(result.stderr)


def test_ltgen_check_refuses_a_spec_whose_batch_limit_selects_no_batch(tmp_path: Path) -> None:
    """The same mistake in ltgen.toml is caught by `ltgen check`, naming the key (0.0001 of 29 batches is none)."""
    spec_file = tmp_path / "ltgen.toml"
    spec_file.write_text(spec_text("zero", {**DATA, "trainer.limit_train_batches": 0.0001}))
    result = CliRunner().invoke(app, ["check", str(spec_file)], catch_exceptions=False)
    assert result.exit_code == 2
    assert "trainer.limit_train_batches" in result.output


# --- 7. Early stopping: non-finite values, stopping_threshold, divergence_threshold, patience ---

EARLY_STOPPING_CASES = {
    # name: (val_loss values, flags, words the stop message must hold)
    "nan": ((1.0, 0.9, "nan", 0.8, 0.7), "", "val_loss is nan"),
    "inf-before-divergence-threshold": ((1.0, 0.9, "inf", 0.8, 0.7), "--divergence-threshold 4.0", "val_loss is inf"),
    "minus-inf-before-stopping-threshold": ((1.0, 0.9, "-inf", 0.8), "--stopping-threshold 0.5", "val_loss is -inf"),
    # 0.5 is not below 0.5: the comparison is strict
    "stopping-threshold": ((1.0, 0.5, 0.25, 0.1, 0.1), "--stopping-threshold 0.5", "val_loss 0.2500"),
    # 4.0 is not above 4.0
    "divergence-threshold": ((1.0, 4.0, 8.0, 0.1, 0.1), "--divergence-threshold 4.0", "val_loss 8.0000"),
    # 1.0 does not improve on 1.0, nor 0.95 on it by more than min_delta = 0.1
    "patience": ((1.0, 1.0, 0.95, 0.9, 0.1), "--patience 2 --min-delta 0.1", "val_loss has not improved on 1.0000"),
}


@pytest.mark.parametrize("case", EARLY_STOPPING_CASES)
def test_early_stopping_rules_in_lightnings_order(scripted: Path, tmp_path: Path, case: str) -> None:
    """Lightning's EarlyStopping._evaluate_stopping_criteria, at each validation, in this order: a non-finite
    value stops (check_finite=True); mode min and value < stopping_threshold stops; value > divergence_threshold
    stops; value < best - min_delta is an improvement; anything else counts, and `patience` of them stop.
    Each case here stops at the third validation (step 6), and the message names the metric, value and step."""
    losses, flags, words = EARLY_STOPPING_CASES[case]
    run_flags = f"{SCRIPTED} --val-check-interval 1.0 --limit-train-batches 2 --max-epochs 5 {flags}"
    result = train(scripted, run_flags, tmp_path, losses)
    assert result.returncode == 0, result.stderr
    assert validation_steps(result.stdout) == [2, 4, 6]
    message = early_stop_message(result.stdout)
    assert words in message and names_step(message, 6), message
    state = last_state(tmp_path)
    assert (state["epoch"], state["global_step"]) == (3, 6)


# --- 8. min_epochs counts completed epochs; a stop request is sticky; min_steps ---


def test_min_epochs_counts_completed_epochs_and_the_stop_request_sticks(scripted: Path, tmp_path: Path) -> None:
    """Lightning stops early only when `_can_stop_early`: epoch_progress.current.processed (COMPLETED epochs)
    >= min_epochs and global_step >= min_steps. With min_epochs = 2 and validation twice an epoch, early stopping
    that fires at the mid-epoch validation of epoch 1 (one epoch completed) lets epoch 1 finish, its
    end-of-epoch validation included, then stops; that last validation improves, but trainer.should_stop stays
    True."""
    run_flags = f"{SCRIPTED} --limit-train-batches 4 --max-epochs 3 --min-epochs 2 --patience 1"
    result = train(scripted, run_flags, tmp_path, (1.0, 0.9, 2.0, 0.5, 0.4, 0.3))
    assert result.returncode == 0, result.stderr
    assert validation_steps(result.stdout) == [2, 4, 6, 8]
    assert names_step(early_stop_message(result.stdout), 6)
    state = last_state(tmp_path)
    assert (state["epoch"], state["global_step"]) == (2, 8)


@pytest.fixture(scope="module")
def min_steps_run(scripted: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """Early stopping fires at step 2 (a NaN); min_steps = 5 (4 batches an epoch, validation every 2)."""
    out = tmp_path_factory.mktemp("min_steps")
    run_flags = f"{SCRIPTED} --limit-train-batches 4 --max-epochs 3 --min-steps 5"
    result = train(scripted, run_flags, out, ("nan", 1.0, 1.0, 1.0, 1.0, 1.0))
    assert result.returncode == 0, result.stderr
    return out, result


def test_min_steps_holds_early_stopping_back_to_that_step(
    min_steps_run: tuple[Path, subprocess.CompletedProcess],
) -> None:
    """Lightning's `_can_stop_early` also needs global_step >= min_steps: early stopping requested at step 2
    ends training right after step 5, in the middle of epoch 1."""
    out, result = min_steps_run
    message = early_stop_message(result.stdout)
    assert "val_loss is nan" in message and names_step(message, 2), message
    assert validation_steps(result.stdout)[:2] == [2, 4]
    state = last_state(out)
    assert (state["epoch"], state["global_step"], state["batch_in_epoch"]) == (1, 5, 1)


def test_training_held_back_by_min_steps_validates_where_it_stops(
    min_steps_run: tuple[Path, subprocess.CompletedProcess],
) -> None:
    """Lightning's _should_check_val_fx validates when `trainer.should_stop and fit_loop._can_stop_early`, so a
    stop that min_steps held back ends with a validation at its last step (here steps 2, 4 and 5)."""
    assert validation_steps(min_steps_run[1].stdout) == [2, 4, 5]


# --- 9. val_check_interval as a fraction ---


def test_a_fractional_val_check_interval_validates_every_int_fraction_x_batches(scripted: Path, tmp_path: Path) -> None:
    """Lightning: val_check_batch = int(29 x 0.5) = 14, and validation runs when (batch_idx + 1) % 14 == 0:
    after batches 14 and 28 of the 29, and not again after the 29th."""
    result = train(scripted, "--num-sanity-val-steps 0 --max-epochs 1", tmp_path)
    assert result.returncode == 0, result.stderr
    assert validation_steps(result.stdout) == [14, 28]
    assert last_state(tmp_path)["global_step"] == TRAIN_BATCHES


# --- 10. Top-k: ties, NaN, and no file-name order ---


def test_equal_scores_keep_the_earlier_checkpoint(ranked: Path, tmp_path: Path) -> None:
    """Lightning's ModelCheckpoint saves only a score strictly better than the k-th (torch.lt), and its best is
    min() over the kept files in the order they were saved, so of equal scores the earlier one wins. File names
    play no part: epoch=10 sorts before epoch=9 as text, yet epoch=9 (saved first, same score) stays the best."""
    first = tmp_path / "k1"
    result = train(ranked, f"{SCRIPTED} --limit-train-batches 2 --max-epochs 3 --save-top-k 1", first, (1.0, 1.0, 1.0))
    assert result.returncode == 0, result.stderr
    assert top_k_files(first) == {"epoch=0-step=2.pt"}

    second = tmp_path / "k2"
    losses = (20.0, 19.0, 18.0, 17.0, 16.0, 15.0, 14.0, 13.0, 12.0, 1.0, 1.0)
    result = train(ranked, f"{SCRIPTED} --limit-train-batches 1 --max-epochs 11 --save-top-k 2", second, losses)
    assert result.returncode == 0, result.stderr
    assert top_k_files(second) == {"epoch=9-step=10.pt", "epoch=10-step=11.pt"}
    best_first = [name for _, name in last_state(second)["top_k"]]
    assert best_first == ["epoch=9-step=10.pt", "epoch=10-step=11.pt"]


def test_a_nan_score_ranks_worst_and_never_blocks_a_later_save(ranked: Path, tmp_path: Path) -> None:
    """Lightning's ModelCheckpoint stores a NaN score as +inf (mode min): it fills a free place in the top k,
    is the first to go, and a NaN never displaces a real score."""
    run_flags = f"{SCRIPTED} --limit-train-batches 1 --max-epochs 4 --save-top-k 2"
    result = train(ranked, run_flags, tmp_path, ("nan", 1.0, "nan", 0.5))
    assert result.returncode == 0, result.stderr
    assert top_k_files(tmp_path) == {"epoch=1-step=2.pt", "epoch=3-step=4.pt"}
    assert last_state(tmp_path)["top_k"] == [(0.5, "epoch=3-step=4.pt"), (1.0, "epoch=1-step=2.pt")]


def test_of_tied_worst_scores_the_earliest_is_dropped(ranked: Path, tmp_path: Path) -> None:
    """Lightning's kth_best_model_path is max() over the kept files in the order they were saved, i.e. the
    EARLIEST of equal worst scores, and that is the file a better score replaces: with save_top_k = 2 and
    val_loss 1.0, 1.0, 0.5 Lightning keeps epoch=1 and epoch=2."""
    run_flags = f"{SCRIPTED} --limit-train-batches 1 --max-epochs 3 --save-top-k 2"
    result = train(ranked, run_flags, tmp_path, (1.0, 1.0, 0.5))
    assert result.returncode == 0, result.stderr
    assert top_k_files(tmp_path) == {"epoch=1-step=2.pt", "epoch=2-step=3.pt"}


# --- 11. The scheduler's interval ---


@pytest.mark.parametrize(("interval", "halvings"), [("epoch", 1), ("step", 4)])
def test_scheduler_interval(tmp_path: Path, interval: str, halvings: int) -> None:
    """Lightning steps a scheduler once per epoch by default (`"interval": "epoch"`), or after every optimizer
    step with `"interval": "step"`. StepLR(step_size=2, gamma=0.5) over 3 epochs of 3 steps: stepped 3 times it
    halves the lr once (3 // 2); stepped 9 times, four times (9 // 2)."""
    spec = {
        "data.dataset": "synthetic",
        "data.synthetic_samples": 120,
        "data.batch_size": 10,
        "optim.scheduler": "step",
        "optim.step_size": 2,
        "optim.gamma": 0.5,
        "optim.scheduler_interval": interval,
    }
    project = make_project(tmp_path / f"sched_{interval}", spec)
    result = train(project, "--limit-train-batches 3 --max-epochs 3", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    state = last_state(tmp_path / "out")
    assert state["global_step"] == 9
    assert lr_of(state) == pytest.approx(1e-3 * 0.5**halvings)


# --- 12. 16-mixed on the CPU ---

DTYPE_PROBE = '''

_generated_training_step = training_step
_dtypes: set = set()


def training_step(model: nn.Module, batch: Batch) -> torch.Tensor:
    """The generated training_step, printing the dtype the model computes in (once)."""
    dtype = model(batch[0]).dtype
    if dtype not in _dtypes:
        _dtypes.add(dtype)
        print("computes in", dtype)
    return _generated_training_step(model, batch)
'''


def test_16_mixed_on_the_cpu_warns_and_trains_in_bf16(tmp_path: Path) -> None:
    """Lightning: `precision="16-mixed"` on the CPU warns that fp16 AMP is not supported there and uses
    "bf16-mixed" instead (no GradScaler, no fp16 underflow). One warning line; never silent float16."""
    project = make_project(tmp_path / "fp16", {**DATA, "trainer.precision": "16-mixed"})
    (project / "steps.py").write_text((project / "steps.py").read_text() + DTYPE_PROBE)
    result = train(project, "--limit-train-batches 3 --max-epochs 1", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    warnings = [line for line in output.splitlines() if "16-mixed" in line]
    assert len(warnings) == 1 and "bf16" in warnings[0], output
    assert re.findall(r"^computes in (\S+)$", result.stdout, flags=re.MULTILINE) == ["torch.bfloat16"]
    test_loss = float(re.search(r"Test: test_loss (\S+),", result.stdout).group(1))
    assert math.isfinite(test_loss)


# --- 14. Progress in log files ---


def test_progress_in_a_log_file_is_plain_lines(finished: tuple[Path, subprocess.CompletedProcess]) -> None:
    """Lightning's progress bar redraws a terminal line with carriage returns, which fills log files with
    garbage; with output that is not a terminal (SLURM, CI, this capture) no bar is drawn and each
    log_every_n_steps-th step prints one line: `epoch E step S: loss X, lr Y, Z it/s`."""
    _, result = finished
    assert "\r" not in result.stdout and "\r" not in result.stderr
    lines = re.findall(
        r"^epoch (\d+) step (\d+): loss \d+\.\d{4}, lr \S+, \d+\.\d\d it/s$", result.stdout, flags=re.MULTILINE
    )
    assert [(int(e), int(s)) for e, s in lines] == [(0, 2), (0, 4), (1, 6), (1, 8), (1, 10)]


# --- 15. The end of training ---


def test_last_checkpoint_is_written_once_at_the_end(finished: tuple[Path, subprocess.CompletedProcess]) -> None:
    """Lightning's ModelCheckpoint saves last.ckpt once per save point; the end of training is not a second one.
    So last.prev.pt (the save before the last) holds the end of epoch 0, not a copy of last.pt."""
    checkpoints = run_dir(finished[0]) / "checkpoints"
    last, previous = checkpoints / "last.pt", checkpoints / "last.prev.pt"
    assert last.read_bytes() != previous.read_bytes()
    assert (load(previous)["global_step"], load(last)["global_step"]) == (5, 10)


# --- 16. Resuming with more epochs ---


def test_resuming_with_more_epochs_keeps_the_schedule_and_says_so(
    base: Path, finished: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    """Lightning restores the scheduler's state on resume, so a cosine schedule sized for 2 epochs keeps its
    length (T_max) when the run is continued to 4; the loop says so in one line."""
    out = tmp_path / "out"
    shutil.copytree(finished[0], out)
    result = train(base, "--limit-train-batches 5 --max-epochs 4 --resume last", out)
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stdout.splitlines() if "schedule" in line]
    assert len(notes) == 1 and "10" in notes[0] and "20" in notes[0], result.stdout
    state = last_state(out)
    assert state["global_step"] == 20
    assert (state["total_steps"], state["scheduler"]["T_max"]) == (10, 10)
