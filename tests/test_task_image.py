"""The image presets beyond MNIST: CIFAR-10 + ResNet, image folders, predict.py, and every loop feature kept
(exact resume with augmentation, DDP, regen from mnist/cnn). Real readers run on real formats written here:
a CIFAR-10 tarball in the official pickle layout, and a folder of PNGs written with Pillow."""

from __future__ import annotations

import pickle
import re
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy
import pytest
import torch
from PIL import Image

import regen_helpers
from conftest import make_project, run_dir, run_python
from test_resume import add_crash_points, assert_identical, final_state

CPU = ("--device", "cpu", "--no-progress-bar")
TINY = {"model.arch": "resnet", "model.depth": 10, "model.width": 8}  # 78k parameters
CIFAR = {"data.dataset": "cifar10", "data.augment": True, **TINY, "data.synthetic_samples": 600, "data.batch_size": 32}
CIFAR_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
OFFLINE = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}  # any download fails at once


def last_metric(output: str, name: str) -> float:
    return float(re.findall(rf"{name} ([0-9.]+)", output)[-1])


@pytest.fixture(scope="module")
def cifar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("cifar") / "cifar", CIFAR)


# --- CIFAR-10 + ResNet on synthetic data ---------------------------------------------------------------


def test_cifar_resnet_project_is_clean_and_its_own_smoke_test_passes(cifar: Path) -> None:
    for command in (["ruff", "check", "."], ["black", "--check", "."], [sys.executable, "-m", "pytest", "-q", "tests"]):
        result = subprocess.run(command, cwd=cifar, capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, f"{command}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    model = (cifar / "model.py").read_text()
    assert "DEPTH = 10" in model and "WIDTH = 8" in model and "BLOCKS = (1, 1, 1, 1)" in model
    assert "AUGMENT = True" in (cifar / "data.py").read_text()


def test_resnet_is_a_cifar_resnet_of_the_configured_depth(cifar: Path) -> None:
    sys.path.insert(0, str(cifar))
    try:
        import model
    finally:
        sys.path.remove(str(cifar))
    net = model.build_model({"input_shape": [3, 32, 32], "num_outputs": 10}, torch.device("cpu"))
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 1 + 2 * 4, "stem + two 3x3 convolutions in each of 4 blocks: ResNet-10"
    assert [m.out_channels for m in convs[1::2]] == [8, 16, 32, 64], "width, 2x, 4x, 8x"
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in net.modules()), "CIFAR stem: no max-pool"
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    blocks = [m for m in net.modules() if isinstance(m, model.BasicBlock)]
    assert all(torch.equal(b.bn2.weight, torch.zeros_like(b.bn2.weight)) for b in blocks), "zero-init residuals"


def test_resnet_learns_synthetic_class_patterns(tmp_path: Path) -> None:
    # With augmentation, as cifar10 projects train by default (the synthetic patterns survive crops and flips).
    project = make_project(tmp_path / "learn", {**CIFAR, "data.synthetic_samples": 1200})
    result = run_python(project, "train.py", *CPU, "--dataset", "synthetic", "--max-epochs", "3", "--lr", "0.01")
    assert result.returncode == 0, result.stderr
    assert last_metric(result.stdout, "val_acc") > 0.3, result.stdout[-1000:]  # chance: 0.1


# --- the CIFAR-10 reader ---------------------------------------------------------------------------------


def cifar_batch(rng: numpy.random.Generator, n: int) -> bytes:
    """One batch as the official files hold it: a pickled dict of bytes keys, a uint8 (n, 3072) array of
    planes R, G, B, and a list of labels. Those files come from Python 2, whose pickles name numpy.core."""
    batch = {
        b"batch_label": b"training batch",
        b"labels": rng.integers(0, 10, n).tolist(),
        b"data": rng.integers(0, 256, (n, 3072), dtype=numpy.uint8),
        b"filenames": [b"img%d.png" % i for i in range(n)],
    }
    return pickle.dumps(batch, protocol=3).replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def write_cifar(folder: Path, per_batch: int = 24) -> Path:
    """cifar-10-python.tar.gz in `folder`, holding cifar-10-batches-py/ with small batches."""
    rng = numpy.random.default_rng(0)
    extracted = folder / "cifar-10-batches-py"
    extracted.mkdir(parents=True)
    for name in CIFAR_NAMES:
        (extracted / name).write_bytes(cifar_batch(rng, per_batch))
    (extracted / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"]}, protocol=3))
    with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(extracted, arcname="cifar-10-batches-py")
    return folder


def test_cifar_reader_trains_on_the_tarball_and_on_its_extracted_folder(cifar: Path, tmp_path: Path) -> None:
    data = write_cifar(tmp_path / "data")
    for source in ("tarball", "folder"):
        if source == "tarball":
            (data / "cifar-10-batches-py").rename(tmp_path / "aside")
        else:
            (data / "cifar-10-python.tar.gz").unlink()
            (tmp_path / "aside").rename(data / "cifar-10-batches-py")
        result = run_python(
            cifar, "train.py", *CPU, "--data-dir", str(data), "--out-dir", str(tmp_path / source), "--max-epochs", "1",
            "--max-steps", "2", env=OFFLINE,
        )  # fmt: skip
        assert result.returncode == 0, f"{source}: {result.stderr[-3000:]}"
        assert "Downloading" not in result.stdout
        assert "Test: test_loss" in result.stdout
        state = torch.load(run_dir(tmp_path / source) / "checkpoints/last.pt", weights_only=True)
        assert state["global_step"] == 2 and state["data_info"]["classes"][0] == "airplane"
        assert state["data_info"]["input_shape"] == [3, 32, 32]


def fails_clearly(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr[-3000:]


def test_cifar_reader_fails_clearly_on_damaged_malicious_and_missing_data(cifar: Path, tmp_path: Path) -> None:
    args = ("train.py", *CPU, "--fast-dev-run")
    damaged = write_cifar(tmp_path / "damaged")
    archive = damaged / "cifar-10-python.tar.gz"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])  # cut short
    (damaged / "cifar-10-batches-py").rename(tmp_path / "aside")
    result = run_python(cifar, *args, "--data-dir", str(damaged), env=OFFLINE)
    fails_clearly(result, f"{archive} is damaged")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr

    evil = tmp_path / "aside"
    (evil / "test_batch").write_bytes(b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR.")
    (tmp_path / "evil").mkdir()
    evil.rename(tmp_path / "evil/cifar-10-batches-py")
    fails_clearly(run_python(cifar, *args, "--data-dir", str(tmp_path / "evil")), "test_batch is damaged", "os.system")
    assert not (tmp_path / "pwned").exists(), "the pickle ran code"

    missing = run_python(cifar, *args, "--data-dir", str(tmp_path / "empty"), env=OFFLINE)
    fails_clearly(missing, "Could not download CIFAR-10", "cifar-10-python.tar.gz", "--dataset synthetic")


# --- image folders and predict.py ------------------------------------------------------------------------

COLORS = {"cat": (220, 40, 40), "dog": (40, 220, 40), "frog": (40, 40, 220)}


def write_image_folder(root: Path, per_class: int = 12) -> Path:
    """root/train/CLASS/*.png of three colours under noise, in assorted sizes and modes, and one corrupt file."""
    rng = numpy.random.default_rng(1)
    for name, color in COLORS.items():
        (root / "train" / name).mkdir(parents=True)
        for i in range(per_class):
            width, height = 20 + i, 16 + 2 * i
            noisy = numpy.array(color) + rng.normal(0, 40, (height, width, 3))
            image = Image.fromarray(numpy.clip(noisy, 0, 255).astype(numpy.uint8))
            (image.convert("RGBA") if i % 3 == 0 else image).save(root / "train" / name / f"{i}.png")
    (root / "train/dog/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really" * 10)
    return root


@pytest.fixture(scope="module")
def folder_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = {"data.dataset": "image_folder", "data.image_size": 16, "data.batch_size": 16, **TINY}
    return make_project(tmp_path_factory.mktemp("folder") / "folder", spec)


def test_image_folder_trains_skips_the_corrupt_file_and_predict_names_classes(
    folder_project: Path, tmp_path: Path
) -> None:
    data = write_image_folder(tmp_path / "data")
    out = tmp_path / "out"
    args = ("train.py", *CPU, "--data-dir", str(data), "--out-dir", str(out), "--max-epochs", "4", "--lr", "0.01")
    result = run_python(folder_project, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(rf"warning: skipping {re.escape(str(data / 'train/dog/broken.png'))}: .+", result.stderr)
    assert "36 images in 3 classes, 1 unreadable file skipped" in result.stdout
    state = torch.load(run_dir(out) / "checkpoints/last.pt", weights_only=True)
    assert state["data_info"]["classes"] == ["cat", "dog", "frog"]

    predicted = run_python(folder_project, "predict.py", str(data / "train"), "--out-dir", str(out), "--device", "cpu")
    assert predicted.returncode == 0, predicted.stderr
    lines = predicted.stdout.strip().splitlines()
    assert len(lines) == 36, "one line per readable image"
    rows = [line.split("\t") for line in lines]
    assert all(len(row) == 3 and row[1] in COLORS and 0 <= float(row[2]) <= 1 for row in rows), lines[:3]
    correct = sum(row[1] == Path(row[0]).parent.name for row in rows)
    assert correct > 36 / 3 + 6, f"{correct}/36 correct: the colours are easy"
    assert "skipping" in predicted.stderr and "broken.png" in predicted.stderr

    top = run_python(folder_project, "predict.py", str(data / "train/cat/1.png"), "--top", "3", "--out-dir", str(out))
    assert top.returncode == 0, top.stderr
    row = top.stdout.strip().split("\t")
    assert sorted(row[1::2]) == sorted(COLORS) and abs(sum(map(float, row[2::2])) - 1) < 1e-3


def test_predict_fails_clearly_without_a_checkpoint_or_without_pillow(
    folder_project: Path, cifar: Path, tmp_path: Path
) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    nothing = run_python(folder_project, "predict.py", str(tmp_path / "x.png"), "--out-dir", str(tmp_path / "none"))
    fails_clearly(nothing, f"No checkpoint in {tmp_path / 'none'}/", "--checkpoint")
    bad = run_python(folder_project, "predict.py", str(tmp_path / "x.png"), "--checkpoint", str(tmp_path / "x.png"))
    fails_clearly(bad, "x.png: cannot load it")

    no_pillow = tmp_path / "no_pillow/PIL"
    no_pillow.mkdir(parents=True)
    (no_pillow / "__init__.py").write_text("raise ImportError('no Pillow here')\n")
    result = run_python(cifar, "predict.py", str(tmp_path / "x.png"), env={"PYTHONPATH": str(no_pillow.parent)})
    fails_clearly(result, "pip install pillow to read image files")


def test_image_folder_read_by_workers_when_not_in_memory(tmp_path: Path) -> None:
    spec = {"data.dataset": "image_folder", "data.image_size": 16, "data.batch_size": 16, **TINY}
    project = make_project(tmp_path / "lazy", {**spec, "data.in_memory": False, "data.num_workers": 1})
    assert "class ImageFiles(Dataset)" in (project / "data.py").read_text()
    data = write_image_folder(tmp_path / "data", per_class=6)
    result = run_python(
        project, "train.py", *CPU, "--data-dir", str(data), "--out-dir", str(tmp_path / "o"), "--max-epochs", "1"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "broken.png" in result.stderr and "18 images in 3 classes, 1 unreadable file skipped" in result.stdout
    assert "Test: test_loss" in result.stdout

    synthetic = run_python(project, "train.py", *CPU, "--fast-dev-run", "--dataset", "synthetic")
    assert synthetic.returncode == 0, synthetic.stderr[-3000:]


# --- loop features: exact resume with augmentation, DDP, regen --------------------------------------------


def test_killed_cifar_run_with_augmentation_resumes_bit_for_bit(tmp_path: Path) -> None:
    # 300 samples: 270 for training, 9 batches an epoch (the last one of 14); the crash at step 13 resumes from
    # the checkpoint of step 12, mid-epoch
    project = make_project(tmp_path / "resume", {**CIFAR, "data.synthetic_samples": 300, "model.dropout": 0.2})
    add_crash_points(project)
    args = ("train.py", *CPU, "--dataset", "synthetic", "--max-epochs", "2", "--ckpt-every-n-steps", "4")
    reference = run_python(project, *args, "--out-dir", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected = final_state(tmp_path / "reference")
    assert expected["global_step"] == 2 * 9

    crashed = run_python(project, *args, "--out-dir", str(tmp_path / "r"), env={"CRASH_AT_TRAINING_STEP": "13"})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    resumed = run_python(project, *args, "--out-dir", str(tmp_path / "r"), "--resume", "last")
    assert resumed.returncode == 0 and "Resumed from" in resumed.stdout, resumed.stderr[-3000:]
    assert_identical(final_state(tmp_path / "r"), expected)


def test_cifar_ddp_two_ranks_match_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    # A CNN: a ResNet's BatchNorm normalizes over each rank's half batch (no SyncBatchNorm on the CPU), so it
    # cannot match one process exactly. With augmentation: each rank takes its share of the crops and flips
    # drawn for the global batch. 320 samples: 32 for validation and 288 for training, which 32 and 2 x 16 divide.
    spec = {"data.dataset": "cifar10", "model.arch": "cnn", "model.channels": [8, 16], "model.dropout": 0.0}
    spec |= {"data.augment": True, "data.synthetic_samples": 320}
    run = (*CPU, "--dataset", "synthetic", "--max-epochs", "2", "--num-sanity-val-steps", "0")
    single = make_project(tmp_path / "single", {**spec, "data.batch_size": 32})
    result = run_python(single, "train.py", *run, "--out-dir", str(tmp_path / "one"))
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = make_project(tmp_path / "ddp", {**spec, "data.batch_size": 16, "cluster.gpus": 2})
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train.py"]
    result = subprocess.run(
        [*command, *run, "--out-dir", str(tmp_path / "two")],
        cwd=ddp,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    one, two = (torch.load(run_dir(tmp_path / d) / "checkpoints/last.pt", weights_only=True) for d in ("one", "two"))
    assert one["global_step"] == two["global_step"] == 2 * 9
    for name, tensor in one["model"].items():
        torch.testing.assert_close(two["model"][name], tensor, rtol=1e-4, atol=1e-5)


def test_regen_from_mnist_cnn_to_cifar_resnet_keeps_a_hand_edit_in_steps(tmp_path: Path) -> None:
    project = regen_helpers.make_project(tmp_path / "switch", {"data.dataset": "mnist", "model.arch": "cnn"})
    smoothed = "    return F.cross_entropy(model(images), labels, label_smoothing=0.1)  # mine"
    regen_helpers.edit_file(
        project, "steps.py", regen_helpers.replacing("return F.cross_entropy(model(images)", smoothed)
    )
    regen_helpers.edit_spec(project, {"data.dataset": "cifar10", "data.augment": True, **TINY})
    result = regen_helpers.ltgen("regen", project)
    assert result.exit_code == 0, result.output
    for path, text in regen_helpers.texts(project).items():
        assert "<<<<<<<" not in text and ">>>>>>>" not in text, f"conflict markers in {path}"
    assert smoothed in (project / "steps.py").read_text()
    assert "class BasicBlock" in (project / "model.py").read_text()
    assert "load_cifar10" in (project / "data.py").read_text() and (project / "predict.py").exists()
    run = run_python(project, "train.py", *CPU, "--fast-dev-run", "--dataset", "synthetic")
    assert run.returncode == 0, run.stderr[-3000:]
