"""The csv preset: a CSV file with a header, classification or regression with an mlp. Synthetic rows learn
(R^2 > 0.9 on a linear problem), bad values are reported by column and line, standardization uses the
training rows only, and predict.py writes the rows back with a prediction column."""

from __future__ import annotations

import csv
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import make_project, run_dir, run_python

CPU = ("--device", "cpu", "--no-progress-bar")
CSV = {"data.dataset": "csv", "model.arch": "mlp", "data.synthetic_samples": 2000, "data.batch_size": 64}


def last_metric(output: str, name: str) -> float:
    return float(re.findall(rf"{name} (-?[0-9.]+|nan)", output)[-1])


@pytest.fixture(scope="module")
def classify(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("csv") / "classify", CSV)


@pytest.fixture(scope="module")
def regress(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("csv") / "regress", {**CSV, "data.task": "regression"})


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as file:
        csv.writer(file).writerows([header, *rows])
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.parametrize("name", ["classify", "regress"])
def test_project_is_clean_and_its_own_smoke_test_passes(name: str, request: pytest.FixtureRequest) -> None:
    project = request.getfixturevalue(name)
    for command in (
        ["ruff", "check", "--no-cache", "."],
        ["black", "--check", "."],
        [sys.executable, "-m", "pytest", "-q", "tests"],
    ):
        result = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, f"{command}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    assert ("REGRESSION = True" in (project / "data.py").read_text()) == (name == "regress")


def test_regression_on_a_synthetic_linear_problem_reaches_r2_above_0_9(regress: Path) -> None:
    result = run_python(
        regress, "train.py", *CPU, "--dataset", "synthetic", "--max-epochs", "6", "--out-dir", "runs/syn"
    )
    assert result.returncode == 0, result.stderr
    assert last_metric(result.stdout, "val_r2") > 0.9, result.stdout[-1500:]
    assert last_metric(result.stdout, "test_r2") > 0.9, result.stdout[-1500:]
    assert "val_mae" in result.stdout and "target_mean" not in result.stdout, "summarize() drops its helpers"


def test_classification_on_synthetic_rows_beats_chance(classify: Path) -> None:
    result = run_python(
        classify, "train.py", *CPU, "--dataset", "synthetic", "--max-epochs", "3", "--out-dir", "runs/syn"
    )
    assert result.returncode == 0, result.stderr
    assert last_metric(result.stdout, "val_acc") > 0.6, result.stdout[-1500:]  # 3 classes: chance is 1/3


def test_bad_values_are_reported_by_column_and_line_with_exit_2(classify: Path, tmp_path: Path) -> None:
    rows = [[1.0, 2.0, "a"], [3.0, "oops", "b"], ["", 4.0, "a"], [5.0, 6.0, ""]] + [[i, i, "b"] for i in range(20)]
    write_csv(tmp_path / "data.csv", ["size", "weight", "target"], rows)
    result = run_python(classify, "train.py", *CPU, "--fast-dev-run", "--data-dir", str(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "line 3, column 'weight': 'oops' is not a number" in result.stderr
    assert "line 4, column 'size': missing" in result.stderr
    assert "line 5, column 'target': missing" in result.stderr
    assert "3 bad values" in result.stderr


def test_many_bad_values_are_listed_up_to_ten_then_counted(regress: Path, tmp_path: Path) -> None:
    write_csv(tmp_path / "data.csv", ["a", "target"], [["x", 1.0] for _ in range(25)])
    result = run_python(regress, "train.py", *CPU, "--fast-dev-run", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.count("is not a number") == 10 and "... and 15 more" in result.stderr


def test_a_missing_target_column_names_the_columns_and_the_closest(classify: Path, tmp_path: Path) -> None:
    write_csv(tmp_path / "data.csv", ["a", "b", "Target"], [[1, 2, 3]] * 10)
    result = run_python(classify, "train.py", *CPU, "--fast-dev-run", "--data-dir", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "has no column 'target'" in result.stderr and "Did you mean 'Target'?" in result.stderr
    assert "'a', 'b', 'Target'" in result.stderr


def test_classification_trains_on_a_csv_and_predict_writes_its_classes(classify: Path, tmp_path: Path) -> None:
    rng = random.Random(0)
    rows = []
    for _ in range(600):
        size, weight = rng.uniform(0, 100), rng.gauss(5000, 1000)  # very different scales
        label = "cat" if size < 30 else ("dog" if weight < 5000 else "eel")
        rows.append([f"{size:.3f}", f"{weight:.1f}", label])
    write_csv(tmp_path / "data" / "data.csv", ["size", "weight", "target"], rows)
    out = tmp_path / "out"
    args = ("--data-dir", str(tmp_path / "data"), "--out-dir", str(out), "--max-epochs", "6", "--lr", "0.01")
    result = run_python(classify, "train.py", *CPU, *args)
    assert result.returncode == 0, result.stderr
    assert last_metric(result.stdout, "val_acc") > 0.8, result.stdout[-1500:]

    info = torch.load(run_dir(out) / "checkpoints/last.pt", weights_only=True)["data_info"]
    assert info["classes"] == ["cat", "dog", "eel"] and info["num_outputs"] == 3
    assert info["features"] == ["size", "weight"] and info["input_shape"] == [2] and info["target"] == "target"
    # Standardized with the statistics of the training rows only: the 480 rows left after 60 for validation
    # and 60 for the test, in the seed's order.
    values = torch.tensor([[float(r[0]), float(r[1])] for r in rows], dtype=torch.float64)
    order = torch.randperm(600, generator=torch.Generator().manual_seed(42))
    train = values[order[120:]]
    assert torch.allclose(torch.tensor(info["mean"], dtype=torch.float64), train.mean(0))
    assert torch.allclose(torch.tensor(info["std"], dtype=torch.float64), train.std(0, correction=0))
    assert not torch.allclose(torch.tensor(info["mean"], dtype=torch.float64), values.mean(0))

    # New rows: columns in another order, no target, one extra column kept as it is.
    new = [[f"id{i}", weight, size] for i, (size, weight, _) in enumerate(rows[:50])]
    write_csv(tmp_path / "new.csv", ["id", "weight", "size"], new)
    result = run_python(
        classify,
        "predict.py",
        str(tmp_path / "new.csv"),
        "--out-dir",
        str(out),
        "--output",
        str(tmp_path / "p.csv"),
        "--batch-size",
        "16",
    )
    assert result.returncode == 0, result.stderr
    predicted = read_csv(tmp_path / "p.csv")
    assert len(predicted) == 50 and list(predicted[0]) == ["id", "weight", "size", "prediction", "probability"]
    assert [p["id"] for p in predicted] == [f"id{i}" for i in range(50)]
    assert {p["prediction"] for p in predicted} <= {"cat", "dog", "eel"}
    assert all(1 / 3 <= float(p["probability"]) <= 1 for p in predicted)
    assert sum(p["prediction"] == r[2] for p, r in zip(predicted, rows)) >= 40

    to_stdout = run_python(classify, "predict.py", str(tmp_path / "new.csv"), "--out-dir", str(out), "--device", "cpu")
    assert to_stdout.returncode == 0 and len(to_stdout.stdout.strip().splitlines()) == 51

    write_csv(tmp_path / "bad.csv", ["size"], [[1.0], ["big"]])
    bad = run_python(classify, "predict.py", str(tmp_path / "bad.csv"), "--out-dir", str(out))
    assert bad.returncode == 2 and "lacks the feature column 'weight' that" in bad.stderr
    write_csv(tmp_path / "bad.csv", ["size", "weight"], [[1.0, 2.0], ["big", ""]])
    bad = run_python(classify, "predict.py", str(tmp_path / "bad.csv"), "--out-dir", str(out))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert (
        "line 3, column 'size': 'big' is not a number" in bad.stderr
        and "line 3, column 'weight': missing" in bad.stderr
    )


def test_regression_predictions_come_back_in_the_targets_units(regress: Path, tmp_path: Path) -> None:
    rng = random.Random(1)
    rows = []
    for _ in range(500):
        a, b = rng.uniform(0, 10), rng.uniform(-1, 1)
        rows.append([a, b, 1000 + 300 * a - 200 * b + rng.gauss(0, 5)])
    write_csv(tmp_path / "data.csv", ["a", "b", "target"], rows)
    out = tmp_path / "out"
    args = ("--data-dir", str(tmp_path), "--out-dir", str(out), "--max-epochs", "8", "--lr", "0.01")
    result = run_python(regress, "train.py", *CPU, *args)
    assert result.returncode == 0, result.stderr
    assert last_metric(result.stdout, "val_r2") > 0.9, result.stdout[-1500:]

    result = run_python(
        regress, "predict.py", str(tmp_path / "data.csv"), "--out-dir", str(out), "--output", str(tmp_path / "p.csv")
    )
    assert result.returncode == 0, result.stderr
    predicted = read_csv(tmp_path / "p.csv")
    assert len(predicted) == 500 and list(predicted[0]) == ["a", "b", "target", "prediction"]
    truth = torch.tensor([float(p["target"]) for p in predicted])
    guess = torch.tensor([float(p["prediction"]) for p in predicted])
    assert 1 - (guess - truth).square().mean() / truth.var(correction=0) > 0.9


def test_predict_refuses_a_checkpoint_of_another_model_in_one_line(tmp_path: Path) -> None:
    """model.py changed after training: predict.py says which weight does not fit, not a traceback."""
    project = make_project(tmp_path / "changed", CSV)
    out = tmp_path / "out"
    trained = run_python(
        project, "train.py", *CPU, "--dataset", "synthetic", "--max-epochs", "1", "--out-dir", str(out)
    )
    assert trained.returncode == 0, trained.stderr
    model = project / "model.py"
    model.write_text(model.read_text().replace("HIDDEN_SIZES = [128]", "HIDDEN_SIZES = [64]"))
    result = run_python(project, "predict.py", str(tmp_path / "rows.csv"), "--out-dir", str(out), "--device", "cpu")
    assert result.returncode == 2
    assert (
        result.stderr.strip().startswith(f"{run_dir(out)}/checkpoints/")
        and "holds another model than model.py builds" in result.stderr
    )
    assert "Traceback" not in result.stderr
