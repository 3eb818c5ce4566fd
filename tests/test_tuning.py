"""[tune]: the learning-rate finder (--find-lr, Lightning's method) and the batch-size finder (--find-batch-size) of
the emitted tune.py. The lr finder suggests a learning rate near the best one of a problem whose best is known, and
leaves the model, its optimizer and every random state as they were; train.py runs it on a copy of its model, writes
the chart and the CSV, and ends. The batch-size search is checked on the CPU with a step that runs out of memory
above a known size."""

from __future__ import annotations

import copy
import csv
import itertools
import random
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
import torch
from PIL import Image
from torch import nn

from conftest import assert_identical, import_module, make_project, rendered, run_python, spec_text
from ltgen.spec import SpecError, parse
from test_task_custom import CUSTOM

FINDERS = {**CUSTOM, "tune.lr_finder": True, "tune.batch_size_finder": True}
CPU = ("--device", "cpu")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("tuning") / "tuned", FINDERS)


@pytest.fixture(scope="module")
def tune(project: Path) -> ModuleType:
    return import_module(project, "tune")


def regression(hessian_max: float, samples: int = 256, features: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of a linear regression whose loss, half the mean squared error, has a Hessian with eigenvalues
    from hessian_max / 10 to hessian_max (orthogonal features, scaled): gradient descent on it diverges above
    lr = 2 / hessian_max, and lr = 1 / hessian_max is the best one for its steepest direction."""
    generator = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(samples, features, generator=generator))
    x = q * (samples * torch.linspace(0.1, 1.0, features) * hessian_max).sqrt()
    y = x @ torch.randn(features, 1, generator=generator) + 0.01 * torch.randn(samples, 1, generator=generator)
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, samples, 32)]


def half_mse(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return 0.5 * ((model(x) - y) ** 2).mean()


@pytest.mark.parametrize("hessian_max", [30.0, 3000.0])  # the best lr: 0.033, 0.00033
def test_the_suggestion_is_within_a_factor_of_ten_of_the_best_lr_and_below_divergence(
    tune: ModuleType, hessian_max: float
) -> None:
    model = nn.Linear(8, 1, bias=False)
    nn.init.zeros_(model.weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)  # lr 1: the ramp multiplies it
    lrs, losses = tune.find_lr(model, optimizer, tune.cycle(regression(hessian_max)), half_mse)  # 1e-7 to 1
    suggestion = tune.suggest_lr(lrs, losses)
    best = 1 / hessian_max
    assert best / 10 <= suggestion <= 2 / hessian_max, (suggestion, best)
    assert len(lrs) < 100 and lrs[-1] > 2 / hessian_max  # it stopped once the loss diverged


def test_the_loss_is_smoothed_bias_corrected_and_the_search_stops_at_four_times_the_best(tune: ModuleType) -> None:
    assert tune.smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])  # no pull towards 0 at the start
    assert tune.lr_ramp(1e-4, 1.0, 5) == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    model = nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)

    def blows_up_past_1e3(model: nn.Module, batch: None) -> torch.Tensor:  # flat, then steeply up
        return model.weight.sum() * 0 + 1 + (optimizer.param_groups[0]["lr"] / 1e-3) ** 4

    lrs, losses = tune.find_lr(model, optimizer, itertools.repeat(None), blows_up_past_1e3, steps=70)
    smoothed = tune.smooth(losses)
    assert len(lrs) < 70 and lrs[-1] > 1e-3
    assert smoothed[-1] > 4 * min(smoothed) and all(s <= 4 * min(smoothed) for s in smoothed[:-1])


def snapshot(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Everything a training step starts from: the weights, the optimizer's state and every random state."""
    return {
        "model": copy.deepcopy(model.state_dict()),
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
    }


def noisy_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """A loss that draws from both global generators: dropout (torch's) and a noise scale (Python's)."""
    x, y = batch
    return ((model(x * (1 + random.random())) - y) ** 2).mean()


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: tuple) -> None:
    noisy_loss(model, batch).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def test_the_finder_leaves_the_model_its_optimizer_and_every_random_state_as_they_were(
    tune: ModuleType, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    random.seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.5), nn.Linear(16, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = [(torch.randn(8, 4), torch.randn(8, 1)) for _ in range(3)]
    train_step(model, optimizer, batches[0])  # an optimizer with state, as after some training
    before = snapshot(model, optimizer)

    def make_optimizer(probe: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(probe.parameters(), lr=1.0)

    tune.lr_finder(model, make_optimizer, batches, noisy_loss, torch.device("cpu"), tmp_path, steps=30)
    assert_identical(snapshot(model, optimizer), before, "the state after the finder")

    train_step(model, optimizer, batches[1])  # the first step after the finder ...
    after_finder = copy.deepcopy(model.state_dict())
    model.load_state_dict(before["model"])
    optimizer.load_state_dict(before["optimizer"])
    torch.set_rng_state(before["torch"])
    random.setstate(before["python"])
    train_step(model, optimizer, batches[1])  # ... is the step without it
    assert_identical(model.state_dict(), after_finder, "the step after the finder")


def test_find_lr_writes_the_chart_and_the_csv_then_ends_without_training(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_python(project, "train.py", "--find-lr", "--find-lr-steps", "30", "--out-dir", str(out), *CPU)
    assert result.returncode == 0, result.stderr[-3000:]
    suggested = [line for line in result.stdout.splitlines() if line.startswith("Train with it: python train.py --lr ")]
    assert suggested, result.stdout
    float(suggested[0].split()[-1])  # a number to pass to --lr
    with Image.open(out / "lr_find.png") as chart:
        chart.verify()
    with open(out / "lr_find.csv", newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["lr", "loss", "smoothed_loss"] and 2 <= len(rows) - 1 <= 30
    assert float(rows[1][0]) == pytest.approx(1e-7)
    assert not list(out.glob("*/checkpoints/*")) and not list(out.glob("*/metrics.csv"))  # nothing trained


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--find-lr", "--resume", "last"), "--find-lr starts from a fresh model, not a resumed run: drop --resume"),
        (("--find-lr", "--find-lr-min", "1", "--find-lr-max", "0.1"), "expected 0 < min < max"),
        (("--find-batch-size",), "--find-batch-size measures a CUDA GPU's memory"),
    ],
)
def test_refusals_are_one_line_without_a_traceback(project: Path, tmp_path: Path, flags: tuple, message: str) -> None:
    result = run_python(project, "train.py", *flags, "--out-dir", str(tmp_path), *CPU)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def test_under_torchrun_the_finder_asks_for_one_process(tmp_path: Path) -> None:
    project = make_project(tmp_path / "ddp", {**CUSTOM, "tune.lr_finder": True, "cluster.gpus": 2})
    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    result = run_python(project, *torchrun, "train.py", "--find-lr", "--out-dir", str(tmp_path / "out"), *CPU)
    assert result.returncode != 0
    assert "run --find-lr in one process: python train.py --find-lr" in result.stderr
    assert not (tmp_path / "out" / "lr_find.csv").exists()


def test_the_batch_size_search_doubles_then_bisects_and_keeps_a_margin(tune: ModuleType) -> None:
    tried = []

    def step(size: int) -> None:  # a GPU that holds batches of up to 300
        tried.append(size)
        if size > 300:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    assert tune.find_batch_size(step, limit=10_000) == 300
    assert tried[:10] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]  # then between 256 (ran) and 512 (did not)
    assert tried[10:] == [384, 320, 288, 304, 296, 300, 302, 301]
    assert tune.with_margin(300) == 270 and tune.KEEP == 0.9  # 90% of the largest that fits
    tried.clear()
    assert tune.find_batch_size(step, limit=200) == 200 and tried[-2:] == [128, 200]  # capped at the dataset's size

    def broken(size: int) -> None:
        raise RuntimeError("shapes do not match")  # not a lack of memory: the search does not hide it

    with pytest.raises(RuntimeError, match="shapes"):
        tune.find_batch_size(broken, limit=64)


def test_finders_that_do_not_fit_manual_optimization_are_spec_errors() -> None:
    for key in ("tune.lr_finder", "tune.batch_size_finder"):
        with pytest.raises(SpecError) as caught:
            parse(spec_text("g", {key: True, "trainer.manual_optimization": True}))
        assert any(f"{key}: expected false with manual_optimization" in str(p) for p in caught.value.problems)


def test_only_the_lr_finder_brings_matplotlib_and_off_nothing_is_emitted() -> None:
    def files(overrides: dict) -> dict[str, str]:
        return rendered(spec_text("t", overrides))

    def dependencies(tree: dict[str, str]) -> list[str]:
        return tomllib.loads(tree["pyproject.toml"])["project"]["dependencies"]

    off, lr, batch = files({}), files({"tune.lr_finder": True}), files({"tune.batch_size_finder": True})
    assert "tune.py" not in off and "find_" not in off["train.py"] and "import tune" not in off["train.py"]
    assert any(d.startswith("matplotlib") for d in dependencies(lr))
    assert not any(d.startswith("matplotlib") for d in dependencies(batch))
    assert "--find-batch-size" not in lr["train.py"] and "--find-lr" not in batch["train.py"]
