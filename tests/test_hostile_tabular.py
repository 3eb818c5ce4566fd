"""Careless and hostile CSV files against the csv preset (issue 18): a continuous target trained as classes, labels
"1" and "1.0", duplicate columns in predict.py, a file separated by ";" or tabs, predict.py's --output into a
missing folder, a folder or a full disk, and the two readers of data.py (pyarrow's, and the careful one that
reports bad values) agreeing on every file both read. Each bad input ends in one line on stderr and exit status
2, with nothing lost or half-written.

    pytest tests/test_hostile_tabular.py
"""

from __future__ import annotations

import csv
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import make_project, run_dir, run_python

CPU = ("--device", "cpu", "--no-progress-bar")
CSV = {"data.dataset": "csv", "model.arch": "mlp", "data.synthetic_samples": 200, "data.batch_size": 32}
QUICK = ("--max-epochs", "1", "--num-sanity-val-steps", "0")


@pytest.fixture(scope="module")
def classify(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("csv") / "classify", CSV)


@pytest.fixture(scope="module")
def trained(classify: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The out-dir of a classifier of features `size` and `weight`, trained on 100 rows."""
    data = write_csv(tmp_path_factory.mktemp("data") / "data.csv", ["size", "weight", "target"], rows(100))
    out = data.parent / "out"
    result = run_python(classify, "train.py", *CPU, *QUICK, "--data-dir", str(data.parent), "--out-dir", str(out))
    assert result.returncode == 0, result.stderr
    return out


def rows(count: int, labels: tuple[str, ...] = ("cat", "dog")) -> list[list[str]]:
    return [[f"{i * 0.37 % 10:.2f}", f"{i * 7.1 % 50:.1f}", labels[i % len(labels)]] for i in range(count)]


def write_csv(path: Path, header: list[str], body: list[list[str]], delimiter: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as file:
        csv.writer(file, delimiter=delimiter).writerows([header, *body])
    return path


def assert_refused(result: subprocess.CompletedProcess, message: str) -> None:
    """Exit status 2, no traceback, and `message` as stderr's last line."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == message


def train(project: Path, data: Path, *args: str) -> subprocess.CompletedProcess:
    return run_python(project, "train.py", *CPU, *QUICK, "--data-dir", str(data.parent), *args)


def data_info(out: Path) -> dict:
    """data_info of the last checkpoint of the one run in out."""
    return torch.load(run_dir(out) / "checkpoints" / "last.pt", weights_only=True)["data_info"]


def test_a_continuous_target_is_refused_with_the_regression_hint(classify: Path, tmp_path: Path) -> None:
    """300 distinct measurements would train 300 classes: the key that means regression is named instead."""
    body = [[f"{i * 0.1:.1f}", f"{i / 3:.3f}"] for i in range(300)]
    data = write_csv(tmp_path / "fractions" / "data.csv", ["x", "target"], body)
    assert_refused(
        train(classify, data),
        f"{data}: the target column 'target' holds numbers that are not whole, such as '0.333', so it looks like a "
        'quantity, not classes: to predict it, set [data] task = "regression" in ltgen.toml and run ltgen regen',
    )
    # Whole numbers too, when they are nearly one value per row: a price or a count, not class ids.
    data = write_csv(
        tmp_path / "prices" / "data.csv", ["x", "target"], [[str(i), str(1000 + i * 13)] for i in range(300)]
    )
    assert_refused(
        train(classify, data),
        f"{data}: the target column 'target' holds 300 distinct numbers in 300 rows (fewer than MIN_ROWS_PER_CLASS = "
        '5 per value), so it looks like a quantity, not classes: to predict it, set [data] task = "regression" in '
        "ltgen.toml and run ltgen regen (or, if they are class ids, lower MIN_ROWS_PER_CLASS in data.py)",
    )


def test_numeric_labels_are_one_class_per_number_in_numeric_order(classify: Path, tmp_path: Path) -> None:
    spellings = ("1", "1.0", "2", "10", "2.00", " 10 ", "1e1")
    data = write_csv(tmp_path / "data.csv", ["size", "weight", "target"], rows(140, spellings))
    out = tmp_path / "out"
    result = train(classify, data, "--out-dir", str(out))
    assert result.returncode == 0, result.stderr
    assert "target 'target': 3 classes" in result.stdout
    # Each class is named by its shortest spelling; the order is the numbers' ("2" before "10").
    assert data_info(out)["classes"] == ["1", "2", "10"]

    predicted = tmp_path / "predicted.csv"
    result = run_python(classify, "predict.py", str(data), "--out-dir", str(out), "--output", str(predicted))
    assert result.returncode == 0, result.stderr
    with open(predicted, newline="") as file:
        table = list(csv.DictReader(file))
    assert [row["target"] for row in table] == [row[2] for row in rows(140, spellings)]  # the input, as it was
    assert {row["prediction"] for row in table} <= {"1", "2", "10"}


def test_predict_refuses_a_feature_column_named_twice_as_training_does(
    classify: Path, trained: Path, tmp_path: Path
) -> None:
    data = write_csv(tmp_path / "data" / "data.csv", ["size", "weight", "size"], [["1", "2", "3"]] * 30)
    assert_refused(train(classify, data), f"{data}: the header names these columns more than once: 'size'")
    output = tmp_path / "predicted.csv"
    result = run_python(classify, "predict.py", str(data), "--out-dir", str(trained), "--output", str(output))
    assert_refused(result, f"{data}: the header names these columns more than once: 'size'")
    assert not output.exists()
    # Columns the model does not read may repeat: they are copied to the output as they are.
    notes = write_csv(tmp_path / "notes.csv", ["note", "size", "weight", "note"], [["a", "1", "2", "b"]] * 3)
    result = run_python(classify, "predict.py", str(notes), "--out-dir", str(trained), "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert output.read_text().splitlines()[0] == "note,size,weight,note,prediction,probability"


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_a_file_separated_otherwise_trains_and_predicts_alike(classify: Path, tmp_path: Path, delimiter: str) -> None:
    data = write_csv(tmp_path / "data.csv", ["size", "weight", "target"], rows(100), delimiter)
    out = tmp_path / "out"
    result = train(classify, data, "--out-dir", str(out))
    assert result.returncode == 0, result.stderr
    assert data_info(out)["features"] == ["size", "weight"] and data_info(out)["classes"] == ["cat", "dog"]
    result = run_python(classify, "predict.py", str(data), "--out-dir", str(out), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == delimiter.join(["size", "weight", "target", "prediction", "probability"]) and len(lines) == 101

    # Decimal commas, as such files often have: the message says how the file was read.
    european = [[size.replace(".", ","), weight.replace(".", ","), label] for size, weight, label in rows(100)]
    data = write_csv(tmp_path / "european" / "data.csv", ["size", "weight", "target"], european, delimiter)
    result = train(classify, data)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"(every feature must be a number, in a file separated by {delimiter!r}; fix or delete" in result.stderr
    assert "line 3, column 'size': '0,37' is not a number" in result.stderr


def test_predict_writes_its_output_whole_or_not_at_all(classify: Path, trained: Path, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "rows.csv", ["size", "weight"], [row[:2] for row in rows(2000)])
    args = ("predict.py", str(data), "--out-dir", str(trained), "--device", "cpu", "--output")
    assert_refused(
        run_python(classify, *args, str(tmp_path / "missing" / "p.csv")),
        f"--output {tmp_path}/missing/p.csv: the folder {tmp_path}/missing does not exist; create it first "
        f"(mkdir -p {tmp_path}/missing)",
    )
    assert_refused(run_python(classify, *args, str(tmp_path)), f"--output {tmp_path} is a folder; name a file")

    # A full disk: files may not grow past 4 KiB (SIGXFSZ ignored, so the write fails with EFBIG instead).
    output = tmp_path / "predicted.csv"
    output.write_text("the previous predictions\n")

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    result = subprocess.run(
        [sys.executable, *args, str(output)],
        check=False,
        cwd=classify,
        capture_output=True,
        text=True,
        preexec_fn=small_files,
    )
    assert_refused(result, f"--output {output}: cannot write it (File too large); {output} is unchanged")
    assert output.read_text() == "the previous predictions\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["predicted.csv", "rows.csv"]  # no temporary left


def test_predict_bounds_its_batch_size(classify: Path, trained: Path, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "rows.csv", ["size", "weight"], [["1", "2"]])
    result = run_python(classify, "predict.py", str(data), "--out-dir", str(trained), "--batch-size", "9" * 20)
    assert_refused(
        result, f"predict.py: error: argument --batch-size: {'9' * 20} is out of range: expected 1 to 1048576"
    )


def test_predict_checks_every_column_is_utf8_before_writing(classify: Path, trained: Path, tmp_path: Path) -> None:
    """A column the model does not read is still copied to the output: a bad byte there stops predict.py first."""
    data = tmp_path / "rows.csv"
    data.write_bytes(b"note,size,weight\nok,1,2\ncaf\xe9,3,4\n")
    output = tmp_path / "predicted.csv"
    output.write_text("kept\n")
    result = run_python(classify, "predict.py", str(data), "--out-dir", str(trained), "--output", str(output))
    assert_refused(result, f"{data} line 3 is not UTF-8 text (invalid continuation byte); save it as UTF-8 CSV")
    assert output.read_text() == "kept\n"


def test_a_named_pipe_is_refused_not_waited_on(classify: Path, trained: Path, tmp_path: Path) -> None:
    """Opening a named pipe blocks until something writes to it: both scripts refuse it before opening it."""
    pipe = tmp_path / "data.csv"
    os.mkfifo(pipe)
    assert_refused(
        train(classify, pipe),
        f"{pipe} is not a regular file (a folder, or a named pipe): point --data-dir or [data] csv_file at a CSV file",
    )
    result = run_python(classify, "predict.py", str(pipe), "--out-dir", str(trained), timeout=60)
    assert_refused(result, f"{pipe} is not a regular file (a folder, or a named pipe)")


# Valid files that pyarrow may read differently from Python's csv module, or not at all (then the careful reader
# reads them): (the text, its values, its labels, whether pyarrow reads it; None: as its blocks fall).
QUIRKS = {
    "crlf, a byte-order mark, a blank line": (
        "\ufeffa,b,target\r\n1,2,x\r\n\r\n3,4,y\r\n",
        [[1, 2], [3, 4]],
        ["x", "y"],
        True,
    ),
    "spaces around values": ("a , b,target\n 1 ,2.5 , x \n3, 4 ,y\n", [[1, 2.5], [3, 4]], ["x", "y"], True),
    "signs, exponents, no last newline": (
        "a,b,target\n+1.5,-2e3,x\n.5,5.,y",
        [[1.5, -2000], [0.5, 5]],
        ["x", "y"],
        True,
    ),
    "quoted values, a quoted line break": (
        'a,b,target\n"1","2","x\ny"\n3,4,y\n',
        [[1, 2], [3, 4]],
        ["x\ny", "y"],
        None,
    ),
    "lines of spaces, of commas": ("a,b,target\n1,2,x\n   \n,,\n3,4,y\n", [[1, 2], [3, 4]], ["x", "y"], False),
    "underscores, Arabic digits": (
        "a,b,target\n1_000,\u0661\u0662,x\n3,4,y\n",
        [[1000, 12], [3, 4]],
        ["x", "y"],
        False,
    ),
}
COMPARE = """
import json, sys, torch
from pathlib import Path
import data
for name in sys.argv[1:]:
    path = Path(name)
    header, delimiter = data.read_header(path)
    fast = data.read_fast(path, len(header), delimiter, [0, 1], 2)
    values, (codes, labels) = data.read_careful(path, header, delimiter, [0, 1], 2, "every feature must be a number")
    same = fast is None or (torch.equal(fast[0], values) and torch.equal(fast[1][0], codes) and fast[1][1] == labels)
    print(json.dumps([values.tolist(), [labels[code] for code in codes], fast is not None, same]))
"""


def test_both_readers_read_valid_files_alike(classify: Path, tmp_path: Path) -> None:
    paths = []
    for number, (text, *_) in enumerate(QUIRKS.values()):
        paths.append(tmp_path / f"{number}.csv")
        paths[-1].write_text(text, encoding="utf-8", newline="")
    result = run_python(classify, "-c", COMPARE, *map(str, paths))
    assert result.returncode == 0, result.stderr
    for (quirk, (_, values, labels, fast)), line in zip(QUIRKS.items(), result.stdout.splitlines(), strict=True):
        read_values, read_labels, read_fast, same = json.loads(line)
        assert (read_values, read_labels, same) == (values, labels, True), quirk
        assert fast is None or read_fast == fast, quirk
