"""Every speed and memory target of ltgen, measured side by side with its anchor, in one command.

Eight figures, each an ltgen measure beside an anchor that does the same work the plainest way:

1. ltgen's own latency, whole process: `ltgen new p --gpus 4` (into a fresh folder), `ltgen regen` on an
   unchanged project, `ltgen --help`, `ltgen --version` and `ltgen check`, against `python -c "import copier"`.
2. The emitted loop's time per step on the anchors' tiny task (benchmarks/loop_overhead.py's project) against
   ../shared/anchors/floor.py, the compute floor; with --lightning also lit.py (needs pytorch_lightning).
3. An MNIST-shaped epoch (60,000 synthetic training and 10,000 validation samples, MLP 784-128-10, Adam, batch 64,
   TensorBoard, a checkpoint) from an emitted project, against ../shared/anchors/plain.py --task mnist: the
   whole process's wall time and its peak RSS (the child's own, from os.wait4).
4. Start-up: `python train.py --fast-dev-run --dataset synthetic` in a default mnist project against
   benchmarks/startup_anchor.py, which imports the same libraries and runs one training step.
5. FSDP's memory: the bytes of parameters and optimizer state each of 2 gloo ranks holds after a few AdamW steps
   of a GPT, with `[cluster] strategy = "fsdp"` against the same project with "ddp" (a whole copy on every rank).
   Bytes do not vary from run to run: measured once, in the first round.
6. The csv preset on a large file (200 MB, 20 MB with --quick: 8 numeric features, 3 classes): the peak RSS of a
   short training run (20 steps; measured once, in the first round) against the file's size plus the same run's
   peak RSS on a 2 MB file; and data.load_csv's time to parse it, in a fresh process on every core, against
   `pandas.read_csv` of the same file (needs pandas: `pip install pandas`).
7. The text task on a large corpus (benchmarks/text_scale.py; 200 MB of text files, 20 MB with --quick): the peak
   RSS of a short training run from memory-mapped token files against the same run on a 2 MB corpus (0.2 MB), and
   prepare.py's time to tokenize the corpus (--workers 1 and --workers 2) against a plain one-process script that
   reads each file whole and encodes it with the same tokenizer. Measured once, in the first round.
8. Activation checkpointing (benchmarks/activation_checkpointing.py): a GPT training step's peak memory and time
   with `[model] activation_checkpointing = true` against the same step without it. Measured in the first round.

Figures 2 to 4 run on one CPU thread (OMP_NUM_THREADS=1). Each round runs every pair back to back (figure 1's three times), which one
goes first alternating; a ratio is ltgen / anchor within one round, and the report shows the
median over rounds of times and ratios. Absolute times vary from machine to machine; compare the ratios.

Writes results.md (a table per figure, machine and versions stamped) and results.png (one chart per figure,
needs matplotlib: `pip install matplotlib`) into --out, prints the tables and which targets were missed.
It is a report, not a test: it exits 0 whether the targets are met or not.

    python benchmarks/run.py [--quick] [--rounds N] [--out DIR] [--anchors DIR] [--lightning]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import importlib.util
import itertools
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from loop_overhead import make_project as make_tiny_project
from loop_overhead import run as run_tiny

from ltgen import place, render, spec

HERE = Path(__file__).resolve().parent
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# The MNIST-shaped epoch, as close to plain.py --task mnist as the spec allows: synthetic_samples is training +
# validation, so 70,000 with 10,000 held out leaves plain.py's 60,000 training samples.
MNIST_SPEC = {
    "data.dataset": "synthetic",
    "data.synthetic_samples": 70_000,
    "data.val_size": 10_000,
    "data.batch_size": 64,
    "model.arch": "mlp",
    "model.hidden_sizes": [128],
    "model.dropout": 0.0,
    "optim.optimizer": "adam",
    "optim.weight_decay": 0.0,
    "optim.scheduler": "none",
    "trainer.max_epochs": 1,
    "trainer.limit_test_batches": 0,
    "trainer.num_sanity_val_steps": 0,
    "checkpoint.save_top_k": 1,
    "logging.tensorboard": True,
    "logging.progress_bar": False,
    "debug.param_summary": False,
}
# Figure 5: a 4-layer GPT (about 3.2M parameters) on 2 ranks for a few steps; strategy is set per run.
FSDP_SPEC = {
    "data.dataset": "text",
    "data.block_size": 64,
    "data.batch_size": 4,
    "model.arch": "gpt",
    "model.n_layer": 4,
    "model.n_head": 4,
    "model.n_embd": 256,
    "model.dropout": 0.0,
    "cluster.gpus": 2,
    "trainer.max_steps": 3,
    "trainer.limit_val_batches": 1,
    "trainer.limit_test_batches": 1,
    "trainer.num_sanity_val_steps": 0,
    "checkpoint.save_top_k": 0,
    "checkpoint.save_last": False,
    "logging.tensorboard": False,
    "logging.progress_bar": False,
    "debug.param_summary": False,
}
# Put into each figure-5 project's train.py before its test pass: this rank's bytes of parameters and optimizer
# state (with FSDP, its shards: DTensor.to_local), written to $STATE_BYTES_DIR/RANK.
STATE_BYTES = """
    held = [*{model}.parameters(), *(v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v))]
    held = [t.to_local() if hasattr(t, "to_local") else t for t in held]
    out = Path(__import__("os").environ["STATE_BYTES_DIR"]) / str(rank)
    out.write_text(str(sum(t.numel() * t.element_size() for t in held)))
"""
LATENCY_REPEATS = 3  # pairs of figure 1 per round
T = TypeVar("T")
COPIER = '`python -c "import copier"`'  # figure 1's anchor
NOT_MEASURED = "figures 2 and 3 not measured"
ANCHORS = ("floor.py", "plain.py")  # in --anchors: the compute floor and the minimal hand-written loop
NO_CHART = "chart skipped: matplotlib is not installed (pip install matplotlib)"
# Figure 6: CSV files of 8 numeric features on different scales and 3 classes, a short training run on them, and
# the parse alone (printing its seconds) beside pandas'.
CSV_MB, QUICK_CSV_MB, SMALL_CSV_MB = 200, 20, 2
CSV_SPEC = {"data.dataset": "csv", "model.arch": "mlp", "logging.progress_bar": False}
CSV_TRAIN = ["--device", "cpu", "--max-steps", "20", "--limit-val-batches", "2", "--limit-test-batches", "2"]
LOAD_CSV = "data.load_csv(Path(sys.argv[1]))"
READ_CSV = "pandas.read_csv(sys.argv[1])"
TIMED = (
    "import sys, time; from pathlib import Path; import {module}; "
    "t = time.perf_counter(); {call}; print(time.perf_counter() - t)"
)
NO_PANDAS = "figure 6's parse time not measured: pandas is not installed (pip install pandas)"


@dataclasses.dataclass
class Row:
    """One measure: ltgen's values and its anchor's, paired (the same index: one pair run back to back)."""

    figure: str
    label: str
    anchor: str
    unit: str
    target: float | None  # the highest ratio that meets the target; None: reported only
    subject: str = "ltgen"  # what is measured against the anchor
    ours: list[float] = dataclasses.field(default_factory=list)
    theirs: list[float] = dataclasses.field(default_factory=list)

    def add(self, ours: float, theirs: float) -> None:
        self.ours.append(ours)
        self.theirs.append(theirs)

    @property
    def ratio(self) -> float:
        """The median of ltgen / anchor over the pairs, each ratio taken within one pair."""
        return statistics.median(o / t for o, t in zip(self.ours, self.theirs))

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.ratio <= self.target


@dataclasses.dataclass
class Sample:
    """A whole process: its wall time and its own peak resident memory."""

    wall_s: float
    peak_rss_mib: float


def measure(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> Sample:
    """Run `command` to the end; fail loudly, with its output, if it fails."""
    with tempfile.TemporaryFile() as output:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)  # the child's own rusage, not the parent's
        wall_s = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            output.seek(0)
            tail = output.read().decode(errors="replace")[-3000:]
            raise SystemExit(f"{' '.join(command)} (in {cwd}) exited {process.returncode}:\n{tail}")
    return Sample(wall_s, usage.ru_maxrss / 1024)  # ru_maxrss is in KiB on Linux


def paired(first: Callable[[], T], second: Callable[[], T], swap: bool) -> tuple[T, T]:
    """Run both, back to back, `second` first when `swap`; return (first's, second's) result."""
    if swap:
        b = second()
        return first(), b
    a = first()
    return a, second()


def generate(parent: Path, name: str, values: dict) -> Path:
    """Write a project as `ltgen new` does, from the default spec with `values` set."""
    text = spec.with_values(spec.default_text(name), values)
    project = parent / name
    place.write_new(render.render(spec.parse(text)), text, project)
    return project


def write_csv(path: Path, megabytes: float) -> Path:
    """Figure 6's file of about `megabytes` MB: a header, then a block of 10,000 random rows, repeated (parsing
    costs the same as for distinct rows)."""
    rng = random.Random(0)
    rows = (
        ",".join(f"{rng.gauss(0, 1) * 10 ** (i % 4):.6g}" for i in range(8)) + "," + rng.choice(["cat", "dog", "eel"])
        for _ in range(10_000)
    )
    block = ("\n".join(rows) + "\n").encode()
    path.parent.mkdir(parents=True)
    with open(path, "wb") as file:
        file.write(b"x0,x1,x2,x3,x4,x5,x6,x7,target\n")
        file.writelines(itertools.repeat(block, max(1, round(megabytes * 1e6 / len(block)))))
    return path


def seconds(module: str, call: str, path: Path, cwd: Path) -> float:
    """What TIMED prints: the seconds `call` took in a fresh process, after its imports."""
    command = [sys.executable, "-c", TIMED.format(module=module, call=call), str(path)]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} (in {cwd}) exited {result.returncode}:\n{result.stderr[-3000:]}")
    return float(result.stdout)


def script_json(script: str, *args: str) -> dict:
    """The JSON object that benchmarks/SCRIPT prints last; its failure ends the benchmark."""
    result = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"benchmarks/{script} failed:\n{result.stdout[-2000:]}{result.stderr[-3000:]}")
    return json.loads(result.stdout[result.stdout.index("{") :])


def ltgen_command() -> list[str]:
    """ltgen's console script beside this interpreter (not a shim in front of it), else `python -m ltgen`."""
    script = Path(sys.executable).parent / "ltgen"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "ltgen"]


def state_bytes_project(parent: Path, strategy: str) -> Path:
    """Figure 5's project for `strategy`, its train.py writing each rank's bytes of state (STATE_BYTES)."""
    project = generate(parent, f"state-{strategy}", {**FSDP_SPEC, "cluster.strategy": strategy})
    source = (project / "train.py").read_text()
    anchor = "\n    # Test.\n"
    if anchor not in source:
        raise SystemExit(f"{project}/train.py has no '# Test.' line to measure before")
    model = "model" if strategy == "fsdp" else "raw_model"  # FSDP shards the model in place; DDP wraps raw_model
    (project / "train.py").write_text(source.replace(anchor, STATE_BYTES.format(model=model) + anchor, 1))
    return project


class Benchmarks:
    """The six figures' rows, and one round of each."""

    def __init__(self, scratch: Path, anchors: Path, lightning: bool, csv_mb: int, quick: bool) -> None:
        self.scratch, self.anchors, self.lightning = scratch, anchors, lightning
        self.with_anchors = all((anchors / name).is_file() for name in ANCHORS)  # figures 2 and 3 need them
        self.ltgen = ltgen_command()
        self.latency = {
            "new": Row("1", "`ltgen new p --gpus 4`", COPIER, "s", 1.5),
            "regen": Row("1", "`ltgen regen` (nothing changed)", COPIER, "s", 1.5),
            "help": Row("1", "`ltgen --help`", COPIER, "s", 0.4),
            "version": Row("1", "`ltgen --version`", COPIER, "s", 0.4),
            "check": Row("1", "`ltgen check`", COPIER, "s", 0.4),
        }
        self.step = Row("2", "emitted loop, per step (tiny task)", "`floor.py`", "us", 1.10)
        self.lit_step = Row("2", "`lit.py`, per step (tiny task)", "`floor.py`", "us", None, "Lightning")
        self.epoch_time = Row("3", "MNIST-shaped epoch, time", "`plain.py --task mnist`", "s", 1.0)
        self.epoch_rss = Row("3", "MNIST-shaped epoch, peak RSS", "`plain.py --task mnist`", "MiB", 1.1)
        self.startup = Row("4", "`train.py --fast-dev-run`", "`startup_anchor.py`", "s", 1.1)
        # 1/2 of DDP's state with 2 ranks; the target leaves room for FSDP's padding of odd-sized parameters.
        self.fsdp_state = Row("5", "FSDP, state per rank (2 ranks)", "DDP, the same GPT", "MiB", 0.55)
        anchor = f"file + the same run on {SMALL_CSV_MB} MB"
        self.csv_rss = Row("6", f"training on a {csv_mb} MB CSV, peak RSS", anchor, "MiB", 1.5)
        self.csv_parse = Row("6", f"`data.load_csv`, {csv_mb} MB CSV", "`pandas.read_csv`", "s", 1.0)
        self.with_pandas = importlib.util.find_spec("pandas") is not None
        self.quick = quick
        big, small = ("20 MB", "0.2 MB") if quick else ("200 MB", "2 MB")
        self.text_rss = Row("7", f"text training on a {big} corpus, peak RSS", f"the same run on {small}", "MiB", 1.10)
        plain = "a plain one-process tokenizing script"
        self.prepare = Row("7", f"`prepare.py --workers 1`, {big}", plain, "s", 1.0)
        self.prepare_workers = Row("7", f"`prepare.py --workers 2`, {big}", plain, "s", 1.0)
        self.ckpt_memory = Row(
            "8", "GPT step, activation checkpointing, peak memory", "the same step without", "MiB", 0.6
        )
        self.ckpt_time = Row("8", "GPT step, activation checkpointing, time", "the same step without", "s", 1.4)
        subprocess.run([*self.ltgen, "new", "existing", "--gpus", "4"], cwd=scratch, check=True, capture_output=True)
        self.tiny = make_tiny_project(scratch)
        self.mnist = generate(scratch, "mnist", MNIST_SPEC)
        self.default = generate(scratch, "default", {})
        self.state_projects = {strategy: state_bytes_project(scratch, strategy) for strategy in ("fsdp", "ddp")}
        self.csv = generate(scratch, "csv", CSV_SPEC)
        self.csv_files = [
            write_csv(scratch / name / "data.csv", mb) for name, mb in (("big", csv_mb), ("small", SMALL_CSV_MB))
        ]
        self.runs = 0

    def rows(self) -> list[Row]:
        lightning = [self.lit_step] if self.lightning else []
        anchored = [self.step, *lightning, self.epoch_time, self.epoch_rss] if self.with_anchors else []
        parse = [self.csv_parse] if self.with_pandas else []
        scale = [self.text_rss, self.prepare, self.prepare_workers, self.ckpt_memory, self.ckpt_time]
        return [*self.latency.values(), *anchored, self.startup, self.fsdp_state, self.csv_rss, *parse, *scale]

    def fresh(self, stem: str) -> Path:
        """A new, empty folder in the scratch space."""
        self.runs += 1
        return Path(tempfile.mkdtemp(prefix=f"{stem}-{self.runs}-", dir=self.scratch))

    def round(self, index: int) -> None:
        swap = index % 2 == 1
        copier = [sys.executable, "-c", "import copier"]
        project = self.scratch / "existing"
        latency_commands = {
            "new": lambda: measure([*self.ltgen, "new", "p", "--gpus", "4"], self.fresh("new")).wall_s,
            "regen": lambda: measure([*self.ltgen, "regen", str(project)], self.scratch).wall_s,
            "help": lambda: measure([*self.ltgen, "--help"], self.scratch).wall_s,
            "version": lambda: measure([*self.ltgen, "--version"], self.scratch).wall_s,
            "check": lambda: measure([*self.ltgen, "check", str(project)], self.scratch).wall_s,
        }
        for repeat in range(LATENCY_REPEATS):  # these take a fraction of a second: a few pairs per round
            for key, ours in latency_commands.items():
                self.latency[key].add(
                    *paired(ours, lambda: measure(copier, self.scratch).wall_s, swap != (repeat % 2 == 1))
                )

        if self.with_anchors:
            self.anchored_round(swap)
        fast_dev_run = [sys.executable, "train.py", "--fast-dev-run", "--dataset", "synthetic", "--device", "cpu"]
        self.startup.add(
            *paired(
                lambda: measure(fast_dev_run, self.default, ONE_THREAD).wall_s,
                lambda: measure([sys.executable, str(HERE / "startup_anchor.py")], self.scratch, ONE_THREAD).wall_s,
                swap,
            )
        )
        if index == 0:
            self.fsdp_state.add(self.state_mib("fsdp"), self.state_mib("ddp"))
            big, small = self.csv_files
            self.csv_rss.add(self.csv_peak_mib(big), big.stat().st_size / 2**20 + self.csv_peak_mib(small))
            self.scale_round()
        if self.with_pandas:
            big = self.csv_files[0]
            self.csv_parse.add(
                *paired(
                    lambda: seconds("data", LOAD_CSV, big, self.csv),
                    lambda: seconds("pandas", READ_CSV, big, self.scratch),
                    swap,
                )
            )

    def scale_round(self) -> None:
        """Figures 7 and 8, from their own scripts' JSON results."""
        quick = ["--quick"] if self.quick else []
        text = script_json("text_scale.py", *quick, "--work", str(self.fresh("text-scale")))
        runs, speed = text["runs"], text["prepare_speed"]
        self.text_rss.add(runs["big"]["train_peak_rss_mib"], runs["small"]["train_peak_rss_mib"])
        self.prepare.add(speed["prepare_s"], speed["plain_s"])
        self.prepare_workers.add(speed["prepare_workers2_s"], speed["plain_s"])
        ckpt = script_json("activation_checkpointing.py", *quick)
        self.ckpt_memory.add(ckpt["with"]["peak_mib"], ckpt["without"]["peak_mib"])
        self.ckpt_time.add(ckpt["with"]["step_s"], ckpt["without"]["step_s"])

    def csv_peak_mib(self, file: Path) -> float:
        """Figure 6: the peak RSS of a short training run on `file`."""
        out = self.fresh("csv-out")
        line = [sys.executable, "train.py", *CSV_TRAIN, "--data-dir", str(file.parent), "--out-dir", str(out)]
        return measure(line, self.csv).peak_rss_mib

    def state_mib(self, strategy: str) -> float:
        """Figure 5: the most MiB of parameters and optimizer state any of the 2 ranks holds."""
        folder = self.fresh(f"state-{strategy}")
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        line = [*launch, "train.py", "--device", "cpu", "--dataset", "synthetic"]
        measure(line, self.state_projects[strategy], {**ONE_THREAD, "STATE_BYTES_DIR": str(folder)})
        return max(int((folder / str(rank)).read_text()) for rank in range(2)) / 2**20

    def anchored_round(self, swap: bool) -> None:
        """Figures 2 and 3: the emitted loop against ../shared/anchors' floor.py (and lit.py) and plain.py."""

        def tiny(script: list[str]) -> Callable[[], float]:
            return lambda: run_tiny([sys.executable, *script], self.tiny)["step_us_mean"]

        ltgen_tiny = tiny(["train.py", "--device", "cpu", "--out-dir", str(self.fresh("tiny-out"))])
        floor = tiny([str(self.anchors / "floor.py")])
        self.step.add(*paired(ltgen_tiny, floor, swap))
        if self.lightning:
            lit = [str(self.anchors / "lit.py"), "--task", "tiny", "--no-progress", "--out", str(self.fresh("lit"))]
            self.lit_step.add(*paired(tiny(lit), floor, swap))

        ours, theirs = paired(
            lambda: measure(
                [sys.executable, "train.py", "--device", "cpu", "--out-dir", str(self.fresh("mnist-out"))],
                self.mnist,
                ONE_THREAD,
            ),
            lambda: measure(
                [sys.executable, str(self.anchors / "plain.py"), "--task", "mnist", "--no-progress"]
                + ["--out", str(self.fresh("plain-out"))],
                self.scratch,
                ONE_THREAD,
            ),
            swap,
        )
        self.epoch_time.add(ours.wall_s, theirs.wall_s)
        self.epoch_rss.add(ours.peak_rss_mib, theirs.peak_rss_mib)


FIGURES = {
    "1": "1. ltgen's own latency (whole process)",
    "2": "2. Emitted loop, time per step (tiny task, one thread)",
    "3": "3. MNIST-shaped epoch, whole process (one thread)",
    "4": "4. Start-up, whole process (one thread)",
    "5": "5. FSDP: parameters and optimizer state per rank",
    "6": "6. A large CSV file: training's peak RSS, and the parse (every core)",
    "7": "7. A large text corpus: training's peak RSS, and prepare.py's tokenizing time",
    "8": "8. Activation checkpointing: a GPT step's peak memory and time",
}


def value(number: float, unit: str) -> str:
    return f"{number:.0f} {unit}" if unit in ("us", "MiB") else f"{number:.2f} {unit}"


def machine() -> str:
    """CPU model and cores, Python, torch and ltgen versions, the date."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in ("torch", "ltgen"))
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{stamp} · {cpu} ({os.cpu_count()} cores) · Python {platform.python_version()}, {versions}"


def report(rows: list[Row], rounds: int, quick: bool, notes: list[str], complete: bool) -> str:
    """results.md: a table per figure, then the notes and the verdict."""
    lines = [
        "# ltgen benchmarks: each target beside its anchor",
        "",
        machine() + f" · {rounds} rounds" + (" (--quick)" if quick else ""),
        "",
        "Medians. ratio: ltgen / anchor within each pair run back to back (one per round; figure 1: "
        + f"{LATENCY_REPEATS} per round), then the median. Written by `python benchmarks/run.py`; compare ratios, "
        + "not times, across machines.",
    ]
    for figure, title in FIGURES.items():
        lines += ["", f"## {title}", "", "| ltgen | median | anchor | median | ratio | target | met |"]
        lines.append("| --- | --- | --- | --- | --- | --- | --- |")
        for row in (row for row in rows if row.figure == figure):
            target, met = (
                ("-", "reported") if row.target is None else (f"<= {row.target:.2f}x", "yes" if row.met else "no")
            )
            lines.append(
                f"| {row.label} | {value(statistics.median(row.ours), row.unit)} | {row.anchor} | "
                f"{value(statistics.median(row.theirs), row.unit)} | {row.ratio:.2f}x | {target} | {met} |"
            )
    lines += ["", *(f"- {note}" for note in notes), "", verdict(rows) + ("" if complete else f" ({NOT_MEASURED})")]
    return "\n".join(lines) + "\n"


def verdict(rows: list[Row]) -> str:
    missed = [f"{row.label} ({row.ratio:.2f}x > {row.target:.2f}x)" for row in rows if row.met is False]
    return "all targets met" if not missed else "targets missed: " + "; ".join(missed)


def chart(rows: list[Row], path: Path) -> None:
    """One subplot per figure (the MNIST epoch's time and memory apart): each measure's median beside its anchor's,
    the ratio above it (green: target met, red: missed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        panels.setdefault((row.figure, row.unit), []).append(row)
    columns = 3
    lines = -(-len(panels) // columns)
    fig, axes = plt.subplots(lines, columns, figsize=(15, 3 * lines), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    colors = {"ltgen": "tab:blue", "Lightning": "tab:orange"}
    for ax, ((figure, unit), panel) in zip(axes.flat, panels.items()):
        for position, row in enumerate(panel):
            ours, theirs = statistics.median(row.ours), statistics.median(row.theirs)
            ax.bar(position - 0.2, ours, 0.4, color=colors[row.subject], label=row.subject)
            ax.bar(position + 0.2, theirs, 0.4, color="tab:gray", label=row.anchor.replace("`", ""))
            color = {True: "tab:green", False: "tab:red", None: "black"}[row.met]
            ax.annotate(f"{row.ratio:.2f}x", (position - 0.2, ours), ha="center", va="bottom", color=color, fontsize=9)
        width = max(9, 44 // len(panel))  # figure 1 has five measures side by side
        labels = [
            textwrap.fill(row.label.replace("`", ""), width) + ("" if row.target is None else f"\n<= {row.target:.2f}x")
            for row in panel
        ]
        ax.set_xticks(range(len(panel)), labels, fontsize=7 if len(panel) > 2 else 8)
        ax.set_xlim(-0.8, len(panel) - 0.2)
        ax.set_ylim(0, 1.4 * max(max(statistics.median(row.ours), statistics.median(row.theirs)) for row in panel))
        ax.set_ylabel({"s": "seconds", "us": "microseconds per step", "MiB": "MiB"}[unit])
        title = FIGURES[figure] + (
            "" if figure not in ("3", "6", "7", "8") else ": peak RSS" if unit == "MiB" else ": time"
        )
        ax.set_title(textwrap.fill(title, 50), fontsize=10)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 5 (under 3 minutes on 2 cores)")
    parser.add_argument("--rounds", type=int, help="rounds of every figure (default: 5, or 3 with --quick)")
    parser.add_argument("--out", type=Path, default=HERE, help="where results.md and results.png go (default: here)")
    parser.add_argument(
        "--anchors", type=Path, default=HERE.parents[1] / "shared" / "anchors", help="floor.py, plain.py, lit.py"
    )
    parser.add_argument("--lightning", action="store_true", help="also time lit.py per step (needs pytorch_lightning)")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 5)
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    anchors = args.anchors.resolve()
    notes = []
    lightning = args.lightning and importlib.util.find_spec("pytorch_lightning") is not None
    if args.lightning and not lightning:
        notes.append("Lightning not run: pytorch_lightning is not installed")
    elif not args.lightning:
        notes.append("Lightning not run (pass --lightning to time lit.py beside the floor)")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ltgen-bench-") as scratch:
        benchmarks = Benchmarks(Path(scratch), anchors, lightning, QUICK_CSV_MB if args.quick else CSV_MB, args.quick)
        if not benchmarks.with_pandas:
            notes.append(NO_PANDAS)
        if not benchmarks.with_anchors:  # said in the report, and in the verdict: never a silent gap
            notes.append(f"{NOT_MEASURED}: no {' and '.join(ANCHORS)} in {anchors} (pass --anchors DIR)")
        for index in range(rounds):
            benchmarks.round(index)
            print(f"round {index + 1}/{rounds} done, {time.perf_counter() - started:.0f} s", file=sys.stderr)
        rows = benchmarks.rows()
    args.out.mkdir(parents=True, exist_ok=True)
    if importlib.util.find_spec("matplotlib") is None:
        notes.append(NO_CHART)
    else:
        chart(rows, args.out / "results.png")
    notes.append(f"the whole run took {time.perf_counter() - started:.0f} s")
    text = report(rows, rounds, args.quick, notes, complete=benchmarks.with_anchors)
    (args.out / "results.md").write_text(text)
    print(text, end="")  # ends with the verdict: "all targets met" or the targets missed


if __name__ == "__main__":
    main()
