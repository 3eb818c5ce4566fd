"""The run's loggers, behind one object the loop calls: TensorBoard and metrics.csv.

Each writes into the run folder. A resumed run continues their series: what a
killed run logged after its last checkpoint is dropped.

A logger of your own is a class with log(metrics, step, epoch), flush(), finish(test_metrics, step) and close(): add
it to Loggers.__init__.
"""

import csv
import os
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams


class Loggers:
    """Every logger of [logging] in ltgen.toml, called together. Where this process writes nothing (a fast-dev-run,
    or any rank but 0) there are none, and every call does nothing."""

    def __init__(self, run_dir: Path, config: dict, step: int, write: bool) -> None:
        """Open the loggers of the run in run_dir, which starts (step 0) or resumes after optimizer step `step`."""
        self.loggers: list = []
        if write:
            self.loggers.append(CSVLogger(run_dir, step))
            self.loggers.append(TensorBoardLogger(run_dir, config, step))

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
