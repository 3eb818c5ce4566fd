"""The emitted project, run as a researcher runs it: training, logs, checkpoints, MNIST files, early stopping,
top-k, hooks, gradient accumulation, and no host sync on ordinary steps."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import re
import struct
import sys
import threading
from pathlib import Path

import pytest
import torch

from conftest import make_project, run_dir, run_python

CPU = ("--device", "cpu", "--no-progress-bar")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(
        tmp_path_factory.mktemp("p") / "syn", {"data.dataset": "synthetic", "data.synthetic_samples": 2400}
    )


def scalars(out_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the TensorBoard event files under out_dir: {tag: [(step, value), ...]}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(out_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            found.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return found


def test_trains_logs_to_tensorboard_and_saves_a_safe_checkpoint(synthetic: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ("--max-epochs", "2", "--limit-train-batches", "20", "--log-every-n-steps", "10", "--out-dir", str(out))
    result = run_python(synthetic, "train.py", *CPU, *args)
    assert result.returncode == 0, result.stderr
    assert re.search(r"Test: test_loss \d\.\d{4}, test_acc \d\.\d{4}", result.stdout)

    logged = scalars(run_dir(out))
    assert [step for step, _ in logged["train_loss"]] == [10, 20, 30, 40]
    assert [step for step, _ in logged["val_loss"]] == [20, 40]
    assert {"lr", "val_acc"} <= set(logged)

    checkpoints = run_dir(out) / "checkpoints"
    state = torch.load(checkpoints / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "epoch", "global_step", "top_k", "rng", "config"} <= set(state)
    assert (state["epoch"], state["global_step"]) == (2, 40)
    assert state["config"]["limit_train_batches"] == 20
    best = state["top_k"][0][1]
    assert torch.load(checkpoints / best, weights_only=True)["global_step"] in (20, 40)


def test_fast_dev_run_writes_nothing_and_cuda_without_a_gpu_is_a_clear_error(synthetic: Path, tmp_path: Path) -> None:
    out = tmp_path / "nothing"
    result = run_python(synthetic, "train.py", "--fast-dev-run", *CPU, "--out-dir", str(out))
    assert result.returncode == 0, result.stderr
    assert not out.exists()
    if not torch.cuda.is_available():
        result = run_python(synthetic, "train.py", "--fast-dev-run", "--device", "cuda")
        assert result.returncode == 1
        assert result.stderr.strip() == "--device cuda, but no CUDA device is available"


def test_no_host_sync_on_ordinary_steps(synthetic: Path, tmp_path: Path) -> None:
    """Count the project's own .item() and .tolist() calls over 30 steps that log nothing (on a GPU each one
    waits for the device): only the validation and test passes may read values."""
    counter = tmp_path / "count_syncs.py"
    counter.write_text(
        "import os, runpy, sys, torch\n"
        "calls = []\n"
        "for name in ('item', 'tolist'):\n"
        "    original = getattr(torch.Tensor, name)\n"
        "    def wrapped(self, _original=original, _name=name):\n"
        "        if os.path.dirname(os.path.abspath(sys._getframe(1).f_code.co_filename)) == os.getcwd():\n"
        "            calls.append(_name)\n"
        "        return _original(self)\n"
        "    setattr(torch.Tensor, name, wrapped)\n"
        "sys.argv = ['train.py'] + sys.argv[1:]\n"
        "sys.path.insert(0, '.')\n"
        "try:\n"
        "    runpy.run_path('train.py', run_name='__main__')\n"
        "finally:\n"
        "    print('SYNCS', len(calls))\n"
    )
    args = (
        "--max-epochs",
        "1",
        "--limit-train-batches",
        "30",
        "--log-every-n-steps",
        "1000",
        "--out-dir",
        str(tmp_path / "o"),
    )
    result = run_python(synthetic, str(counter), *CPU, *args, "--num-sanity-val-steps", "0")
    assert result.returncode == 0, result.stderr
    # the loss, read before the step that validates (and saves); the validation; the test
    assert int(result.stdout.split("SYNCS")[-1]) == 3


def idx(data: torch.Tensor) -> bytes:
    """data as an IDX file of unsigned bytes."""
    return bytes([0, 0, 8, data.dim()]) + struct.pack(f">{data.dim()}I", *data.shape) + data.numpy().tobytes()


def fake_mnist(seed: int = 0) -> dict[str, bytes]:
    """The four MNIST files, tiny: 120 training and 40 test images."""
    g = torch.Generator().manual_seed(seed)
    return {
        "train-images-idx3-ubyte": idx(torch.randint(0, 256, (120, 28, 28), dtype=torch.uint8, generator=g)),
        "train-labels-idx1-ubyte": idx(torch.randint(0, 10, (120,), dtype=torch.uint8, generator=g)),
        "t10k-images-idx3-ubyte": idx(torch.randint(0, 256, (40, 28, 28), dtype=torch.uint8, generator=g)),
        "t10k-labels-idx1-ubyte": idx(torch.randint(0, 10, (40,), dtype=torch.uint8, generator=g)),
    }


@pytest.fixture(scope="module")
def mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("p") / "mnist", {"data.batch_size": 16})


def test_reads_mnist_idx_files_plain_or_gzipped(mnist: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for i, (name, payload) in enumerate(fake_mnist().items()):
        if i % 2:
            (data_dir / f"{name}.gz").write_bytes(gzip.compress(payload))
        else:
            (data_dir / name).write_bytes(payload)
    result = run_python(
        mnist, "train.py", *CPU, "--max-epochs", "1", "--data-dir", str(data_dir), "--out-dir", str(tmp_path / "o")
    )
    assert result.returncode == 0, result.stderr
    assert "Test: test_loss" in result.stdout

    sys.path.insert(0, str(mnist))
    try:
        import data
    finally:
        sys.path.remove(str(mnist))
    images = data.read_idx(data_dir / "train-images-idx3-ubyte")
    expected = torch.frombuffer(bytearray(fake_mnist()["train-images-idx3-ubyte"][16:]), dtype=torch.uint8)
    assert torch.equal(images, expected.view(120, 28, 28))
    train, val, test, data_info = data.make_datasets("mnist", data_dir, seed=42)
    assert (len(train), len(val), len(test)) == (108, 12, 40)
    assert data_info == {"input_shape": [1, 28, 28], "num_outputs": 10, "classes": [str(d) for d in range(10)]}


def test_uint8_images_normalized_per_batch_train_as_float_images_normalized_at_load(tmp_path: Path) -> None:
    """MNIST is held as uint8 and normalized per batch on the device. Against a copy of the project edited back to
    the float32 dataset normalized once at load (4x the memory), the weights after training agree to float
    rounding: only the order of the normalization's operations differs."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for name, payload in fake_mnist().items():
        (data_dir / name).write_bytes(payload)
    projects = {kind: make_project(tmp_path / kind, {"data.batch_size": 16}) for kind in ("uint8", "float")}
    data_py = projects["float"] / "data.py"
    source = data_py.read_text()
    edited = source.replace(
        "    return images.unsqueeze(1), labels.long()",
        "    mean, std = MEAN[0], STD[0]\n"
        "    return images.unsqueeze(1).float().div(255).sub(mean).div(std), labels.long()",
    ).replace(
        "    mean, std = normalization(images.device)\n    images = (images.float() - mean) / std\n",
        "",
    )
    assert edited.count("MEAN[0]") == 1 and "normalization(images.device)" not in edited
    data_py.write_text(edited)
    finals = {}
    for kind, project in projects.items():
        out = tmp_path / f"{kind}-out"
        result = run_python(
            project, "train.py", *CPU, "--max-epochs", "2", "--data-dir", str(data_dir), "--out-dir", str(out)
        )
        assert result.returncode == 0, result.stderr
        finals[kind] = torch.load(run_dir(out) / "checkpoints/last.pt", weights_only=True)["model"]
    for name, tensor in finals["uint8"].items():
        torch.testing.assert_close(finals["float"][name], tensor, rtol=1e-4, atol=1e-5)


def test_a_damaged_mnist_file_is_a_clear_error(mnist: Path, tmp_path: Path) -> None:
    for name, payload in fake_mnist().items():
        (tmp_path / name).write_bytes(payload[:-5] if name.startswith("t10k-images") else payload)
    result = run_python(mnist, "train.py", *CPU, "--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "o"))
    assert result.returncode == 1
    assert "t10k-images-idx3-ubyte is damaged" in result.stderr and "Traceback" not in result.stderr


class Mirror(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture
def mirror(tmp_path: Path):
    """A local HTTP server serving the gzipped fake MNIST files, like the real mirrors do."""
    served = tmp_path / "served"
    served.mkdir()
    for name, payload in fake_mnist().items():
        (served / f"{name}.gz").write_bytes(gzip.compress(payload, mtime=0))
    handler = lambda *a, **k: Mirror(*a, directory=str(served), **k)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", served
    server.shutdown()


def point_project_at(project: Path, url: str, md5: dict[str, str]) -> None:
    """Edit data.py as a user would: another mirror and its checksums."""
    source = (project / "data.py").read_text()
    source = re.sub(r"MNIST_MIRRORS = \(.*?\)\n", f"MNIST_MIRRORS = ({url!r},)\n", source, flags=re.DOTALL)
    for name, digest in md5.items():
        source = re.sub(rf'"{name}": "[0-9a-f]{{32}}"', f'"{name}": "{digest}"', source)
    (project / "data.py").write_text(source)


def test_downloads_missing_files_and_checks_them(tmp_path: Path, mirror: tuple[str, Path]) -> None:
    url, served = mirror
    project = make_project(tmp_path / "dl", {"data.batch_size": 16})
    digests = {p.name[:-3]: hashlib.md5(p.read_bytes()).hexdigest() for p in served.iterdir()}
    point_project_at(project, url, digests)
    data_dir = tmp_path / "data"
    result = run_python(project, "train.py", *CPU, "--fast-dev-run", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(f"{name}.gz" for name in digests)

    point_project_at(project, url, dict.fromkeys(digests, "0" * 32))  # the mirror now serves other bytes
    result = run_python(project, "train.py", *CPU, "--fast-dev-run", "--data-dir", str(tmp_path / "fresh"))
    assert result.returncode == 1
    assert "Could not download MNIST" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "fresh").exists(), "a file that fails its checksum is never kept"


def test_offline_download_names_the_files_and_where_to_put_them(tmp_path: Path) -> None:
    project = make_project(tmp_path / "offline")
    point_project_at(project, "http://127.0.0.1:9/", {})  # nothing listens on the discard port
    result = run_python(project, "train.py", *CPU, "--fast-dev-run", "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 1
    message = result.stderr
    assert "Could not download MNIST" in message and str((tmp_path / "data").resolve()) in message
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        assert name in message
    assert "--dataset synthetic" in message and "Traceback" not in message


def test_early_stopping_respects_patience_and_min_epochs(tmp_path: Path) -> None:
    project = make_project(
        tmp_path / "es",
        {
            "data.dataset": "synthetic",
            "data.synthetic_samples": 1200,
            "early_stopping.enabled": True,
            "early_stopping.patience": 2,
            "trainer.min_epochs": 4,
            "optim.scheduler": "none",
        },
    )
    # min_delta 100: nothing ever improves after the first validation
    result = run_python(
        project, "train.py", *CPU, "--min-delta", "100", "--max-epochs", "10", "--out-dir", str(tmp_path / "o")
    )
    assert result.returncode == 0, result.stderr
    assert "Early stopping: val_loss has not improved" in result.stdout
    # patience 2 runs out at the 3rd validation, but min_epochs 4 waits for the 4th epoch to complete
    assert len(re.findall(r"^step \d+: val_loss", result.stdout, flags=re.MULTILINE)) == 4
    last = torch.load(run_dir(tmp_path / "o") / "checkpoints/last.pt", weights_only=True)
    # 1080 training samples: 17 batches of 64; the last checkpoint is taken after the 4th epoch's end
    assert (last["epoch"], last["global_step"], last["batch_in_epoch"]) == (4, 4 * 17, 0)


def test_top_k_keeps_the_best_and_the_test_uses_it(tmp_path: Path) -> None:
    project = make_project(
        tmp_path / "topk", {"data.dataset": "synthetic", "data.synthetic_samples": 1200, "checkpoint.save_top_k": 2}
    )
    out = tmp_path / "o"
    result = run_python(project, "train.py", *CPU, "--max-epochs", "4", "--out-dir", str(out))
    assert result.returncode == 0, result.stderr
    checkpoints = run_dir(out) / "checkpoints"
    state = torch.load(checkpoints / "last.pt", weights_only=True)
    kept = sorted(p.name for p in checkpoints.glob("epoch=*.pt"))
    assert len(kept) == 2 and sorted(name for _, name in state["top_k"]) == kept
    scores = [score for score, _ in state["top_k"]]
    assert scores == sorted(scores)
    losses = [float(v) for v in re.findall(r"val_loss (\d\.\d+)", result.stdout)]
    assert scores[0] == pytest.approx(min(losses), abs=1e-4)


def test_hooks_are_called_where_their_docstrings_say(tmp_path: Path) -> None:
    hooks = [
        "on_fit_start",
        "on_train_epoch_start",
        "on_train_epoch_end",
        "on_validation_epoch_end",
        "on_fit_end",
        "on_test_epoch_end",
    ]
    project = make_project(
        tmp_path / "hooks", {"data.dataset": "synthetic", "data.synthetic_samples": 1200, "hooks.emit": hooks}
    )
    steps = (project / "steps.py").read_text()
    for hook in hooks:  # fill each stub in, as a researcher would
        steps = re.sub(rf'(def {hook}\(.*?\n    """.*?"""\n)', rf'\1    print("HOOK {hook}")\n', steps, flags=re.DOTALL)
    (project / "steps.py").write_text(steps)
    result = run_python(project, "train.py", *CPU, "--max-epochs", "2", "--out-dir", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    calls = re.findall(r"^HOOK (\w+)", result.stdout, flags=re.MULTILINE)
    epoch = ["on_train_epoch_start", "on_validation_epoch_end", "on_train_epoch_end"]
    assert calls == ["on_fit_start", *epoch, *epoch, "on_fit_end", "on_test_epoch_end"]


def test_gradient_accumulation_equals_the_larger_batch(tmp_path: Path) -> None:
    """4 batches of 16, accumulated, take the same steps as 1 batch of 64 (no dropout, same sample order)."""
    # 1280 samples: 128 for validation, 1152 = 18 x 64 for training, so every window holds the same samples.
    common = {
        "data.dataset": "synthetic",
        "data.synthetic_samples": 1280,
        "model.dropout": 0.0,
        "optim.scheduler": "none",
    }
    finals = []
    for name, batch, accumulate in (("big", 64, 1), ("accumulated", 16, 4)):
        project = make_project(
            tmp_path / name, {**common, "data.batch_size": batch, "trainer.accumulate_grad_batches": accumulate}
        )
        out = tmp_path / f"{name}-out"
        result = run_python(
            project, "train.py", *CPU, "--max-epochs", "2", "--num-sanity-val-steps", "0", "--out-dir", str(out)
        )
        assert result.returncode == 0, result.stderr
        finals.append(torch.load(run_dir(out) / "checkpoints/last.pt", weights_only=True))
    big, accumulated = finals
    assert big["global_step"] == accumulated["global_step"] == 2 * 18
    for name, tensor in big["model"].items():
        torch.testing.assert_close(accumulated["model"][name], tensor, rtol=1e-4, atol=1e-5)
