"""A sweep of careless and hostile inputs across the emitted scripts: output paths that are a named pipe, a folder
or a link, and the modes of the files written; a reader that closes the pipe early; an empty test set; a
checkpoint or early-stopping monitor that names no metric; a run resumed into another --out-dir whose best
checkpoint stayed behind; an --out-dir that cannot be created; a text of one character; CSV files whose target
or features cannot be standardized, whose header ends in a delimiter or whose regression target is words;
.bmp and .webp images beside a notes file; an MNIST file of no images. Each ends in a correct result or in one
line that says what is wrong, with no traceback, and leaves every file it was given as it was.

Each project is built once per module, tiny, and trained for a step or two.

    pytest tests/test_hostile_sweep.py
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import torch
from PIL import Image

from conftest import make_project, run_dir, run_python
from test_emitted import fake_mnist, idx
from test_emitted_inputs import import_from
from test_hostile_image import FOLDER, refused, snapshot
from test_hostile_scripts import TINY_GPT
from test_hostile_tabular import rows, write_csv
from test_task_image import COLORS

CPU = ("--device", "cpu", "--no-progress-bar")
QUIET = {"logging.tensorboard": False}  # nothing here reads the logs: a faster start
CSV = {"data.dataset": "csv", "model.arch": "mlp", "model.hidden_sizes": [8], "data.batch_size": 32, **QUIET}
SYNTHETIC = {**CSV, "data.synthetic_samples": 60}
# Two optimizer steps, then the epoch's validation (so the monitors are read), and no sanity pass before.
TWO_STEPS = ("--max-epochs", "1", "--limit-train-batches", "2", "--num-sanity-val-steps", "0")
TIMEOUT = 120


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sweep")


@pytest.fixture(scope="module")
def classify(root: Path) -> Path:
    return make_project(root / "classify", CSV)


@pytest.fixture(scope="module")
def trained(classify: Path, root: Path) -> tuple[Path, Path]:
    """(--data-dir, --out-dir) of two steps on 100 rows of `size`, `weight` and a cat-or-dog target: a best
    checkpoint epoch=0-step=2.pt in its top-k list, and last.pt."""
    data = write_csv(root / "data" / "data.csv", ["size", "weight", "target"], rows(100)).parent
    out = root / "old"
    result = run_python(classify, "train.py", *CPU, *TWO_STEPS, "--data-dir", str(data), "--out-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir(out) / "checkpoints/epoch=0-step=2.pt").is_file()
    return data, out


@pytest.fixture(scope="module")
def flags(classify: Path):
    """The emitted flags.py, imported here."""
    return import_from(classify, "flags")


def no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]


# 1. flags.write_output: a named pipe or a folder is refused as it is; a link is written through; modes are kept.


def test_write_output_refuses_a_named_pipe_or_a_folder_and_leaves_it_as_it_was(
    flags, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pipe, folder = tmp_path / "pipe.csv", tmp_path / "folder.csv"
    os.mkfifo(pipe)  # replaced by a regular file, a reader of the pipe would never see the output
    folder.mkdir()
    (folder / "kept.txt").write_text("kept\n")
    for path, what in ((pipe, "not a regular file"), (folder, "a folder")):
        written = []
        with pytest.raises(SystemExit) as stopped:
            flags.write_output(path, lambda file, written=written: written.append(file.write("a,b\n")))
        assert stopped.value.code == 2 and not written
        assert capsys.readouterr().err.strip().splitlines()[-1] == f"--output {path} is {what}; name a file"
    assert stat.S_ISFIFO(os.lstat(pipe).st_mode)
    assert snapshot(tmp_path) == {"folder.csv": "folder", "folder.csv/kept.txt": b"kept\n", "pipe.csv": "other"}


def test_write_output_through_a_link_writes_the_file_it_points_to_and_keeps_the_link(flags, tmp_path: Path) -> None:
    target, link = tmp_path / "real.csv", tmp_path / "link.csv"
    target.write_text("old\n")
    link.symlink_to(target)
    flags.write_output(link, lambda file: file.write("new\n"))
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.csv", "real.csv"]  # no temporary left


def test_write_output_keeps_the_replaced_files_mode_and_gives_a_new_one_the_umasks(flags, tmp_path: Path) -> None:
    old = tmp_path / "old.csv"
    old.write_text("old\n")
    old.chmod(0o640)
    umask = os.umask(0o022)
    try:
        flags.write_output(old, lambda file: file.write("new\n"))
        flags.write_output(tmp_path / "new.csv", lambda file: file.write("new\n"))
    finally:
        os.umask(umask)
    assert old.read_text() == "new\n" and stat.S_IMODE(old.stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "new.csv").stat().st_mode) == 0o644  # as open() gives, not a temporary's 0600


def test_write_output_leaves_no_temporary_when_write_exits(flags, tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    path.write_text("the previous output\n")

    def write(file) -> None:
        file.write("half")
        sys.exit(3)  # an exit (or Ctrl-C) inside write(), not an OSError

    with pytest.raises(SystemExit) as stopped:
        flags.write_output(path, write)
    assert stopped.value.code == 3
    assert snapshot(tmp_path) == {"out.csv": b"the previous output\n"}


# 2. A reader that closes the pipe early: exit 0, no BrokenPipeError.


def read_one_line(project: Path, *args: str) -> tuple[bytes, bytes, int]:
    """Run `python ARGS` in project into a pipe that is closed after its first line: (that line, stderr, status)."""
    process = subprocess.Popen([sys.executable, *args], cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = process.stdout.readline()
        process.stdout.close()  # as `| head -1` does
        stderr = process.stderr.read()
        return first, stderr, process.wait(timeout=TIMEOUT)
    finally:
        process.kill()
        process.wait()


def test_flags_run_ends_quietly_when_the_reader_stops_early(classify: Path) -> None:
    program = "import flags; flags.run(lambda: [print('x' * 100) for _ in range(100000)])"
    first, stderr, status = read_one_line(classify, "-c", program)
    assert first == b"x" * 100 + b"\n"
    assert status == 0 and stderr == b"", stderr.decode()[-3000:]


def test_csv_predict_into_a_pipe_closed_early_ends_quietly(
    classify: Path, trained: tuple[Path, Path], tmp_path: Path
) -> None:
    data = write_csv(tmp_path / "rows.csv", ["size", "weight"], [row[:2] for row in rows(20000)])  # ~0.5 MB out
    first, stderr, status = read_one_line(classify, "predict.py", str(data), "--out-dir", str(trained[1]), *CPU[:2])
    assert first == b"size,weight,prediction,probability\r\n"
    assert status == 0, stderr.decode()[-3000:]
    assert b"Traceback" not in stderr and b"BrokenPipeError" not in stderr, stderr.decode()[-3000:]


# 3. An empty set is the data's fault, not the flag's.


def test_no_batches_at_all_blames_the_empty_set_not_the_flag(flags, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stopped:
        flags.num_batches(1.0, 0, "limit-test-batches")
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "The test set holds no samples: check its files, or the share of the data it gets"
    )


# 4. A monitor that names no metric validation_step returns: one line at the first validation.

TYPOS = {
    "[checkpoint] monitor": {"checkpoint.monitor": "val_los"},
    "[early_stopping] monitor": {"early_stopping.enabled": True, "early_stopping.monitor": "val_los"},
}


@pytest.mark.parametrize("setting", TYPOS)
def test_a_monitor_that_names_no_metric_is_one_line_at_the_first_validation(
    root: Path, tmp_path: Path, setting: str
) -> None:
    project = make_project(root / f"typo_{setting[1:6]}", {**SYNTHETIC, **TYPOS[setting]})
    args = ("--dataset", "synthetic", "--out-dir", str(tmp_path / "out"))
    result = run_python(project, "train.py", *CPU, *TWO_STEPS, *args, timeout=TIMEOUT)
    refused(
        result,
        2,
        f"{setting} 'val_los' is not a metric validation_step returns (val_loss, val_acc): fix it in ltgen.toml "
        "(then ltgen regen), or return it",
    )
    assert not list((run_dir(tmp_path / "out") / "checkpoints").glob("*.tmp"))


# 5. A run resumed into another --out-dir, its best checkpoint left in the first.


def test_resumed_into_another_out_dir_the_test_runs_without_the_best_checkpoint_left_behind(
    classify: Path, trained: tuple[Path, Path], tmp_path: Path
) -> None:
    data, old = trained
    before = snapshot(old)
    # The old best stays the best (a loss of 0 is not beaten), so epoch 1 adds none to the new --out-dir.
    state = torch.load(run_dir(old) / "checkpoints/last.pt", weights_only=True)
    assert [name for _, name in state["top_k"]] == ["epoch=0-step=2.pt"]
    state["top_k"] = [(0.0, "epoch=0-step=2.pt")]
    resume = tmp_path / "last.pt"
    torch.save(state, resume)
    new = tmp_path / "new"
    args = ("--resume", str(resume), "--out-dir", str(new), "--data-dir", str(data))
    result = run_python(classify, "train.py", *CPU, *TWO_STEPS, *args, "--max-epochs", "2", timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    no_traceback(result)
    checkpoints = run_dir(new) / "checkpoints"  # a checkpoint from elsewhere starts a run of its own
    best = checkpoints / "epoch=0-step=2.pt"
    assert result.stderr.strip().splitlines()[-1] == (
        f"warning: the best checkpoint {best} is not there: testing the weights training ended with"
    )
    assert result.stdout.strip().splitlines()[-1].startswith("Test: test_loss ")
    assert torch.load(checkpoints / "last.pt", weights_only=True)["global_step"] == 4
    assert snapshot(old) == before


# 6. An --out-dir that cannot be created.


def test_an_out_dir_that_cannot_be_created_is_one_line(classify: Path, trained: tuple[Path, Path], tmp_path: Path):
    if os.geteuid() == 0:  # root writes anywhere but in /proc
        out = Path("/proc/ltgen-test/out")
    else:
        (tmp_path / "locked").mkdir(mode=0o555)
        out = tmp_path / "locked/out"
    result = run_python(classify, "train.py", *CPU, *TWO_STEPS, "--data-dir", str(trained[0]), "--out-dir", str(out))
    assert result.returncode == 2 and result.stdout == "", result.stderr[-3000:]
    no_traceback(result)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"--out-dir: cannot create {out} (")
    assert last.endswith("); choose a folder you can write to")
    assert not out.exists()


def test_a_learning_rate_the_optimizer_would_overflow_on_is_refused_before_any_work(classify: Path) -> None:
    """--lr 1e300 passed every check and raised a RuntimeError inside Adam's first step."""
    result = run_python(classify, "train.py", *CPU, "--lr", "1e300", "--out-dir", "never")
    assert result.returncode == 2 and result.stdout == "", result.stderr[-3000:]
    no_traceback(result)
    assert result.stderr.strip().splitlines()[-1] == "--lr 1e+300: expected a number > 0 and <= 10000"
    assert not (classify / "never").exists()


# 7. A text of one character, repeated.


def test_a_text_of_one_repeated_character_is_refused(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = make_project(root / "text", {"data.dataset": "text", **TINY_GPT, "data.samples_per_epoch": 32, **QUIET})
    (tmp_path / "input.txt").write_text("a" * 500)
    data = import_from(project, "data")
    with pytest.raises(SystemExit) as stopped:  # bad input: one line on stderr, exit status 2
        data.make_datasets("text", tmp_path, 42)
    assert stopped.value.code == 2
    assert (
        "the text is one character, 'a', repeated: there is nothing to learn; use a real text"
        in capsys.readouterr().err
    )
    assert (tmp_path / "input.txt").read_text() == "a" * 500


# 8. CSV files that train nothing, or would train on overflowed numbers.


@pytest.fixture(scope="module")
def regression(root: Path) -> Path:
    return make_project(root / "regression", {**CSV, "data.task": "regression"})


def refuse_csv(project: Path, folder: Path, text: str, capsys: pytest.CaptureFixture) -> tuple[Path, str]:
    """data.py's make_datasets on folder/data.csv holding `text`: exit 2; (the file, all stderr said)."""
    path = folder / "data.csv"
    path.write_text(text)
    data = import_from(project, "data")
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        data.make_datasets("csv", folder, 42)
    assert stopped.value.code == 2
    assert path.read_text() == text
    return path, capsys.readouterr().err


def test_a_constant_regression_target_is_refused(regression: Path, tmp_path: Path, capsys) -> None:
    body = "".join(f"{i},{i * 3 % 7},5\n" for i in range(40))
    _, stderr = refuse_csv(regression, tmp_path, "a,b,target\n" + body, capsys)
    assert stderr.strip().splitlines()[-1] == (
        "the target column 'target' has a standard deviation of 0.0: there is nothing to learn, or it needs rescaling"
    )


def test_a_feature_whose_variance_overflows_is_refused_by_name(regression: Path, tmp_path: Path, capsys) -> None:
    body = "".join(f"{'1e200' if i % 2 else '-1e200'},{i % 7},{i * 0.5}\n" for i in range(40))
    _, stderr = refuse_csv(regression, tmp_path, "huge,b,target\n" + body, capsys)
    assert stderr.strip().splitlines()[-1] == (
        "the values of 'huge' are too large to standardize (their variance overflows): rescale them"
    )


def test_a_header_ending_in_a_delimiter_names_the_column_without_a_name(
    regression: Path, tmp_path: Path, capsys
) -> None:
    body = "".join(f"{i},{i % 7},{i * 0.5},\n" for i in range(40))
    path, stderr = refuse_csv(regression, tmp_path, "a,b,target,\n" + body, capsys)
    assert stderr.strip().splitlines()[-1] == (
        f"{path}: column 4 of the header has no name (a delimiter at the end of the line?): name it or remove it"
    )


def test_a_regression_target_of_words_lists_them_and_hints_classification(
    regression: Path, tmp_path: Path, capsys
) -> None:
    body = "".join(f"{i},{i % 7},{'yes' if i % 2 else 'no'}\n" for i in range(40))
    path, stderr = refuse_csv(regression, tmp_path, "a,b,target\n" + body, capsys)
    assert stderr.startswith(f"{path}: 40 bad values (every feature, and the target, must be a number; ")
    assert 'set [data] task = "classification"' in stderr.splitlines()[0]
    assert "  line 2, column 'target': 'no' is not a number" in stderr.splitlines()
    assert "  line 3, column 'target': 'yes' is not a number" in stderr.splitlines()
    assert stderr.splitlines()[-1] == "  ... and 30 more"


# 9. Image folders: .bmp and .webp are images; a notes file is not, and is said to be ignored.


def test_bmp_and_webp_images_are_read_and_a_notes_file_ignored_by_training_and_predict(
    root: Path, tmp_path: Path
) -> None:
    project = make_project(root / "folder", {**FOLDER, **QUIET})
    train_dir = tmp_path / "data/train"
    rng = numpy.random.default_rng(0)
    images = []
    for name in ("cat", "dog"):
        (train_dir / name).mkdir(parents=True)
        for i, suffix in enumerate((".png", ".bmp", ".webp") * 2):
            pixels = numpy.clip(numpy.array(COLORS[name]) + rng.normal(0, 30, (16, 16, 3)), 0, 255)
            path = train_dir / name / f"{i}{suffix}"
            Image.fromarray(pixels.astype(numpy.uint8)).save(path, **({"lossless": True} if suffix == ".webp" else {}))
            images.append(path)
    (train_dir / "cat/notes.txt").write_text("taken in the garden\n")
    before = snapshot(tmp_path / "data")
    ignored = (
        f"{train_dir}/: ignoring files not named as images (.png, .jpg, .jpeg, .bmp, .gif, .webp, .tif, .tiff): "
        "cat/notes.txt"
    )

    out = tmp_path / "out"
    args = ("--max-epochs", "1", "--num-sanity-val-steps", "0", "--data-dir", str(tmp_path / "data"))
    result = run_python(project, "train.py", *CPU, *args, "--out-dir", str(out), timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    no_traceback(result)
    assert f"{train_dir}: 12 images in 2 classes" in result.stdout.splitlines()
    assert [line for line in result.stderr.splitlines() if "notes.txt" in line] == [ignored]

    result = run_python(project, "predict.py", str(train_dir), "--out-dir", str(out), "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    no_traceback(result)
    assert sorted(line.split("\t")[0] for line in result.stdout.splitlines()) == sorted(map(str, images))
    assert [line for line in result.stderr.splitlines() if "notes.txt" in line] == [ignored]
    assert snapshot(tmp_path / "data") == before


# 10. An MNIST file of no images.


def test_an_mnist_file_of_no_images_is_refused_as_damaged(root: Path, tmp_path: Path) -> None:
    project = make_project(root / "mnist", {"data.batch_size": 16, **QUIET})
    for name, good in fake_mnist().items():
        (tmp_path / name).write_bytes(good)
    empty = idx(torch.zeros(0, 28, 28, dtype=torch.uint8))
    images = tmp_path / "train-images-idx3-ubyte"
    images.write_bytes(empty)
    data = import_from(project, "data")
    with pytest.raises(SystemExit) as stopped:  # a message: printed as it is, no traceback
        data.make_datasets("mnist", tmp_path, seed=42)
    message = stopped.value.code
    assert isinstance(message, str), f"exit {message!r}"
    assert str(images) in message and "holds no data" in message and "delete" in message.lower(), message
    assert images.read_bytes() == empty
