"""[trainer] ema_decay: an exponential moving average of the weights, updated after optimizer steps, which
validation, the test, top-k ranking and predict.py use while the raw weights train; saved in every checkpoint and
restored bit for bit; identical on every DDP rank and sharded like the parameters under FSDP.

The average is checked against a hand computation from the raw weights, recorded at every step by the
on_train_batch_end hook a researcher would write."""

from __future__ import annotations

import csv
import signal
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

from conftest import assert_identical, import_module, make_project, run_dir, run_python
from test_fsdp import consolidated
from test_resume import add_crash_points, final_state

DECAY, EVERY, START = 0.9, 2, 3
SPEC = {
    "data.dataset": "synthetic",
    "data.synthetic_samples": 600,  # 540 for training: 17 batches of 32 an epoch
    "data.batch_size": 32,
    "model.arch": "resnet",  # BatchNorm: buffers, which the EMA copies rather than averages
    "model.depth": 10,
    "model.width": 4,
    "model.dropout": 0.0,
    "trainer.ema_decay": DECAY,
    "trainer.ema_every_n_steps": EVERY,
    "trainer.ema_start_step": START,
    "logging.progress_bar": False,
    "hooks.emit": ["on_fit_start", "on_train_batch_end"],
}
CPU = ("train.py", "--device", "cpu", "--num-sanity-val-steps", "0")

RECORD_WEIGHTS = '''

def _record(model: nn.Module, step: int) -> None:
    """Save the raw weights after optimizer step `step` (0: before training) for the test to average by hand."""
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, f"weights-{step}.pt")
'''


def record_raw_weights(project: Path) -> None:
    """Fill the two hook stubs: the raw weights before training and after every optimizer step, to files."""
    steps = (project / "steps.py").read_text()
    fit_start = '    """Called once before the first training step (also when resuming)."""\n'
    batch_end = '    """Called after every optimizer step, with the last batch\'s loss (reading it with .item() waits for the device)."""\n'
    assert fit_start in steps and batch_end in steps
    steps = steps.replace(fit_start, fit_start + "    _record(model, 0)\n").replace(
        batch_end, batch_end + "    _record(model, step)\n"
    )
    (project / "steps.py").write_text(steps + RECORD_WEIGHTS)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = make_project(tmp_path_factory.mktemp("ema") / "ema", SPEC)
    record_raw_weights(project)
    return project


def test_the_ema_is_the_average_of_the_raw_weights_step_by_step(project: Path, tmp_path: Path) -> None:
    steps = 10
    result = run_python(
        project, *CPU, "--max-steps", str(steps), "--limit-val-batches", "1", "--out-dir", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    raw = [torch.load(project / f"weights-{step}.pt", weights_only=True) for step in range(steps + 1)]
    parameters = {
        name
        for name, _ in import_module(project)
        .build_model(
            torch.load(run_dir(tmp_path) / "checkpoints/last.pt", weights_only=True)["data_info"], torch.device("cpu")
        )
        .named_parameters()
    }
    # by hand, in float64: a copy of the weights up to START, then every EVERY steps ema = d * ema + (1 - d) * w
    expected = {name: value.double() for name, value in raw[0].items()}
    for step in range(1, steps + 1):
        if step <= START:
            expected = {name: value.double() for name, value in raw[step].items()}
        elif step % EVERY == 0:
            for name, value in raw[step].items():
                average = DECAY * expected[name] + (1 - DECAY) * value.double()
                expected[name] = average if name in parameters else value.double()  # buffers are copied
    ema = torch.load(run_dir(tmp_path) / "checkpoints/last.pt", weights_only=True)["ema"]
    assert set(ema) == set(raw[-1]) and any(name not in parameters for name in ema)  # BatchNorm's buffers too
    for name, value in ema.items():
        torch.testing.assert_close(value.double(), expected[name], rtol=1e-5, atol=1e-6, msg=name)
    model = torch.load(run_dir(tmp_path) / "checkpoints/last.pt", weights_only=True)["model"]
    assert_identical(model, raw[-1], "the raw weights train on")  # the checkpoint's "model" stays the raw weights
    assert not all(torch.equal(ema[name], model[name]) for name in parameters)


def val_losses(out: Path) -> list[float]:
    with open(run_dir(out) / "metrics.csv") as file:
        return [float(row["val_loss"]) for row in csv.DictReader(file) if row.get("val_loss")]


def test_validation_and_the_test_use_the_ema_weights(project: Path, tmp_path: Path) -> None:
    """The logged val_loss is the EMA weights' loss, not the raw weights' (which differ enough to tell apart)."""
    result = run_python(project, *CPU, "--max-epochs", "1", "--limit-train-batches", "8", "--out-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    state = torch.load(run_dir(tmp_path) / "checkpoints/last.pt", weights_only=True)
    train = import_module(project, "train")
    data, model_py, steps = (import_module(project, name) for name in ("data", "model", "steps"))
    _, val_set, _, data_info = data.make_datasets("synthetic", state["config"]["seed"])
    loader = data.make_loader(val_set, 32, state["config"]["seed"], torch.device("cpu"), train=False)
    losses = {}
    for weights in ("ema", "model"):
        model = model_py.build_model(data_info, torch.device("cpu"))
        model.load_state_dict(state[weights])
        losses[weights] = train.evaluate(model, loader, steps.validation_step, len(loader), "val", torch.device("cpu"))
    logged = val_losses(tmp_path)[-1]
    assert logged == pytest.approx(losses["ema"]["val_loss"], rel=1e-6)
    assert logged != pytest.approx(losses["model"]["val_loss"], rel=1e-5)  # evaluation is deterministic
    # predict.py's loader takes the EMA weights too
    checkpoint = import_module(project, "checkpoint")
    loaded = checkpoint.load_weights(model_py.build_model(data_info, torch.device("cpu")), state, Path("last.pt"))
    assert_identical(loaded.state_dict(), state["ema"], "predict.py's weights")


def test_killed_and_resumed_with_ema_ends_bit_for_bit(tmp_path_factory: pytest.TempPathFactory) -> None:
    project = make_project(tmp_path_factory.mktemp("ema-resume") / "emaresume", {**SPEC, "hooks.emit": []})
    add_crash_points(project)
    args = (*CPU, "--max-epochs", "2", "--limit-train-batches", "6", "--ckpt-every-n-steps", "1")
    reference = tmp_path_factory.mktemp("reference")
    assert run_python(project, *args, "--out-dir", str(reference)).returncode == 0
    out = tmp_path_factory.mktemp("crashed")
    crashed = run_python(project, *args, "--out-dir", str(out), env={"CRASH_AT_TRAINING_STEP": "8"})
    assert crashed.returncode == -signal.SIGKILL
    resumed = run_python(project, *args, "--out-dir", str(out), "--resume", "last")
    assert resumed.returncode == 0 and "Resumed from" in resumed.stdout, resumed.stderr
    expected = final_state(reference)
    assert "ema" in expected
    assert_identical(final_state(out), expected)


def test_a_run_that_turns_ema_on_when_it_resumes_starts_it_from_the_weights(tmp_path: Path) -> None:
    """Its checkpoints from before hold no EMA: resuming and testing with their best one use its weights."""
    args = (*CPU, "--max-epochs", "1", "--limit-train-batches", "4", "--out-dir", str(tmp_path / "out"))
    without = make_project(tmp_path / "without", {**SPEC, "hooks.emit": [], "trainer.ema_decay": 0.0})
    assert run_python(without, *args).returncode == 0
    with_ema = make_project(tmp_path / "withema", {**SPEC, "hooks.emit": []})
    resumed = run_python(with_ema, *args, "--resume", "last")  # nothing left to train: straight to the test
    assert resumed.returncode == 0, resumed.stderr
    assert "Nothing to train" in resumed.stdout and "Test: test_loss" in resumed.stdout


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo")
def test_ddp_ranks_hold_the_same_ema(tmp_path: Path) -> None:
    project = make_project(tmp_path / "emaddp", {**SPEC, "hooks.emit": [], "cluster.gpus": 2})
    source = (project / "train.py").read_text()
    update = "update_ema(ema_model, raw_model, cfg.ema_decay if global_step > cfg.ema_start_step else 0.0)\n"
    assert update in source
    indent = source[: source.index(update)].rsplit("\n", 1)[1]
    save = f'{indent}torch.save(ema_model.state_dict(), f"ema-rank{{rank}}.pt")\n'  # each rank's own copy
    (project / "train.py").write_text(source.replace(update, update + save))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = run_python(
        project,
        *torchrun[1:],
        *CPU,
        "--max-steps",
        "5",
        "--limit-val-batches",
        "1",
        "--out-dir",
        str(tmp_path / "o"),
        env={"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(project / f"ema-rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert_identical(ranks[1], ranks[0], "rank 1's EMA")
    saved = torch.load(run_dir(tmp_path / "o") / "checkpoints/last.pt", weights_only=True)["ema"]
    assert_identical(saved, ranks[0], "the checkpoint's EMA")


# 600 synthetic images: 540 for training, batches of 16 per rank; 2 epochs of 5 steps.
MLP = {
    "data.dataset": "synthetic",
    "data.synthetic_samples": 600,
    "data.batch_size": 16,
    "model.dropout": 0.0,
    "optim.scheduler": "none",  # a run stopped at --max-steps resumes on the same schedule
    "trainer.ema_decay": 0.8,
    "cluster.gpus": 2,
    "logging.progress_bar": False,
}
FSDP_ARGS = ("--max-epochs", "2", "--limit-train-batches", "5", "--limit-val-batches", "2")


def torchrun(project: Path, out: Path, *args: str) -> None:
    command = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *CPU, "--out-dir", str(out))
    result = run_python(project, *command, *FSDP_ARGS, *args, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]


def test_fsdp_shards_the_ema_like_the_parameters_and_resumes_it(tmp_path: Path) -> None:
    fsdp = make_project(tmp_path / "emafsdp", {**MLP, "cluster.strategy": "fsdp"})
    torchrun(fsdp, tmp_path / "whole")
    torchrun(fsdp, tmp_path / "stopped", "--max-steps", "6")
    torchrun(fsdp, tmp_path / "stopped", "--resume", "last")
    ddp = make_project(tmp_path / "emaddp", {**MLP, "cluster.strategy": "ddp"})
    torchrun(ddp, tmp_path / "ddp")

    last = run_dir(tmp_path / "whole") / "checkpoints/last"
    saved = dcp.FileSystemReader(last).read_metadata()
    weight = next(name for name in saved.state_dict_metadata if name.startswith("ema.") and name.endswith("weight"))
    assert len(saved.state_dict_metadata[weight].chunks) == 2, "each rank saved its shard of the EMA"
    whole = consolidated(last, tmp_path / "scratch")
    resumed = consolidated(run_dir(tmp_path / "stopped") / "checkpoints/last", tmp_path / "scratch")
    assert_identical(resumed["ema"], whole["ema"], "the resumed run's EMA")
    assert_identical(resumed["model"], whole["model"], "the resumed run's weights")
    # the sharded EMA is the EMA DDP computes, and what predict.py reads from the folder
    expected = torch.load(run_dir(tmp_path / "ddp") / "checkpoints/last.pt", weights_only=True)["ema"]
    for name, tensor in expected.items():
        torch.testing.assert_close(whole["ema"][name], tensor, rtol=1e-4, atol=1e-6, msg=name)
    checkpoint = import_module(fsdp, "checkpoint")
    assert_identical(checkpoint.full_weights(last), whole["ema"], "full_weights")
