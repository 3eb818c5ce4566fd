"""Activation checkpointing ([model] activation_checkpointing) on a GPT training step: peak memory and time, with
and without it, and their ratios (targets: memory <= 0.6x, time <= 1.4x).

ltgen generates a GPT project with activation checkpointing on; each measurement runs in a fresh process (this
script, --child) that builds the project's GPT with ACTIVATION_CHECKPOINTING set, and runs AdamW training steps on
random tokens. The model is sized so that activations dominate memory: 8 blocks of width 256, block size 512,
batch 16 (--quick: 4 x 256, block 256, batch 8, one round).

Peak memory of a step: on a GPU, torch.cuda.max_memory_allocated above what is allocated before it; on the CPU,
the process's peak resident set (ru_maxrss) above its resident set before it, with glibc returning each freed
tensor's memory at once. A step on one sample comes first (gradients, AdamW's state and the kernels' own memory
are there before the measured step, the same with and without checkpointing). Time, in another process with the
default allocator: the median of the steps after a first one. Runs alternate, several
rounds; the report is the median of each figure.

    python benchmarks/activation_checkpointing.py [--quick] [--rounds N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {  # (n_layer, n_embd, block_size, batch_size, steps)
    "full": (8, 256, 512, 16, 4),
    "quick": (4, 256, 256, 8, 3),
}
N_HEAD = 8
VOCAB = 256  # byte-sized: the logits stay small beside the activations
TARGETS = {"memory_ratio": 0.6, "time_ratio": 1.4}


def make_project(parent: Path, n_layer: int, n_embd: int) -> Path:
    """A GPT project with activation checkpointing on, as `ltgen new` writes it."""
    from ltgen import place, render, spec

    values = {
        "data.dataset": "text",
        "model.arch": "gpt",
        "model.n_layer": n_layer,
        "model.n_head": N_HEAD,
        "model.n_embd": n_embd,
        "model.dropout": 0.0,
        "model.activation_checkpointing": True,
    }
    text = spec.with_values(spec.default_text("bench"), values)
    project = parent / "bench"
    place.write_new(render.render(spec.parse(text)), text, project)
    return project


def resident_bytes() -> int:
    """This process's resident set now (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(project: Path, checkpointing: bool, size: str, device_name: str, timing: bool) -> None:
    """Build the project's GPT and print one JSON line: the median time of its training steps, or the peak memory
    of one step."""
    import torch

    sys.path.insert(0, str(project))
    import model as model_py

    _, _, block_size, batch_size, steps = SIZES[size]
    model_py.ACTIVATION_CHECKPOINTING = checkpointing
    device = torch.device(device_name)
    torch.manual_seed(0)
    model = model_py.GPT(VOCAB, block_size).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(VOCAB, (batch_size, block_size + 1), device=device)
    cuda = device.type == "cuda"

    def step(batch: torch.Tensor = tokens) -> None:
        logits = model(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()

    if timing:  # the default allocator, warmed up by a first step
        step()
        times = []
        for _ in range(steps):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
        print(json.dumps({"step_s": statistics.median(times)}))
        return
    step(tokens[:1])  # one sample: the gradients, AdamW's state and the kernels' own memory exist from here on
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        before = resident_bytes()
        step()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    print(json.dumps({"peak_mib": peak / 2**20}))


def measure(project: Path, checkpointing: bool, size: str, device: str, timing: bool) -> dict:
    """One figure in a fresh process: the step's time, or its peak memory."""
    command = [sys.executable, __file__, "--child", str(project), "--size", size, "--device", device]
    command += (["--checkpointing"] if checkpointing else []) + (["--timing"] if timing else [])
    # For memory, glibc maps every block over 64 KiB on its own and unmaps it when freed: the resident set follows
    # the tensors alive, not what the allocator keeps for reuse. (That costs page faults: not for timing.)
    env = {**os.environ, **({} if timing else {"MALLOC_MMAP_THRESHOLD_": "65536"})}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smaller model, one round (under a minute on 2 cores)")
    parser.add_argument("--rounds", type=int, help="rounds of every figure (default: 3, or 1 with --quick)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--timing", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", choices=list(SIZES), default="full", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.checkpointing, args.size, args.device, args.timing)
        return
    size = "quick" if args.quick else "full"
    rounds = args.rounds or (1 if args.quick else 3)
    n_layer, n_embd, block_size, batch_size, _ = SIZES[size]
    figures: dict[bool, list[dict]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as scratch:
        project = make_project(Path(scratch), n_layer, n_embd)
        for index in range(rounds):
            for checkpointing in (index % 2 == 0, index % 2 == 1):  # alternate which runs first
                memory = measure(project, checkpointing, size, args.device, timing=False)
                figures[checkpointing].append({**memory, **measure(project, checkpointing, size, args.device, True)})
    median = {on: {key: statistics.median(run[key] for run in runs) for key in runs[0]} for on, runs in figures.items()}
    result = {
        "benchmark": "activation_checkpointing",
        "device": args.device,
        "model": {
            "n_layer": n_layer,
            "n_head": N_HEAD,
            "n_embd": n_embd,
            "block_size": block_size,
            "batch_size": batch_size,
        },
        "rounds": rounds,
        "without": median[False],
        "with": median[True],
        "memory_ratio": median[True]["peak_mib"] / median[False]["peak_mib"],
        "time_ratio": median[True]["step_s"] / median[False]["step_s"],
        "targets": TARGETS,
    }
    result["met"] = result["memory_ratio"] <= TARGETS["memory_ratio"] and result["time_ratio"] <= TARGETS["time_ratio"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
