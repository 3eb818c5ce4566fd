"""Pairwise combinations of the spec keys that shape the training loop: every allowed pair of their values is in
some spec of a covering set, and every spec of that set

- renders, and its project passes `black --check` and `ruff check` under its own pyproject.toml;
- runs `--fast-dev-run` (exit 0, nothing written);
- trains a few epochs on tiny data uninterrupted, and again killed with SIGKILL mid-run (in training_step, on every
  rank, with a checkpoint after every step) and continued with `--resume last`: both end with the same final `last`
  checkpoint, bit for bit (model, optimizer(s), schedule(s), scaler, counters, early stopping and top-k state, every
  rank's random state, and the state the hooks add), and with the same checkpoint files.

Multi-process specs run on 2 CPU ranks (gloo) under torchrun. Sharded (FSDP) checkpoints are folders of DCP shards
plus train_state.pt: train_state.pt is compared as is, the shards consolidated into one model and optimizer state.

The covering set is built here, greedily, from the factors below and the spec's own rules (ltgen.spec.parse says
which specs are valid); the pairs that the rules forbid are pinned in FORBIDDEN, so coverage cannot shrink
silently. Its first specs (the seeds) are the cheap tier that runs on every `python -m pytest`; the rest carry
the `combinations` marker and run only with LTGEN_ALL_COMBINATIONS=1 (as CI sets it)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from combinations import Assignment, Pair, Space
from conftest import assert_identical, make_project, run_dir, run_python, spec_text
from ltgen import spec

HOOKS = ["on_fit_start", "on_train_epoch_end", "on_validation_epoch_end", "on_save_checkpoint", "on_load_checkpoint"]

# Each factor's values (the first is the baseline that completions start from) and the spec keys each one sets.
FACTORS: dict[str, dict[str, dict[str, Any]]] = {
    "task": {
        "synthetic+mlp": {"data.dataset": "synthetic", "model.arch": "mlp", "model.hidden_sizes": [16]},
        "synthetic+cnn": {"data.dataset": "synthetic", "model.arch": "cnn", "model.channels": [4, 8]},
        "text+gpt": {
            "data.dataset": "text",
            "model.arch": "gpt",
            "model.n_layer": 1,
            "model.n_head": 2,
            "model.n_embd": 16,
            "data.block_size": 16,
            "data.samples_per_epoch": 96,  # 6 batches of 8 an epoch on each of 2 ranks
        },
        "csv+mlp": {"data.dataset": "csv", "model.arch": "mlp", "model.hidden_sizes": [16]},
        "custom+custom": {"data.dataset": "custom", "model.arch": "custom", "data.input_shape": [3, 8, 8]},
        "synthetic+gan": {
            "data.dataset": "synthetic",
            "model.arch": "gan",
            "model.latent_dim": 16,
            "model.generator_width": 8,
            "model.discriminator_width": 8,
            "checkpoint.monitor": "val_loss_d",  # a GAN has no val_loss
            "early_stopping.monitor": "val_loss_d",
        },
    },
    "strategy": {
        "single": {"cluster.gpus": 1},
        "ddp": {"cluster.gpus": 2},
        "fsdp": {"cluster.gpus": 2, "cluster.strategy": "fsdp"},
    },
    "precision": {precision: {"trainer.precision": precision} for precision in ("32", "bf16-mixed", "16-mixed")},
    "accumulate_grad_batches": {
        "1": {"trainer.accumulate_grad_batches": 1},
        "2": {"trainer.accumulate_grad_batches": 2},
    },
    "gradient_clip_val": {"0": {"trainer.gradient_clip_val": 0.0}, "1.0": {"trainer.gradient_clip_val": 1.0}},
    "scheduler": {
        "none": {"optim.scheduler": "none"},
        "cosine+warmup": {"optim.scheduler": "cosine", "optim.warmup_steps": 2},
        "step": {"optim.scheduler": "step", "optim.step_size": 2},
        "plateau": {"optim.scheduler": "plateau", "optim.plateau_patience": 0},  # the lr drops within a short run
    },
    "scheduler_interval": {interval: {"optim.scheduler_interval": interval} for interval in ("step", "epoch")},
    "optimizer": {optimizer: {"optim.optimizer": optimizer} for optimizer in ("adamw", "adam", "sgd")},
    "manual_optimization": {"off": {"trainer.manual_optimization": False}, "on": {"trainer.manual_optimization": True}},
    "early_stopping": {
        "off": {"early_stopping.enabled": False},
        "on": {"early_stopping.enabled": True, "early_stopping.patience": 1000},  # tracked, never triggered
    },
    "val_check_interval": {"1.0": {"trainer.val_check_interval": 1.0}, "0.5": {"trainer.val_check_interval": 0.5}},
    "save_top_k": {k: {"checkpoint.save_top_k": int(k)} for k in ("0", "1", "-1")},
    "nonfinite_loss": {mode: {"trainer.nonfinite_loss": mode} for mode in ("stop", "skip", "off")},
    "loggers": {
        "tensorboard+csv": {"logging.tensorboard": True, "logging.csv": True},
        "csv": {"logging.tensorboard": False, "logging.csv": True},
        "none": {"logging.tensorboard": False, "logging.csv": False},
    },
    "hooks": {"none": {"hooks.emit": []}, "some": {"hooks.emit": HOOKS}},
    "ema": {"off": {"trainer.ema_decay": 0.0}, "on": {"trainer.ema_decay": 0.9}},
}

# Tiny data and short runs, for every spec: 6 batches of 8 an epoch (on each rank), 3 epochs.
BASE: dict[str, Any] = {
    "data.batch_size": 8,
    "data.synthetic_samples": 160,  # synthetic and custom: 144 to train, 16 to validate; 26 to test
    "data.num_classes": 4,  # custom
    "model.dropout": 0.1,  # random layers: every rank's random state must come back on resume
    "trainer.max_epochs": 3,
    "trainer.limit_train_batches": 6,
    "trainer.limit_val_batches": 2,
    "trainer.limit_test_batches": 2,
    "logging.log_every_n_steps": 2,
    "logging.progress_bar": False,
}
EPOCHS, BATCHES = 3, 6
KILL_AT = BATCHES + 4  # the 10th training_step call: epoch 1, batch 3 (inside an accumulation window of 2)

# The pairs the spec's rules forbid, and why: no valid spec holds them.
GAN, MANUAL = ("task", "synthetic+gan"), ("manual_optimization", "on")
FORBIDDEN: dict[Pair, str] = {
    (GAN, ("strategy", "fsdp")): 'FSDP does not support arch = "gan" (two models) yet',
    (GAN, ("scheduler", "cosine+warmup")): "a GAN's two learning rates stay constant",
    (GAN, ("scheduler", "step")): "a GAN's two learning rates stay constant",
    (GAN, ("scheduler", "plateau")): "a GAN's two learning rates stay constant",
    (GAN, ("manual_optimization", "off")): "a GAN steps its two optimizers by hand",
    (GAN, ("nonfinite_loss", "skip")): "a GAN trains with manual optimization, whose steps cannot be skipped",
    (("scheduler", "plateau"), MANUAL): "manual optimization steps the schedule with its optimizer, not on a metric",
    (MANUAL, ("nonfinite_loss", "skip")): "training_step steps the optimizer itself: the loop has no step to skip",
}

# The first specs of the covering set, and the cheap tier: together they hold DDP, FSDP with manual optimization
# and a schedule (a triple no pair covers, whose sharded checkpoint lacked the schedule when this was written),
# manual optimization with two optimizers (the GAN), 16-mixed, gradient accumulation and top-k checkpoints.
SEEDS: list[Assignment] = [
    {"strategy": "fsdp", "manual_optimization": "on", "scheduler": "cosine+warmup"},
    {"strategy": "ddp", "precision": "16-mixed", "accumulate_grad_batches": "2", "save_top_k": "-1"},
    {"task": "synthetic+gan", "strategy": "single", "save_top_k": "1", "hooks": "some"},
]


def overrides(case: Assignment) -> dict[str, Any]:
    """The spec's dotted keys for an assignment of the factors."""
    settings = dict(BASE)
    for factor, value in case.items():
        settings.update(FACTORS[factor][value])
    return settings


def minimal_toml(settings: dict[str, Any]) -> str:
    """Spec text setting only these keys (parse fills in the defaults): 50x faster to check than spec_text's."""
    sections: dict[str, list[str]] = {}
    for dotted, value in settings.items():
        section, key = dotted.rsplit(".", 1)
        sections.setdefault(section, []).append(f"{key} = {json.dumps(value)}")  # JSON values are TOML here
    return "".join(f"[{section}]\n" + "\n".join(lines) + "\n" for section, lines in sections.items())


def is_valid(case: Assignment) -> bool:
    try:
        spec.parse(minimal_toml(overrides(case)))
    except spec.SpecError:
        return False
    return True


SPACE = Space({factor: list(values) for factor, values in FACTORS.items()}, is_valid)
CASES = SPACE.covering_set(SEEDS)
ALL_COMBINATIONS = os.environ.get("LTGEN_ALL_COMBINATIONS") == "1"
FULL_TIER = [
    pytest.mark.combinations,
    pytest.mark.skipif(
        not ALL_COMBINATIONS,
        reason="the full pairwise set runs with LTGEN_ALL_COMBINATIONS=1 (CI sets it): "
        "LTGEN_ALL_COMBINATIONS=1 python -m pytest tests/test_combinations.py",
    ),
]


def case_id(index: int, case: Assignment) -> str:
    manual = "-manual" if case["manual_optimization"] == "on" else ""
    return f"{index:02d}-{case['task']}-{case['strategy']}{manual}"


def describe(case: Assignment) -> str:
    return ", ".join(f"{factor}={value}" for factor, value in case.items())


# --- the covering set ---


def test_the_rules_forbid_exactly_the_pinned_pairs() -> None:
    """Every pair not in FORBIDDEN is held by a valid spec; no pair in it is. A rule of the spec that changes (FSDP
    learns GANs, say) fails here, and FORBIDDEN is updated with it."""
    forbidden = set(SPACE.all_pairs()) - set(SPACE.allowed_pairs())
    assert sorted(forbidden) == sorted(FORBIDDEN)


def test_the_covering_set_holds_every_allowed_pair_in_valid_specs() -> None:
    """And few of them: 24 specs for the 768 allowed pairs (of 776) when this was written, near the floor of 21 that
    the task and scheduler factors alone need (5 x 4, and the GAN's one). Each spec costs CI time."""
    allowed = SPACE.allowed_pairs()
    covered = set().union(*(SPACE.pairs_of(case) for case in CASES))
    assert [pair for pair in allowed if pair not in covered] == []
    assert len(CASES) <= 26, "the full tier grows: check that CI stays within its time"
    assert not covered & set(FORBIDDEN)
    for case in CASES:
        assert set(case) == set(FACTORS)
        spec.parse(spec_text("combo", overrides(case)))  # the full spec text, as make_project writes it: valid


def test_the_cheap_tier_holds_what_each_pytest_run_must_exercise() -> None:
    cheap = CASES[: len(SEEDS)]
    for seed, case in zip(SEEDS, cheap, strict=True):
        assert seed.items() <= case.items()
    wanted = {
        "ddp": lambda c: c["strategy"] == "ddp",
        "fsdp + manual + a schedule": lambda c: (c["strategy"], c["manual_optimization"]) == ("fsdp", "on")
        and c["scheduler"] != "none",
        "manual optimization": lambda c: c["manual_optimization"] == "on",
        "16-mixed": lambda c: c["precision"] == "16-mixed",
        "accumulation": lambda c: c["accumulate_grad_batches"] != "1",
        "top-k": lambda c: c["save_top_k"] != "0",
    }
    assert [name for name, holds in wanted.items() if not any(map(holds, cheap))] == []


# --- one spec, end to end ---


TORCHRUN = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
ENV = {"OMP_NUM_THREADS": "1"}  # tiny models are slower with several threads per process on a shared CPU
RUN = ("--device", "cpu", "--ckpt-every-n-steps", "1")

KILL_POINT = '''

import os as _os
import signal as _signal


def _killed_on_call(step):
    """training_step, killing its process (as a power cut would) on call number $KILL_AT_TRAINING_STEP."""
    calls = 0

    def training_step_or_kill(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == int(_os.environ.get("KILL_AT_TRAINING_STEP", "0")):
            _os.kill(_os.getpid(), _signal.SIGKILL)
        return step(*args, **kwargs)

    return training_step_or_kill


training_step = _killed_on_call(training_step)
'''

# The hooks carry state across a resume: the number of epochs ended, saved into and read back from checkpoints.
HOOK_STATE = """

_epochs_ended = 0
_stubs = (on_train_epoch_end, on_save_checkpoint, on_load_checkpoint)


def on_train_epoch_end(*args):
    global _epochs_ended
    _epochs_ended += 1
    return _stubs[0](*args)


def on_save_checkpoint(checkpoint):
    checkpoint["epochs_ended"] = _epochs_ended
    return _stubs[1](checkpoint)


def on_load_checkpoint(checkpoint):
    global _epochs_ended
    _epochs_ended = checkpoint["epochs_ended"]
    return _stubs[2](checkpoint)
"""


def write_data(project: Path, task: str) -> None:
    """The files the csv and text datasets read from --data-dir (data/): small, and the same every time."""
    rng = random.Random(0)
    if task == "csv+mlp":
        rows = ["x0,x1,x2,target"]
        for _ in range(200):  # 160 to train, 20 to validate, 20 to test
            x = [rng.gauss(0, 1) for _ in range(3)]
            rows.append(",".join(f"{v:.4f}" for v in x) + "," + "abc"[int(x[0] > 0) + int(x[1] > 0.5)])
        (project / "data").mkdir()
        (project / "data/data.csv").write_text("\n".join(rows) + "\n")
    elif task == "text+gpt":
        words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "and", "runs", "away", "home"]
        (project / "data").mkdir()
        (project / "data/input.txt").write_text(" ".join(rng.choice(words) for _ in range(1000)) + "\n")


def train(
    project: Path, distributed: bool, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """train.py ARGS: in this process, or on 2 CPU ranks under torchrun."""
    launcher = TORCHRUN if distributed else ()
    return run_python(project, *launcher, "train.py", *args, env={**ENV, **(env or {})}, timeout=600)


def output(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-5000:]}"


def train_state(out: Path, sharded: bool) -> dict:
    """The final `last` checkpoint of the one run in out (sharded: its train_state.pt), less the one setting that
    differs between runs."""
    state = torch.load(
        run_dir(out) / ("checkpoints/last/train_state.pt" if sharded else "checkpoints/last.pt"), weights_only=True
    )
    state["config"].pop("out_dir")
    return state


def shards(out: Path) -> dict:
    """The model and optimizer of a sharded `last` checkpoint, consolidated from every rank's shards."""
    target = out / "consolidated.pt"
    with warnings.catch_warnings():  # "torch.distributed is disabled ... assuming a single process": indeed
        warnings.simplefilter("ignore")
        dcp_to_torch_save(run_dir(out) / "checkpoints/last", target)
    return torch.load(target, weights_only=False)


def checkpoint_names(out: Path) -> list[str]:
    """The checkpoint files of the one run in out."""
    return sorted(path.name for path in (run_dir(out) / "checkpoints").iterdir())


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(case, id=case_id(index, case), marks=() if index < len(SEEDS) else FULL_TIER)
        for index, case in enumerate(CASES)
    ],
)
def test_spec_is_clean_runs_and_resumes_bit_for_bit_after_kill_9(case: Assignment, tmp_path: Path) -> None:
    """Render, lint, --fast-dev-run; then 3 epochs uninterrupted, and the same killed on the 10th training_step
    call (epoch 1, mid accumulation window) and resumed: the same final checkpoint, bit for bit."""
    where = describe(case)
    project = make_project(tmp_path / "combo", overrides(case))
    write_data(project, case["task"])
    for tool in (["black", "--check", "."], ["ruff", "check", "--no-cache", "."]):
        result = subprocess.run(tool, cwd=project, capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, f"{where}\n{tool}: {output(result)}"

    # A copy of the project that can be killed mid-run (and whose hooks keep state): the kill point, inert
    # unless KILL_AT_TRAINING_STEP is set, in both runs that are compared.
    killable = shutil.copytree(project, tmp_path / "killable")
    steps_py = killable / "steps.py"
    steps_py.write_text(steps_py.read_text() + KILL_POINT + (HOOK_STATE if case["hooks"] == "some" else ""))
    distributed, sharded = case["strategy"] != "single", case["strategy"] == "fsdp"
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    with ThreadPoolExecutor(3) as pool:  # three independent runs at once: each is mostly start-up
        fast = pool.submit(
            train, project, distributed, "--fast-dev-run", "--device", "cpu", "--out-dir", str(tmp_path / "fast")
        )
        uninterrupted = pool.submit(train, killable, distributed, *RUN, "--out-dir", str(reference))
        kill = {"KILL_AT_TRAINING_STEP": str(KILL_AT)}
        killed = pool.submit(train, killable, distributed, *RUN, "--out-dir", str(resumed), env=kill)

    assert fast.result().returncode == 0, f"{where}\n--fast-dev-run: {output(fast.result())}"
    assert not (tmp_path / "fast").exists(), "--fast-dev-run writes nothing"

    assert uninterrupted.result().returncode == 0, f"{where}\nuninterrupted run: {output(uninterrupted.result())}"
    expected = train_state(reference, sharded)
    accumulate = int(case["accumulate_grad_batches"])
    steps_per_epoch = -(-BATCHES // accumulate)
    assert (expected["epoch"], expected["global_step"]) == (EPOCHS, EPOCHS * steps_per_epoch), where
    if case["hooks"] == "some":
        assert expected["epochs_ended"] == EPOCHS, "on_train_epoch_end and on_save_checkpoint were called"

    if distributed:
        assert killed.result().returncode != 0, f"{where}\nkilled: {output(killed.result())}"
        assert "Signal 9 (SIGKILL)" in killed.result().stderr, f"{where}\nkilled: {output(killed.result())}"
    else:
        assert killed.result().returncode == -signal.SIGKILL, f"{where}\nkilled: {output(killed.result())}"
    # The last checkpoint is the step before the killed batch's: epoch 1 had trained KILL_AT - 1 - BATCHES batches.
    killed_at = steps_per_epoch + (KILL_AT - 1 - BATCHES) // accumulate
    assert train_state(resumed, sharded)["global_step"] == killed_at, where

    continued = train(killable, distributed, *RUN, "--out-dir", str(resumed), "--resume", "last")
    assert continued.returncode == 0, f"{where}\n--resume last: {output(continued)}"
    assert "Resumed from" in continued.stdout, where
    assert_identical(train_state(resumed, sharded), expected, f"last checkpoint ({where})")
    if sharded:
        assert_identical(shards(resumed), shards(reference), f"last checkpoint's shards ({where})")
    assert checkpoint_names(resumed) == checkpoint_names(reference), where
