"""The emitted sweep.py, run on this machine: a grid or random sweep runs every trial, two at once, and `report`
ranks them; a trial interrupted by Ctrl-C resumes in the next `run` and ends bit for bit like an uninterrupted one;
a failed trial stops no other and `run --retry-failed` reruns only it; Optuna with two concurrent workers ends with
exactly TRIALS study trials; Optuna's pruner stops a trial that lags the others, which then counts as done; a sweep
folder of another search space is refused.

Trials are tiny (512 synthetic samples, 2 epochs of an MLP): most of their time is Python and torch starting.
Narrower sweeps are made as a researcher makes them: a copy of sweep.py with other constants at its top.

    pytest tests/test_sweep.py
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import make_project, run_python

TINY = {
    "data.dataset": "synthetic",
    "data.synthetic_samples": 512,
    "data.batch_size": 64,  # 460 training samples: 8 steps an epoch, a validation after each
    "model.arch": "mlp",
    "model.hidden_sizes": [16],
    "trainer.max_epochs": 2,
    "trainer.num_sanity_val_steps": 0,
    "logging.tensorboard": False,
    "logging.progress_bar": False,
}
GRID = {**TINY, "sweep.enabled": True, "sweep.space": {"lr": [0.001, 0.01], "seed": [1, 2]}, "sweep.parallel": 2}
GRID_POINTS = [{"lr": 0.001, "seed": 1}, {"lr": 0.001, "seed": 2}, {"lr": 0.01, "seed": 1}, {"lr": 0.01, "seed": 2}]
OPTUNA = {
    **TINY,
    "sweep.enabled": True,
    "sweep.method": "optuna",
    "sweep.trials": 4,
    "sweep.space": {"lr": {"low": 0.0001, "high": 0.1, "log": True}, "seed": {"low": 0, "high": 1000, "int": True}},
}
TIMEOUT = 240
# Optuna pruning, 6 trials of 4 epochs (4 validations each). The points are enqueued in the study before it runs, as a
# researcher puts the points to try first: five learning rates that train, then one that diverges (lr 3: its val_loss
# after the first epoch is about three times theirs).
PRUNED = {
    **OPTUNA,
    "sweep.trials": 6,
    "sweep.prune": True,
    "sweep.space": {"lr": {"low": 0.001, "high": 10.0, "log": True}},
    "trainer.max_epochs": 4,
}
PRUNED_POINTS = [0.003, 0.005, 0.01, 0.02, 0.03, 3.0]

# Appended to steps.py: SLOW_STEP=S makes each training step S seconds longer (time to interrupt a trial mid-run,
# and the numbers stay the same).
SLOW_STEPS = '''

_training_step = training_step


def training_step(*args, **kwargs):  # noqa: F811
    """training_step, SLOW_STEP seconds later."""
    __import__("time").sleep(float(__import__("os").environ.get("SLOW_STEP", "0")))
    return _training_step(*args, **kwargs)
'''
# Put into train.py's main: a run whose --lr is BREAK_LR crashes, as a bug would.
BREAK = """    if str(cfg.lr) == __import__("os").environ.get("BREAK_LR"):
        raise RuntimeError("broken on purpose")
"""


def add_test_hooks(project: Path) -> Path:
    """SLOW_STEP and BREAK_LR, as described above."""
    (project / "steps.py").write_text((project / "steps.py").read_text() + SLOW_STEPS)
    train = (project / "train.py").read_text()
    anchor = "    cfg, args = parse_args()\n"
    assert anchor in train
    (project / "train.py").write_text(train.replace(anchor, anchor + BREAK, 1))
    return project


def variant(project: Path, name: str, **constants: Any) -> str:
    """A copy of the project's sweep.py, sweep_NAME.py, with other values of its constants (SPACE, NAME, ...)."""
    source = (project / "sweep.py").read_text()
    for constant, value in constants.items():
        pattern = r"^SPACE = \{\n.*?^\}$" if constant == "SPACE" else rf"^{constant} = [^\n]*$"
        source, count = re.subn(pattern, f"{constant} = {value!r}", source, count=1, flags=re.MULTILINE | re.DOTALL)
        assert count == 1, constant
    (project / f"sweep_{name}.py").write_text(source)
    return f"sweep_{name}.py"


def sweep(project: Path, *args: str, script: str = "sweep.py", env: dict[str, str] | None = None):
    """python sweep.py ARGS in the project, its output captured."""
    return run_python(project, script, *args, timeout=TIMEOUT, env=env)


def trial(sweep_dir: Path, index: int) -> dict:
    """A trial's trial.json."""
    return json.loads((sweep_dir / f"trial-{index:03d}" / "trial.json").read_text())


def weights(run: Path) -> dict[str, torch.Tensor]:
    """The model tensors of a run's last checkpoint."""
    return torch.load(run / "checkpoints/last.pt", weights_only=True)["model"]


def assert_same_weights(run: Path, reference: Path) -> None:
    """Bit for bit, every tensor."""
    actual, expected = weights(run), weights(reference)
    assert actual.keys() == expected.keys()
    for key in expected:
        assert torch.equal(actual[key], expected[key]), f"{run}: {key} differs from {reference}"


def best_val_loss(run: Path) -> float:
    """The lowest val_loss in a run's metrics.csv, read here without sweep.py."""
    lines = (run / "metrics.csv").read_text().splitlines()
    column = lines[0].split(",").index("val_loss")
    return min(float(cells[column]) for line in lines[1:] if (cells := line.split(","))[column])


@pytest.fixture(scope="module")
def grid_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return add_test_hooks(make_project(tmp_path_factory.mktemp("sweep") / "grid", GRID))


@pytest.fixture(scope="module")
def grid_sweep(grid_project: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The grid's 4 trials, run two at once: (the sweep folder, what `run` printed)."""
    out = tmp_path_factory.mktemp("grid-outputs")
    result = sweep(grid_project, "run", "--parallel", "2", "--out-dir", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    return out / "sweep-1", result.stdout


@pytest.fixture(scope="module")
def optuna_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("sweep") / "tpe", OPTUNA)


@pytest.fixture(scope="module")
def pruning_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return add_test_hooks(make_project(tmp_path_factory.mktemp("sweep") / "prune", PRUNED))


def test_a_grid_sweep_runs_every_trial_two_at_once_and_report_ranks_them(
    grid_project: Path, grid_sweep: tuple[Path, str]
) -> None:
    sweep_dir, printed = grid_sweep
    assert re.search(r"\ntrial-000 started\ntrial-001 started\n", printed), "the first two trials run together"
    for index, point in enumerate(GRID_POINTS):  # the grid's combinations in order, the last field fastest
        record = trial(sweep_dir, index)
        assert (record["params"], record["status"], record["exit_status"]) == (point, "finished", 0)
        run = sweep_dir / f"trial-{index:03d}"
        assert json.loads((run / "config.json").read_text())["config"]["lr"] == point["lr"]
        assert "Test: test_loss" in (run / "train.log").read_text()

    report = sweep(grid_project, "report", "--out-dir", str(sweep_dir.parent))
    assert report.returncode == 0, report.stderr
    expected = sorted(range(4), key=lambda index: best_val_loss(sweep_dir / f"trial-{index:03d}"))
    ranked = re.findall(r"^(\d) +trial-00(\d) ", report.stdout, flags=re.MULTILINE)
    assert ranked == [(str(rank), str(index)) for rank, index in enumerate(expected, 1)]
    markdown = (sweep_dir / "report.md").read_text()
    assert "| rank | trial | lr | seed | best val_loss | status |" in markdown
    assert re.findall(r"^\| (\d) \| trial-00(\d) \|", markdown, flags=re.MULTILINE) == ranked
    assert (sweep_dir / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_random_sweep_draws_the_same_trials_every_time_and_runs_them_all(
    optuna_project: Path, tmp_path: Path
) -> None:
    script = variant(optuna_project, "random", METHOD="random", NAME="random", TRIALS=2)
    listed = sweep(optuna_project, "--out-dir", str(tmp_path), script=script)
    assert listed.returncode == 0, listed.stderr
    draws = re.findall(r"^ +(\d)  not started +--lr (\S+) --seed (\d+)$", listed.stdout, flags=re.MULTILINE)
    assert [index for index, _, _ in draws] == ["0", "1"] and draws[0][1:] != draws[1][1:]

    result = sweep(optuna_project, "run", "--parallel", "2", "--out-dir", str(tmp_path), script=script)
    assert result.returncode == 0, result.stdout + result.stderr
    for index, lr, seed in draws:  # each trial ran with the values listed before it started
        record = trial(tmp_path / "sweep-random", int(index))
        assert (record["status"], record["params"]) == ("finished", {"lr": float(lr), "seed": int(seed)})
        assert 0.0001 <= record["params"]["lr"] <= 0.1 and 0 <= record["params"]["seed"] <= 1000
    report = sweep(optuna_project, "report", "--out-dir", str(tmp_path), script=script)
    assert report.returncode == 0 and len(re.findall(r"^[12] +trial-00[01] ", report.stdout, flags=re.MULTILINE)) == 2


def test_an_interrupted_trial_resumes_in_the_next_run_bit_for_bit(
    grid_project: Path, grid_sweep: tuple[Path, str], tmp_path: Path
) -> None:
    script = variant(grid_project, "one", SPACE={"lr": [0.001], "seed": [1]}, NAME="one")  # the grid's trial 0
    log = tmp_path / "sweep-one/trial-000/train.log"
    running = subprocess.Popen(
        [sys.executable, script, "run", "--out-dir", str(tmp_path)],
        cwd=grid_project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SLOW_STEP": "0.3"},
    )
    deadline = time.monotonic() + 120
    while not (log.exists() and "step 8:" in log.read_text()):  # the first epoch's validation: mid-trial
        assert running.poll() is None and time.monotonic() < deadline, running.communicate()
        time.sleep(0.1)
    running.send_signal(signal.SIGINT)  # Ctrl-C
    output, errors = running.communicate(timeout=60)
    assert running.returncode == 1, output + errors
    assert "resumes the interrupted trials" in output
    assert trial(tmp_path / "sweep-one", 0)["status"] == "interrupted"
    stopped_at = torch.load(log.parent / "checkpoints/last.pt", weights_only=True)["global_step"]
    assert 8 <= stopped_at < 16

    resumed = sweep(grid_project, "run", "--out-dir", str(tmp_path), script=script)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert trial(tmp_path / "sweep-one", 0)["status"] == "finished"
    assert re.search(
        rf"Resumed from \S+trial-000/checkpoints/last.pt at epoch \d, step {stopped_at}\b", log.read_text()
    )
    assert_same_weights(log.parent, grid_sweep[0] / "trial-000")


def test_a_failed_trial_stops_no_other_and_retry_failed_reruns_only_it(grid_project: Path, tmp_path: Path) -> None:
    script = variant(grid_project, "two", SPACE={"lr": [0.001, 0.01], "seed": [1]}, NAME="two")
    sweep_dir = tmp_path / "sweep-two"
    broken = sweep(grid_project, "run", "--out-dir", str(tmp_path), script=script, env={"BREAK_LR": "0.01"})
    assert broken.returncode == 1
    assert (trial(sweep_dir, 0)["status"], trial(sweep_dir, 1)["status"]) == ("finished", "failed")
    assert "run --retry-failed" in broken.stdout
    report = sweep(grid_project, "report", "--out-dir", str(tmp_path), script=script)
    assert re.search(r"trial-001 +0\.01 +1 +- +failed \(exit status 1\)", report.stdout), report.stdout
    assert "RuntimeError: broken on purpose" in (sweep_dir / "report.md").read_text()  # the end of its log

    again = sweep(grid_project, "run", "--out-dir", str(tmp_path), script=script, env={"BREAK_LR": "0.01"})
    assert "started" not in again.stdout and trial(sweep_dir, 1)["status"] == "failed"  # `run` alone skips it

    finished = (sweep_dir / "trial-000/checkpoints/last.pt").stat().st_mtime_ns
    retried = sweep(grid_project, "run", "--retry-failed", "--out-dir", str(tmp_path), script=script)  # bug fixed
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert re.findall(r"^(trial-\d+) started", retried.stdout, flags=re.MULTILINE) == ["trial-001"]
    assert trial(sweep_dir, 1)["status"] == "finished"
    assert (sweep_dir / "trial-000/checkpoints/last.pt").stat().st_mtime_ns == finished
    assert "broken on purpose" in (sweep_dir / "trial-001.failed-1/train.log").read_text()  # the failed run, kept
    assert "broken on purpose" not in (sweep_dir / "trial-001/train.log").read_text()


def test_optuna_with_two_workers_ends_with_exactly_trials_trials_none_counted_twice(
    optuna_project: Path, tmp_path: Path
) -> None:
    optuna = pytest.importorskip("optuna")
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    result = sweep(optuna_project, "run", "--parallel", "2", "--out-dir", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\ntrial-000 started\ntrial-001 started\n", result.stdout), "two workers at once"
    again = sweep(optuna_project, "trial", "2", "--out-dir", str(tmp_path))  # a task that runs a second time
    assert again.returncode == 0 and "finished; nothing to do" in again.stdout

    sweep_dir = tmp_path / "sweep-1"
    storage = JournalStorage(JournalFileBackend(str(sweep_dir / "optuna.journal")))
    study = optuna.load_study(study_name="sweep-1", storage=storage)
    records = [trial(sweep_dir, index) for index in range(4)]
    assert sorted(record["optuna_number"] for record in records) == [t.number for t in study.trials] == [0, 1, 2, 3]
    for index, record in enumerate(records):
        told = study.trials[record["optuna_number"]]
        assert told.state == optuna.trial.TrialState.COMPLETE and told.user_attrs["index"] == index
        assert (told.params, told.value) == (record["params"], record["best"])
    assert len({json.dumps(record["params"], sort_keys=True) for record in records}) == 4, "four different points"


def test_a_sweep_folder_of_another_search_space_is_refused(grid_project: Path, grid_sweep: tuple[Path, str]) -> None:
    sweep_dir = grid_sweep[0]
    before = sorted(path.name for path in sweep_dir.iterdir()), (sweep_dir / "sweep.json").read_text()
    script = variant(grid_project, "other", SPACE={"lr": [0.1, 0.01], "seed": [1, 2]})  # NAME is still "1"
    for command in (["run"], ["trial", "0"]):
        refused = sweep(grid_project, *command, "--out-dir", str(sweep_dir.parent), script=script)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
        assert f"{sweep_dir} holds another sweep (space " in refused.stderr and "another name" in refused.stderr
    assert (sorted(path.name for path in sweep_dir.iterdir()), (sweep_dir / "sweep.json").read_text()) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["trial", "4"], "trial index 4 is out of range: this sweep has 4 trials (0 to 3)"),
        (["trial", "x"], "'x' is not a trial index"),
        (["start"], "invalid choice: 'start'"),
        (["run", "--parallel", "0"], "'0' is not a whole number >= 1"),
        (["run", "--", "--lr", "0.1"], "--lr after --: the sweep sets it for each trial"),
        (["report"], "no sweep there yet; `python sweep.py run`"),
    ],
)
def test_bad_command_lines_are_one_error_each_and_exit_2(
    grid_project: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    result = sweep(grid_project, *args[:1], "--out-dir", str(tmp_path), *args[1:])
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not any(tmp_path.iterdir()), "nothing written"


def test_optuna_prunes_a_trial_that_lags_the_median_and_counts_it_done(pruning_project: Path, tmp_path: Path) -> None:
    optuna = pytest.importorskip("optuna")
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    sweep_dir = tmp_path / "sweep-1"
    sweep_dir.mkdir()
    journal = JournalStorage(JournalFileBackend(str(sweep_dir / "optuna.journal")))
    study = optuna.create_study(study_name="sweep-1", storage=journal, direction="minimize")
    for lr in PRUNED_POINTS:  # each new trial takes the first point still waiting
        study.enqueue_trial({"lr": lr})

    # Optuna's median pruner judges a trial once 5 trials have finished (its n_startup_trials): the first five run,
    # from a copy of sweep.py with TRIALS = 5, and all finish.
    five = variant(pruning_project, "five", TRIALS=5)
    first = sweep(pruning_project, "run", "--parallel", "2", "--out-dir", str(tmp_path), script=five)
    assert first.returncode == 0, first.stdout + first.stderr
    assert [trial(sweep_dir, index)["status"] for index in range(5)] == ["finished"] * 5

    # The sixth diverges. Its steps are slowed (SLOW_STEP) so that it is still training, 24 steps from its end, long
    # after sweep.py has read its first validation.
    sixth = sweep(pruning_project, "run", "--out-dir", str(tmp_path), env={"SLOW_STEP": "0.2"})
    assert sixth.returncode == 0, sixth.stdout + sixth.stderr
    assert "\ntrial-005 pruned: best val_loss " in sixth.stdout
    record = trial(sweep_dir, 5)
    assert (record["params"], record["status"]) == ({"lr": 3.0}, "pruned")
    finished_at, pruned_at = (
        torch.load(sweep_dir / f"trial-{index:03d}/checkpoints/last.pt", weights_only=True)["global_step"]
        for index in (0, 5)
    )
    assert 8 <= pruned_at < finished_at == 32, f"the pruned trial stopped at step {pruned_at}"

    study = optuna.load_study(study_name="sweep-1", storage=journal)
    told = [(t.state.name, t.params["lr"]) for t in study.trials]  # in the order enqueued
    assert told == [("COMPLETE", lr) for lr in PRUNED_POINTS[:5]] + [("PRUNED", 3.0)]  # exactly TRIALS trials
    for index in range(6):  # each sweep trial is one study trial
        study_trial = study.trials[trial(sweep_dir, index)["optuna_number"]]
        assert (study_trial.user_attrs["index"], study_trial.params) == (index, trial(sweep_dir, index)["params"])
    assert all(list(t.intermediate_values) == [8, 16, 24, 32] for t in study.trials[:5]), "each validation reported"

    again = sweep(pruning_project, "run", "--out-dir", str(tmp_path))  # a pruned trial is done: never run again
    assert again.returncode == 0 and "6 done, 0 to run" in again.stdout and "started" not in again.stdout
    task = sweep(pruning_project, "trial", "5", "--out-dir", str(tmp_path))  # nor by its array task, requeued
    assert task.returncode == 0 and "trial-005 is pruned; nothing to do" in task.stdout
    assert trial(sweep_dir, 5) == record and len(optuna.load_study(study_name="sweep-1", storage=journal).trials) == 6

    report = sweep(pruning_project, "report", "--out-dir", str(tmp_path))
    assert report.returncode == 0, report.stderr
    assert re.search(r"^6 +trial-005 +3 +\S+ +pruned$", report.stdout, flags=re.MULTILINE), report.stdout
    markdown = (sweep_dir / "report.md").read_text()
    assert re.search(r"^\| 6 \| trial-005 \| 3 \| \S+ \| pruned \|$", markdown, flags=re.MULTILINE), markdown
