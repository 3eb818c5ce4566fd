"""DDP on the CPU (gloo): torchrun with 2 processes, and 2 "nodes" on one machine, give the same weights as one
process with the same global batch; only rank 0 writes."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import make_project, run_dir, run_python

# 1280 samples: 128 for validation and 1152 for training, which 64 and 2 x 16 x 2 both divide exactly.
SPEC = {"data.dataset": "synthetic", "data.synthetic_samples": 1280, "model.dropout": 0.0, "cluster.gpus": 2}
RUN = ("--device", "cpu", "--max-epochs", "2", "--no-progress-bar", "--num-sanity-val-steps", "0")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def final_state(out: Path) -> dict:
    """The last checkpoint of the one run in out."""
    return torch.load(run_dir(out) / "checkpoints/last.pt", weights_only=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(
        tmp_path_factory.mktemp("ddp") / "ddp", {**SPEC, "trainer.accumulate_grad_batches": 2, "data.batch_size": 16}
    )


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The reference: a single process, batch 64, no accumulation."""
    root = tmp_path_factory.mktemp("single")
    single = make_project(root / "single", {**SPEC, "data.batch_size": 64})
    result = run_python(single, "train.py", *RUN, "--out-dir", str(root / "out"))
    assert result.returncode == 0, result.stderr
    return final_state(root / "out")


def assert_same_weights(actual: dict, expected: dict) -> None:
    assert actual["global_step"] == expected["global_step"] == 2 * 18
    for name, tensor in expected["model"].items():
        torch.testing.assert_close(actual["model"][name], tensor, rtol=1e-4, atol=1e-5)


def test_torchrun_two_processes_match_one_process_with_the_same_global_batch(
    project: Path, one_process: dict, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    command = [*TORCHRUN, "--standalone", "--nproc_per_node", "2", "train.py", *RUN, "--out-dir", str(out)]
    result = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("Test: test_loss") == 1, "rank 0 alone prints"
    run = run_dir(out)
    assert [path.name for path in out.iterdir()] == [run.name], "the ranks share one run folder"
    assert len(list(run.glob("events.out.tfevents.*"))) == 1, "one writer (scalars and hparams in one file), on rank 0"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch=1-step=36.pt", "last.prev.pt", "last.pt"]
    state = final_state(out)
    assert len(state["rng"]) == 2, "every rank's random state is saved"
    assert_same_weights(state, one_process)


def test_two_nodes_on_one_machine(project: Path, one_process: dict, tmp_path: Path) -> None:
    out, port = tmp_path / "out", str(free_port())
    nodes = [
        subprocess.Popen(
            [
                *TORCHRUN,
                "--nnodes",
                "2",
                "--node_rank",
                str(rank),
                "--nproc_per_node",
                "1",
                "--master_addr",
                "127.0.0.1",
                "--master_port",
                port,
                "train.py",
                *RUN,
                "--out-dir",
                str(out),
            ],
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    assert "Test: test_loss" in outputs[0] and "Test: test_loss" not in outputs[1]
    assert_same_weights(final_state(out), one_process)


def test_plain_python_still_runs_the_ddp_project(project: Path, tmp_path: Path) -> None:
    result = run_python(project, "train.py", "--fast-dev-run", "--device", "cpu")
    assert result.returncode == 0, result.stderr
