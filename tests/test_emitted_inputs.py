"""The emitted project given bad input: MNIST files damaged in every way, a network that accepts and never
answers, checkpoints that do not load, a validation split that leaves nothing to train on. Each ends in a short
message that names the file, says what is wrong and what to do, with no traceback and no long wait."""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

from conftest import make_project, run_dir, run_python
from test_emitted import fake_mnist, idx

CPU = ("--device", "cpu", "--no-progress-bar")


def import_from(project: Path, module: str) -> ModuleType:
    """project/module.py, imported under a name of its own (every project has a data.py), with the project's other
    modules importable, as when its scripts run (data.py imports flags)."""
    spec = importlib.util.spec_from_file_location(f"{project.name}_{module}", project / f"{module}.py")
    loaded = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(project))
    try:
        spec.loader.exec_module(loaded)
    finally:
        sys.path.remove(str(project))
        sys.modules.pop("flags", None)  # the next project's data.py imports its own
    return loaded


@pytest.fixture(scope="module")
def mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("inputs") / "mnist_inputs", {"data.batch_size": 16})


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = {
        "data.dataset": "synthetic",
        "data.synthetic_samples": 600,
        "data.batch_size": 64,
        "checkpoint.save_top_k": -1,
    }
    return make_project(tmp_path_factory.mktemp("inputs") / "syn_inputs", spec)


# Item 10: every way an MNIST file can be wrong. (file written, its bytes, words the message must hold)
GOOD = fake_mnist()
IMAGES, LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
OUT_OF_RANGE = torch.randint(0, 10, (120,), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
OUT_OF_RANGE[7] = 10
DAMAGE: dict[str, tuple[str, bytes, tuple[str, ...]]] = {
    "truncated header": (IMAGES, GOOD[IMAGES][:10], ("header",)),
    "rank beyond the file": (LABELS, bytes([0, 0, 8, 200]) + GOOD[LABELS][4:40], ("header",)),
    "wrong rank": (IMAGES, idx(torch.zeros(120 * 28 * 28, dtype=torch.uint8)), ("28 x 28",)),
    "not gzipped": (f"{LABELS}.gz", GOOD[LABELS], ("gzip",)),
    "truncated gzip": (f"{IMAGES}.gz", gzip.compress(GOOD[IMAGES])[:-40], ("gzip",)),
    "label out of range": (LABELS, idx(OUT_OF_RANGE), ("label 10", "0 to 9")),
    "images of the wrong size": (IMAGES, idx(torch.zeros(120, 32, 32, dtype=torch.uint8)), ("32", "28 x 28")),
    "fewer labels than images": (LABELS, idx(torch.zeros(100, dtype=torch.uint8)), ("120 images", "100 labels")),
    "more labels than images": (LABELS, idx(torch.zeros(130, dtype=torch.uint8)), ("120 images", "130 labels")),
    "empty file": (IMAGES, b"", ("empty",)),
    "empty gzip file": (f"{LABELS}.gz", b"", ("empty",)),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_each_kind_of_damaged_mnist_file_names_the_file_the_fault_and_the_fix(
    mnist: Path, tmp_path: Path, damage: str
) -> None:
    written, payload, words = DAMAGE[damage]
    for name, good in GOOD.items():
        if not written.startswith(name):
            (tmp_path / name).write_bytes(good)
    (tmp_path / written).write_bytes(payload)
    data = import_from(mnist, "data")
    with pytest.raises(SystemExit) as stopped:  # SystemExit with a message: printed as is, no traceback
        data.make_datasets("mnist", tmp_path, seed=42)
    message = stopped.value.code
    assert isinstance(message, str), f"{damage}: exit {message!r}"
    assert str(tmp_path / written) in message, message
    for word in words:
        assert word in message, message
    assert "delete" in message.lower(), message


# Item 8: a proxy or server that accepts connections and never answers.
@pytest.fixture
def stalled() -> Iterator[tuple[str, list[socket.socket]]]:
    """A local server that accepts every connection and never sends a byte; the accepted sockets."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    accepted: list[socket.socket] = []
    done = threading.Event()

    def hold() -> None:
        while not done.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                pass

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/mnist/", accepted
    done.set()
    thread.join()
    for connection in [server, *accepted]:
        connection.close()


def test_a_stalled_mirror_is_named_and_given_up_after_one_short_timeout(
    mnist: Path, tmp_path: Path, stalled: tuple[str, list[socket.socket]]
) -> None:
    url, accepted = stalled
    mirrors = (url, "http://127.0.0.1:9/mnist/")  # stalls; refuses (nothing listens on the discard port)
    script = (
        "import data\nfrom pathlib import Path\n"
        f"data.MNIST_MIRRORS = {mirrors!r}\ndata.download_mnist(Path({str(tmp_path / 'data')!r}))\n"
    )
    started = time.monotonic()
    result = run_python(mnist, "-c", script, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert "Could not download MNIST" in result.stderr and "Traceback" not in result.stderr
    assert len(accepted) == 1, f"the stalled mirror was tried {len(accepted)} times, not once"
    assert elapsed < 15, f"{elapsed:.0f} s to give up"
    # what is being downloaded and from where, before each attempt; a failed mirror is not tried again
    assert result.stdout.count(f"Downloading {IMAGES}.gz from {url}") == 1, result.stdout
    assert result.stdout.count(f"from {mirrors[1]}") == 1, result.stdout
    assert "timed out" in result.stderr, result.stderr


# Item 7: a validation split as large as the data. (ltgen check refuses one larger than synthetic data.)
def test_a_val_size_as_large_as_the_data_is_a_one_line_error(tmp_path: Path) -> None:
    project = make_project(tmp_path / "valsize", {"data.val_size": 120})
    for name, payload in GOOD.items():  # 120 training images
        (tmp_path / name).write_bytes(payload)
    result = run_python(project, "train.py", *CPU, "--fast-dev-run", "--data-dir", str(tmp_path))
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "val_size = 120" in result.stderr and "120 samples" in result.stderr

    data = import_from(project, "data")
    data.VAL_SIZE = 121
    with pytest.raises(SystemExit) as stopped:
        data.make_datasets("mnist", tmp_path, seed=0)
    assert stopped.value.code == 2


# Item 11: checkpoints that do not load.
class RunsCode:
    """Pickles to a call of os.system: what a malicious "checkpoint" holds."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def training_state(global_step: int, epoch: int) -> dict:
    return {"model": {}, "optimizer": {}, "epoch": epoch, "global_step": global_step, "batch_in_epoch": 0, "rng": []}


def test_resume_last_falls_back_to_the_newest_checkpoint_that_loads(synthetic: Path, tmp_path: Path) -> None:
    checkpoint = import_from(synthetic, "checkpoint")
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    marker = tmp_path / "code-ran"
    for epoch in (9, 10, 11):
        checkpoint.save(training_state(10 * epoch, epoch), folder / f"epoch={epoch}-step={10 * epoch}.pt")
    torch.save({**training_state(110, 11), "model": RunsCode(marker)}, folder / "epoch=11-step=110.pt")
    os.utime(folder / "epoch=9-step=90.pt")  # the most recently touched: mtime must not decide
    good = (folder / "epoch=10-step=100.pt").read_bytes()
    (folder / "last.pt").write_bytes(good[: len(good) // 2])  # truncated
    (folder / "last.prev.pt").write_bytes(os.urandom(2000))  # garbage
    found = checkpoint.find("last", folder)
    assert found is not None, "both last checkpoints are damaged, but epoch=10-step=100.pt is intact"
    state, path = found
    assert path == folder / "epoch=10-step=100.pt" and state["global_step"] == 100
    assert not marker.exists()


def test_resume_last_in_a_run_with_both_last_checkpoints_damaged_continues_from_a_top_k_one(
    synthetic: Path, tmp_path: Path
) -> None:
    args = ("train.py", *CPU, "--out-dir", str(tmp_path), "--num-sanity-val-steps", "0")
    first = run_python(synthetic, *args, "--max-epochs", "2")
    assert first.returncode == 0, first.stderr
    folder = run_dir(tmp_path) / "checkpoints"
    for name in ("last.pt", "last.prev.pt"):
        (folder / name).write_bytes((folder / name).read_bytes()[:100])
    resumed = run_python(synthetic, *args, "--max-epochs", "3", "--resume", "last")
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resumed from {folder / 'epoch=1-step=18.pt'}" in resumed.stdout, resumed.stdout + resumed.stderr
    assert "starting fresh" not in resumed.stdout
    assert run_dir(tmp_path) / "checkpoints" == folder, "the run went on in its own folder"


@pytest.mark.parametrize("kind", ["pickle with code", "random bytes", "truncated"])
def test_a_resume_file_that_is_not_a_checkpoint_is_refused_in_one_line(
    synthetic: Path, tmp_path: Path, kind: str
) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "model.pt"
    if kind == "pickle with code":
        path.write_bytes(pickle.dumps(RunsCode(marker)))
    elif kind == "random bytes":
        path.write_bytes(os.urandom(4096))
    else:
        torch.save(training_state(5, 1), path)
        path.write_bytes(path.read_bytes()[:-200])
    script = f"import checkpoint\nfrom pathlib import Path\ncheckpoint.find({str(path)!r}, Path('checkpoints'))\n"
    result = run_python(synthetic, "-c", script, timeout=60)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"--resume {path}: cannot load it"), result.stderr
    assert "weights_only=False" not in result.stderr.replace(" ", "")
    assert not marker.exists()


def test_every_bad_flag_is_refused_before_any_work_one_line_each(synthetic: Path, tmp_path: Path) -> None:
    """Flags are checked before data, model or output folder are touched: exit 2, one line per bad value, as
    argparse does for a flag it cannot parse (a seed past 2**32 - 1 used to crash only after an epoch)."""
    bad = {
        "--batch-size": "0",
        "--lr": "inf",
        "--max-epochs": "-5",
        "--limit-train-batches": "1.5",
        "--limit-val-batches": "-1",
        "--num-sanity-val-steps": "-2",
        "--seed": str(2**64 - 1),
        "--log-every-n-steps": "0",
    }
    out = tmp_path / "o"
    result = run_python(synthetic, "train.py", *CPU, "--out-dir", str(out), *[p for item in bad.items() for p in item])
    assert result.returncode == 2 and result.stdout == "" and not out.exists()
    lines = result.stderr.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(bad), result.stderr
    assert all(": expected " in line for line in lines)

    both_unlimited = run_python(synthetic, "train.py", *CPU, "--max-epochs", "-1", "--max-steps", "-1")
    assert both_unlimited.returncode == 2
    assert both_unlimited.stderr.strip().endswith("training would never end; set one of them")
