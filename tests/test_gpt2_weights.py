"""[model] init_from = PATH: a GPT-2 in Hugging Face's layout (made here with transformers, random weights of a
small config) loads into the emitted GPT, which then computes Hugging Face's logits; from a folder, a .safetensors
file or a pytorch_model.bin; fine-tuning it trains. Weights that are not GPT-2's, or not of model.py's shape, are
one clear error each (exit 2); a hub name is read from the hub's cache without the network, and offline without
it is a clear error that names a local PATH as the way."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from conftest import make_project, run_python

VOCAB = 50257  # GPT-2's: the gpt2 tokenizer's ids
CONFIG = {"n_layer": 2, "n_head": 2, "n_embd": 32, "n_positions": 64, "vocab_size": VOCAB}
SPEC = {
    "data.dataset": "text",
    "model.arch": "gpt",
    "model.n_layer": 2,
    "model.n_head": 2,
    "model.n_embd": 32,
    "model.bias": True,
    "model.dropout": 0.0,
    "data.block_size": 32,  # less than the weights' 64 positions: their position embeddings are cut
    "data.batch_size": 8,
    "data.samples_per_epoch": 64,
    "logging.progress_bar": False,
}
ENV = {"OMP_NUM_THREADS": "1"}  # tiny models are slower with several threads on a shared CPU
WORDS = ["café", "naïve", "日本語", "straße", "the", "cat", "sat", "on", "a", "mat", "and", "then", "ran", "away"]

# Hugging Face's GPT2LMHeadModel from argv[1], and ltgen's GPT (the project's model.py) with INIT_FROM set to each
# of argv[2:] in turn: the largest difference of their logits on the same tokens, one line each.
LOGITS = f"""
import sys

import torch
from transformers import GPT2LMHeadModel

import model

hf = GPT2LMHeadModel.from_pretrained(sys.argv[1]).eval()
tokens = torch.randint({VOCAB}, (3, 32), generator=torch.Generator().manual_seed(0))
for init_from in sys.argv[2:]:
    model.INIT_FROM = init_from
    model.gpt2_folder.cache_clear()
    ours = model.build_model({{"num_outputs": {VOCAB}, "block_size": 32}}, torch.device("cpu")).eval()
    with torch.no_grad():
        print("max difference", (ours(tokens) - hf(tokens).logits).abs().max().item())
"""
# build_model for each (INIT_FROM, block_size) of the JSON list argv[1]: one JSON line each, [exit status, stderr].
BUILD = f"""
import contextlib
import io
import json
import sys

import torch

import model

for init_from, block_size in json.loads(sys.argv[1]):
    model.INIT_FROM = init_from
    model.gpt2_folder.cache_clear()
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            model.build_model({{"num_outputs": {VOCAB}, "block_size": block_size}}, torch.device("cpu"))
        status = 0
    except SystemExit as error:
        status = error.code
    print(json.dumps([status, stderr.getvalue()]))
"""


def save_gpt2(folder: Path, seed: int = 0, **config: int) -> Path:
    """A GPT-2 of random weights, saved as transformers does (config.json, model.safetensors)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    GPT2LMHeadModel(GPT2Config(**{**CONFIG, **config})).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder a user downloaded: the weights, and a (small) byte-level BPE as GPT-2's vocab.json and merges.txt."""
    from tokenizers import ByteLevelBPETokenizer

    folder = save_gpt2(tmp_path_factory.mktemp("weights") / "gpt2-local")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([" ".join(WORDS)] * 50, vocab_size=300, special_tokens=["<|endoftext|>"])
    bpe.save_model(str(folder))
    return folder


@pytest.fixture(scope="module")
def project(gpt2: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("init_from") / "finetune", {**SPEC, "model.init_from": str(gpt2)})


def build(project: Path, *cases: tuple[Path, int]) -> list[tuple[int, str]]:
    """build_model's exit status and error for each (init_from, block_size), in one process."""
    result = run_python(project, "-c", BUILD, json.dumps([(str(path), size) for path, size in cases]), env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    return [tuple(json.loads(line)) for line in result.stdout.splitlines()]


def test_the_gpt_computes_hugging_faces_logits_from_a_folder_a_safetensors_file_and_a_bin(
    project: Path, gpt2: Path, tmp_path: Path
) -> None:
    model_py = (project / "model.py").read_text()
    assert 'nn.GELU(approximate="tanh")' in model_py, "GPT-2's GELU"
    assert f"INIT_FROM = {str(gpt2)!r}".replace("'", '"') in model_py
    as_bin = tmp_path / "as-bin"
    as_bin.mkdir()
    shutil.copy(gpt2 / "config.json", as_bin)
    from safetensors.torch import load_file

    torch.save(load_file(gpt2 / "model.safetensors"), as_bin / "pytorch_model.bin")
    sources = (gpt2, gpt2 / "model.safetensors", as_bin)
    result = run_python(project, "-c", LOGITS, str(gpt2), *map(str, sources), env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    differences = [float(value) for value in re.findall(r"max difference (\S+)", result.stdout)]
    assert len(differences) == len(sources) and max(differences) < 1e-5, differences


def test_fine_tuning_trains_and_sample_py_writes_gpt2_tokens(project: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    generator = torch.Generator().manual_seed(0)
    sentence = [WORDS[i] for i in torch.randint(len(WORDS), (12,), generator=generator).tolist()]
    (data / "input.txt").write_text(" ".join(sentence * 150), encoding="utf-8")  # a text that repeats: learnable
    out = tmp_path / "out"
    args = ("--data-dir", str(data), "--out-dir", str(out), "--max-epochs", "4", "--lr", "0.003")
    result = run_python(project, "train.py", "--device", "cpu", "--num-sanity-val-steps", "0", *args, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    losses = [float(loss) for loss in re.findall(r"val_loss ([\d.]+)", result.stdout)]
    assert len(losses) == 4 and losses == sorted(losses, reverse=True) and losses[-1] < losses[0] - 1, result.stdout

    sample = ("--out-dir", str(out), "--device", "cpu", "--max-new-tokens", "12", "--prompt", "the cat")
    result = run_python(project, "sample.py", *sample, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("the cat") and len(result.stdout) > len("the cat"), result.stdout


def test_weights_that_are_not_model_pys_gpt2_are_one_clear_error_each(project: Path, tmp_path: Path) -> None:
    def variant(name: str, config: dict | None = None, weights: bytes | dict | None = None) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", **CONFIG, **(config or {})}))
        if isinstance(weights, bytes):
            (folder / "model.safetensors").write_bytes(weights)
        elif weights is not None:
            from safetensors.torch import save_file

            save_file(weights, folder / "model.safetensors")
        return folder

    wider = save_gpt2(tmp_path / "wider", n_embd=64)
    (wider / "config.json").write_text(json.dumps({"model_type": "gpt2", **CONFIG}))  # says 32 wide, holds 64
    bert_weights = {"embeddings.word_embeddings.weight": torch.zeros(30, 32)}
    cases = {
        tmp_path / "nothing": "no such file or folder",
        variant("a-file") / "config.json": "neither a folder nor a .safetensors file",
        variant("bert", {"model_type": "bert"}): "model_type is 'bert', not 'gpt2'",
        variant("deeper", {"n_layer": 3, "n_embd": 48}): "set n_layer = 3, n_embd = 48 in ltgen.toml's [model] and run",
        variant("gelu", {"activation_function": "relu"}): "activation_function = 'relu', where this GPT computes",
        variant("no-weights"): "holds no model.safetensors (nor pytorch_model.bin)",
        variant("garbage", weights=b"\x00" * 100): "model.safetensors is not a readable weights file",
        variant("bert-weights", weights=bert_weights): "model.safetensors has no wte.weight weights",
        wider: "wte.weight has shape [50257, 64] where config.json's GPT-2 has [50257, 32]",
    }
    (variant("no-config", weights=b"") / "config.json").unlink()
    cases[tmp_path / "no-config"] = "config.json is missing"
    cases[wider, 65] = "[data] block_size = 65 is more than the weights' 64 positions"
    results = build(project, *((path, 32) if isinstance(path, Path) else path for path in cases))
    for (init_from, message), (status, stderr) in zip(cases.items(), results, strict=True):
        assert status == 2 and message in stderr and "Traceback" not in stderr, (init_from, stderr)
    script = f"import model; model.INIT_FROM = {str(tmp_path / 'bert')!r}; model.load_gpt2(9, 8)"
    result = run_python(project, "-c", script, env=ENV)  # as a process: the message and status 2, no traceback
    assert result.returncode == 2 and result.stderr.strip().endswith("not another model's"), result.stderr


def test_a_hub_name_reads_the_hub_cache_offline_and_names_a_path_when_it_is_empty(tmp_path: Path) -> None:
    hub = {**SPEC, "model.init_from": "gpt2", "model.n_layer": 12, "model.n_head": 12, "model.n_embd": 768}
    project = make_project(tmp_path / "hub", hub)
    folder = "import model; print(model.gpt2_folder())"
    offline = {**ENV, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = run_python(project, "-c", folder, env=offline)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "Could not download GPT-2 from the Hugging Face hub (openai-community/gpt2" in result.stderr
    assert 'set [model] init_from = "/path/to/folder" in ltgen.toml' in result.stderr

    # The hub's cache, as huggingface_hub leaves it after a download: a snapshot per commit, refs/main naming it.
    repo = tmp_path / "hf/hub/models--openai-community--gpt2"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "vocab.json", "merges.txt"):
        (snapshot / name).write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs/main").write_text("0" * 40)
    result = run_python(project, "-c", folder, env=offline)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(snapshot)
