"""The run's loggers, behind one object the loop calls: TensorBoard, metrics.csv and MLflow.

Each writes into the run folder (MLflow into its tracking store). A resumed run continues their series: what a
killed run logged after its last checkpoint is dropped (but for W&B's and MLflow's histories, which cannot be
cut: there the resumed run logs those steps again, and the latest value logged at a step is the one that counts).

A logger of your own is a class with log(metrics, step, epoch), flush(), finish(test_metrics, step) and close(): add
it to Loggers.__init__.
"""

import atexit
import contextlib
import csv
import os
import time
from collections.abc import Iterator
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

import flags

# MLflow: the tracking store ([logging] mlflow_tracking_uri), such as "http://localhost:5000"; empty: a SQLite file
# mlflow.db in --out-dir, for all its runs: `mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db` shows them.
MLFLOW_TRACKING_URI = ""
MLFLOW_EXPERIMENT = "tabular"


class Loggers:
    """Every logger of [logging] in ltgen.toml, called together. Where this process writes nothing (a fast-dev-run,
    or any rank but 0) there are none, and every call does nothing."""

    def __init__(self, run_dir: Path, config: dict, step: int, write: bool) -> None:
        """Open the loggers of the run in run_dir, which starts (step 0) or resumes after optimizer step `step`."""
        self.loggers: list = []
        if write:
            self.loggers.append(CSVLogger(run_dir, step))
            self.loggers.append(TensorBoardLogger(run_dir, config, step))
            self.loggers.append(MLflowLogger(run_dir, config, step))

    def log(self, metrics: dict[str, float], step: int, epoch: int) -> None:
        """Log scalar metrics at optimizer step `step` of epoch `epoch`."""
        for logger in self.loggers:
            logger.log(metrics, step, epoch)

    def flush(self) -> None:
        """Get what was logged onto the disk: called with each checkpoint, so a resumed run's series have no gap."""
        for logger in self.loggers:
            logger.flush()

    def finish(self, test_metrics: dict[str, float], step: int, epoch: int) -> None:
        """The run is over: log the test metrics and the hyperparameters with them, and close."""
        if test_metrics:
            self.log(test_metrics, step, epoch)
        for logger in self.loggers:
            logger.finish(test_metrics, step)
        self.close()

    def close(self) -> None:
        """Close every logger: after finish(), or alone when a signal stops the run (which will be resumed)."""
        for logger in self.loggers:
            logger.close()
        self.loggers = []


class CSVLogger:
    """metrics.csv in the run folder, as Lightning's CSVLogger writes it: a row per log call, with the columns step,
    epoch and one per metric ever logged (a row leaves the others empty)."""

    def __init__(self, run_dir: Path, step: int) -> None:
        self.path = run_dir / "metrics.csv"
        self.columns, self.rows = ["step", "epoch"], []
        if self.path.is_file():  # a resumed run: keep its rows up to the checkpoint's step
            with open(self.path, newline="", encoding="utf-8") as file:
                reader = csv.DictReader(file)
                self.columns = list(reader.fieldnames or self.columns)
                self.rows = [row for row in reader if (row.get("step") or "").isdigit() and int(row["step"]) <= step]
        self.rewrite()

    def log(self, metrics: dict[str, float], step: int, epoch: int) -> None:
        self.rows.append(
            {"step": step, "epoch": epoch, **{name: repr(float(value)) for name, value in metrics.items()}}
        )
        if any(name not in self.columns for name in metrics):  # a new column: the header changes, so a new file
            self.columns += [name for name in metrics if name not in self.columns]
            self.rewrite()
        else:  # appended at once: a row is a few bytes every log_every_n_steps, and readers (sweep.py) see it now
            with open(self.path, "a", newline="", encoding="utf-8") as file:
                csv.DictWriter(file, self.columns, restval="").writerow(self.rows[-1])

    def rewrite(self) -> None:
        """Write every row anew under the current header: a temporary file, then a rename."""
        temporary = self.path.with_name(self.path.name + ".tmp")
        with open(temporary, "w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, self.columns, restval="")
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(temporary, self.path)

    def flush(self) -> None:
        pass  # every row is in the file as soon as it is logged

    def finish(self, test_metrics: dict[str, float], step: int) -> None:
        pass  # the hyperparameters are in config.json, beside metrics.csv

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """TensorBoard event files in the run folder: `tensorboard --logdir outputs` shows each run by its folder's name."""

    def __init__(self, run_dir: Path, config: dict, step: int) -> None:
        # purge_step: TensorBoard hides the events of earlier attempts from step + 1 on (a killed run's last steps).
        self.writer = SummaryWriter(run_dir, purge_step=step + 1)
        self.config = config

    def log(self, metrics: dict[str, float], step: int, epoch: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)

    def flush(self) -> None:
        self.writer.flush()

    def finish(self, test_metrics: dict[str, float], step: int) -> None:
        # TensorBoard's HPARAMS tab shows the hyperparameters beside the test metrics, which log() has just written
        # as scalars (add_hparams would write them a second time, at step 0, in an event file of its own).
        scalar = (int, float, str, bool)
        values = {name: value if isinstance(value, scalar) else str(value) for name, value in self.config.items()}
        for summary in hparams(values, test_metrics):
            self.writer.file_writer.add_summary(summary, step)

    def close(self) -> None:
        self.writer.close()


def remember(path: Path, text: str) -> None:
    """Write a small file whole or not at all (a temporary file, then a rename): a killed run leaves no half id."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text + "\n", encoding="utf-8")
    os.replace(temporary, path)


class MLflowLogger:
    """An MLflow run per run folder, in the experiment named after the project: its id is kept in the folder
    (mlflow-run-id.txt), so a resumed run continues it. The hyperparameters are its params, logged once.

    Metrics are sent in batches, every few seconds and with each checkpoint (one database write, not one per logging
    step): what a killed run had not sent comes after its checkpoint, and the resumed run logs it again.

    Several processes may share the default SQLite store (a sweep's parallel trials): SQLite makes each wait for the
    others' writes, and the store is created under a lock. SQLite's locks are not to be trusted on a network file
    system (trials on several nodes writing one mlflow.db): set mlflow_tracking_uri to an MLflow server there."""

    SEND_EVERY_SECONDS = 5.0

    def __init__(self, run_dir: Path, config: dict, step: int) -> None:
        # Imported here, not at the top: mlflow takes seconds to import, and only the process that logs needs it.
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param
        from mlflow.exceptions import MlflowException

        self.Metric, self.pending, self.sent_at = Metric, [], time.monotonic()
        out_dir = run_dir.parent.resolve()
        uri = MLFLOW_TRACKING_URI or f"sqlite:///{out_dir / 'mlflow.db'}"
        try:
            with creation_lock(uri):  # MLflow creates a new SQLite store's tables unlocked: two processes would clash
                self.client = MlflowClient(tracking_uri=uri)
                experiment = self.client.get_experiment_by_name(MLFLOW_EXPERIMENT)
                if experiment is None:
                    # Artifacts (none are logged here) would go beside the store, not where train.py runs.
                    artifacts = None if MLFLOW_TRACKING_URI else (out_dir / "mlartifacts").as_uri()
                    try:
                        experiment_id = self.client.create_experiment(MLFLOW_EXPERIMENT, artifact_location=artifacts)
                    except MlflowException:  # another process just created it (a server's clients take no lock)
                        experiment_id = self.client.get_experiment_by_name(MLFLOW_EXPERIMENT).experiment_id
                elif experiment.lifecycle_stage == "deleted":
                    flags.fail(
                        f"MLflow: the experiment {MLFLOW_EXPERIMENT!r} in {uri} is deleted: restore it (mlflow "
                        f"experiments restore --experiment-id {experiment.experiment_id}) or purge it (mlflow gc)"
                    )
                else:
                    experiment_id = experiment.experiment_id
        except MlflowException as error:
            flags.fail(f"MLflow: cannot use the tracking store {uri}: {str(error).splitlines()[0]}")

        id_file = run_dir / "mlflow-run-id.txt"
        self.run_id = id_file.read_text(encoding="utf-8").strip() if id_file.is_file() else ""
        if self.run_id and step == 0:
            # The run starts over in its folder (it had written no checkpoint): nothing its MLflow run holds is kept,
            # and it may start with other hyperparameters, which MLflow refuses to change. So a new MLflow run.
            with contextlib.suppress(MlflowException):
                self.client.delete_run(self.run_id)
            self.run_id = ""
        if self.run_id:
            try:
                self.client.update_run(self.run_id, status="RUNNING")  # resumed: it logs again
            except MlflowException:
                print(f"note: MLflow run {self.run_id} is not in {uri}; this run continues in a new one")
                self.run_id = ""
        if not self.run_id:
            run = self.client.create_run(experiment_id, run_name=run_dir.name, tags={"run_dir": str(run_dir.resolve())})
            self.run_id = run.info.run_id
            remember(id_file, self.run_id)
            self.client.log_batch(self.run_id, params=[Param(name, str(value)) for name, value in config.items()])
        atexit.register(self.end, "FAILED")  # an exception ends the process: without this MLflow shows it running

    def log(self, metrics: dict[str, float], step: int, epoch: int) -> None:
        timestamp = int(time.time() * 1000)  # of the values logged at one step, the latest is the one that counts
        for name, value in {**metrics, "epoch": epoch}.items():
            self.pending.append(self.Metric(name, float(value), timestamp, step))
        if time.monotonic() - self.sent_at >= self.SEND_EVERY_SECONDS:
            self.flush()

    def flush(self) -> None:
        for start in range(0, len(self.pending), 1000):  # MLflow takes at most 1000 metrics a batch
            self.client.log_batch(self.run_id, metrics=self.pending[start : start + 1000])
        self.pending, self.sent_at = [], time.monotonic()

    def end(self, status: str) -> None:
        """Send what is pending and end the run: FINISHED, KILLED (stopped by a signal, to be resumed) or FAILED."""
        if self.run_id:
            atexit.unregister(self.end)
            self.flush()
            self.client.set_terminated(self.run_id, status)
            self.run_id = ""

    def finish(self, test_metrics: dict[str, float], step: int) -> None:
        self.end("FINISHED")

    def close(self) -> None:
        self.end("KILLED")  # not RUNNING, which it is not; a resumed run sets it RUNNING again


@contextlib.contextmanager
def creation_lock(uri: str) -> Iterator[None]:
    """An exclusive lock beside a SQLite store (mlflow.db.lock), held while it is opened; none for other stores."""
    if not uri.startswith("sqlite:///") or os.name == "nt":  # fcntl's locks are POSIX only
        yield
        return
    import fcntl

    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        yield
