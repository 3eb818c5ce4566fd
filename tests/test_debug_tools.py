"""Three debugging aids: [debug] nan_grad_report names every parameter whose gradient went NaN or inf (and how many
of its elements) before the optimizer step applies them, then stops or skips as [trainer] nonfinite_loss says, in
one process or FSDP's shards; [trainer] deterministic makes reruns bit-equal, and an op with no deterministic
version ends the run with one line naming it; [logging] log_gpu_memory logs the CUDA allocator's memory (on CUDA
only: benchmarks/gpu.py checks the values on a GPU).

The NaN comes from a hook that model.py's build_model registers after generation: in the third training step, the
first 3 elements of the output layer's weight gradient become NaN and the first element of the hidden layer's bias
gradient inf."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from conftest import assert_identical, make_project, rendered, run_dir, run_python, spec_text
from ltgen.spec import parse

TINY = {  # 360 training samples: 23 batches of 16 an epoch
    "data.dataset": "synthetic",
    "data.synthetic_samples": 400,
    "data.batch_size": 16,
    "model.dropout": 0.0,  # the MLP is Flatten, Linear "1", ReLU, Linear "3"
    "logging.tensorboard": False,
    "logging.progress_bar": False,
}
RUN = ("train.py", "--device", "cpu", "--num-sanity-val-steps", "0", "--limit-val-batches", "2")
STEPS = ("--max-steps", "6", "--log-every-n-steps", "1", "--ckpt-every-n-steps", "1", "--limit-test-batches", "2")
TORCHRUN = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
REPORT = (
    "Non-finite gradients at step 2 (epoch 0, batch 2):\n  1.bias: 1 of 128 elements\n  3.weight: 3 of 1280 elements\n"
)

POISON = '''

def poison_grad(module: nn.Module, name: str, value: float, count: int, at_step: int = 3) -> None:
    """Once, in the at_step-th training step: the first `count` elements of module.NAME's gradient become `value`."""
    calls, done = [0], [False]

    def replace(grad: torch.Tensor) -> torch.Tensor:
        if done[0]:
            return grad
        done[0] = True
        grad = grad.clone()
        grad.view(-1)[:count] = value
        return grad

    def before_forward(module: nn.Module, args: tuple) -> None:
        calls[0] += torch.is_grad_enabled()  # training forwards, not validation's
        if torch.is_grad_enabled() and calls[0] == at_step:
            getattr(module, name).register_hook(replace)  # under FSDP: this step's gathered parameter

    module.register_forward_pre_hook(before_forward)
'''
POISONED = """    model = nn.Sequential(*layers).to(device)
    poison_grad(model[3], "weight", float("nan"), 3)
    poison_grad(model[1], "bias", float("inf"), 1)
    return model
"""


def poisoned_project(path: Path, overrides: dict) -> Path:
    """A tiny MLP project whose gradients go bad in the third training step."""
    project = make_project(path, {**TINY, "debug.nan_grad_report": True, **overrides})
    model = project / "model.py"
    source = model.read_text()
    assert "    return nn.Sequential(*layers).to(device)\n" in source
    model.write_text(source.replace("    return nn.Sequential(*layers).to(device)\n", POISONED) + POISON)
    return project


def last_checkpoint(out: Path) -> dict:
    return torch.load(run_dir(out) / "checkpoints" / "last.pt", weights_only=False)


def all_finite(weights: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(tensor).all()) for tensor in weights.values())


# --- [debug] nan_grad_report ---------------------------------------------------------------------------------


def test_nan_grad_report_names_each_bad_gradient_and_stops_before_the_step_applies_them(tmp_path: Path) -> None:
    project = poisoned_project(tmp_path / "stop", {})
    result = run_python(project, *RUN, *STEPS, "--out-dir", str(tmp_path / "out"))
    assert result.returncode == 1, result.stderr[-3000:]
    assert REPORT + "Stopping before the optimizer step applies them\n" in result.stdout
    state = last_checkpoint(tmp_path / "out")  # written after step 2, the last good one, and kept
    assert state["global_step"] == 2 and all_finite(state["model"])


def test_nan_grad_report_with_skip_names_them_then_the_step_is_skipped(tmp_path: Path) -> None:
    project = poisoned_project(tmp_path / "skip", {"trainer.nonfinite_loss": "skip"})
    result = run_python(project, *RUN, *STEPS, "--out-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert REPORT + "Skipped step 2: non-finite gradients (epoch 0, batch 2)\n" in result.stdout
    state = last_checkpoint(tmp_path / "out")
    assert state["global_step"] == 6 and all_finite(state["model"])
    # On the CPU, log_gpu_memory (on by default) logs nothing: the scalars are CUDA's allocator's.
    with open(run_dir(tmp_path / "out") / "metrics.csv", newline="") as file:
        header = next(csv.reader(file))
    assert "train_loss" in header and not any(name.startswith("gpu_mem") for name in header)


def test_nan_grad_report_sums_fsdp_shards_over_ranks(tmp_path: Path) -> None:
    project = poisoned_project(tmp_path / "fsdp", {"cluster.gpus": 2, "cluster.strategy": "fsdp"})
    out = tmp_path / "out"
    result = run_python(project, *TORCHRUN, *RUN, *STEPS, "--out-dir", str(out), env={"OMP_NUM_THREADS": "1"})
    assert result.returncode != 0, result.stderr[-3000:]  # rank 0 prints the whole parameters' counts, once
    assert result.stdout.count("Non-finite gradients") == 1
    assert REPORT + "Stopping before the optimizer step applies them\n" in result.stdout
    state = torch.load(run_dir(out) / "checkpoints" / "last" / "train_state.pt", weights_only=False)
    assert state["global_step"] == 2


def test_nan_grad_report_emits_code_only_where_the_loop_takes_the_steps() -> None:
    on = rendered(spec_text("demo", {"debug.nan_grad_report": True}))["train.py"]
    assert "def nonfinite_grads(" in on and "bad_grads = nonfinite_grads(model)" in on
    # a report before clipping: clipping by a NaN norm would turn every gradient into NaN
    clipped = rendered(spec_text("demo", {"debug.nan_grad_report": True, "trainer.gradient_clip_val": 1.0}))
    assert clipped["train.py"].index("nonfinite_grads(model)") < clipped["train.py"].index("clip_grad_norm_(")
    assert "nonfinite_grads" not in rendered(spec_text("demo"))["train.py"]
    gan = {"data.dataset": "mnist", "model.arch": "gan", "trainer.manual_optimization": True}
    gan |= {"optim.scheduler": "none", "checkpoint.monitor": "val_loss_d"}
    for overrides, setting in (
        ({"trainer.nonfinite_loss": "off"}, 'nonfinite_loss "off"'),
        (gan, "manual_optimization true"),
    ):
        text = spec_text("demo", {"debug.nan_grad_report": True, **overrides})
        [warning] = [str(w) for w in parse(text).warnings if "nan_grad_report" in str(w)]
        assert f"has no effect with [trainer] {setting}" in warning
        assert "nonfinite_grads" not in rendered(text)["train.py"]


# --- [trainer] deterministic -----------------------------------------------------------------------------------


def test_deterministic_runs_give_bit_equal_weights(tmp_path: Path) -> None:
    project = make_project(tmp_path / "same", {**TINY, "trainer.deterministic": True})
    train = (project / "train.py").read_text()
    # cuBLAS reads its workspace setting when CUDA starts: set before the device is.
    assert train.index('os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")') < train.index("device = ")
    assert "torch.use_deterministic_algorithms(True)" in train
    states = []
    for name in ("a", "b"):
        result = run_python(project, *RUN, "--max-steps", "4", "--limit-test-batches", "1", "--out-dir", name)
        assert result.returncode == 0, result.stderr[-3000:]
        states.append(last_checkpoint(project / name))
    assert_identical(states[1]["model"], states[0]["model"], "weights")
    assert_identical(states[1]["optimizer"], states[0]["optimizer"], "optimizer")


def test_an_op_with_no_deterministic_version_ends_the_run_with_one_line_naming_it(tmp_path: Path) -> None:
    project = make_project(tmp_path / "put", {**TINY, "trainer.deterministic": True})
    steps = project / "steps.py"
    loss = "    return F.cross_entropy(model(images), labels)\n"
    put = "    torch.zeros(4).put_(torch.tensor([0]), torch.tensor([1.0]))  # no deterministic version\n"
    steps.write_text(steps.read_text().replace(loss, put + loss, 1))
    result = run_python(project, *RUN, "--max-steps", "1", "--out-dir", "out")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("put_ has no deterministic implementation ([trainer] deterministic = true)")
    assert "set deterministic = false in ltgen.toml" in result.stderr
    assert "use_deterministic_algorithms" not in rendered(spec_text("demo"))["train.py"]


def test_deterministic_under_torchrun_leaves_through_end_process() -> None:
    train = rendered(spec_text("demo", {"trainer.deterministic": True, "cluster.gpus": 2}))["train.py"]
    entry = train[train.index('if __name__ == "__main__":') :]
    assert "except RuntimeError as error:" in entry and "end_process(\n" in entry
    compile(train, "train.py", "exec")


# --- [logging] log_gpu_memory ----------------------------------------------------------------------------------


def test_gpu_memory_is_logged_at_logging_steps_on_cuda_only_and_only_with_a_logger() -> None:
    train = rendered(spec_text("demo"))["train.py"]
    logging = train[train.index("scalars = {") : train.index("logger.log(scalars")]
    assert 'if device.type == "cuda":' in logging
    assert 'scalars["gpu_mem_alloc_gib"] = torch.cuda.memory_allocated(device) / 2**30' in logging
    assert 'scalars["gpu_mem_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30' in logging
    for overrides in ({"logging.log_gpu_memory": False}, {"logging.tensorboard": False, "logging.csv": False}):
        assert "gpu_mem" not in rendered(spec_text("demo", overrides))["train.py"]
