"""[cluster] strategy = "fsdp" on the CPU (gloo, 2 ranks under torchrun): the sharded project trains and writes
checkpoint folders of DCP shards, matches DDP step for step, resumes bit for bit after kill -9, drives inference in
one process, still runs as a plain `python train.py`, survives a SLURM requeue; and the spec refuses what FSDP
cannot do.

Sharded checkpoints are compared as a person would inspect them: consolidated into one torch.save file with
torch.distributed.checkpoint's dcp_to_torch_save (no process group needed), every tensor compared."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from conftest import assert_identical, make_project, run_dir, run_python, spec_text
from ltgen import spec

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
# Tiny models are slower with several threads per rank on a shared CPU than with one.
ENV = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
CPU = ("--device", "cpu", "--num-sanity-val-steps", "0")

GPT = {
    "data.dataset": "text",  # train.py --dataset synthetic generates the text
    "model.arch": "gpt",
    "model.n_layer": 2,
    "model.n_head": 2,
    "model.n_embd": 32,
    "data.block_size": 16,
    "data.samples_per_epoch": 512,  # batches of 64 per rank: 4 steps an epoch
    "model.dropout": 0.0,
    "cluster.gpus": 2,
    "cluster.strategy": "fsdp",
    "logging.progress_bar": False,
}
# 600 synthetic images: 540 for training, 17 global batches of 2 x 16 an epoch.
MLP = {
    "data.dataset": "synthetic",
    "data.synthetic_samples": 600,
    "data.batch_size": 16,
    "model.dropout": 0.0,
    "trainer.precision": "32",
    "cluster.gpus": 2,
    "cluster.strategy": "fsdp",
    "logging.progress_bar": False,
}
SHARDS = [".metadata", "__0_0.distcp", "__1_0.distcp", "train_state.pt"]


def torchrun(project: Path, out: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """train.py on 2 CPU ranks (gloo) under torchrun, writing to `out`."""
    command = [*TORCHRUN, "train.py", *CPU, "--out-dir", str(out), *args]
    return subprocess.run(
        command,
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **ENV, **(env or {})},
        check=False,
    )


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout[-3000:] + result.stderr[-3000:]


def consolidated(folder: Path, scratch: Path) -> dict:
    """A checkpoint folder (OUT_DIR/RUN/checkpoints/NAME)'s whole model and optimizer state, joined from every rank's
    shards in this process."""
    scratch.mkdir(parents=True, exist_ok=True)
    out_dir, run = folder.parents[2].name, folder.parents[1].name
    target = scratch / f"{out_dir}-{run}-{folder.name}.pt"
    with warnings.catch_warnings():  # "torch.distributed is disabled ... assuming ... a single process": indeed
        warnings.simplefilter("ignore")
        dcp_to_torch_save(folder, target)
    return torch.load(target, weights_only=False)


def train_state(folder: Path) -> dict:
    """train_state.pt of a checkpoint folder, less the one setting that differs between runs (out_dir)."""
    state = torch.load(folder / "train_state.pt", weights_only=True)
    state["config"].pop("out_dir")
    return state


def scalars(out: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of a TensorBoard scalar, read as TensorBoard reads the folder of out's one run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = EventAccumulator(str(run_dir(out)))
    run.Reload()
    return [(event.step, event.value) for event in run.Scalars(tag)]


def python_in(project: Path, code: str) -> subprocess.CompletedProcess:
    """Run Python code in the project folder, as a researcher at a prompt there would."""
    return run_python(project, "-c", code, env=ENV)


# --- the GPT: training on 2 ranks, and what its checkpoint is ---


@pytest.fixture(scope="module")
def gpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("fsdp") / "fsdpgpt", GPT)


@pytest.fixture(scope="module")
def gpt_run(gpt: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    """6 steps of the GPT on 2 ranks: an epoch (validation, a top-k folder), then 2 more, saving every 2 steps."""
    out = tmp_path_factory.mktemp("gptrun")
    args = ("--dataset", "synthetic", "--max-steps", "6", "--limit-val-batches", "2", "--ckpt-every-n-steps", "2")
    return torchrun(gpt, out, *args), out


def test_gpt_trains_on_two_ranks_and_writes_a_folder_of_shards(
    gpt_run: tuple[subprocess.CompletedProcess, Path],
) -> None:
    result, out = gpt_run
    assert result.returncode == 0, output(result)
    assert result.stdout.count("Test: test_loss") == 1, "rank 0 alone prints"
    checkpoints = run_dir(out) / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch=0-step=4", "last", "last.prev"]
    assert not list(checkpoints.rglob("*.tmp")), "every folder was renamed into place"
    for folder in checkpoints.iterdir():
        assert sorted(p.name for p in folder.iterdir()) == SHARDS, folder
    assert torch.load(checkpoints / "last/train_state.pt", weights_only=True)["global_step"] == 6
    assert torch.load(checkpoints / "last.prev/train_state.pt", weights_only=True)["global_step"] == 4

    saved = dcp.FileSystemReader(checkpoints / "last").read_metadata().state_dict_metadata
    qkv = saved["model.blocks.0.attn.qkv.weight"]
    assert sorted(chunk.offsets[0] for chunk in qkv.chunks) == [0, qkv.size[0] // 2], "each rank saved half its rows"
    assert len(saved["optimizer.state.blocks.0.attn.qkv.weight.exp_avg"].chunks) == 2, "the optimizer is sharded too"
    assert "model" not in torch.load(checkpoints / "last/train_state.pt", weights_only=True)


# --- parity: FSDP trains exactly what DDP trains ---


# 2 epochs of 5 steps, every loss logged; the same global batch (2 x 16) under both strategies.
PARITY_ARGS = ("--max-epochs", "2", "--limit-train-batches", "5", "--limit-val-batches", "2")
PARITY_ARGS += ("--log-every-n-steps", "1")


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("fsdp") / "fsdpmlp", MLP)


@pytest.fixture(scope="module")
def mlp_run(mlp: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 steps of the mlp on 2 FSDP ranks, logging every step; its output folder."""
    out = tmp_path_factory.mktemp("mlprun")
    result = torchrun(mlp, out, *PARITY_ARGS)
    assert result.returncode == 0, output(result)
    return out


def test_fsdp_and_ddp_log_the_same_losses_and_end_with_the_same_weights_and_optimizer(
    mlp_run: Path, tmp_path: Path
) -> None:
    """The same spec but for strategy, on 2 ranks each: FSDP's gradient reduce-scatter and sharded AdamW compute
    what DDP's all-reduce and replicated AdamW do."""
    ddp = make_project(tmp_path / "ddpmlp", {**MLP, "cluster.strategy": "ddp"})
    result = torchrun(ddp, tmp_path / "ddp", *PARITY_ARGS)
    assert result.returncode == 0, output(result)

    for tag in ("train_loss", "val_loss"):
        fsdp_values, ddp_values = scalars(mlp_run, tag), scalars(tmp_path / "ddp", tag)
        assert [step for step, _ in fsdp_values] == [step for step, _ in ddp_values]
        assert len(fsdp_values) == (10 if tag == "train_loss" else 2)
        torch.testing.assert_close([v for _, v in fsdp_values], [v for _, v in ddp_values], rtol=1e-4, atol=1e-6)

    expected = torch.load(run_dir(tmp_path / "ddp") / "checkpoints/last.pt", weights_only=True)
    fsdp_last = run_dir(mlp_run) / "checkpoints/last"
    actual = consolidated(fsdp_last, tmp_path)
    assert train_state(fsdp_last)["global_step"] == expected["global_step"] == 10
    assert set(actual["model"]) == set(expected["model"])
    for name, tensor in expected["model"].items():
        torch.testing.assert_close(actual["model"][name], tensor, rtol=1e-4, atol=1e-6, msg=name)
    # DDP's optimizer state is keyed by parameter index, the consolidated FSDP one by parameter name, in that order
    # (group after group: AdamW's decayed matrices, then the biases it does not decay).
    names = [name for group in actual["optimizer"]["param_groups"] for name in group["params"]]
    assert len(names) == len(expected["optimizer"]["state"])
    for index, name in enumerate(names):
        for key, tensor in expected["optimizer"]["state"][index].items():
            torch.testing.assert_close(
                actual["optimizer"]["state"][name][key], tensor, rtol=1e-4, atol=1e-6, msg=f"{name} {key}"
            )


# --- exact resume after kill -9 ---


KILL_AT_STEP = """
    import os
    import signal

    global _calls
    _calls = globals().get("_calls", 0) + 1
    if _calls == int(os.environ.get("KILL_AT_STEP", "0")):
        os.kill(os.getpid(), signal.SIGKILL)  # as a power cut would, on every rank
"""
KILL_AFTER_SHARDS = """
    if rank == 0 and os.environ.get("KILL_AFTER_SHARDS") == str(state["global_step"]):
        os.kill(os.getpid(), signal.SIGKILL)  # every shard is written, the folder not yet renamed into place
"""
RESUME = {**MLP, "model.dropout": 0.2}  # dropout: every rank's random state must come back too
# 2 epochs of 6 steps, validating (and saving a top-k folder) at the end of each, last/ after every step.
RESUME_ARGS = ("--max-epochs", "2", "--limit-train-batches", "6", "--limit-val-batches", "2")
RESUME_ARGS += ("--ckpt-every-n-steps", "1", "--log-every-n-steps", "3")


def add_kill_points(project: Path) -> None:
    """training_step kills its process on its Nth call (KILL_AT_STEP=N), on every rank; save_sharded kills rank 0
    between writing the shards of step N and renaming the folder (KILL_AFTER_SHARDS=N)."""
    steps = (project / "steps.py").read_text()
    docstring = '    """The loss to minimize on one batch; train.py runs the backward pass."""\n'
    assert docstring in steps
    (project / "steps.py").write_text(steps.replace(docstring, docstring + KILL_AT_STEP, 1))
    source = (project / "checkpoint.py").read_text()
    written = "    if rank == 0:\n        save(state, temporary / TRAIN_STATE)\n"
    assert written in source
    source = source.replace(written, KILL_AFTER_SHARDS.lstrip("\n") + written, 1)
    (project / "checkpoint.py").write_text("import signal\n" + source)


@pytest.fixture(scope="module")
def resumable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = make_project(tmp_path_factory.mktemp("fsdp") / "fsdpresume", RESUME)
    add_kill_points(project)
    return project


@pytest.fixture(scope="module")
def uninterrupted(resumable: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, Path]:
    """The reference run, 2 ranks without a stop: its final train state, its model and optimizer, its folder."""
    out = tmp_path_factory.mktemp("uninterrupted")
    result = torchrun(resumable, out, *RESUME_ARGS)
    assert result.returncode == 0, output(result)
    last = run_dir(out) / "checkpoints/last"
    state = train_state(last)
    assert state["global_step"] == 12 and len(state["rng"]) == 2
    return state, consolidated(last, tmp_path_factory.mktemp("consolidated")), out


@pytest.mark.parametrize(
    ("kill", "resumed_at"),
    [
        ({"KILL_AT_STEP": "9"}, 8),  # mid-epoch 1, on every rank: step 8's last/ is the newest
        ({"KILL_AFTER_SHARDS": "8"}, 7),  # step 8's folder is complete but still last.tmp: it is not used
    ],
    ids=["in-training-step", "between-shards-and-rename"],
)
def test_killed_fsdp_run_resumes_to_the_same_model_and_optimizer_bit_for_bit(
    resumable: Path, uninterrupted: tuple[dict, dict, Path], tmp_path: Path, kill: dict[str, str], resumed_at: int
) -> None:
    """Every rank's shards, the optimizer state, the schedule and every rank's random state (dropout is on) come
    back: the resumed run ends exactly where the uninterrupted one does."""
    out = tmp_path / "out"
    killed = torchrun(resumable, out, *RESUME_ARGS, env=kill)
    assert killed.returncode != 0, "it was meant to be killed"
    assert "Signal 9 (SIGKILL)" in killed.stderr, output(killed)
    assert "Test: test_loss" not in killed.stdout
    checkpoints = run_dir(out) / "checkpoints"
    if "KILL_AFTER_SHARDS" in kill:
        assert (checkpoints / "last.tmp/__1_0.distcp").exists(), "the half-saved folder is there"

    resumed = torchrun(resumable, out, *RESUME_ARGS, "--resume", "last")
    assert resumed.returncode == 0, output(resumed)
    assert f"Resumed from {checkpoints / 'last'} at epoch 1, step {resumed_at}\n" in resumed.stdout, output(resumed)
    assert run_dir(out) / "checkpoints" == checkpoints, "the run went on in its own folder"
    assert not list(checkpoints.glob("*.tmp")), "the half-saved folder is removed at start"
    state, weights, _ = uninterrupted
    assert_identical(train_state(checkpoints / "last"), state, "train_state.pt")
    assert_identical(consolidated(checkpoints / "last", tmp_path / "consolidated"), weights, "shards")


def test_a_damaged_shard_in_last_falls_back_to_the_previous_checkpoint(
    resumable: Path, uninterrupted: tuple[dict, dict, Path], tmp_path: Path
) -> None:
    """The reference run's folder with one shard of last/ (step 12) cut short, as by a full disk: --resume last
    warns, takes last.prev/ (step 11), trains step 12 again and ends where the reference ended."""
    state, weights, reference = uninterrupted
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    checkpoints = run_dir(out) / "checkpoints"
    shard = checkpoints / "last/__1_0.distcp"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    resumed = torchrun(resumable, out, *RESUME_ARGS, "--resume", "last")
    assert resumed.returncode == 0, output(resumed)
    assert re.search(r"warning: \S+/last is damaged .*; trying the one before it", resumed.stderr)
    assert "Resumed from " + str(checkpoints / "last.prev") in resumed.stdout
    assert run_dir(out) / "checkpoints" == checkpoints, "the run went on in its own folder"
    assert_identical(train_state(checkpoints / "last"), state, "train_state.pt")
    assert_identical(consolidated(checkpoints / "last", tmp_path / "consolidated"), weights, "shards")


# --- inference in one process from a checkpoint of 2 ranks ---


def test_sample_py_generates_text_from_the_two_rank_checkpoint_in_one_process(
    gpt: Path, gpt_run: tuple[subprocess.CompletedProcess, Path]
) -> None:
    """sample.py joins the shards of both ranks (DCP, no process group) into one unsharded model."""
    _, out = gpt_run
    sample = ("sample.py", "--device", "cpu", "--max-new-tokens", "20", "--out-dir", str(out), "--prompt", "ab")
    result = run_python(gpt, *sample, env=ENV)
    assert result.returncode == 0, result.stderr
    checkpoints = run_dir(out) / "checkpoints"
    assert "Sampling from " + str(checkpoints / "epoch=0-step=4") in result.stderr, "the best one, by default"
    text = result.stdout.rstrip("\n")
    assert text.startswith("ab") and len(text) == 2 + 20, text

    explicit = run_python(gpt, *sample, "--checkpoint", str(checkpoints / "last"), env=ENV)
    assert explicit.returncode == 0, explicit.stderr
    assert "(step 6)" in explicit.stderr


def test_predict_py_and_for_inference_load_the_two_rank_checkpoint_in_one_process(
    mlp: Path, mlp_run: Path, tmp_path: Path
) -> None:
    """predict.py classifies an image file; checkpoint.for_inference picks the best top-k folder and returns its
    whole weights as plain CPU tensors, equal to the consolidated shards."""
    from PIL import Image

    image = tmp_path / "digit.png"
    Image.fromarray(torch.randint(0, 256, (28, 28), dtype=torch.uint8).numpy(), mode="L").save(image)
    result = run_python(mlp, "predict.py", str(image), "--device", "cpu", "--out-dir", str(mlp_run), "--top", "3")
    assert result.returncode == 0, result.stderr
    fields = result.stdout.strip().split("\t")
    assert fields[0] == str(image) and len(fields) == 1 + 2 * 3, result.stdout
    assert sum(float(p) for p in fields[2::2]) <= 1.0001

    code = f"""
from pathlib import Path
import torch
import checkpoint
state, path = checkpoint.for_inference(None, Path({str(mlp_run)!r}))
print(path.name, state["global_step"])
torch.save(state["model"], {str(tmp_path / "weights.pt")!r})
"""
    result = python_in(mlp, code)
    assert result.returncode == 0, result.stderr
    checkpoints = run_dir(mlp_run) / "checkpoints"
    best = train_state(checkpoints / "last")["top_k"][0][1]
    name, step = result.stdout.split()
    assert name == best and int(step) == int(best.split("step=")[1]), "the best checkpoint of the top-k list"
    weights = torch.load(tmp_path / "weights.pt", weights_only=True)
    assert all(not t.is_meta and t.device.type == "cpu" for t in weights.values())
    assert_identical(weights, consolidated(checkpoints / best, tmp_path)["model"], "full weights")


# --- a single process ---


def test_plain_python_runs_the_fsdp_project_unsharded_and_fast_dev_run_writes_nothing(
    gpt: Path, tmp_path: Path
) -> None:
    """Without torchrun there is no process group: shard() leaves the model whole and it trains in one process."""
    out = tmp_path / "out"
    result = run_python(
        gpt, "train.py", "--fast-dev-run", "--dataset", "synthetic", "--device", "cpu", "--out-dir", str(out), env=ENV
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"Test: test_loss [\d.]+, test_ppl [\d.]+", result.stdout), result.stdout
    assert not out.exists()


def test_plain_python_accumulates_gradients_in_the_fsdp_project(tmp_path: Path) -> None:
    """Accumulation asks FSDP to hold back its reduce-scatter, and the gradient norm of sharded gradients is joined
    from every rank's; a single process has neither to do and trains on."""
    spec = {**MLP, "trainer.accumulate_grad_batches": 2, "trainer.gradient_clip_val": 1.0, "debug.log_grad_norm": True}
    project = make_project(tmp_path / "fsdpaccumulate", spec)
    args = ("train.py", "--device", "cpu", "--max-steps", "3", "--limit-val-batches", "1", "--limit-test-batches", "1")
    result = run_python(project, *args, "--out-dir", str(tmp_path / "out"), env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    last = run_dir(tmp_path / "out") / "checkpoints/last"
    assert torch.load(last / "train_state.pt", weights_only=True)["global_step"] == 3


# --- manual optimization under FSDP ---


def test_manual_optimization_under_fsdp_trains_exactly_as_the_automatic_loop(tmp_path: Path) -> None:
    """The same mlp on 2 FSDP ranks with accumulation (windows of 3) and clipping, once with training_step calling
    step.backward and step.step itself: the same final weights and optimizer state, its checkpoint folder holding
    the optimizer as shards, not in train_state.pt."""
    spec = {**MLP, "trainer.accumulate_grad_batches": 3, "trainer.gradient_clip_val": 2.0}
    args = ("--max-epochs", "1", "--limit-train-batches", "7", "--limit-val-batches", "1", "--limit-test-batches", "1")
    finals = {}
    for manual in (False, True):
        project = make_project(tmp_path / f"manual{manual}", {**spec, "trainer.manual_optimization": manual})
        out = tmp_path / f"out{manual}"
        result = torchrun(project, out, *args)
        assert result.returncode == 0, output(result)
        last = run_dir(out) / "checkpoints/last"
        state = torch.load(last / "train_state.pt", weights_only=True)
        assert state["global_step"] == 3 and "optimizers" not in state and "optimizer" not in state
        finals[manual] = consolidated(last, tmp_path / "joined")
    for name, weight in finals[False]["model"].items():
        assert torch.allclose(finals[True]["model"][name], weight, atol=1e-6), name
    automatic, manual_state = finals[False]["optimizer"]["state"], finals[True]["optimizer"]["state"]
    assert set(manual_state) == set(automatic)
    for name, moments in automatic.items():
        for key, value in moments.items():
            assert torch.allclose(manual_state[name][key], value, atol=1e-8), f"{name} {key}"


# --- the spec ---


@pytest.mark.parametrize(
    ("overrides", "key", "message"),
    [
        ({"cluster.strategy": "fsdp"}, "cluster.strategy", "shards across processes"),
        ({"cluster.strategy": "fsdp", "cluster.gpus": 0}, "cluster.strategy", "shards across processes"),
        ({"cluster.fsdp_cpu_offload": True, "cluster.gpus": 2}, "cluster.fsdp_cpu_offload", 'needs strategy = "fsdp"'),
        (  # as `ltgen new --model gan` seeds it
            {
                "cluster.strategy": "fsdp",
                "cluster.gpus": 2,
                "model.arch": "gan",
                "trainer.manual_optimization": True,
                "optim.scheduler": "none",
                "checkpoint.save_top_k": 0,
            },
            "cluster.strategy",
            'arch = "gan"',
        ),
    ],
    ids=["one-gpu", "no-gpu", "offload-with-ddp", "gan"],
)
def test_spec_refuses_what_fsdp_cannot_do(overrides: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(spec.SpecError) as error:
        spec.parse(spec_text("fsdp", overrides))
    assert [problem.key for problem in error.value.problems] == [key], str(error.value)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "overrides",
    [
        {"cluster.gpus": 2},
        {"cluster.nodes": 2},
        {"cluster.slurm.enabled": True},
        {"cluster.gpus": 2, "cluster.fsdp_cpu_offload": True},
        {"cluster.gpus": 2, "trainer.manual_optimization": True},
    ],
    ids=["gpus", "nodes", "slurm", "cpu-offload", "manual-optimization"],
)
def test_spec_accepts_fsdp_whenever_training_is_distributed(overrides: dict[str, Any]) -> None:
    parsed = spec.parse(spec_text("fsdp", {"cluster.strategy": "fsdp", **overrides}))
    assert parsed["cluster"]["strategy"] == "fsdp"


# --- SLURM: the time-limit signal, a requeue, and a resume from the sharded last/ ---


def test_slurm_requeue_saves_the_sharded_last_and_the_requeued_job_resumes_from_it(cluster, tmp_path: Path) -> None:
    """scancel --signal=USR2 (as the time limit would): both ranks save last/ at the next logging step, the job is
    requeued, and the second run resumes from the folder of shards and finishes all 30 steps."""
    slurm = {**MLP, "cluster.slurm.enabled": True, "cluster.slurm.cpus_per_task": 2, "cluster.slurm.time": "00:10:00"}
    project = make_project(tmp_path / "fsdpslurm", slurm)
    steps = (project / "steps.py").read_text()
    docstring = '    """The loss to minimize on one batch; train.py runs the backward pass."""\n'
    slow = docstring + "    __import__('time').sleep(0.1)  # slow enough for the signal to land mid-run\n"
    (project / "steps.py").write_text(steps.replace(docstring, slow, 1))
    args = ("--max-epochs", "3", "--limit-train-batches", "10", "--limit-val-batches", "2", "--log-every-n-steps", "2")
    job = cluster.submit(project / "launch/slurm.sbatch", *args, "--num-sanity-val-steps", "0", cwd=project)
    checkpoints = project / f"outputs/slurm-{job}/checkpoints"
    log = project / f"fsdpslurm-{job}.out"  # the job's output, appended to by the requeued run
    deadline = time.monotonic() + 120
    while not (checkpoints / "last").exists():  # the end of epoch 0: training is well under way
        assert cluster.job_info(job)["JobState"] in ("PENDING", "RUNNING"), cluster.job_info(job)
        assert time.monotonic() < deadline, "training never got going"
        time.sleep(0.2)
    cluster.run("scancel", "--signal=USR2", "--full", job)

    info = cluster.wait(job, timeout=180)
    text = log.read_text(errors="replace")
    assert (info["JobState"], info["Restarts"]) == ("COMPLETED", "1"), text[-4000:]
    stopped_at = int(re.search(r"Saved a checkpoint at step (\d+) for the requeued job", text).group(1))
    assert 10 <= stopped_at < 30
    assert f"Requeueing job {job}" in text
    assert re.search(rf"Resumed from outputs/slurm-{job}/checkpoints/last at epoch \d+, step {stopped_at}\n", text)
    assert text.count("Test: test_loss") == 1, "the first run stopped before its test pass; the second finished"
    assert sorted(p.name for p in (checkpoints / "last").iterdir()) == SHARDS
    assert torch.load(checkpoints / "last/train_state.pt", weights_only=True)["global_step"] == 30
