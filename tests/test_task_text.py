"""The text task with the gpt model (nanoGPT's shakespeare_char): a generated project that is clean and runs, a
GPT that learns a generated text, the real reader on UTF-8 files (and its clear errors), sample.py, exact
resume after kill -9 with random windows, and 2-rank DDP matching one process."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import make_project, run_dir, run_python

SPEC = {
    "data.dataset": "text",
    "model.arch": "gpt",
    "model.n_layer": 2,
    "model.n_head": 2,
    "model.n_embd": 64,
    "data.block_size": 32,
    "data.batch_size": 32,
    "data.samples_per_epoch": 320,  # 10 batches an epoch
    "model.dropout": 0.1,
    "logging.log_every_n_steps": 50,  # with the progress bar on and no terminal: a plain line every 50 steps
}
# Tiny models are slower with several threads on a shared CPU than with one.
ENV = {"OMP_NUM_THREADS": "1"}
RUN = ("--device", "cpu", "--num-sanity-val-steps", "0")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
# Text with characters outside ASCII, and no newline: each sample prints on one line.
UNICODE_WORDS = ["café", "naïve", "Ünïcödé", "日本語", "straße", "señor", "œuvre", "“quoted”", "plain", "words"]


def train(project: Path, out: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run_python(project, "train.py", *RUN, "--out-dir", str(out), *args, env={**ENV, **(env or {})})


def last_state(out: Path) -> dict:
    """last.pt of the one run in out."""
    return torch.load(run_dir(out) / "checkpoints/last.pt", weights_only=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("text") / "lm", SPEC)


def test_project_is_clean_and_its_fast_dev_run_and_own_test_pass(project: Path) -> None:
    assert (project / "sample.py").exists() and not (project / "predict.py").exists()
    for tool in (["ruff", "check", "--no-cache", "."], ["black", "--check", "."]):
        result = subprocess.run(tool, cwd=project, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
    result = run_python(project, "train.py", "--fast-dev-run", "--dataset", "synthetic", "--device", "cpu", env=ENV)
    assert result.returncode == 0, result.stderr
    assert re.search(r"Test: test_loss [\d.]+, test_ppl [\d.]+", result.stdout), result.stdout
    result = run_python(project, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", env=ENV)
    assert result.returncode == 0, result.stdout[-3000:]


def test_gpt_learns_the_generated_text(project: Path, tmp_path: Path) -> None:
    args = ("--dataset", "synthetic", "--max-epochs", "15", "--lr", "0.003", "--limit-val-batches", "3")
    result = train(project, tmp_path, *args)
    assert result.returncode == 0, result.stderr
    vocab = last_state(tmp_path)["data_info"]["num_outputs"]
    loss, ppl = (float(v) for v in re.findall(r"val_loss ([\d.]+), val_ppl ([\d.]+)", result.stdout)[-1])
    assert loss < 0.7 * math.log(vocab), result.stdout
    assert ppl == pytest.approx(math.exp(loss), rel=1e-3), "perplexity is exp of the mean loss"
    assert re.search(r"step 150: .*tokens_per_s \d", result.stdout), "throughput is logged at logging steps"


def test_real_text_file_vocabulary_and_sample_py(project: Path, tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    words = [UNICODE_WORDS[i] for i in torch.randint(len(UNICODE_WORDS), (3000,), generator=generator).tolist()]
    data = tmp_path / "data"
    data.mkdir()
    (data / "input.txt").write_text(" ".join(words), encoding="utf-8")
    out = tmp_path / "out"
    result = train(project, out, "--data-dir", str(data), "--max-steps", "3")
    assert result.returncode == 0, result.stderr
    vocab = last_state(out)["data_info"]["tokenizer"]["vocab"]
    assert vocab == "".join(sorted(set(" ".join(UNICODE_WORDS)))), "the sorted set of the text's characters"

    prompt = "café 日本"
    sample = ("sample.py", "--out-dir", str(out), "--device", "cpu", "--max-new-tokens", "40", "--num-samples", "2")
    result = run_python(project, *sample, "--prompt", prompt, env=ENV)
    assert result.returncode == 0, result.stderr
    samples = result.stdout.strip("\n").split("\n---------------\n")
    assert len(samples) == 2, result.stdout
    for text in samples:
        assert text.startswith(prompt) and len(text) == len(prompt) + 40, text
        assert set(text) <= set(vocab)

    result = run_python(project, *sample, "--prompt", "café €Z", env=ENV)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "never saw in training: 'Z' '€'" in result.stderr
    result = run_python(project, "sample.py", "--out-dir", str(tmp_path / "nothing"), env=ENV)
    assert result.returncode == 1 and "No checkpoint in" in result.stderr and "Traceback" not in result.stderr


def test_unreadable_and_missing_text_files_are_clear_errors(project: Path, tmp_path: Path) -> None:
    (tmp_path / "latin1").mkdir()
    (tmp_path / "latin1/input.txt").write_bytes(b"plain text, then caf\xe9 au lait" * 100)
    result = run_python(
        project, "train.py", "--fast-dev-run", "--device", "cpu", "--data-dir", str(tmp_path / "latin1")
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr  # bad input, as a bad flag
    assert "input.txt is not UTF-8 text: byte 20 (0xe9)" in result.stderr

    # No network (a proxy on a closed port fails at once, online or not): the download fails, clearly.
    offline = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    empty = tmp_path / "empty"
    result = run_python(project, "train.py", "--fast-dev-run", "--device", "cpu", "--data-dir", str(empty), env=offline)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Could not download Tiny Shakespeare" in result.stderr
    assert f"Put a UTF-8 text file at {empty.resolve()}/input.txt" in result.stderr
    assert "--dataset synthetic" in result.stderr
    assert not (empty / "input.txt").exists()


KILL_AT_STEP = """
    import os
    import signal

    global _calls
    _calls = globals().get("_calls", 0) + 1
    if _calls == int(os.environ.get("KILL_AT_STEP", "0")):
        os.kill(os.getpid(), signal.SIGKILL)  # as a power cut would
"""


def test_kill_9_and_resume_ends_bit_for_bit_like_an_uninterrupted_run(project: Path, tmp_path: Path) -> None:
    steps = (project / "steps.py").read_text()
    docstring = '    """The loss to minimize on one batch; train.py runs the backward pass."""\n'
    (project / "steps.py").write_text(steps.replace(docstring, docstring + KILL_AT_STEP, 1))
    args = ("--dataset", "synthetic", "--max-epochs", "3", "--ckpt-every-n-steps", "4")
    try:
        result = train(project, tmp_path / "straight", *args)
        assert result.returncode == 0, result.stderr
        killed = train(
            project, tmp_path / "resumed", *args, env={"KILL_AT_STEP": "15"}
        )  # mid-epoch 1, after step 12's save
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        resumed = train(project, tmp_path / "resumed", *args, "--resume", "last")
        assert resumed.returncode == 0, resumed.stderr
    finally:
        (project / "steps.py").write_text(steps)
    assert "Resumed from" in resumed.stdout
    expected, actual = last_state(tmp_path / "straight"), last_state(tmp_path / "resumed")
    assert actual["global_step"] == expected["global_step"] == 30
    for name, tensor in expected["model"].items():
        assert torch.equal(actual["model"][name], tensor), name


def test_two_ranks_match_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    """A training window is a function of (batch seed, index): with the batch seeds the same on every rank, the
    ranks' halves of a global batch are the windows one process draws for it."""
    spec = {**SPEC, "model.dropout": 0.0}
    single = make_project(tmp_path / "single", spec)
    result = train(single, tmp_path / "one", "--dataset", "synthetic", "--max-epochs", "2")
    assert result.returncode == 0, result.stderr
    ddp = make_project(tmp_path / "ddp", {**spec, "cluster.gpus": 2, "data.batch_size": 16})
    out = tmp_path / "two"
    command = [*TORCHRUN, "--standalone", "--nproc_per_node", "2", "train.py", *RUN, "--dataset", "synthetic"]
    command += ["--max-epochs", "2", "--out-dir", str(out)]
    result = subprocess.run(
        command, cwd=ddp, capture_output=True, text=True, timeout=300, env={**os.environ, **ENV}, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    expected, actual = last_state(tmp_path / "one"), last_state(out)
    assert actual["global_step"] == expected["global_step"] == 20
    for name, tensor in expected["model"].items():
        torch.testing.assert_close(actual["model"][name], tensor, rtol=1e-4, atol=1e-5)
