"""Careless and hostile inputs to the emitted scripts (issue 18): flags out of any sensible range, paths naming the
wrong kind of thing, checkpoints of another kind of project, outputs onto a full disk, a text file with a byte order
mark or a named pipe in its place, signals while the data is read. Each ends in one line on stderr and exit status
2 (a signal before training: at once), with no traceback, and no file lost or half-written.

Each project is built and trained once per module, tiny, on generated data."""

from __future__ import annotations

import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import make_project, run_dir, run_python

CPU = ("--device", "cpu", "--no-progress-bar")
TRAINED = "trained"  # the run name of the fixture `trained`
TINY_GPT = {"model.arch": "gpt", "model.n_layer": 1, "model.n_head": 1, "model.n_embd": 8, "data.block_size": 8}
SPECS = {
    "image": {"data.dataset": "synthetic", "data.synthetic_samples": 60, "data.batch_size": 32},
    "text": {"data.dataset": "text", **TINY_GPT, "data.samples_per_epoch": 32, "data.batch_size": 16},
    "classifier": {"data.dataset": "csv", "model.arch": "mlp", "data.synthetic_samples": 60},
    "regression": {"data.dataset": "csv", "model.arch": "mlp", "data.synthetic_samples": 60, "data.task": "regression"},
    "custom": {
        "data.dataset": "custom",
        "model.arch": "custom",
        "data.input_shape": [4],
        "data.num_classes": 3,
        "data.synthetic_samples": 60,
        "data.num_workers": 1,
    },
    # No last.pt: predict.py reads the top-k checkpoint alone.
    "gan": {
        "model.arch": "gan",
        "trainer.manual_optimization": True,
        "optim.scheduler": "none",
        "checkpoint.save_last": False,
        "checkpoint.monitor": "val_loss_g",
        "data.dataset": "synthetic",
        "data.synthetic_samples": 60,
        "data.batch_size": 32,
        "model.latent_dim": 8,
        "model.generator_width": 8,
        "model.discriminator_width": 8,
    },
}
for spec in SPECS.values():
    spec["logging.tensorboard"] = False  # nothing here reads the logs: a faster start
# The training text: no newline anywhere, and a byte order mark first, as some editors write it.
TEXT = "\ufeff" + "the quick brown fox jumps over the lazy dog " * 6


def refused(result: subprocess.CompletedProcess, message: str) -> None:
    """Exit status 2, no traceback, and `message` as stderr's last line (argparse's usage may come before it)."""
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == message


def on_a_full_disk(project: Path, *args: str, limit: int) -> subprocess.CompletedProcess:
    """Run `python ARGS` in project where a file can grow to `limit` bytes only: a write past it fails with EFBIG,
    as on a full disk (SIGXFSZ, which would kill the process instead, is ignored)."""

    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    command = [sys.executable, *args]
    return subprocess.run(
        command, cwd=project, capture_output=True, text=True, timeout=120, preexec_fn=limit_files, check=False
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Every project of SPECS, trained for an epoch (all at once) as the run TRAINED: name -> (project, its
    --out-dir)."""
    root = tmp_path_factory.mktemp("hostile")
    (root / "text-data").mkdir()
    (root / "text-data/input.txt").write_text(TEXT, encoding="utf-8")
    extra = {
        "text": ("--data-dir", str(root / "text-data"), "--max-steps", "2"),
        "classifier": ("--dataset", "synthetic"),
        "regression": ("--dataset", "synthetic"),
    }
    runs = {}
    for name, spec in SPECS.items():
        project, out = make_project(root / name, spec), root / f"{name}-out"
        command = [sys.executable, "train.py", *CPU, "--max-epochs", "1", "--out-dir", str(out), "--run-name", TRAINED]
        command += extra.get(name, ())
        runs[name] = (project, out), subprocess.Popen(
            command, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    for name, (_, process) in runs.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, f"{name}: {stdout[-2000:]}{stderr[-2000:]}"
    return {name: paths for name, (paths, _) in runs.items()}


def checkpoint_of(trained: dict, name: str) -> Path:
    """last.pt, or else the top-k checkpoint."""
    return max((trained[name][1] / TRAINED / "checkpoints").glob("*.pt"))


# 1. --save-top-k 0 as a flag.


def test_save_top_k_0_as_a_flag_keeps_no_best_checkpoint_and_trains_on(trained: dict, tmp_path: Path) -> None:
    """Its help says "0: none"; the same value in ltgen.toml emits no flag, so only the flag met it at run time."""
    args = ("--max-epochs", "2", "--limit-train-batches", "1", "--save-top-k", "0", "--out-dir", str(tmp_path))
    result = run_python(trained["image"][0], "train.py", *CPU, *args)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    checkpoints = run_dir(tmp_path) / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.prev.pt", "last.pt"]
    assert torch.load(checkpoints / "last.pt", weights_only=True)["top_k"] == []


# 2. Paths that name the wrong kind of thing, refused before any work.


def test_an_out_dir_that_is_a_file_is_refused_before_any_work(trained: dict, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    result = run_python(trained["image"][0], "train.py", *CPU, "--out-dir", str(notes))
    refused(
        result, f"--out-dir {str(notes)!r}: expected a folder, or a path to make one at (no file there or on the way)"
    )
    assert result.stdout == "" and notes.read_text() == "my notes\n"


def test_a_data_dir_under_a_file_is_refused_before_anything_is_read(trained: dict, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    result = run_python(trained["classifier"][0], "train.py", *CPU, "--data-dir", str(notes / "csv"))
    refused(
        result,
        f"--data-dir {str(notes / 'csv')!r}: expected a folder, or a path to make one at (no file there or on the way)",
    )
    assert result.stdout == "" and notes.read_text() == "my notes\n"


def test_resume_naming_a_folder_is_refused_before_the_data_is_read(trained: dict) -> None:
    project, out = trained["image"]
    result = run_python(project, "train.py", *CPU, "--resume", str(out), "--out-dir", str(out))
    refused(result, f"train.py: error: argument --resume: {out} is a folder: name a file")
    assert result.stdout == ""


def test_sample_py_checkpoint_naming_a_folder_is_refused(trained: dict) -> None:
    project, out = trained["text"]
    result = run_python(project, "sample.py", "--device", "cpu", "--checkpoint", str(out))
    refused(result, f"sample.py: error: argument --checkpoint: {out} is a folder: name a file")


def test_a_named_pipe_as_checkpoint_is_refused_unopened_not_waited_on(trained: dict, tmp_path: Path) -> None:
    torch.save(torch.randn(3, 4), tmp_path / "inputs.pt")
    pipe = tmp_path / "model.pt"
    os.mkfifo(pipe)  # opening it would wait for a writer for ever
    result = run_python(
        trained["custom"][0], "predict.py", str(tmp_path / "inputs.pt"), "--checkpoint", str(pipe), timeout=60
    )
    reason = "is not a regular file (a named pipe or a device): name a file"
    refused(result, f"predict.py: error: argument --checkpoint: {pipe} {reason}")


# 3. A checkpoint of another kind of project: one line that says what it is, before any data_info field is read.

KINDS = {
    "image classifier into a CSV classifier's predict.py": ("image", "classifier", "an image classifier"),
    "CSV classifier into a regression project's predict.py": ("classifier", "regression", "a CSV classifier"),
    "CSV regression into a classifier's predict.py": ("regression", "classifier", "a CSV regression model"),
    "image classifier into sample.py": ("image", "text", "an image classifier"),
}
HAS = {
    "image": "input_shape, num_outputs, classes",
    "classifier": "input_shape, features, mean, std, target, num_outputs, classes",
    "regression": "input_shape, features, mean, std, target, num_outputs, target_mean, target_std",
    "text": "tokenizer, block_size, input_shape, num_outputs",
}
PROJECT_KIND = {
    "classifier": "a CSV classifier",
    "regression": "a CSV regression model",
    "text": "a language model",
}


def another_kind(path: Path, kind: str, source: str, target: str) -> str:
    return (
        f"{path} is a checkpoint of {kind} (its data_info has {HAS[source]}), not of {PROJECT_KIND[target]} like "
        f"this project's (data_info with {HAS[target]}): pass a checkpoint this project's train.py saved"
    )


@pytest.mark.parametrize("case", KINDS)
def test_a_checkpoint_of_another_kind_of_project_is_named_for_what_it_is(trained: dict, tmp_path: Path, case: str):
    source, target, kind = KINDS[case]
    rows = tmp_path / "rows.csv"
    rows.write_text("a,b\n1,2\n")
    path = checkpoint_of(trained, source)
    script = ("sample.py",) if target == "text" else ("predict.py", str(rows))
    result = run_python(trained[target][0], *script, "--checkpoint", str(path), "--device", "cpu")
    refused(result, another_kind(path, kind, source, target))


def test_resuming_from_another_kind_of_project_is_refused_the_same_way(trained: dict) -> None:
    path = checkpoint_of(trained, "classifier")
    project, out = trained["regression"]
    result = run_python(
        project, "train.py", *CPU, "--dataset", "synthetic", "--resume", str(path), "--out-dir", str(out)
    )
    refused(result, another_kind(path, "a CSV classifier", "classifier", "regression"))


# 4. Outputs written whole or not at all.


def test_custom_predict_output_into_a_missing_folder_or_under_a_file_is_one_line(trained: dict, tmp_path: Path):
    project, out = trained["custom"]
    torch.save(torch.randn(3, 4), tmp_path / "inputs.pt")
    args = ("predict.py", str(tmp_path / "inputs.pt"), "--out-dir", str(out), "--device", "cpu", "--output")
    missing = tmp_path / "no/such/preds.csv"
    result = run_python(project, *args, str(missing))
    refused(
        result,
        f"--output {missing}: the folder {missing.parent} does not exist; create it first (mkdir -p {missing.parent})",
    )
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    result = run_python(project, *args, str(notes / "preds.csv"))
    refused(
        result,
        f"--output {notes / 'preds.csv'}: {notes} cannot be a folder, a file is in the way; name a file in a folder",
    )
    assert notes.read_text() == "my notes\n"


def test_custom_predict_onto_a_full_disk_leaves_the_old_output_whole(trained: dict, tmp_path: Path) -> None:
    project, out = trained["custom"]
    torch.save(torch.randn(2000, 4), tmp_path / "inputs.pt")  # about 30 kB of CSV
    output = tmp_path / "preds.csv"
    output.write_text("index,prediction,probability\n0,1,0.5000\n")
    args = (
        "predict.py",
        str(tmp_path / "inputs.pt"),
        "--out-dir",
        str(out),
        "--output",
        str(output),
        "--device",
        "cpu",
    )
    result = on_a_full_disk(project, *args, limit=8192)
    refused(result, f"--output {output}: cannot write it (File too large); {output} is unchanged")
    assert output.read_text() == "index,prediction,probability\n0,1,0.5000\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs.pt", "preds.csv"]  # no temporary left


def test_gan_predict_writes_each_image_whole_or_not_at_all(trained: dict, tmp_path: Path) -> None:
    """In a project without last.pt, so checkpoint.load_weights serves the top-k checkpoint too."""
    project, out = trained["gan"]
    generated = tmp_path / "generated"
    generated.mkdir()
    before = {name: f"an earlier {name}".encode() for name in ("0000.png", "0001.png", "grid.png")}
    for name, content in before.items():
        (generated / name).write_bytes(content)
    args = ("predict.py", "--out-dir", str(out), "--device", "cpu", "--count", "4", "--output")
    result = on_a_full_disk(project, *args, str(generated), limit=64)  # no PNG fits
    refused(result, f"--output {generated}: writing stopped at 0 of 4 images (File too large); none is half-written")
    assert {p.name: p.read_bytes() for p in generated.iterdir()} == before

    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    result = run_python(project, *args, str(notes))
    refused(result, f"predict.py: error: argument --output: {notes} is a file, or under one: name a folder")
    assert notes.read_text() == "my notes\n"


# 5. sample.py's flags, its streamed output and its default prompt.


@pytest.mark.parametrize(
    "flag, value, expected",
    [
        ("--seed", str(2**64 + 1), f"{2**64 + 1} is out of range: expected 0 to {2**63 - 1}"),
        ("--num-samples", "1000000000000", "1000000000000 is out of range: expected 1 to 10000"),
        ("--max-new-tokens", "1000000000", "1000000000 is out of range: expected 0 to 1000000"),
    ],
)
def test_sample_py_refuses_numbers_out_of_range(trained: dict, flag: str, value: str, expected: str) -> None:
    project, out = trained["text"]
    result = run_python(project, "sample.py", "--out-dir", str(out), "--device", "cpu", flag, value)
    refused(result, f"sample.py: error: argument {flag}: {expected}")


def test_a_tiny_temperature_samples_greedily_instead_of_overflowing(trained: dict) -> None:
    project, out = trained["text"]
    args = ("--max-new-tokens", "30", "--num-samples", "2", "--temperature", "1e-45")
    result = run_python(project, "sample.py", "--out-dir", str(out), "--device", "cpu", *args)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    first, second = result.stdout.split("\n---------------\n")
    assert first + "\n" == second and len(first) == 1 + 30  # greedy: the same text, whatever the random state


def test_sample_py_streams_each_character_as_it_is_drawn(trained: dict) -> None:
    """The largest --max-new-tokens runs for hours on a CPU: its first characters appear at once, not at the end."""
    project, out = trained["text"]
    args = ["sample.py", "--out-dir", str(out), "--device", "cpu", "--max-new-tokens", "1000000", "--prompt", "the"]
    process = subprocess.Popen([sys.executable, *args], cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        received, deadline = b"", time.monotonic() + 60
        while len(received) < 20 and select.select([process.stdout], [], [], max(0, deadline - time.monotonic()))[0]:
            received += os.read(process.stdout.fileno(), 100)
        assert received.startswith(b"the") and len(received) >= 20, received
    finally:
        process.kill()
        process.communicate()


def test_sample_py_without_prompt_starts_from_a_character_the_model_saw(trained: dict) -> None:
    """The text has no newline, so the default prompt is its first character; the byte order mark is not one."""
    project, out = trained["text"]
    vocab = torch.load(out / TRAINED / "checkpoints/last.pt", weights_only=True)["data_info"]["tokenizer"]["vocab"]
    assert vocab == "".join(sorted(set(TEXT[1:])))  # no "\ufeff"
    result = run_python(project, "sample.py", "--out-dir", str(out), "--device", "cpu", "--max-new-tokens", "5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(vocab[0]) and len(result.stdout) == 1 + 5 + 1


# 6. The text reader: a folder or a named pipe where the text file should be.

NOT_A_TEXT_FILE = {
    "folder": "holds no .txt, .md or .jsonl files (each may be .gz): put the corpus there",  # a corpus folder
    "named pipe": "is not a regular file (a named pipe or a device): copy the text into a file",
}


@pytest.mark.parametrize("kind", NOT_A_TEXT_FILE)
def test_text_file_that_is_a_folder_or_a_named_pipe_is_refused_unopened(trained: dict, tmp_path: Path, kind: str):
    path = tmp_path / "input.txt"
    path.mkdir() if kind == "folder" else os.mkfifo(path)
    result = run_python(trained["text"][0], "train.py", *CPU, "--fast-dev-run", "--data-dir", str(tmp_path), timeout=60)
    refused(result, f"{path.resolve()} {NOT_A_TEXT_FILE[kind]}")


# 7. A signal while the data is read ends the run at once.


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_signal_during_a_blocking_read_ends_the_run_at_once(trained: dict, tmp_path: Path, name: str) -> None:
    """The read never returns (a named pipe no one writes to): a handler that only notes the signal for the loop
    would leave the process waiting for ever."""
    project = shutil.copytree(trained["custom"][0], tmp_path / "project")
    data = project / "data.py"
    stand_in = "        size = SYNTHETIC_SAMPLES if split"
    blocking = '        (data_dir / "opening").touch()\n        (data_dir / "pipe").read_bytes()\n'
    data.write_text(data.read_text().replace(stand_in, blocking + stand_in, 1))
    os.mkfifo(tmp_path / "pipe")
    command = [sys.executable, "train.py", *CPU, "--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "out")]
    process = subprocess.Popen(command, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "opening").exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, process.communicate()
        time.sleep(0.3)  # into the open() that waits for a writer
        process.send_signal(getattr(signal, name))
        _, stderr = process.communicate(timeout=15)
    finally:
        process.kill()
    assert process.returncode == -getattr(signal, name), stderr
    assert "Traceback" not in stderr
    assert not list((run_dir(tmp_path / "out") / "checkpoints").iterdir())


# 8. Integer flags that are in range yet crashed.


def test_num_workers_0_as_a_flag_is_refused_with_the_way_to_get_it(trained: dict) -> None:
    result = run_python(trained["custom"][0], "train.py", *CPU, "--num-workers", "0")
    expected = "an integer from 1 to 256 (for none, set [data] num_workers = 0 and run ltgen regen)"
    refused(result, f"--num-workers 0: expected {expected}")
