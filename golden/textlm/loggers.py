"""The run's loggers, behind one object the loop calls: TensorBoard, metrics.csv and Weights & Biases.

Each writes into the run folder. A resumed run continues their series: what a
killed run logged after its last checkpoint is dropped (but for W&B's and MLflow's histories, which cannot be
cut: there the resumed run logs those steps again, and the latest value logged at a step is the one that counts).

A logger of your own is a class with log(metrics, step, epoch), flush(), finish(test_metrics, step) and close(): add
it to Loggers.__init__.
"""

import csv
import os
import secrets
import time
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

import flags

# Weights & Biases: the project and the user or team the runs go to ([logging] wandb_project and wandb_entity in
# ltgen.toml; an empty entity: your default). With WANDB_MODE=offline they stay in the run folder, for `wandb sync`.
WANDB_PROJECT = "textlm"
WANDB_ENTITY = ""
WANDB_WRITE_SECONDS = 0.25  # how often wandb's process writes its file in the run folder (its default: 15 s)


class Loggers:
    """Every logger of [logging] in ltgen.toml, called together. Where this process writes nothing (a fast-dev-run,
    or any rank but 0) there are none, and every call does nothing."""

    def __init__(self, run_dir: Path, config: dict, step: int, write: bool) -> None:
        """Open the loggers of the run in run_dir, which starts (step 0) or resumes after optimizer step `step`."""
        self.loggers: list = []
        if write:
            self.loggers.append(CSVLogger(run_dir, step))
            self.loggers.append(TensorBoardLogger(run_dir, config, step))
            self.loggers.append(WandbLogger(run_dir, config, step))

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


class WandbLogger:
    """A Weights & Biases run per run folder: its id is kept in the folder (wandb-run-id.txt), so a resumed or
    requeued run continues the same W&B run. wandb writes into the run folder's wandb/ (with WANDB_MODE=offline,
    everything: each attempt in an offline-run-* folder, and `wandb sync RUN/wandb` uploads them as one run)."""

    def __init__(self, run_dir: Path, config: dict, step: int) -> None:
        import wandb  # here, not at the top: it takes a second to import, and only the process that logs needs it

        id_file = run_dir / "wandb-run-id.txt"
        if not id_file.is_file():
            remember(id_file, secrets.token_hex(6))  # a new run's id: 12 random hex digits
        try:
            self.run = wandb.init(
                project=WANDB_PROJECT,
                entity=WANDB_ENTITY or None,
                dir=run_dir.resolve(),
                id=id_file.read_text(encoding="utf-8").strip(),
                name=run_dir.name,
                # A sweep's trials (run folders sweep-NAME/trial-NNN) are shown together.
                group=run_dir.parent.name if run_dir.parent.name.startswith("sweep-") else None,
                # The hyperparameters, once: when the run starts at step 0 (a resumed run keeps those it started with).
                config=config if step == 0 else None,
                resume="allow",  # continue the W&B run with this id if there is one, else create it
                settings=wandb.Settings(x_transaction_log_flush_interval=WANDB_WRITE_SECONDS),
            )
        except wandb.errors.Error as error:  # most often: not logged in (online mode)
            flags.fail(f"W&B: {error} (or log offline, for `wandb sync` later: WANDB_MODE=offline)")
        self.logged_at = 0.0
        # Steps. W&B numbers its rows itself (_step, one per log call) and refuses a step below one it has seen, but
        # a resumed run logs again the steps between its checkpoint and the kill. So the optimizer step is logged as
        # the metric global_step, and every chart is drawn against it: a repeated step is a later row with the same
        # global_step (the value that counts, as in metrics.csv), and no row is ever refused. (W&B's rewind,
        # resume_from, would cut the history instead, but it needs the server and is a preview feature.)
        self.run.define_metric("global_step")
        self.run.define_metric("*", step_metric="global_step")

    def log(self, metrics: dict[str, float], step: int, epoch: int) -> None:
        self.run.log({"global_step": step, "epoch": epoch, **metrics})
        self.logged_at = time.monotonic()

    def flush(self) -> None:
        # run.log hands each row to wandb's own process, which writes them every WANDB_WRITE_SECONDS; but when this
        # process is killed, it ends too, losing what it had not written. Waiting for two of its writes after the
        # last row puts every row before this checkpoint on the disk (at most half a second for each checkpoint).
        time.sleep(max(0.0, self.logged_at + 2 * WANDB_WRITE_SECONDS - time.monotonic()))

    def finish(self, test_metrics: dict[str, float], step: int) -> None:
        self.run.summary.update(test_metrics)
        self.run.finish(exit_code=0)
        self.run = None

    def close(self) -> None:
        if self.run is not None:  # stopped by a signal: W&B shows the run as preempted (not failed) until it resumes
            self.run.mark_preempting()
            self.run.finish(exit_code=1)
            self.run = None
