"""GANs and manual optimization: `[model] arch = "gan"` emits a DCGAN (generator + discriminator, one Adam each)
trained by a training_step that runs its own backward passes and optimizer steps ([trainer] manual_optimization),
with sample grids at each validation, exact resume, DDP, and predict.py generating images. Any other model can
train with manual optimization too, and then trains exactly as the automatic loop trains it.

Every project trains on synthetic MNIST-shaped data with tiny models, so that the whole file runs in under a
minute on two CPU cores."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import numpy
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import assert_identical, make_project, run_dir, run_python
from test_resume import CRASH_POINTS, final_state

# 200 samples: 20 for validation and 180 for training, 12 batches of 16 an epoch (the last one 4).
GAN = {
    "model.arch": "gan",
    "trainer.manual_optimization": True,
    "optim.scheduler": "none",
    "checkpoint.save_top_k": 0,
    "data.dataset": "synthetic",
    "data.synthetic_samples": 200,
    "data.batch_size": 16,
    "model.latent_dim": 16,
    "model.generator_width": 8,
    "model.discriminator_width": 8,
    "logging.progress_bar": False,
}
CPU = ("train.py", "--device", "cpu")


def scalars(out: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of every event logged under `tag` in the TensorBoard files of out's one run."""
    events = EventAccumulator(str(run_dir(out)), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


def load_module(path: Path, name: str) -> ModuleType:
    """Import one emitted file under a name of its own (every project has a `model` module; sys.modules keeps one)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- ltgen new --model gan -------------------------------------------------------------------------------


def test_ltgen_new_with_model_gan_turns_on_manual_optimization_and_its_fast_dev_run_writes_nothing(
    tmp_path: Path,
) -> None:
    created = subprocess.run(
        [sys.executable, "-m", "ltgen", "new", "g", "--dataset", "mnist", "--model", "gan"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    project = tmp_path / "g"
    spec = tomllib.loads((project / "ltgen.toml").read_text())
    assert spec["model"]["arch"] == "gan"
    assert spec["trainer"]["manual_optimization"] is True
    assert spec["optim"]["scheduler"] == "none", "two constant-rate Adams: no schedule"
    assert spec["checkpoint"]["save_top_k"] == 0, "no val_loss to rank checkpoints by"
    assert (project / "manual.py").exists()

    before = {p.relative_to(project) for p in project.rglob("*") if "__pycache__" not in p.parts}
    result = run_python(project, *CPU, "--fast-dev-run", "--dataset", "synthetic")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "val_loss_d" in result.stdout and "Test: test_loss_d" in result.stdout, result.stdout
    assert not (project / "outputs").exists(), "--fast-dev-run writes nothing: no checkpoints, no samples"
    assert {p.relative_to(project) for p in project.rglob("*") if "__pycache__" not in p.parts} == before


# --- a short GAN run -------------------------------------------------------------------------------------

# Faster rates than the default 2e-4 (and other betas), so that 12 steps change the samples visibly.
SHORT = {**GAN, "optim.lr_g": 0.002, "optim.lr_d": 0.001, "optim.betas": [0.4, 0.99]}
SHORT_RUN = (*CPU, "--max-epochs", "2", "--limit-train-batches", "6", "--limit-val-batches", "2")


@pytest.fixture(scope="module")
def gan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("gan") / "gan", SHORT)


@pytest.fixture(scope="module")
def trained(gan: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The out-dir of 2 epochs of 6 batches, losses logged every step, validation (and samples) at steps 6 and 12."""
    out = tmp_path_factory.mktemp("trained")
    result = run_python(gan, *SHORT_RUN, "--log-every-n-steps", "1", "--out-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 6: val_loss_d" in result.stdout and "step 12: val_loss_d" in result.stdout, result.stdout
    return out


def test_the_model_is_a_generator_and_a_discriminator_of_the_configured_sizes(gan: Path) -> None:
    model = load_module(gan / "model.py", "gan_model")
    models = model.build_model({"input_shape": [1, 28, 28], "num_outputs": 10}, torch.device("cpu"))
    assert isinstance(models, torch.nn.ModuleDict) and list(models) == ["generator", "discriminator"]
    images = models["generator"](torch.randn(5, 16))  # latent_dim 16
    assert images.shape == (5, 1, 28, 28) and images.abs().max() <= 1, "tanh: images in [-1, 1], as data.py scales"
    assert models["discriminator"](images).shape == (5,), "one logit an image"
    widths = [m.out_channels for m in models["discriminator"].modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths == [8, 16], "discriminator_width, then twice that"
    assert [m.out_channels for m in models["generator"].modules() if isinstance(m, torch.nn.ConvTranspose2d)] == [8, 1]


def test_gan_training_logs_finite_losses_and_sample_grids_that_change(trained: Path) -> None:
    loss_d, loss_g = scalars(trained, "loss_d"), scalars(trained, "loss_g")
    assert [step for step, _ in loss_d] == [step for step, _ in loss_g] == list(range(1, 13)), "logged every step"
    assert all(math.isfinite(value) for _, value in loss_d + loss_g)
    assert len({value for _, value in loss_d}) > 1, "the losses move"
    for tag in ("val_loss_d", "val_loss_g", "val_d_real", "val_d_fake"):
        assert [step for step, _ in scalars(trained, tag)] == [6, 12], tag
    assert all(0 < value < 1 for _, value in scalars(trained, "val_d_real") + scalars(trained, "val_d_fake"))

    run = run_dir(trained)
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step=12.png", "step=6.png"]
    first, second = (Image.open(run / "samples" / name) for name in ("step=6.png", "step=12.png"))
    assert first.mode == "L" and first.size == (8 * 30 + 2, 8 * 30 + 2), "64 images of 28x28, 2-pixel gaps, 8x8"
    changed = numpy.asarray(first) != numpy.asarray(second)
    assert changed.mean() > 0.2, "the generator learned something between the two validations"

    events = EventAccumulator(str(run), size_guidance={"images": 0})
    events.Reload()
    assert "samples" in events.Tags()["images"]
    assert [image.step for image in events.Images("samples")] == [6, 12]


def test_gan_checkpoint_holds_both_models_both_optimizers_and_the_fixed_latent(trained: Path) -> None:
    checkpoints = run_dir(trained) / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.prev.pt", "last.pt"]
    state = torch.load(checkpoints / "last.pt", weights_only=True)
    assert {"model", "optimizers", "fixed_latent", "rng", "epoch", "global_step", "batch_in_epoch", "config",
            "data_info"} <= set(state)  # fmt: skip
    assert "scalers" not in state, "no gradient scaler at precision 32"
    assert state["global_step"] == 12 and state["epoch"] == 2
    prefixes = {name.split(".")[0] for name in state["model"]}
    assert prefixes == {"generator", "discriminator"}
    assert set(state["optimizers"]) == {"generator", "discriminator"}
    for name, lr in (("generator", 0.002), ("discriminator", 0.001)):
        optimizer = state["optimizers"][name]
        assert optimizer["state"], f"{name}'s Adam has stepped"
        assert all(s["step"] == 12 for s in optimizer["state"].values()), f"{name}: one step a batch"
        assert optimizer["param_groups"][0]["lr"] == lr and tuple(optimizer["param_groups"][0]["betas"]) == (0.4, 0.99)
        parameters = sum(1 for key in state["model"] if key.startswith(name) and "running" not in key and
                         "num_batches" not in key)  # fmt: skip
        assert len(optimizer["param_groups"][0]["params"]) == parameters, f"{name}'s Adam holds its own parameters"
    assert state["fixed_latent"].shape == (64, 16)
    expected = torch.randn(64, 16, generator=torch.Generator().manual_seed(42))
    assert torch.equal(state["fixed_latent"], expected), "drawn from the seed, the same in every run"


def test_predict_writes_the_requested_images_and_a_grid_the_same_for_the_same_seed(
    gan: Path, trained: Path, tmp_path: Path
) -> None:
    def generate(folder: str, seed: str) -> dict[str, bytes]:
        result = run_python(
            gan, "predict.py", "--count", "5", "--output", str(tmp_path / folder), "--seed", seed,
            "--out-dir", str(trained), "--device", "cpu",
            env={"MKL_NUM_THREADS": "1"},  # one MKL thread: a busy machine's threaded sums may differ in order
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        return {p.name: p.read_bytes() for p in sorted((tmp_path / folder).iterdir())}

    first = generate("first", "7")
    assert sorted(first) == ["0000.png", "0001.png", "0002.png", "0003.png", "0004.png", "grid.png"]
    assert all(Image.open(tmp_path / "first" / name).size == (28, 28) for name in first if name != "grid.png")
    assert len({first[name] for name in first}) == 6, "five different images"
    assert generate("again", "7") == first, "the same seed gives the same files"
    assert generate("other", "8")["0000.png"] != first["0000.png"], "another seed, other images"


ONE_STEP = """
import json
import torch
from manual import ManualStep
from model import build_model
from steps import configure_optimizers, training_step

torch.manual_seed(0)
models = build_model({"input_shape": [1, 28, 28]}, torch.device("cpu"))
optimizers = configure_optimizers(models, 0.01, 0.01)
before = {name: p.detach().clone() for name, p in models.named_parameters()}
stepped = []  # (optimizer, the models whose parameters hold a gradient when it steps)
for name, optimizer in optimizers.items():
    def note(optimizer, args, kwargs, name=name):
        graded = {key.split(".")[0] for key, p in models.named_parameters() if p.grad is not None}
        stepped.append([name, sorted(graded)])
    optimizer.register_step_pre_hook(note)
images = torch.rand(8, 1, 28, 28) * 2 - 1
by_name = dict(models.items())
losses = training_step(by_name, optimizers, [images, torch.zeros(8)], ManualStep(by_name, optimizers))
print(json.dumps({
    "stepped": stepped,
    "losses": {name: float(value) for name, value in losses.items()},
    "changed": sorted({key.split(".")[0] for key, p in models.named_parameters() if not torch.equal(p, before[key])}),
    "grads_left": [key for key, p in models.named_parameters() if p.grad is not None],
    "frozen_left": [key for key, p in models.named_parameters() if not p.requires_grad],
}))
"""


def test_training_step_updates_the_discriminator_then_the_generator_each_with_its_own_gradients_only(
    gan: Path,
) -> None:
    """step.toggle freezes the other model: the generator loss runs through the discriminator but puts no gradient
    on it, and the discriminator loss reads detached fakes. After the step all gradients are cleared."""
    result = run_python(gan, "-c", ONE_STEP)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["stepped"] == [["discriminator", ["discriminator"]], ["generator", ["generator"]]]
    assert set(report["losses"]) == {"loss_d", "loss_g"} and all(map(math.isfinite, report["losses"].values()))
    assert report["changed"] == ["discriminator", "generator"]
    assert report["grads_left"] == [] and report["frozen_left"] == []


# --- exact resume ----------------------------------------------------------------------------------------

RESUME_RUN = (*CPU, "--max-epochs", "2", "--limit-val-batches", "2", "--log-every-n-steps", "1",
              "--ckpt-every-n-steps", "1")  # fmt: skip
RESUME_STEPS = 2 * 12


@pytest.fixture(scope="module")
def resumable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GAN project whose training_step kills its own process on its Nth call (CRASH_AT_TRAINING_STEP=N)."""
    project = make_project(tmp_path_factory.mktemp("gan_resume") / "gan_resume", GAN)
    steps = (project / "steps.py").read_text()
    crashing = steps.replace(
        "    real = batch[0]\n    fake = ", '    _crash_at("training_step")\n    real = batch[0]\n    fake = ', 1
    )
    assert crashing != steps
    (project / "steps.py").write_text(crashing + CRASH_POINTS)
    return project


@pytest.fixture(scope="module")
def uninterrupted(resumable: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    result = run_python(resumable, *RESUME_RUN, "--out-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.parametrize(
    ("crash_at", "where"),
    [("5", "mid-epoch 0, before any validation"), ("19", "mid-epoch 1, after a validation and its samples")],
)
def test_killed_gan_run_resumes_bit_for_bit_like_an_uninterrupted_one(
    resumable: Path, uninterrupted: Path, tmp_path: Path, crash_at: str, where: str
) -> None:
    crashed = run_python(resumable, *RESUME_RUN, "--out-dir", str(tmp_path), env={"CRASH_AT_TRAINING_STEP": crash_at})
    assert crashed.returncode == -9, f"it was meant to be killed {where}: {crashed.stderr[-2000:]}"
    last = run_dir(tmp_path) / "checkpoints/last.pt"
    before = torch.load(last, weights_only=True)
    assert before["global_step"] == int(crash_at) - 1, "a checkpoint from right before the kill"

    resumed = run_python(resumable, *RESUME_RUN, "--out-dir", str(tmp_path), "--resume", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resumed from {last} at epoch" in resumed.stdout

    expected, actual = final_state(uninterrupted), final_state(tmp_path)
    assert expected["global_step"] == RESUME_STEPS
    assert_identical(actual, expected)  # both models, both Adams, fixed_latent, random states, counters
    for name in ("step=12.png", "step=24.png"):
        resumed_grid, expected_grid = (run_dir(out) / "samples" / name for out in (tmp_path, uninterrupted))
        assert resumed_grid.read_bytes() == expected_grid.read_bytes(), name
    for tag in ("loss_d", "loss_g"):  # the killed run's steps after its checkpoint are purged from TensorBoard
        assert scalars(tmp_path, tag) == scalars(uninterrupted, tag), tag


# --- manual optimization of any model --------------------------------------------------------------------

# 300 samples: 270 for training, 17 batches of 16 (the last one 14), in windows of 3, 3, 3, 3, 3 and 2: 6 steps an
# epoch. Gradient norms run from about 1 to 3, so clipping at 2 clips some windows and not others: a loop that
# forgot to clip, or to divide each loss by the window's length, ends elsewhere. A warm-up + cosine schedule; no
# dropout, so both loops draw the same random numbers.
EQUIVALENT = {
    "data.dataset": "synthetic",
    "data.synthetic_samples": 300,
    "data.batch_size": 16,
    "model.hidden_sizes": [32],
    "model.dropout": 0.0,
    "trainer.accumulate_grad_batches": 3,
    "trainer.gradient_clip_val": 2.0,
    "optim.scheduler": "cosine",
    "optim.warmup_steps": 3,
    "logging.progress_bar": False,
}
EQUIVALENT_STEPS = 2 * 6


def test_manual_optimization_trains_exactly_as_the_automatic_loop(tmp_path: Path) -> None:
    """The same MLP, data and settings, with training_step stepping by hand through ManualStep (which applies
    accumulation, clipping and the schedule) and with the automatic loop: the same weights at the end."""
    states = {}
    for manual in (True, False):
        name = "manual" if manual else "automatic"
        project = make_project(tmp_path / name, {**EQUIVALENT, "trainer.manual_optimization": manual})
        assert (project / "manual.py").exists() == manual
        # One MKL thread: MKL's multithreaded sgemm may sum in another order when the machine is busy (seen in CI:
        # Adam's moments 1e-6 apart), which is not what this test compares.
        out = str(tmp_path / f"{name}_out")
        result = run_python(project, *CPU, "--max-epochs", "2", "--out-dir", out, env={"MKL_NUM_THREADS": "1"})
        assert result.returncode == 0, f"{name}: {result.stderr[-3000:]}"
        states[name] = torch.load(run_dir(Path(out)) / "checkpoints/last.pt", weights_only=True)
    manual, automatic = states["manual"], states["automatic"]

    assert "optimizers" in manual and "schedulers" in manual and "optimizer" not in manual
    assert "optimizer" in automatic and "scheduler" in automatic and "optimizers" not in automatic
    assert set(manual["optimizers"]) == set(manual["schedulers"]) == {"model"}
    assert manual["global_step"] == automatic["global_step"] == EQUIVALENT_STEPS
    assert manual["schedulers"]["model"]["last_epoch"] == automatic["scheduler"]["last_epoch"] == EQUIVALENT_STEPS
    steps = [s["step"] for s in manual["optimizers"]["model"]["state"].values()]
    assert steps and all(s == EQUIVALENT_STEPS for s in steps), "one optimizer step per accumulation window"

    model = load_module(tmp_path / "manual/model.py", "equivalent_model")
    torch.manual_seed(42)
    initial = model.build_model(manual["data_info"], torch.device("cpu")).state_dict()
    assert set(initial) == set(manual["model"]) == set(automatic["model"])
    for name, weight in automatic["model"].items():
        assert torch.allclose(manual["model"][name], weight, rtol=0, atol=1e-6), name
        assert not torch.allclose(weight, initial[name], atol=1e-3), f"{name} trained"
    for key, value in automatic["optimizer"]["state"].items():
        for field in ("exp_avg", "exp_avg_sq"):
            assert torch.allclose(manual["optimizers"]["model"]["state"][key][field], value[field], rtol=0, atol=1e-8)


# --- DDP -------------------------------------------------------------------------------------------------

DUMP_WEIGHTS = (
    "    # Test.\n",
    '    torch.save(raw_model.state_dict(), Path(cfg.out_dir).parent / f"rank{rank}.pt")  # test_gan.py\n    # Test.\n',
)


def test_gan_trains_under_torchrun_with_two_gloo_ranks_that_stay_in_step(tmp_path: Path) -> None:
    project = make_project(tmp_path / "gan_ddp", {**GAN, "cluster.gpus": 2})
    source = (project / "train.py").read_text()
    assert source.count(DUMP_WEIGHTS[0]) == 1
    (project / "train.py").write_text(source.replace(*DUMP_WEIGHTS))  # each rank saves its final weights
    out = tmp_path / "out" / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        *CPU, "--max-epochs", "2", "--limit-train-batches", "4", "--limit-val-batches", "2",
        "--log-every-n-steps", "1", "--out-dir", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("Test: test_loss_d") == 1, "rank 0 alone prints"

    for tag in ("loss_d", "loss_g"):
        logged = scalars(out, tag)
        assert [step for step, _ in logged] == list(range(1, 9)), tag
        assert all(math.isfinite(value) for _, value in logged), tag
    assert sorted(p.name for p in (run_dir(out) / "samples").iterdir()) == ["step=4.png", "step=8.png"]

    ranks = [torch.load(tmp_path / "out" / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    parameters = [name for name, _ in load_module(project / "model.py", "ddp_model").build_model(
        {"input_shape": [1, 28, 28]}, torch.device("cpu")).named_parameters()]  # fmt: skip
    for name in parameters:  # DDP all-reduces the gradients, so every rank takes the same steps
        assert torch.equal(ranks[0][name], ranks[1][name]), f"{name} differs between the ranks"
    state = torch.load(run_dir(out) / "checkpoints/last.pt", weights_only=True)
    assert state["global_step"] == 8 and len(state["rng"]) == 2, "every rank's random state is saved"
    assert_identical(state["model"], ranks[0], "rank 0's checkpoint")


def test_a_cifar10_gan_in_16_mixed_generates_colour_images_and_saves_both_loss_scalers(tmp_path: Path) -> None:
    """The same preset on CIFAR-10's shapes (3 x 32 x 32) in 16-mixed precision, which on the CPU runs as bf16 with
    the scalers off: the grids and predict.py's images are RGB and 32 pixels wide, and the checkpoint keeps one
    loss scaler per optimizer."""
    project = make_project(tmp_path / "cifargan", {**GAN, "data.dataset": "cifar10", "trainer.precision": "16-mixed"})
    out = tmp_path / "out"
    args = ("--dataset", "synthetic", "--max-epochs", "1", "--limit-train-batches", "3", "--limit-val-batches", "1")
    result = run_python(project, *CPU, *args, "--out-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "16-mixed precision needs a GPU" in result.stdout + result.stderr
    with Image.open(run_dir(out) / "samples/step=3.png") as grid:
        assert grid.mode == "RGB" and grid.size == (8 * 34 + 2, 8 * 34 + 2)  # 64 images of 32 px, 2 px apart
    state = torch.load(run_dir(out) / "checkpoints/last.pt", weights_only=True)
    assert set(state["scalers"]) == {"generator", "discriminator"}
    made = run_python(project, "predict.py", "--count", "2", "--output", str(tmp_path / "gen"), "--out-dir", str(out))
    assert made.returncode == 0, made.stderr[-3000:]
    with Image.open(tmp_path / "gen/0000.png") as image:
        assert (image.mode, image.size) == ("RGB", (32, 32))
