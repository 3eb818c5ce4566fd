"""GPU checks of the emitted projects, for one CUDA machine, in under 8 minutes.

Every project is generated in a temporary folder from a golden spec (golden/NAME/ltgen.toml) with ltgen's Python
API, and trains on `--dataset synthetic` (no files, no network), one process each (the DDP and SLURM projects
too: plain `python train.py`; the FSDP project under `torchrun --nproc_per_node 1`, so that fully_shard, its
mixed-precision policy and DCP's sharded checkpoints run on CUDA). The checks, in this order:

- run: each golden x precision (32, 16-mixed, bf16-mixed), a short run (one epoch of a few batches, a validation
  and a test pass of 2 batches) that must exit 0 with finite validation and test metrics and, where the project
  saves `last.pt` (or the folder `last/`, with FSDP), finite model weights in it. Several run at once (--jobs).
- fused_adamw: the runs whose checkpoint shows a fused AdamW (the default optimizer, fused on CUDA) all passed.
- compile: the mnist project with `trainer.compile = true`.
- overhead: one MNIST-shaped epoch (60,000 synthetic samples, batch 64, MLP 784-128-10, Adam 1e-3, TensorBoard, a
  checkpoint) through the emitted loop and through a minimal hand-written loop over in-memory CUDA tensors
  (HAND_LOOP below; ../shared/anchors/plain.py has no device flag), alternating; ratios of whole-process time and
  of mean time per step (timestamps per optimizer step, as benchmarks/loop_overhead.py takes them).
- gpt2_small: the textlm project fine-tuning GPT-2 small (124M: 12 layers, 12 heads, 768 wide, block 1024) from
  weights in Hugging Face's layout (`[model] init_from` = a folder this script writes: random weights of GPT-2's
  shapes, and a byte-level vocab.json/merges.txt, as no download is possible), bf16-mixed, torch.compile, fused
  AdamW, batch 8: tokens/s and MFU as its progress lines report them (model.py's flops_per_token against
  steps.py's peak for the device, 989 TFLOP/s dense bf16 on an H100/H200); the compile check of textlm.
- batch_size_finder: the textlm project with `[tune] batch_size_finder`, bf16-mixed: `python train.py
  --find-batch-size`, then a short run at the batch size it answers, which must not run out of memory; and each
  step's gpu_mem_peak_gib in metrics.csv must read what torch.cuda.max_memory_allocated read after that step (a
  hook in steps.py prints it: MEMORY_HOOK below).

One JSON line per check on stdout as it ends, then a summary table; exit status 1 if a check failed. A check not
started within --budget seconds of the start is reported as skipped; every process has a timeout.

`--dry-run` is the CPU-side self-check that CI runs: it generates every project above, checks that every command
line's flags are the project's (by `python train.py --help` for one project per golden), runs one step of the
textlm project and a few steps of the hand-written loop on the CPU, and prints the same JSON lines and table.
Without --dry-run and without CUDA it exits 2.

    python benchmarks/gpu.py [--budget 420] [--jobs 4] [--batches 20] [--rounds 2] [--dry-run]
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import contextlib
import csv
import dataclasses
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

import torch
from run import MNIST_SPEC

from ltgen import place, render, spec

ROOT = Path(__file__).resolve().parents[1]
GOLDENS = ("mnist", "demo", "cluster", "minimal", "cifar10", "textlm", "tabular", "gan", "fsdp")
PRECISIONS = ("32", "16-mixed", "bf16-mixed")
MIN_START_S = 10.0  # a check is not started with less of the budget left
# The MNIST-shaped epoch of benchmarks/run.py, in full precision, writing last.pt (its checkpoint here).
OVERHEAD_SPEC = {
    **MNIST_SPEC,
    "trainer.precision": "32",
    "checkpoint.save_top_k": 0,
    "checkpoint.save_last": True,
    "logging.log_every_n_steps": 50,
    "cluster.gpus": 1,
    "cluster.nodes": 1,
    "hooks.emit": ["on_train_batch_end", "on_fit_end"],  # TIMING_HOOKS time each step
}
GPT2_SMALL = {"n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024, "vocab_size": 50257}
GPT2_SMALL_SPEC = {
    "model.n_layer": GPT2_SMALL["n_layer"],
    "model.n_head": GPT2_SMALL["n_head"],
    "model.n_embd": GPT2_SMALL["n_embd"],
    "model.bias": True,
    "model.dropout": 0.0,
    "data.block_size": 1024,
    "data.batch_size": 8,
    "trainer.precision": "bf16-mixed",
    "trainer.compile": True,
    "logging.log_every_n_steps": 10,
}
# The batch-size finder's project: its answer then trains a few steps, logging GPU memory at every step.
FINDER_SPEC = {
    "trainer.precision": "bf16-mixed",
    "tune.batch_size_finder": True,
    "logging.csv": True,
    "logging.log_gpu_memory": True,
    "hooks.emit": ["on_train_batch_end"],  # MEMORY_HOOK reads the allocator's peak after each step
}
FINDER_FLAGS = {"--find-batch-size": None}  # the finder's run; the check's flags are the short run's after it
MEMORY_HOOK = """


def on_train_batch_end(model: nn.Module, loss: torch.Tensor, step: int) -> None:
    print(json.dumps({"step": step, "max_memory_allocated_gib": torch.cuda.max_memory_allocated() / 2**30}))
"""
GIB_TOLERANCE = 1 / 1024  # 1 MiB: what the loop may allocate between the hook and the logging of the same step
TIMING_HOOKS = """

STAMPS: list[float] = []


def on_train_batch_end(model: nn.Module, loss: torch.Tensor, step: int) -> None:
    STAMPS.append(time.perf_counter())


def on_fit_end(model: nn.Module) -> None:
    mean = (STAMPS[-1] - STAMPS[0]) / (len(STAMPS) - 1)
    print(json.dumps({"impl": "ltgen", "steps": len(STAMPS), "step_us_mean": 1e6 * mean}))
"""
HAND_LOOP = '''"""A minimal hand-written loop: MNIST-shaped random data held as tensors on the device, batch 64, Adam."""

import argparse
import json
import os
import time

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

parser = argparse.ArgumentParser()
parser.add_argument("--device", default="cuda")
parser.add_argument("--samples", type=int, default=60_000)
parser.add_argument("--val", type=int, default=10_000)
parser.add_argument("--out", required=True)
args = parser.parse_args()
device = torch.device(args.device)
torch.set_float32_matmul_precision("high")  # TF32, as the emitted loop uses
torch.manual_seed(0)
x = torch.randn(args.samples + args.val, 1, 28, 28, device=device)
y = (x.flatten(1) @ torch.randn(784, 10, device=device)).argmax(1)
model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10)).to(device)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=device.type == "cuda")
writer = SummaryWriter(args.out)
stamps = []
start = time.perf_counter()
for step, index in enumerate(torch.randperm(args.samples, device=device).split(64)):
    loss = nn.functional.cross_entropy(model(x[index]), y[index])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    stamps.append(time.perf_counter())
    if step % 50 == 0:
        writer.add_scalar("train_loss", loss.item(), step)
model.eval()
with torch.no_grad():
    val_x, val_y = x[args.samples :], y[args.samples :]
    losses = [nn.functional.cross_entropy(model(a), b, reduction="sum") for a, b in zip(val_x.split(64), val_y.split(64))]
    val_loss = torch.stack(losses).sum().item() / args.val
writer.add_scalar("val_loss", val_loss, step)
torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, os.path.join(args.out, "last.pt"))
writer.close()
fit_s = time.perf_counter() - start
mean = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
print(json.dumps({"impl": "hand", "steps": len(stamps), "step_us_mean": 1e6 * mean, "fit_s": fit_s, "val_loss": val_loss}))
'''


@dataclasses.dataclass
class Check:
    """One line of the report: what runs, and how it went."""

    check: str
    golden: str
    precision: str
    project: Path | None = None
    flags: dict[str, object] = dataclasses.field(default_factory=dict)
    timeout: float = 150.0
    status: str = "planned"  # planned, rendered, passed, failed, skipped
    seconds: float = 0.0
    figures: dict[str, object] = dataclasses.field(default_factory=dict)

    def line(self) -> dict[str, object]:
        """The JSON line of this check."""
        ok = self.status in ("rendered", "passed")
        head = {"check": self.check, "golden": self.golden, "precision": self.precision, "status": self.status}
        return {**head, "ok": ok, "seconds": round(self.seconds, 2), **self.figures}


class Report:
    """Prints each check's JSON line as it ends (from any thread), and the summary table at the end."""

    def __init__(self) -> None:
        self.checks: list[Check] = []
        self.lock = threading.Lock()

    def add(self, check: Check) -> None:
        with self.lock:
            self.checks.append(check)
            print(json.dumps(check.line()), flush=True)

    def table(self) -> str:
        rows = [("check", "golden", "precision", "status", "seconds", "figures")]
        for check in self.checks:
            shown = ", ".join(f"{k} {_short(v)}" for k, v in check.figures.items() if k not in ("error", "command"))
            figures = str(check.figures["error"]).splitlines()[0][:150] if "error" in check.figures else shown
            status = check.status if check.status != "failed" else "FAILED"
            rows.append((check.check, check.golden, check.precision, status, f"{check.seconds:.1f}", figures))
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[5] for row in rows]
        counts = {s: sum(c.status == s for c in self.checks) for s in ("rendered", "passed", "failed", "skipped")}
        return "\n".join(lines + [", ".join(f"{n} {s}" for s, n in counts.items() if n)])


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class Budget:
    """The seconds left of --budget, counted from the start."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def gpt2_shaped_weights(
    folder: Path, n_layer: int, n_head: int, n_embd: int, n_positions: int, vocab_size: int
) -> Path:
    """A folder in Hugging Face's GPT-2 layout (config.json, model.safetensors with the hub's tensor names and
    Conv1D shapes, vocab.json and merges.txt) holding random weights: what `init_from = PATH` reads, without a
    download. The tokenizer is byte-level BPE with no merges (256 tokens): enough to feed the model."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_type": "gpt2", "n_layer": n_layer, "n_head": n_head, "n_embd": n_embd}
    config |= {"n_positions": n_positions, "n_ctx": n_positions, "vocab_size": vocab_size, "layer_norm_epsilon": 1e-5}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    generator = torch.Generator().manual_seed(0)

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * 0.02

    tensors = {"wte.weight": normal(vocab_size, n_embd), "wpe.weight": normal(n_positions, n_embd)}
    for i in range(n_layer):
        for name, shape in {
            "attn.c_attn": (n_embd, 3 * n_embd),
            "attn.c_proj": (n_embd, n_embd),
            "mlp.c_fc": (n_embd, 4 * n_embd),
            "mlp.c_proj": (4 * n_embd, n_embd),
        }.items():
            tensors[f"h.{i}.{name}.weight"] = normal(*shape)
            tensors[f"h.{i}.{name}.bias"] = torch.zeros(shape[1])
        for norm in ("ln_1", "ln_2"):
            tensors[f"h.{i}.{norm}.weight"], tensors[f"h.{i}.{norm}.bias"] = torch.ones(n_embd), torch.zeros(n_embd)
    tensors["ln_f.weight"], tensors["ln_f.bias"] = torch.ones(n_embd), torch.zeros(n_embd)
    save_file(tensors, str(folder / "model.safetensors"))
    # GPT-2's byte-to-character table: printable bytes stand for themselves, the others for chr(256 + k).
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    characters = {b: chr(b) for b in printable} | {b: chr(256 + k) for k, b in enumerate(others)}
    vocab = {characters[b]: i for i, b in enumerate(sorted(characters))}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return folder


def generate(golden: str, updates: dict[str, object], folder: Path) -> Path:
    """Generate the golden's spec with `updates` into folder; return the project."""
    text = spec.with_values((ROOT / "golden" / golden / "ltgen.toml").read_text(encoding="utf-8"), updates)
    place.write_new(render.render(spec.parse(text)), text, folder)
    return folder


def accepted_flags(project: Path) -> set[str]:
    """The flags the project's train.py takes: one per field of its Config dataclass (--no-X too for booleans),
    plus the ones it adds to its parser itself."""
    tree = ast.parse((project / "train.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "Config":
            for field in node.body:
                if isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name):
                    flag = "--" + field.target.id.replace("_", "-")
                    found.add(flag)
                    if ast.unparse(field.annotation) == "bool":
                        found.add(flag.replace("--", "--no-", 1))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument" and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.add(first.value)
    return found


def command(project: Path, flags: dict[str, object]) -> list[str]:
    """`python train.py` (FSDP: under torchrun, one process) with those of the flags that the project takes
    (minimal has no --out-dir, for one)."""
    accepted = accepted_flags(project)
    values = tomllib.loads((project / "ltgen.toml").read_text(encoding="utf-8"))
    fsdp = values.get("cluster", {}).get("strategy") == "fsdp"
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"] if fsdp else []
    line = [sys.executable, *launcher, "train.py"]
    for flag, value in flags.items():
        if flag in accepted:
            line += [flag] if value is None else [flag, str(value)]
    return line


def execute(line: list[str], cwd: Path, timeout: float, env: dict[str, str]) -> tuple[int, str, str, float]:
    """Run a process in its own session; on timeout kill its whole group. (returncode, stdout, stderr, seconds)."""
    start = time.monotonic()
    process = subprocess.Popen(
        line, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = process.communicate(timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        err += f"\ntimed out after {timeout:.0f} s"
        return 124, out, err, time.monotonic() - start
    return process.returncode, out, err, time.monotonic() - start


def metrics_of(line: str) -> dict[str, float]:
    """`name value, name value` -> {name: value}; `R it/s` becomes it_per_s."""
    found = {}
    for part in line.split(", "):
        words = part.split()
        if len(words) == 2:
            name, value = ("it_per_s", words[0]) if words[1] == "it/s" else words
            try:
                found[name] = float(value)
            except ValueError:
                continue
    return found


def read_output(stdout: str) -> dict[str, object]:
    """The test metrics, the validation losses and the progress lines a run printed."""
    test, val, progress = {}, [], []
    for text in stdout.splitlines():
        if text.startswith("Test: "):
            test = metrics_of(text[len("Test: ") :])
        elif match := re.match(r"step \d+: (val_.*)$", text):
            val.append(metrics_of(match.group(1)))
        elif match := re.match(r"epoch \d+ step \d+: (.*)$", text):
            progress.append(metrics_of(match.group(1)))
    return {"test": test, "val": val, "progress": progress}


def read_checkpoint(path: Path) -> dict[str, object]:
    """Whether every model tensor in the checkpoint (a file, or an FSDP folder of shards) is finite, and whether
    its optimizers are fused."""
    if path.is_dir():
        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

        with tempfile.TemporaryDirectory() as scratch:
            dcp_to_torch_save(path, Path(scratch) / "whole.pt")
            state = torch.load(Path(scratch) / "whole.pt", map_location="cpu", weights_only=False)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    tensors = [t for t in state["model"].values() if isinstance(t, torch.Tensor) and t.is_floating_point()]
    optimizers = state["optimizers"].values() if isinstance(state.get("optimizers"), dict) else [state.get("optimizer")]
    groups = [group for opt in optimizers if isinstance(opt, dict) for group in opt.get("param_groups", [])]
    return {
        "weights_finite": bool(tensors) and all(bool(torch.isfinite(t).all()) for t in tensors),
        "fused": bool(groups) and all(bool(group.get("fused")) for group in groups),
    }


def judge(check: Check, returncode: int, stdout: str, stderr: str, expect_checkpoint: bool) -> None:
    """Set the check's status and figures from what its run printed and left."""
    output = read_output(stdout)
    test, val = output["test"], output["val"]
    numbers = [*test.values(), *(v for metrics in val for v in metrics.values())]
    problems = []
    if returncode != 0:
        problems.append(f"exit status {returncode}: {stderr.strip()[-1500:]}")
    if not any(name.startswith("test_loss") for name in test):  # a GAN's are test_loss_d and test_loss_g
        problems.append("no 'Test: test_loss' line")
    if not all(math.isfinite(n) for n in numbers):
        problems.append("a non-finite metric")
    check.figures.update(test)
    if val:
        check.figures["val_loss"] = val[-1].get("val_loss", val[-1].get("val_loss_g"))
    # Each check trains once in a fresh --out-dir, so its run folder is version_0.
    checkpoints = Path(str(check.flags.get("--out-dir", ""))) / "version_0" / "checkpoints"
    last = checkpoints / "last" if (checkpoints / "last").is_dir() else checkpoints / "last.pt"
    if expect_checkpoint and returncode == 0:
        if last.exists():
            check.figures.update(read_checkpoint(last))
            if not check.figures["weights_finite"]:
                problems.append("non-finite weights in last.pt")
        else:
            problems.append(f"no {last}")
    if problems:
        check.figures["error"] = "; ".join(problems)
    check.status = "failed" if problems else "passed"


def saves_last(project: Path) -> bool:
    """Whether the project writes RUN/checkpoints/last.pt (a spec with save_last, and a checkpoint.py to write it)."""
    values = tomllib.loads((project / "ltgen.toml").read_text(encoding="utf-8"))
    return (project / "checkpoint.py").is_file() and values.get("checkpoint", {}).get("save_last", False)


def run_check(check: Check, budget: Budget, env: dict[str, str], report: Report) -> None:
    """Run one training check within the budget, judge it and report it."""
    assert check.project is not None
    if budget.left() < MIN_START_S:
        check.status, check.figures["error"] = "skipped", "out of budget"
        report.add(check)
        return
    try:
        limit = min(check.timeout, budget.left())
        returncode, out, err, check.seconds = execute(command(check.project, check.flags), check.project, limit, env)
        judge(check, returncode, out, err, saves_last(check.project))
        if returncode == 124 and limit < check.timeout:
            check.status, check.figures["error"] = "skipped", f"stopped after {limit:.0f} s: the budget ran out"
        progress = read_output(out)["progress"]
        steady = progress[2:] or progress[-1:]  # the first lines include torch.compile's and CUDA's warm-up
        for name in ("tokens_per_s", "mfu", "it_per_s"):
            values = [line[name] for line in steady if name in line]
            if values:
                check.figures[name] = statistics.median(values)
    except Exception as error:  # noqa: BLE001 (a bug here must not hide the other checks' results)
        check.status, check.figures["error"] = "failed", f"{type(error).__name__}: {error}"
    report.add(check)


def plan(scratch: Path, device: str, batches: int) -> list[Check]:
    """Every check's project (generated now) and flags; a spec that does not render, or a train.py without the
    flags that keep a run short, is a failed check."""
    checks = []
    variants: list[tuple[str, str, str, dict[str, object]]] = [
        ("run", golden, precision, {"trainer.precision": precision}) for golden in GOLDENS for precision in PRECISIONS
    ]
    variants += [
        ("compile", "mnist", "bf16-mixed", {"trainer.precision": "bf16-mixed", "trainer.compile": True}),
        ("overhead", "mnist", "32", OVERHEAD_SPEC),
        ("gpt2_small", "textlm", "bf16-mixed", GPT2_SMALL_SPEC),
        ("batch_size_finder", "textlm", "bf16-mixed", FINDER_SPEC),
    ]
    for name, golden, precision, updates in variants:
        check = Check(name, golden, precision)
        if name == "gpt2_small":  # the weights (500 MB) only where they are read: --dry-run renders the project
            weights = scratch / "gpt2-small"
            if device == "cuda":
                gpt2_shaped_weights(weights, **GPT2_SMALL)
            updates = {**updates, "model.init_from": str(weights)}
        out = scratch / "out" / f"{name}-{golden}-{precision}"
        check.flags = {"--device": device, "--dataset": "synthetic", "--max-epochs": 1}
        short = {"--limit-train-batches": batches, "--limit-val-batches": 2, "--limit-test-batches": 2}
        if name == "overhead":
            check.flags["--out-dir"] = out
        elif name == "gpt2_small":
            check.flags.update(short, **{"--limit-train-batches": 100, "--progress-bar": None, "--out-dir": out})
            check.timeout = 300.0
        elif name == "batch_size_finder":  # the short run at the finder's answer (then also --batch-size)
            check.flags.update(short, **{"--limit-train-batches": 3, "--log-every-n-steps": 1, "--out-dir": out})
            check.flags["--no-progress-bar"] = None
            check.timeout = 240.0
        else:
            check.flags.update(short, **{"--no-progress-bar": None, "--out-dir": out})
            check.timeout = 240.0 if name == "compile" else 150.0
        start = time.monotonic()
        try:
            check.project = generate(golden, updates, scratch / "projects" / f"{name}-{golden}-{precision}")
            wanted = set(check.flags) | (set(FINDER_FLAGS) if name == "batch_size_finder" else set())
            missing = sorted(wanted - {"--out-dir", "--no-progress-bar"} - accepted_flags(check.project))
            if missing:
                check.status, check.figures["error"] = "failed", f"train.py does not take {missing}"
        except Exception as error:  # noqa: BLE001 (a spec error or a template bug: report it, go on)
            check.status, check.figures["error"] = "failed", f"{type(error).__name__}: {error}"
        if name == "overhead" and check.project is not None:
            add_hooks(check.project, "import json\nimport time\n", TIMING_HOOKS)
        if name == "batch_size_finder" and check.project is not None:
            add_hooks(check.project, "import json\n", MEMORY_HOOK)
        check.seconds = time.monotonic() - start
        checks.append(check)
    return checks


def add_hooks(project: Path, imports: str, hooks: str) -> None:
    """Append hook functions to the project's steps.py (they replace its stubs), with the imports they need."""
    steps = (project / "steps.py").read_text(encoding="utf-8")
    steps = steps.replace("import torch\n", f"{imports}\nimport torch\n", 1) + hooks
    (project / "steps.py").write_text(steps, encoding="utf-8")


def batch_size_finder(check: Check, budget: Budget, env: dict[str, str], report: Report) -> None:
    """--find-batch-size, then the check's short run at the batch size it answered: the run must pass (no
    torch.OutOfMemoryError), and at every step its logged gpu_mem_peak_gib must be torch.cuda.max_memory_allocated
    as MEMORY_HOOK read it after that step."""
    assert check.project is not None
    if budget.left() < 2 * MIN_START_S:
        check.status, check.figures["error"] = "skipped", "out of budget"
        report.add(check)
        return
    try:
        finder = {"--device": check.flags["--device"], "--dataset": "synthetic", **FINDER_FLAGS}
        limit = min(check.timeout, budget.left())
        returncode, out, err, check.seconds = execute(command(check.project, finder), check.project, limit, env)
        answer = re.search(r"^Train with it: python train.py --batch-size (\d+)$", out, re.MULTILINE)
        peak = re.search(r"peaked at ([\d.]+) GiB", out)
        if returncode != 0 or not answer or not peak:
            raise RuntimeError(f"--find-batch-size: exit status {returncode}: {(out + err).strip()[-1500:]}")
        check.figures.update(batch_size=int(answer[1]), finder_peak_gib=float(peak[1]), finder_s=check.seconds)
        flags = {**check.flags, "--batch-size": int(answer[1])}
        limit = min(check.timeout, budget.left())
        returncode, out, err, seconds = execute(command(check.project, flags), check.project, limit, env)
        check.seconds += seconds
        judge(check, returncode, out, err, saves_last(check.project))
        if check.status == "passed":
            problem = memory_problem(Path(str(check.flags["--out-dir"])) / "version_0" / "metrics.csv", out, check)
            if problem:
                check.status, check.figures["error"] = "failed", problem
    except Exception as error:  # noqa: BLE001 (a bug here must not hide the other checks' results)
        check.status, check.figures["error"] = "failed", f"{type(error).__name__}: {error}"
    report.add(check)


def memory_problem(metrics_csv: Path, stdout: str, check: Check) -> str | None:
    """Why the run's logged gpu_mem_peak_gib differs from what MEMORY_HOOK printed at the same steps, or None."""
    hooked = {}
    for text in stdout.splitlines():
        if text.startswith('{"step"'):
            line = json.loads(text)
            hooked[line["step"]] = line["max_memory_allocated_gib"]
    with open(metrics_csv, newline="", encoding="utf-8") as file:
        logged = {
            int(row["step"]): float(row["gpu_mem_peak_gib"])
            for row in csv.DictReader(file)
            if row.get("gpu_mem_peak_gib")
        }
    steps = sorted(set(hooked) & set(logged))
    if not steps:
        return f"no step with both a logged gpu_mem_peak_gib ({len(logged)} rows) and MEMORY_HOOK's reading ({len(hooked)})"
    check.figures.update(run_peak_gib=max(logged[step] for step in steps), memory_steps=len(steps))
    off = [step for step in steps if abs(logged[step] - hooked[step]) > GIB_TOLERANCE]
    if off:
        step = off[0]
        return f"step {step}: gpu_mem_peak_gib {logged[step]:.4f} logged, max_memory_allocated {hooked[step]:.4f} GiB"
    return None


def check_help(check: Check, env: dict[str, str]) -> str | None:
    """Why `python train.py --help` refutes the check's command line, or None when it lists every flag of it."""
    assert check.project is not None
    returncode, out, err, _ = execute([sys.executable, "train.py", "--help"], check.project, 120.0, env)
    if returncode != 0:
        return f"--help: exit status {returncode}: {err.strip()[-500:]}"
    line = command(check.project, check.flags)
    used = line[line.index("train.py") + 1 :]
    missing = [flag for flag in used if flag.startswith("--") and not re.search(rf"{flag}\b", out)]
    return f"--help lacks {missing}" if missing else None


def dry_run(checks: list[Check], scratch: Path, budget: Budget, env: dict[str, str], report: Report) -> None:
    """The CPU-side self-check: command lines against --help, one textlm step and the hand loop on the CPU."""
    first: dict[str, Check] = {}
    for check in checks:
        if check.status != "failed":
            first.setdefault(check.golden, check)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        refutals = dict(zip(first, pool.map(lambda c: check_help(c, env), first.values())))
    for check in checks:
        if check.status != "failed":
            check.figures["command"] = " ".join(command(check.project, check.flags)[1:])
            check.status = "rendered"
            if refutals.get(check.golden):
                check.status, check.figures["error"] = "failed", refutals[check.golden]
        report.add(check)

    textlm = next(c for c in checks if (c.check, c.golden, c.precision) == ("run", "textlm", "32"))
    step = Check("cpu_step", "textlm", "32", project=textlm.project, timeout=120.0)
    if textlm.status == "failed":
        step.status, step.figures["error"] = "failed", "the textlm project did not render"
        report.add(step)
    else:
        step.flags = {
            **textlm.flags,
            "--out-dir": scratch / "out" / "cpu-step",
            "--batch-size": 2,
            "--limit-train-batches": 1,
            "--limit-val-batches": 1,
            "--limit-test-batches": 1,
            "--log-every-n-steps": 1,
            "--progress-bar": None,
        }
        del step.flags["--no-progress-bar"]
        run_check(step, budget, env, report)
        if step.status == "passed" and "tokens_per_s" not in step.figures:
            step.status, step.figures["error"] = "failed", "no tokens_per_s in the progress lines"

    hand = Check("hand_loop", "mnist", "32", timeout=120.0)
    hand.figures = hand_loop(scratch / "out" / "hand-cpu", "cpu", 2000, 500, hand.timeout, env)
    hand.status = "failed" if "error" in hand.figures else "passed"
    hand.seconds = hand.figures.pop("process_s", 0.0)
    report.add(hand)


def hand_loop(out: Path, device: str, samples: int, val: int, timeout: float, env: dict[str, str]) -> dict:
    """Run HAND_LOOP once; its JSON line and its whole-process time, or an error."""
    out.mkdir(parents=True, exist_ok=True)
    script = out / "hand_loop.py"
    script.write_text(HAND_LOOP, encoding="utf-8")
    line = [sys.executable, str(script), "--device", device, "--samples", str(samples), "--val", str(val)]
    returncode, stdout, stderr, seconds = execute(line + ["--out", str(out)], out, timeout, env)
    lines = [text for text in stdout.splitlines() if text.startswith("{")]
    if returncode != 0 or not lines:
        return {"error": f"hand loop: exit status {returncode}: {stderr.strip()[-1500:]}"}
    return {**json.loads(lines[-1]), "process_s": seconds}


def overhead(check: Check, rounds: int, budget: Budget, env: dict[str, str], report: Report) -> None:
    """The emitted loop's MNIST-shaped epoch against the hand-written loop's, alternating; median ratios."""
    assert check.project is not None
    ratios: dict[str, list[float]] = {"process": [], "step": []}
    for index in range(rounds):
        if budget.left() < 4 * MIN_START_S:
            break
        limit = min(check.timeout, budget.left())
        hand = hand_loop(check.project.parent / f"hand-{index}", "cuda", 60_000, 10_000, limit, env)
        line = command(check.project, check.flags)
        returncode, out, err, seconds = execute(line, check.project, min(check.timeout, budget.left()), env)
        timing = [json.loads(text) for text in out.splitlines() if text.startswith('{"impl": "ltgen"')]
        if "error" in hand or returncode != 0 or not timing:
            check.status = "failed"
            check.figures["error"] = hand.get("error") or f"ltgen: exit status {returncode}: {err.strip()[-1500:]}"
            break
        ratios["process"].append(seconds / hand["process_s"])
        ratios["step"].append(timing[-1]["step_us_mean"] / hand["step_us_mean"])
        check.figures.update(
            ltgen_process_s=seconds,
            hand_process_s=hand["process_s"],
            ltgen_step_us=timing[-1]["step_us_mean"],
            hand_step_us=hand["step_us_mean"],
            ltgen_steps=timing[-1]["steps"],
            hand_steps=hand["steps"],
        )
        check.seconds += seconds + hand["process_s"]
    if check.status != "failed":
        if ratios["step"]:
            check.status = "passed"
            check.figures.update(
                rounds=len(ratios["step"]),
                process_ratio=statistics.median(ratios["process"]),
                step_ratio=statistics.median(ratios["step"]),
            )
        else:
            check.status, check.figures["error"] = "skipped", "out of budget"
    report.add(check)


def fused_summary(checks: list[Check]) -> Check:
    """The fused AdamW check: the runs whose last.pt shows a fused optimizer all passed, and there was one."""
    fused = [c for c in checks if c.check == "run" and c.figures.get("fused")]
    check = Check("fused_adamw", "*", "*", status="passed" if fused else "skipped")
    check.figures = {
        "fused_runs": len(fused),
        "failed": [f"{c.golden}/{c.precision}" for c in fused if c.status == "failed"],
    }
    if check.figures["failed"]:
        check.status = "failed"
    elif not fused:
        check.figures["error"] = "no run's last.pt showed a fused optimizer"
    return check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=420.0, help="seconds; checks not started by then are skipped")
    parser.add_argument("--jobs", type=int, default=4, help="short runs at once on the GPU")
    parser.add_argument("--batches", type=int, default=20, help="training batches of each short run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of the overhead check")
    parser.add_argument("--dry-run", action="store_true", help="the CPU-side self-check: generate, check, one step")
    args = parser.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        print(
            "benchmarks/gpu.py needs a CUDA device (none is available); use --dry-run for the CPU self-check",
            file=sys.stderr,
        )
        raise SystemExit(2)
    budget = Budget(args.budget)
    report = Report()
    threads = max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    # WANDB_MODE=offline: a golden that logs to W&B (textlm) writes its run files locally, as on a machine
    # without a W&B account; nothing here needs them uploaded.
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    if args.dry_run:
        env["CUDA_VISIBLE_DEVICES"] = ""
    with tempfile.TemporaryDirectory(prefix="ltgen-gpu-") as folder:
        scratch = Path(folder)
        checks = plan(scratch, "cpu" if args.dry_run else "cuda", args.batches)
        if args.dry_run:
            dry_run(checks, scratch, budget, env, report)
        else:
            print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", file=sys.stderr)
            for check in checks:
                if check.status == "failed":
                    report.add(check)
            ready = [c for c in checks if c.status != "failed"]
            with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
                runs = [c for c in ready if c.check == "run"]
                list(pool.map(lambda c: run_check(c, budget, env, report), runs))
            report.add(fused_summary(checks))
            solo_env = {**env, "OMP_NUM_THREADS": str(os.cpu_count() or 1)}
            for check in ready:
                if check.check == "overhead":
                    overhead(check, args.rounds, budget, solo_env, report)
                elif check.check == "batch_size_finder":
                    batch_size_finder(check, budget, solo_env, report)
                elif check.check != "run":
                    run_check(check, budget, solo_env, report)
    print(report.table())
    raise SystemExit(1 if any(c.status == "failed" for c in report.checks) else 0)


if __name__ == "__main__":
    main()
