"""sample.py and the GPT's stream(): the cache of keys and values gives the tokens the whole-context path gives
(also once the text outgrows block_size), nucleus sampling (--top-p) keeps only the likeliest tokens, a prompt
comes from --prompt or --prompt-file (not both), and the output is decoded with the checkpoint's tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import import_module, make_project, run_python

SPEC = {
    "data.dataset": "text",
    "model.arch": "gpt",
    "model.n_layer": 2,
    "model.n_head": 2,
    "model.n_embd": 32,
    "data.block_size": 16,
    "data.batch_size": 16,
    "logging.progress_bar": False,
}
ENV = {"OMP_NUM_THREADS": "1"}  # tiny models are slower with several threads on a shared CPU
# Text with characters of 2 to 4 bytes in UTF-8, which byte-level BPE tokens may split.
WORDS = ["café", "naïve", "Ünïcödé", "日本語", "straße", "señor", "œuvre", "plain", "words", "🙂", "the", "cat"]


def train(project: Path, out: Path, *args: str) -> None:
    result = run_python(
        project, "train.py", "--device", "cpu", "--num-sanity-val-steps", "0", "--out-dir", str(out), *args, env=ENV
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def char_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A character-level project, trained a little on the generated text: (project, its --out-dir)."""
    project = make_project(tmp_path_factory.mktemp("sample") / "chars", SPEC)
    out = project / "outputs"
    train(project, out, "--dataset", "synthetic", "--max-steps", "10")
    return project, out


def test_cached_greedy_generation_is_the_uncached_one_token_for_token(char_project: tuple[Path, Path]) -> None:
    model_py = import_module(char_project[0])
    torch.manual_seed(0)
    model = model_py.GPT(vocab_size=40, block_size=16).double().eval()  # float64: no near-ties between tokens
    fed = []  # the length of each input the model runs on
    model.register_forward_pre_hook(lambda module, args: fed.append(args[0].shape[1]))
    prompt = torch.randint(40, (3, 5))
    cached = torch.cat(
        [prompt, *model_py.stream(model, prompt, 30, temperature=0)], dim=1
    )  # 5 + 30 tokens: past block_size
    assert fed == [5] + [1] * 11 + [16] * 18, "the prompt once, then one token at a time until the context is full"
    uncached = torch.cat([prompt, *model_py.stream(model, prompt, 30, temperature=0, kv_cache=False)], dim=1)
    assert torch.equal(cached, uncached)
    assert cached.shape == (3, 35) and torch.equal(cached[:, :5], prompt)


def test_top_p_samples_only_the_likeliest_tokens_that_reach_p(char_project: tuple[Path, Path]) -> None:
    model_py = import_module(char_project[0])
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log().repeat(2000, 1)
    torch.manual_seed(0)

    def drawn(**options: float | None) -> set[int]:
        return set(model_py.next_token(logits, 1.0, options.get("top_k"), options.get("top_p")).flatten().tolist())

    assert drawn() == {0, 1, 2, 3}
    assert drawn(top_p=0.7) == {0, 1}, "0.5 + 0.3 reach 0.7: the rest is cut"
    assert drawn(top_p=0.85) == {0, 1, 2}
    assert drawn(top_p=0.4) == {0}, "the likeliest token always stays"
    assert drawn(top_k=3, top_p=0.85) == {0, 1, 2} and drawn(top_k=1, top_p=0.9) == {0}


def test_top_p_prompt_file_and_their_errors(char_project: tuple[Path, Path], tmp_path: Path) -> None:
    project, out = char_project
    sample = ("sample.py", "--out-dir", str(out), "--device", "cpu", "--max-new-tokens", "25")
    result = run_python(project, *sample, "--prompt", "the ", "--top-p", "0.9", "--num-samples", "2", env=ENV)
    assert result.returncode == 0, result.stderr
    samples = result.stdout.strip("\n").split("\n---------------\n")
    assert len(samples) == 2 and all(text.startswith("the ") and len(text) == 29 for text in samples), result.stdout

    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text("a cat\nand the ", encoding="utf-8")
    result = run_python(project, *sample, "--prompt-file", str(prompt_file), "--temperature", "0", env=ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("a cat\nand the ") and len(result.stdout) == len("a cat\nand the ") + 25 + 1

    bad = {
        ("--prompt", "a", "--prompt-file", str(prompt_file)): "not allowed with argument",
        ("--top-p", "0"): "argument --top-p: 0.0 is not a probability in (0, 1]",
        ("--top-p", "nan"): "argument --top-p: nan is not a probability",
    }
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"caf\xe9")
    bad[("--prompt-file", str(latin1))] = "is not UTF-8 text: byte 3 (0xe9)"
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    bad[("--prompt-file", str(empty))] = "--prompt-file is empty"
    bad[("--prompt-file", str(prompt_file.with_name("ZZ.txt")))] = "no such file"
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("caf€", encoding="utf-8")
    bad[("--prompt-file", str(unknown))] = "--prompt-file has characters the model never saw in training: '€'"
    for args, message in bad.items():
        result = run_python(project, *sample, *args, env=ENV)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, (args, result)


def test_sample_py_decodes_with_the_checkpoints_bpe_tokenizer(tmp_path: Path) -> None:
    """A byte-level BPE splits characters into bytes: sample.py prints whole characters, and in all the very text
    the tokenizer saved in the checkpoint decodes the drawn tokens to."""
    project = make_project(tmp_path / "bpe", {**SPEC, "data.tokenizer": "bpe", "data.vocab_size": 300})
    generator = torch.Generator().manual_seed(0)
    words = [WORDS[i] for i in torch.randint(len(WORDS), (3000,), generator=generator).tolist()]
    (tmp_path / "data").mkdir()
    (tmp_path / "data/input.txt").write_text(" ".join(words), encoding="utf-8")
    out = tmp_path / "out"
    train(project, out, "--data-dir", str(tmp_path / "data"), "--max-steps", "30", "--lr", "0.01")

    prompt = "日本語 🙂 café"
    sampled = ("--out-dir", str(out), "--device", "cpu", "--max-new-tokens", "60", "--temperature", "1", "--top-k", "0")
    result = run_python(project, "sample.py", *sampled, "--prompt", prompt, "--seed", "7", env=ENV)
    assert result.returncode == 0, result.stderr
    expected = run_python(project, "-c", DECODE_ONCE, str(out), prompt, "7", env=ENV)
    assert expected.returncode == 0, expected.stderr
    text, pieces = json.loads(expected.stdout)
    assert pieces > 0, "some drawn tokens are parts of characters"
    assert result.stdout == text + "\n" and result.stdout.startswith(prompt), (result.stdout, text)


# The checkpoint's tokenizer decoding all the tokens sample.py draws (seed argv[3]) at once, and how many of the
# drawn ones are parts of a character: [text, parts].
DECODE_ONCE = """
import json
import sys
from pathlib import Path

import torch

import checkpoint
import tokenizer
from model import build_model, stream

state, path = checkpoint.for_inference(None, Path(sys.argv[1]))
model = checkpoint.load_weights(build_model(state["data_info"], torch.device("cpu")), state, path)
tok = tokenizer.from_state(state["data_info"]["tokenizer"])
prompt = tok.encode(sys.argv[2])
torch.manual_seed(int(sys.argv[3]))
ids = torch.cat([torch.tensor([prompt]), *stream(model, torch.tensor([prompt]), 60, temperature=1.0)], dim=1)[0].tolist()
print(json.dumps([tok.decode(ids), sum("\\ufffd" in tok.decode([i]) for i in ids[len(prompt) :])]))
"""
