"""[model] activation_checkpointing = true for the GPT: each block keeps only its input in training and reruns in
the backward pass, which changes no gradient (dropout included: the rerun draws the same masks); a run killed with
kill -9 and resumed ends bit for bit like an uninterrupted one; and it trains under FSDP as without it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from conftest import import_module, make_project, run_dir, run_python

SPEC = {
    "data.dataset": "text",
    "model.arch": "gpt",
    "model.n_layer": 2,
    "model.n_head": 2,
    "model.n_embd": 32,
    "model.dropout": 0.1,
    "model.activation_checkpointing": True,
    "data.block_size": 16,
    "data.batch_size": 16,
    "data.samples_per_epoch": 160,  # 10 batches an epoch
    "logging.progress_bar": False,
}
ENV = {"OMP_NUM_THREADS": "1"}  # tiny models are slower with several threads on a shared CPU
RUN = ("train.py", "--device", "cpu", "--num-sanity-val-steps", "0", "--dataset", "synthetic")
KILL_AT_STEP = """
    import os
    import signal

    global _calls
    _calls = globals().get("_calls", 0) + 1
    if _calls == int(os.environ.get("KILL_AT_STEP", "0")):
        os.kill(os.getpid(), signal.SIGKILL)  # as a power cut would
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("checkpointing") / "lm", SPEC)


def test_gradients_are_those_without_checkpointing_and_blocks_rerun_in_the_backward(project: Path) -> None:
    model_py = import_module(project)
    assert model_py.ACTIVATION_CHECKPOINTING is True
    torch.manual_seed(0)
    model = model_py.GPT(vocab_size=50, block_size=16).train()
    runs = []  # how many times an attention layer ran
    model.blocks[0].attn.register_forward_hook(lambda *_: runs.append(1))
    tokens = torch.randint(50, (4, 17))

    def gradients(checkpointing: bool) -> dict[str, torch.Tensor]:
        model_py.ACTIVATION_CHECKPOINTING = checkpointing
        model.zero_grad(set_to_none=True)
        runs.clear()
        torch.manual_seed(1)  # the same dropout masks
        logits = model(tokens[:, :-1])
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
        return {name: param.grad.clone() for name, param in model.named_parameters()}

    without = gradients(False)
    assert len(runs) == 1
    with_checkpointing = gradients(True)
    assert len(runs) == 2, "the block ran again in the backward pass"
    for name, grad in without.items():
        torch.testing.assert_close(with_checkpointing[name], grad, rtol=0, atol=0, msg=name)
    model.eval()
    with torch.no_grad():
        model(tokens[:, :-1])
    assert len(runs) == 3, "evaluation keeps no activations for a backward pass: nothing to rerun"


def test_kill_9_and_resume_ends_bit_for_bit_like_an_uninterrupted_run(project: Path, tmp_path: Path) -> None:
    steps = (project / "steps.py").read_text()
    docstring = '    """The loss to minimize on one batch; train.py runs the backward pass."""\n'
    assert docstring in steps
    (project / "steps.py").write_text(steps.replace(docstring, docstring + KILL_AT_STEP, 1))
    args = ("--max-epochs", "2", "--ckpt-every-n-steps", "4")
    try:
        straight = run_python(project, *RUN, *args, "--out-dir", str(tmp_path / "straight"), env=ENV)
        assert straight.returncode == 0, straight.stderr[-3000:]
        killed = run_python(
            project, *RUN, *args, "--out-dir", str(tmp_path / "resumed"), env={**ENV, "KILL_AT_STEP": "15"}
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]  # mid-epoch 1, after step 12's save
        resumed = run_python(project, *RUN, *args, "--out-dir", str(tmp_path / "resumed"), "--resume", "last", env=ENV)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
    finally:
        (project / "steps.py").write_text(steps)
    assert "Resumed from" in resumed.stdout
    expected, actual = (
        torch.load(run_dir(tmp_path / name) / "checkpoints/last.pt", weights_only=True)
        for name in ("straight", "resumed")
    )
    assert actual["global_step"] == expected["global_step"] == 20
    for name, tensor in expected["model"].items():
        assert torch.equal(actual["model"][name], tensor), name


def test_fsdp_trains_with_checkpointed_blocks_as_without(tmp_path: Path) -> None:
    """2 CPU ranks (gloo): FSDP gathers a block's weights for its backward pass, in which the block reruns."""
    spec = {**SPEC, "model.dropout": 0.0, "cluster.gpus": 2, "cluster.strategy": "fsdp"}
    project = make_project(tmp_path / "fsdp", spec)
    source = (project / "model.py").read_text()
    final = {}
    for checkpointing in (True, False):
        (project / "model.py").write_text(
            source.replace("ACTIVATION_CHECKPOINTING = True", f"ACTIVATION_CHECKPOINTING = {checkpointing}")
        )
        out = tmp_path / f"out_{checkpointing}"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        command += [*RUN, "--max-steps", "4", "--out-dir", str(out)]
        result = subprocess.run(
            command, cwd=project, capture_output=True, text=True, timeout=300, env={**os.environ, **ENV}, check=False
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        dcp_to_torch_save(run_dir(out) / "checkpoints/last", tmp_path / f"{checkpointing}.pt")
        final[checkpointing] = torch.load(tmp_path / f"{checkpointing}.pt", weights_only=False)["model"]
    assert final[True].keys() == final[False].keys()
    for name, tensor in final[False].items():
        torch.testing.assert_close(final[True][name], tensor, rtol=1e-5, atol=1e-6, msg=name)
