"""The loggers read back what the loop logged: metrics.csv, TensorBoard, Weights & Biases (offline) and MLflow (its
SQLite store) hold the same series after a run is killed (kill -9) or stopped by a signal and then resumed, each
logger keeps one run across the attempts, and the hyperparameters are logged once.

The series of a logger is {(metric, optimizer step): value as float32}. TensorBoard hides what a killed attempt wrote
after its checkpoint (purge_step); W&B and MLflow keep it, and there the latest value logged at a step counts."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from conftest import make_project, rendered, run_python, spec_text

PROJECT = "loggers"  # the project's name: the W&B project and the MLflow experiment
SPEC = {
    "data.dataset": "synthetic",
    "data.synthetic_samples": 512,  # 461 for training: 8 batches of 64 an epoch, 16 optimizer steps in all
    "data.batch_size": 64,
    "model.hidden_sizes": [16],
    "trainer.max_epochs": 2,
    "logging.log_every_n_steps": 2,
    "logging.progress_bar": False,
    "logging.wandb": True,
    "logging.mlflow": True,
}
# Checkpoints after steps 5, 8 (validation, end of epoch 0), 10, 15 and 16; logging steps 2, 4, 5, 6, 8, 10, 12, ...
ARGS = ("train.py", "--device", "cpu", "--ckpt-every-n-steps", "5")

CRASH_POINTS = '''

_training_steps = [0]


def _crash_at() -> None:
    """Kill this process (kill -9) or send it SIGTERM on the Nth training_step call, N from the environment."""
    import os as _os
    import signal as _signal

    _training_steps[0] += 1
    if _training_steps[0] == int(_os.environ.get("KILL_AT_TRAINING_STEP", "0")):
        _os.kill(_os.getpid(), _signal.SIGKILL)
    if _training_steps[0] == int(_os.environ.get("SIGTERM_AT_TRAINING_STEP", "0")):
        _os.kill(_os.getpid(), _signal.SIGTERM)
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every logger on; training_step crashes where the environment says, and MLflow's batching interval is set by
    MLFLOW_SEND_EVERY_SECONDS (0: every row is in the store at once, so a killed attempt leaves rows after its
    checkpoint there, as a long run killed between two checkpoints does)."""
    project = make_project(tmp_path_factory.mktemp("loggers") / PROJECT, SPEC)
    steps = (project / "steps.py").read_text()
    step_body = "    images, labels = batch\n    return F.cross_entropy("
    assert step_body in steps
    (project / "steps.py").write_text(steps.replace(step_body, "    _crash_at()\n" + step_body, 1) + CRASH_POINTS)
    source = (project / "loggers.py").read_text()
    interval = "    SEND_EVERY_SECONDS = 5.0\n"
    assert interval in source
    patched = '    SEND_EVERY_SECONDS = float(os.environ.get("MLFLOW_SEND_EVERY_SECONDS", "5"))\n'
    (project / "loggers.py").write_text(source.replace(interval, patched, 1))
    return project


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """W&B offline, its caches and settings in a temporary folder."""
    home = tmp_path_factory.mktemp("wandb-home")
    return {
        "WANDB_MODE": "offline",
        **{f"WANDB_{name}_DIR": str(home / name.lower()) for name in ("CACHE", "CONFIG", "DATA")},
        "WANDB_DIR": str(home),
    }


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The --out-dir of the runs below, each in a run folder of its own, sharing one MLflow store (mlflow.db)."""
    return tmp_path_factory.mktemp("outputs")


@pytest.fixture(scope="module")
def killed(project: Path, env: dict[str, str], out_dir: Path) -> Path:
    """A run killed (kill -9) in step 15, after logging steps 12 and 14 (its checkpoint: step 10), then resumed."""
    immediate = {**env, "MLFLOW_SEND_EVERY_SECONDS": "0"}
    args = (*ARGS, "--out-dir", str(out_dir))
    crashed = run_python(project, *args, "--run-name", "killed", env={**immediate, "KILL_AT_TRAINING_STEP": "15"})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    resumed = run_python(project, *args, "--resume", "killed", env=immediate)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at epoch 1, step 10" in resumed.stdout
    return out_dir / "killed"


@pytest.fixture(scope="module")
def stopped(project: Path, env: dict[str, str], out_dir: Path) -> dict:
    """A run stopped by SIGTERM after step 6, then resumed with --ckpt-every-n-minutes changed from 0 to 30 (a
    hyperparameter that changes nothing in training). MLflow's state of the run is read in between."""
    args = (*ARGS, "--out-dir", str(out_dir))
    first = run_python(project, *args, "--run-name", "stopped", env={**env, "SIGTERM_AT_TRAINING_STEP": "6"})
    assert first.returncode == 1, first.stderr[-3000:]
    assert "Stopped by a signal at step 6" in first.stderr
    _, runs = mlflow_runs(out_dir, "stopped")
    after_stop = [(run.info.run_id, run.info.status) for run in runs]
    resumed = run_python(project, *args, "--resume", "stopped", "--ckpt-every-n-minutes", "30", env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return {"run_dir": out_dir / "stopped", "mlflow_after_stop": after_stop}


def csv_series(run_dir: Path) -> dict[tuple[str, int], np.float32]:
    """metrics.csv as a series, checking that no metric is written twice for one step."""
    series: dict[tuple[str, int], np.float32] = {}
    with open(run_dir / "metrics.csv", newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            for name, value in row.items():
                if name not in ("step", "epoch") and value != "":
                    assert (name, int(row["step"])) not in series, f"metrics.csv holds {name} twice at {row['step']}"
                    series[name, int(row["step"])] = np.float32(value)
    return series


def tensorboard_series(run_dir: Path) -> dict[tuple[str, int], np.float32]:
    """The scalars of the run folder's event files, as TensorBoard shows them (earlier attempts' events from a
    resumed run's purge_step on are dropped)."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={SCALARS: 0})
    events.Reload()
    series: dict[tuple[str, int], np.float32] = {}
    for tag in events.Tags()["scalars"]:
        for event in events.Scalars(tag):
            assert (tag, event.step) not in series, f"TensorBoard holds {tag} twice at step {event.step}"
            series[tag, event.step] = np.float32(event.value)
    return series


def wandb_attempts(run_dir: Path) -> list[list[dict]]:
    """The records of each attempt's offline W&B run file (run_dir/wandb/offline-run-*/run-ID.wandb), read with
    wandb's own reader (`wandb leet inspect --json`), in the order the attempts started."""
    attempts = []
    for path in run_dir.glob("wandb/offline-run-*/run-*.wandb"):
        command = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(path)]
        result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
        attempts.append([json.loads(line) for line in result.stdout.splitlines() if line.strip()])
    return sorted(attempts, key=lambda records: only(records, "run")["start_time"])


def only(records: list[dict], kind: str) -> dict:
    """The one record of a kind ("run", "exit") in an attempt's records."""
    found = [record[kind] for record in records if record["type"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} records"
    return found[0]


def wandb_series(attempts: list[list[dict]]) -> dict[tuple[str, int], np.float32]:
    """The rows of every attempt in order, each at its global_step: a later row at a step replaces an earlier one."""
    series: dict[tuple[str, int], np.float32] = {}
    for records in attempts:
        for record in records:
            if record["type"] == "history":
                row = record["history"]["item"]
                for name, value in row.items():
                    if not name.startswith("_") and name not in ("global_step", "epoch"):
                        series[name, row["global_step"]] = np.float32(value)
    return series


def mlflow_runs(out_dir: Path, run_name: str | None = None) -> tuple:
    """A client of the SQLite store in out_dir, and the (not deleted) runs of the project's experiment, or those
    named run_name."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(PROJECT)
    assert experiment is not None, f"no MLflow experiment {PROJECT!r} in {out_dir / 'mlflow.db'}"
    runs = client.search_runs([experiment.experiment_id])
    return client, [run for run in runs if run_name in (None, run.info.run_name)]


def mlflow_series(client, run_id: str) -> tuple[dict[tuple[str, int], np.float32], dict[str, list[int]]]:
    """The run's metric histories (the latest value at each step counts), and the steps each metric has more than once."""
    series: dict[tuple[str, int], np.float32] = {}
    repeated: dict[str, list[int]] = {}
    for name in client.get_run(run_id).data.metrics:
        if name == "epoch":
            continue
        history = sorted(client.get_metric_history(run_id, name), key=lambda metric: metric.timestamp)
        steps = [metric.step for metric in history]
        repeated[name] = sorted({step for step in steps if steps.count(step) > 1})
        for metric in history:
            series[name, metric.step] = np.float32(metric.value)
    return series, repeated


def kept_id(run_dir: Path, logger: str) -> str:
    return (run_dir / f"{logger}-run-id.txt").read_text(encoding="utf-8").strip()


def test_after_a_kill_and_resume_metrics_csv_holds_exactly_the_scalars_tensorboard_holds(killed: Path) -> None:
    expected = csv_series(killed)
    assert {step for name, step in expected if name == "train_loss"} == {2, 4, 5, 6, 8, 10, 12, 14, 15, 16}
    assert {name for name, _ in expected} == {"train_loss", "lr", "val_loss", "val_acc", "test_loss", "test_acc"}
    assert tensorboard_series(killed) == expected


def test_after_a_kill_and_resume_the_wandb_run_files_hold_the_same_series_under_one_run_id(killed: Path) -> None:
    attempts = wandb_attempts(killed)
    assert len(attempts) == 2  # an offline run file per attempt
    assert {only(records, "run")["run_id"] for records in attempts} == {kept_id(killed, "wandb")}
    # W&B's own row counter (_step) restarts or refuses repeated steps; every chart is drawn against global_step.
    for records in attempts:
        definitions = [record["metric"] for record in records if record["type"] == "metric"]
        assert any(metric.get("glob_name") == "*" and metric["step_metric"] == "global_step" for metric in definitions)
    # flush() with each checkpoint put every row up to step 10 on the disk before the kill: the series has no gap.
    assert wandb_series(attempts[:1]).keys() >= {key for key in csv_series(killed) if key[1] <= 10}
    assert wandb_series(attempts) == csv_series(killed)
    assert only(attempts[1], "exit")["exit_code"] == 0


def test_after_a_kill_and_resume_mlflow_holds_the_same_series_in_one_finished_run(killed: Path) -> None:
    client, runs = mlflow_runs(killed.parent, "killed")
    assert [run.info.run_id for run in runs] == [kept_id(killed, "mlflow")]
    assert runs[0].info.status == "FINISHED"
    series, repeated = mlflow_series(client, runs[0].info.run_id)
    assert series == csv_series(killed)
    # The killed attempt's rows after its checkpoint stay in MLflow's history; the resumed run's later ones count.
    assert repeated["train_loss"] == [12, 14]


def test_a_signal_stop_marks_the_wandb_run_preempted_and_the_resume_continues_it(stopped: dict) -> None:
    run_dir = stopped["run_dir"]
    attempts = wandb_attempts(run_dir)
    assert len(attempts) == 2
    assert {only(records, "run")["run_id"] for records in attempts} == {kept_id(run_dir, "wandb")}
    assert any(record["type"] == "preempting" for record in attempts[0])
    assert only(attempts[0], "exit")["exit_code"] == 1  # preempting + a nonzero exit: W&B shows it preempted
    assert only(attempts[1], "exit")["exit_code"] == 0
    assert wandb_series(attempts) == csv_series(run_dir)


def test_a_signal_stop_leaves_the_mlflow_run_killed_and_the_resume_finishes_it(stopped: dict) -> None:
    run_dir = stopped["run_dir"]
    assert stopped["mlflow_after_stop"] == [(kept_id(run_dir, "mlflow"), "KILLED")]
    client, runs = mlflow_runs(run_dir.parent, "stopped")
    assert [(run.info.run_id, run.info.status) for run in runs] == [(kept_id(run_dir, "mlflow"), "FINISHED")]
    assert mlflow_series(client, runs[0].info.run_id)[0] == csv_series(run_dir)


def test_hyperparameters_are_logged_once_per_run_not_again_on_resume(stopped: dict) -> None:
    run_dir = stopped["run_dir"]
    config = json.loads((run_dir / "config.json").read_text())["config"]
    _, runs = mlflow_runs(run_dir.parent, "stopped")
    params = runs[0].data.params
    assert set(params) == set(config)
    assert params["ckpt_every_n_minutes"] == "0.0"  # the run's start; MLflow would have refused the resume's 30
    first, second = (only(records, "run")["config"]["update"] for records in wandb_attempts(run_dir))
    assert first["ckpt_every_n_minutes"] == 0.0 and first["lr"] == config["lr"]
    assert set(second) <= {"_wandb"}  # the resumed attempt sends no hyperparameters


def test_a_run_restarted_before_its_first_checkpoint_gets_a_new_mlflow_run_and_keeps_its_wandb_run(
    project: Path, env: dict[str, str], out_dir: Path
) -> None:
    """Killed in step 3 (no checkpoint yet), the run starts over in its folder, maybe with other hyperparameters
    (here --lr), which MLflow refuses to change in a run: the old MLflow run is deleted, a new one takes its place."""
    args = (*ARGS, "--out-dir", str(out_dir))
    crashed = run_python(project, *args, "--run-name", "restarted", env={**env, "KILL_AT_TRAINING_STEP": "3"})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    run_dir = out_dir / "restarted"
    first_mlflow_run = kept_id(run_dir, "mlflow")
    restarted = run_python(project, *args, "--resume", "restarted", "--lr", "0.01", env=env)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert "has no checkpoint yet; starting it afresh" in restarted.stderr
    client, runs = mlflow_runs(out_dir, "restarted")
    assert [(run.info.run_id, run.data.params["lr"]) for run in runs] == [(kept_id(run_dir, "mlflow"), "0.01")]
    assert client.get_run(first_mlflow_run).info.lifecycle_stage == "deleted"
    assert mlflow_series(client, runs[0].info.run_id)[0] == csv_series(run_dir)
    attempts = wandb_attempts(run_dir)
    assert {only(records, "run")["run_id"] for records in attempts} == {kept_id(run_dir, "wandb")}
    assert only(attempts[-1], "run")["config"]["update"]["lr"] == 0.01  # a start at step 0 sends them again
    assert wandb_series(attempts) == csv_series(run_dir)


def test_parallel_runs_create_and_share_one_mlflow_database(project: Path, env: dict[str, str], tmp_path: Path) -> None:
    """Two runs starting at once in a new --out-dir (a sweep's parallel trials): MLflow creates its SQLite tables
    without a lock of its own, so without the one loggers.py takes, one of them fails."""
    processes = {
        name: subprocess.Popen(
            [sys.executable, *ARGS, "--out-dir", str(tmp_path), "--run-name", name],
            cwd=project,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    }
    for name, process in processes.items():
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, f"run {name}: {stderr[-3000:]}"
    client, runs = mlflow_runs(tmp_path)
    assert sorted((run.info.run_name, run.info.status) for run in runs) == [("a", "FINISHED"), ("b", "FINISHED")]
    for run in runs:
        assert mlflow_series(client, run.info.run_id)[0] == csv_series(tmp_path / run.info.run_name)


def test_a_fast_dev_run_opens_no_logger(project: Path, env: dict[str, str], tmp_path: Path) -> None:
    result = run_python(project, "train.py", "--device", "cpu", "--fast-dev-run", "--out-dir", str(tmp_path), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no wandb/ folder
    assert not (project / "wandb").exists() and not (project / "mlruns").exists()


@pytest.mark.parametrize(("wandb", "mlflow"), [(False, False), (True, False), (False, True), (True, True)])
def test_wandb_and_mlflow_are_dependencies_and_imports_only_when_on(wandb: bool, mlflow: bool) -> None:
    tree = rendered(spec_text("deps", {"logging.wandb": wandb, "logging.mlflow": mlflow}))
    dependencies = " ".join(tomllib.loads(tree["pyproject.toml"])["project"]["dependencies"])
    assert ("wandb" in dependencies, "mlflow" in dependencies) == (wandb, mlflow)
    assert ("import wandb" in tree["loggers.py"], "from mlflow import" in tree["loggers.py"]) == (wandb, mlflow)
    assert not any("wandb" in line or "mlflow" in line for line in tree["train.py"].splitlines() if "import" in line)
