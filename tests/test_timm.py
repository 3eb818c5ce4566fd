"""arch = "timm": a timm backbone with a new head sized from the data, its weights from a local file (written here
with timm itself: no downloads), images resized and normalized as the backbone was pretrained in training and in
predict.py alike, freeze_backbone and backbone_lr_scale; and activation checkpointing of ResNet stages and timm
models. timm's "test_resnet" (370k parameters, 160x160 inputs) keeps every run small."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import safetensors.torch
import timm
import torch
from typer.testing import CliRunner

from conftest import make_project, run_dir, run_python
from ltgen.cli import app
from test_task_image import write_image_folder

CPU = ("--device", "cpu", "--no-progress-bar")
BACKBONE = "test_resnet"
FOLDER = {  # an image folder of 3 classes, the backbone frozen, activation checkpointing on
    "data.dataset": "image_folder",
    "data.image_size": 32,
    "data.batch_size": 8,
    "model.arch": "timm",
    "model.timm_model": BACKBONE,
    "model.freeze_backbone": True,
    "model.activation_checkpointing": True,
    "optim.backbone_lr_scale": 0.1,
}
PROJECT_MODULES = ("flags", "model", "data", "steps", "checkpoint")


def project_modules(project: Path, *names: str) -> list[ModuleType]:
    """The project's modules, imported afresh (another project's modules of the same names may have been)."""
    for name in PROJECT_MODULES:
        sys.modules.pop(name, None)
    sys.path.insert(0, str(project))
    try:
        return [importlib.import_module(name) for name in names]
    finally:
        sys.path.remove(str(project))
        for name in PROJECT_MODULES:
            sys.modules.pop(name, None)


def fails_clearly(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit status 2 and one line on stderr that says it all, no traceback."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """test_resnet's weights (random, with ImageNet's 1000-class head) as a .safetensors file."""
    path = tmp_path_factory.mktemp("weights") / f"{BACKBONE}.safetensors"
    torch.manual_seed(0)
    safetensors.torch.save_file(timm.create_model(BACKBONE).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def folder_project(tmp_path_factory: pytest.TempPathFactory, weights: Path) -> Path:
    return make_project(tmp_path_factory.mktemp("timm") / "folder", {**FOLDER, "model.pretrained_file": str(weights)})


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("images") / "data", per_class=6)


def test_pretrained_file_gives_the_backbone_and_a_new_head_sized_from_the_data(
    folder_project: Path, weights: Path
) -> None:
    model, steps = project_modules(folder_project, "model", "steps")
    assert f'TIMM_MODEL = "{BACKBONE}"' in (folder_project / "model.py").read_text()
    net = model.build_model({"num_outputs": 3}, torch.device("cpu"))
    saved, own = safetensors.torch.load_file(weights), net.state_dict()
    assert tuple(net.get_classifier().weight.shape) == (3, 96) and saved["fc.weight"].shape == (1000, 96)
    backbone = [name for name in own if not name.startswith("fc.")]
    assert backbone and all(torch.equal(own[name], saved[name]) for name in backbone), "the file's backbone"

    # freeze_backbone: only the head trains; BatchNorm keeps the file's statistics, in training mode too.
    assert {name for name, p in net.named_parameters() if p.requires_grad} == {"fc.weight", "fc.bias"}
    optimizer, _ = steps.configure_optimizers(net, 0.01, 10)
    head = net.fc.weight.detach().clone()
    net.train()
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(net(torch.randn(4, 3, 160, 160)), torch.tensor([0, 1, 2, 0]))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = net.state_dict()
    assert all(torch.equal(after[name], saved[name]) for name in backbone), "a frozen backbone stays as loaded"
    assert not torch.equal(net.fc.weight, head), "the head trains"

    # backbone_lr_scale reaches the optimizer: the head at lr, the (unfrozen) backbone at lr * 0.1.
    model.FREEZE_BACKBONE = False
    net = model.build_model({"num_outputs": 3}, torch.device("cpu"))
    optimizer, _ = steps.configure_optimizers(net, 0.01, 10)
    head_ids = {id(p) for p in net.get_classifier().parameters()}
    lrs = {group["lr"] for group in optimizer.param_groups if all(id(p) in head_ids for p in group["params"])}
    backbone_lrs = {
        group["lr"] for group in optimizer.param_groups if not any(id(p) in head_ids for p in group["params"])
    }
    assert lrs == {0.01} and backbone_lrs and all(lr == pytest.approx(0.001) for lr in backbone_lrs)
    assert sum(p.numel() for group in optimizer.param_groups for p in group["params"]) == sum(
        p.numel() for p in net.parameters()
    ), "every parameter in exactly one group"


def test_batches_are_resized_and_normalized_with_the_backbones_pretrained_config(
    folder_project: Path, tmp_path: Path
) -> None:
    config = timm.get_pretrained_cfg(BACKBONE)
    (data,) = project_modules(folder_project, "data")
    images = torch.full((2, 3, 32, 32), 51, dtype=torch.uint8)
    prepared, labels = data.prepare_batch([images, torch.tensor([0, 1])], seed=0, train=False)
    assert prepared.shape == (2, *config.input_size) and labels.tolist() == [0, 1]
    expected = (0.2 - torch.tensor(config.mean)) / torch.tensor(config.std)  # 51 / 255 = 0.2
    assert torch.allclose(prepared.mean(dim=(0, 2, 3)), expected, atol=1e-5)

    # MNIST-shaped grey images: repeated in each of the backbone's 3 channels; random weights (pretrained = false).
    spec = {"data.dataset": "synthetic", "model.arch": "timm", "model.timm_model": BACKBONE, "model.pretrained": False}
    project = make_project(tmp_path / "grey", {**spec, "data.synthetic_samples": 60, "data.batch_size": 16})
    assert "PRETRAINED_FILE" not in (project / "model.py").read_text()
    (data,) = project_modules(project, "data")
    grey = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    prepared, _ = data.prepare_batch([grey, torch.tensor([0, 1])], seed=0, train=False)
    assert prepared.shape == (2, 3, 160, 160)
    pixels = prepared * torch.tensor(config.std).view(3, 1, 1) + torch.tensor(config.mean).view(3, 1, 1)
    assert torch.allclose(pixels[:, 0], pixels[:, 1], atol=1e-5) and torch.allclose(
        pixels[:, 0], pixels[:, 2], atol=1e-5
    )
    result = run_python(project, "train.py", *CPU, "--fast-dev-run", "--dataset", "synthetic")
    assert result.returncode == 0 and "Test: test_loss" in result.stdout, result.stderr[-3000:]


def test_fine_tunes_frozen_with_checkpointing_and_predict_normalizes_as_training_does(
    folder_project: Path, weights: Path, images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ("--data-dir", str(images), "--out-dir", str(out), "--max-steps", "4", "--lr", "0.01")
    result = run_python(folder_project, "train.py", *CPU, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    last = run_dir(out) / "checkpoints/last.pt"
    state = torch.load(last, weights_only=True)
    saved = safetensors.torch.load_file(weights)
    assert state["model"]["fc.weight"].shape == (3, 96)
    assert all(torch.equal(value, saved[name]) for name, value in state["model"].items() if not name.startswith("fc."))

    image = images / "train/cat/1.png"
    predicted = run_python(folder_project, "predict.py", str(image), "--checkpoint", str(last), "--top", "3")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    row = predicted.stdout.strip().split("\t")
    printed = dict(zip(row[1::2], map(float, row[2::2])))
    model, data = project_modules(folder_project, "model", "data")
    net = model.build_model(state["data_info"], torch.device("cpu"), pretrained=False)
    net.load_state_dict(state["model"])
    batch = [data.decode(image, state["data_info"]["input_shape"])[None], torch.zeros(1, dtype=torch.long)]
    inputs, _ = data.prepare_batch(batch, seed=0, train=False)  # as validation prepares it
    with torch.inference_mode():
        probabilities = net.eval()(inputs).softmax(dim=1)[0].tolist()
    expected = dict(zip(state["data_info"]["classes"], probabilities))
    assert printed.keys() == expected.keys()
    assert all(abs(printed[name] - expected[name]) < 1e-4 for name in expected), (printed, expected)


def test_ltgen_new_image_folder_timm_fine_tunes_from_a_local_file_and_predicts(images: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["new", "x", "--dataset", "image_folder", "--model", "timm", "--dir", str(tmp_path)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    project = tmp_path / "x"
    source = (project / "model.py").read_text()
    assert (
        'TIMM_MODEL = "resnet50"' in source
        and 'PRETRAINED_FILE = ""' in source
        and "timm" in (project / "pyproject.toml").read_text()
    )
    # A torch state dict this time; the user names the backbone and the file in model.py's constants.
    torch.save(timm.create_model(BACKBONE).state_dict(), tmp_path / "weights.pth")
    source = source.replace('TIMM_MODEL = "resnet50"', f'TIMM_MODEL = "{BACKBONE}"')
    (project / "model.py").write_text(
        source.replace('PRETRAINED_FILE = ""', f'PRETRAINED_FILE = "{tmp_path}/weights.pth"')
    )
    out = tmp_path / "out"
    args = ("--data-dir", str(images), "--out-dir", str(out), "--max-steps", "2", "--batch-size", "8")
    trained = run_python(project, "train.py", *CPU, *args)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "Test: test_loss" in trained.stdout
    predicted = run_python(project, "predict.py", str(images / "train"), "--out-dir", str(out), "--device", "cpu")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    rows = [line.split("\t") for line in predicted.stdout.strip().splitlines()]
    assert len(rows) == 18 and all(row[1] in ("cat", "dog", "frog") and 0 <= float(row[2]) <= 1 for row in rows)


def test_an_unknown_name_a_foreign_weights_file_or_no_network_fail_clearly(
    folder_project: Path, tmp_path: Path
) -> None:
    project = shutil.copytree(folder_project, tmp_path / "p")
    source = (project / "model.py").read_text()

    def run_with(constant: str, value: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """train.py with model.py's `constant` set to the string `value`."""
        (project / "model.py").write_text(
            re.sub(rf"^{constant} = .*$", f"{constant} = {value!r}", source, flags=re.MULTILINE)
        )
        return run_python(project, "train.py", *CPU, "--fast-dev-run", "--dataset", "synthetic", env=env)

    typo = run_with("TIMM_MODEL", "test_resnett")
    fails_clearly(typo, "[model] timm_model = 'test_resnett' is not a timm model", "did you mean test_resnet")

    vit = tmp_path / "vit.safetensors"
    safetensors.torch.save_file(timm.create_model("test_vit").state_dict(), vit)
    foreign = run_with("PRETRAINED_FILE", str(vit))
    fails_clearly(foreign, f"pretrained_file = '{vit}' does not hold {BACKBONE}'s weights", "missing", "unexpected")
    assert re.search(r"\d+ missing \(conv1\.0\.weight", foreign.stderr), foreign.stderr

    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a state dict" * 8)
    fails_clearly(run_with("PRETRAINED_FILE", str(junk)), f"pretrained_file = '{junk}' cannot be read as weights")

    # The Hub, offline and with nothing cached: the error names the file to fetch and pretrained_file as the way.
    offline = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")}
    hub = run_with("PRETRAINED_FILE", "", env=offline)
    url = "https://huggingface.co/timm/test_resnet.r160_in1k/resolve/main/model.safetensors"
    fails_clearly(hub, f"Could not download {BACKBONE}'s pretrained weights, {url}", "[model] pretrained_file")


# --- activation checkpointing ----------------------------------------------------------------------------


def one_step_gradients(net: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    net.train()
    torch.nn.functional.cross_entropy(net(inputs), labels).backward()
    return {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}


def test_resnet_stages_recomputed_in_the_backward_give_the_same_gradients_and_statistics(tmp_path: Path) -> None:
    spec = {"model.arch": "resnet", "model.depth": 10, "model.width": 8, "model.dropout": 0.0}
    project = make_project(
        tmp_path / "ckpt", {**spec, "data.dataset": "synthetic", "model.activation_checkpointing": True}
    )
    assert "checkpoint" not in (make_project(tmp_path / "plain", spec) / "model.py").read_text(), "off: no code"
    (model,) = project_modules(project, "model")
    torch.manual_seed(0)
    net = model.build_model({"input_shape": [1, 28, 28], "num_outputs": 10}, torch.device("cpu"))
    initial = {name: value.clone() for name, value in net.state_dict().items()}
    runs = []
    net.stage2.register_forward_pre_hook(lambda *_: runs.append(1))
    inputs, labels = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    gradients = one_step_gradients(net, inputs, labels)
    after = {name: value.clone() for name, value in net.state_dict().items()}
    assert len(runs) == 2, "stage2 ran in the forward and again in the backward"

    model.ACTIVATION_CHECKPOINTING = False  # the same model and batch, without checkpointing
    net.load_state_dict(initial)
    net.zero_grad(set_to_none=True)
    runs.clear()
    expected = one_step_gradients(net, inputs, labels)
    assert len(runs) == 1
    assert gradients.keys() == expected.keys()
    assert all(torch.allclose(gradients[name], expected[name], rtol=0, atol=1e-6) for name in expected)
    for name, value in net.state_dict().items():  # BatchNorm's running statistics and batch counts
        assert torch.equal(after[name], value), f"{name}: updated once a batch, as without checkpointing"


def test_timm_model_with_activation_checkpointing_gives_the_same_gradients(folder_project: Path) -> None:
    (model,) = project_modules(folder_project, "model")
    model.FREEZE_BACKBONE, model.DROPOUT = False, 0.0
    torch.manual_seed(0)
    checkpointed = model.build_model({"num_outputs": 3}, torch.device("cpu"))
    assert checkpointed.grad_checkpointing
    model.ACTIVATION_CHECKPOINTING = False
    plain = model.build_model({"num_outputs": 3}, torch.device("cpu"))
    assert not plain.grad_checkpointing
    plain.load_state_dict(checkpointed.state_dict())
    inputs, labels = torch.randn(4, 3, 160, 160), torch.tensor([0, 1, 2, 0])
    expected, gradients = one_step_gradients(plain, inputs, labels), one_step_gradients(checkpointed, inputs, labels)
    assert gradients.keys() == expected.keys()
    assert all(torch.allclose(gradients[name], expected[name], rtol=0, atol=1e-6) for name in expected)
