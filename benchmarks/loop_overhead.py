"""Per-step overhead of the emitted training loop, against the compute floor and a minimal hand-written loop.

The work is the anchors' `tiny` task (../shared/anchors): Linear(32, 2), batch 32, 20,000 steps of Adam on
640,000 synthetic samples, one epoch, a validation pass, TensorBoard every 50 steps, one checkpoint, no progress
bar, one CPU thread. ltgen generates a project for it and edits model.py and data.py the way a researcher would;
a stub of the on_train_batch_end hook records a timestamp per step, as the anchors do per batch.

All implementations run in the same session, alternating, several rounds; each round gives paired ratios of
mean time per step (ours / floor, plain / floor), and the report is their median over rounds. Timings vary from machine to
machine; the ratios are what to compare.

    python benchmarks/loop_overhead.py [--rounds 3] [--anchors ../shared/anchors] [--lightning]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from ltgen import place, render, spec

ROOT = Path(__file__).resolve().parents[1]
SPEC = {
    "data.dataset": "synthetic",
    "data.batch_size": 32,
    "data.val_size": 3200,
    "data.synthetic_samples": 640_000 + 3200,
    "model.dropout": 0.0,
    "optim.optimizer": "adam",
    "optim.weight_decay": 0.0,
    "optim.scheduler": "none",
    "trainer.max_epochs": 1,
    "trainer.num_sanity_val_steps": 0,
    "trainer.limit_test_batches": 0,
    "checkpoint.save_top_k": 0,
    "logging.progress_bar": False,
    "debug.param_summary": False,
    "hooks.emit": ["on_train_batch_end", "on_fit_end"],
}
TINY_MODEL = '''

def build_model(data_info: dict, device: torch.device) -> nn.Module:
    """The anchors' tiny task: a linear layer."""
    return nn.Linear(32, 2).to(device)
'''
TINY_DATA = '''

def synthetic(num_samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The anchors' tiny task: 32 features, 2 classes from a fixed linear map."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(num_samples, 32, generator=generator)
    return images, (images @ torch.randn(32, 2, generator=generator)).argmax(1)


def prepare_batch(batch: list[torch.Tensor], seed: int, train: bool) -> list[torch.Tensor]:
    """The tiny task's features are ready as they are: no uint8 images to convert and normalize."""
    return batch
'''
TIMING_HOOKS = """

STAMPS: list[float] = []


def on_train_batch_end(model: nn.Module, loss: torch.Tensor, step: int) -> None:
    STAMPS.append(time.perf_counter())


def on_fit_end(model: nn.Module) -> None:
    gaps = sorted(b - a for a, b in zip(STAMPS, STAMPS[1:]))
    mean = (STAMPS[-1] - STAMPS[0]) / (len(STAMPS) - 1)
    print(json.dumps({"impl": "ltgen", "steps": len(STAMPS), "step_us_mean": 1e6 * mean, "step_us_median": 1e6 * gaps[len(gaps) // 2]}))
"""


def make_project(parent: Path) -> Path:
    """Generate the benchmark project, then edit it as a researcher would."""
    text = spec.with_values(spec.default_text("bench"), SPEC)
    project = parent / "bench"
    place.write_new(render.render(spec.parse(text)), text, project)
    (project / "model.py").write_text((project / "model.py").read_text() + TINY_MODEL)  # the later definition wins
    (project / "data.py").write_text((project / "data.py").read_text() + TINY_DATA)
    steps = (
        (project / "steps.py").read_text().replace("import torch\n", "import json\nimport time\n\nimport torch\n", 1)
    )
    (project / "steps.py").write_text(steps + TIMING_HOOKS)
    return project


def run(command: list[str], cwd: Path) -> dict:
    """Run one implementation on one CPU thread; return the JSON line it prints."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--anchors", type=Path, default=ROOT.parent / "shared" / "anchors")
    parser.add_argument("--lightning", action="store_true", help="also run lit.py (needs pytorch-lightning)")
    args = parser.parse_args()
    anchors = args.anchors.resolve()
    with tempfile.TemporaryDirectory() as scratch:
        project = make_project(Path(scratch))
        commands = {
            "floor": [sys.executable, str(anchors / "floor.py")],
            "ltgen": [sys.executable, "train.py", "--device", "cpu", "--out-dir", str(Path(scratch) / "ltgen-out")],
            "plain": [
                sys.executable,
                str(anchors / "plain.py"),
                "--task",
                "tiny",
                "--no-progress",
                "--out",
                str(Path(scratch) / "plain-out"),
            ],
        }
        if args.lightning:
            commands["lightning"] = [
                sys.executable,
                str(anchors / "lit.py"),
                "--task",
                "tiny",
                "--no-progress",
                "--out",
                str(Path(scratch) / "lit-out"),
            ]
        rounds = []
        for index in range(args.rounds):
            figures = {name: run(command, project) for name, command in commands.items()}
            rounds.append(figures)
            print(
                f"round {index + 1}: " + ", ".join(f"{n} {f['step_us_mean']:.0f} us" for n, f in figures.items()),
                file=sys.stderr,
            )
    # The floor times its whole loop (a mean per step); the others' means come from per-step timestamps over
    # the whole epoch, so logging and checkpoint steps count too. Medians are shown for reference.
    report = {
        "rounds": args.rounds,
        "floor_step_us_mean": statistics.median(r["floor"]["step_us_mean"] for r in rounds),
    }
    for name in commands:
        if name != "floor":
            for kind in ("mean", "median"):
                report[f"{name}_step_us_{kind}"] = statistics.median(r[name][f"step_us_{kind}"] for r in rounds)
            ratios = [r[name]["step_us_mean"] / r["floor"]["step_us_mean"] for r in rounds]
            report[f"{name}_over_floor"] = statistics.median(ratios)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
