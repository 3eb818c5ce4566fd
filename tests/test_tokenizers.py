"""The text task's tokenizers (the emitted tokenizer.py): byte-level BPE and characters round-trip any text, their
state() rebuilds them exactly, token files switch to uint32 past 65,536 tokens, and GPT-2's encoding, offline and not
cached, is one clear error that names the files to place."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from conftest import make_project, run_python

SPEC = {"data.dataset": "text", "model.arch": "gpt", "model.n_layer": 1, "model.n_head": 2, "model.n_embd": 16}
ENV = {"OMP_NUM_THREADS": "1"}
TEXTS = [
    "The cat sat on the mat. The dog sat on the log.\n",
    "Ünïcödé, naïve café, straße; 日本語のテキスト — “quoted” ‘single’",
    "emoji 🙂🚀 and combining e\u0301, tabs\tand  double  spaces\r\nCRLF",
    "<|endoftext|> is the separator",
]


def run_check(project: Path, code: str, *args: str, env: dict[str, str] | None = None):
    """Run `code` in the emitted project (its tokenizer.py imports as `tokenizer`)."""
    return run_python(project, "-c", code, *args, env={**ENV, **(env or {})})


def test_bpe_round_trips_any_text_and_its_state_rebuilds_it(tmp_path: Path) -> None:
    project = make_project(tmp_path / "bpe", {**SPEC, "data.tokenizer": "bpe", "data.vocab_size": 300})
    code = """
import json, sys
import tokenizer
texts = json.loads(sys.argv[1])
bpe = tokenizer.train(iter(texts[:2] * 20))  # trained on English and a little more
assert bpe.kind == "bpe" and bpe.vocab_size <= tokenizer.VOCAB_SIZE == 300
rebuilt = tokenizer.from_state(json.loads(json.dumps(bpe.state())))  # through JSON, as meta.json and checkpoints
for text in texts:  # characters it never saw too: every byte is a token
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text, (text, bpe.decode(ids))
    assert rebuilt.encode(text) == ids and all(0 <= i < bpe.vocab_size for i in ids)
assert len(bpe.encode(tokenizer.SEPARATOR)) == 1, "the separator is one token"
assert len(bpe.encode(texts[0])) < len(texts[0]) / 2, "merges make tokens of several characters"
print("ok")
"""
    result = run_check(project, code, json.dumps(TEXTS))
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_char_tokenizer_round_trips_and_names_characters_it_never_saw(tmp_path: Path) -> None:
    project = make_project(tmp_path / "char", SPEC)
    code = """
import json, sys
import tokenizer
texts = json.loads(sys.argv[1])
chars = tokenizer.Tokenizer("".join(sorted(set("".join(texts)))))
assert chars.kind == "char" and chars.vocab_size == len(set("".join(texts)))
rebuilt = tokenizer.from_state(json.loads(json.dumps(chars.state())))
for text in texts:
    assert chars.decode(chars.encode(text)) == text and rebuilt.encode(text) == chars.encode(text)
assert chars.encode("ab") == [chars.vocab.index("a"), chars.vocab.index("b")]
try:
    chars.encode("caf€ Z")
except ValueError as error:
    print(error)
"""
    result = run_check(project, code, json.dumps(TEXTS))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "characters never seen in training: 'Z' '€'"
    result = run_check(project, "import tokenizer; tokenizer.from_state({'kind': 'bpe', 'json': '{}'})")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "the saved tokenizer is 'bpe' but this project's is 'char'" in result.stderr


def test_token_files_are_uint32_past_65536_tokens(tmp_path: Path) -> None:
    project = make_project(tmp_path / "char", SPEC)
    result = run_check(
        project, "from prepare import token_dtype; print([token_dtype(n).name for n in (256, 65536, 65537)])"
    )
    assert result.stdout.strip() == "['uint16', 'uint16', 'uint32']", result.stderr
    # 70,000 distinct characters: a char vocabulary past uint16, through prepare.py.
    text = "".join(chr(code) for code in range(0x21, 0x21 + 72_100) if not 0xD800 <= code < 0xE000)[:70_000]
    (tmp_path / "data").mkdir()
    (tmp_path / "data/input.txt").write_text(text, encoding="utf-8")
    result = run_python(project, "prepare.py", "--data-dir", str(tmp_path / "data"), env=ENV)
    assert result.returncode == 0, result.stderr
    meta = json.loads((tmp_path / "data/tokens/meta.json").read_text())
    assert meta["dtype"] == "uint32" and meta["vocab_size"] == 70_000
    vocab = meta["tokenizer"]["vocab"]
    tokens = np.fromfile(tmp_path / "data/tokens/train.bin", dtype=np.uint32)
    assert "".join(vocab[i] for i in tokens) == text[: int(len(text) * 0.9)]


def test_gpt2_encoding_offline_is_one_clear_error_naming_the_files(tmp_path: Path) -> None:
    project = make_project(tmp_path / "lm", {**SPEC, "data.tokenizer": "gpt2"})
    cache = tmp_path / "tiktoken-cache"
    # No network (a proxy on a closed port fails at once, online or not) and an empty cache.
    offline = {
        "https_proxy": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "TIKTOKEN_CACHE_DIR": str(cache),
    }
    result = run_check(project, "import tokenizer; tokenizer.Tokenizer()", env=offline)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "Could not load GPT-2's encoding" in result.stderr
    vocab_bpe = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe"
    assert f"{vocab_bpe} as {cache}/" in result.stderr and "encoder.json as" in result.stderr


def test_gpt2_from_a_local_folder_reads_its_vocab_and_merges_as_hugging_face_does(tmp_path: Path) -> None:
    """init_from = PATH with Hugging Face's tokenizer files beside the weights: no download, the ids of
    transformers' GPT2TokenizerFast on the same files (a small BPE stands in for GPT-2's 50,257 tokens here)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    folder = tmp_path / "gpt2-local"
    folder.mkdir()
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=alphabet)
    bpe.train_from_iterator(TEXTS[:2] * 20, trainer)
    bpe.model.save(str(folder))  # vocab.json and merges.txt
    project = make_project(tmp_path / "lm", {**SPEC, "model.init_from": str(folder)})
    offline = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    code = """
import json, sys
import tokenizer
gpt2 = tokenizer.from_state(tokenizer.Tokenizer().state())
texts = json.loads(sys.argv[1])
assert all(gpt2.decode(gpt2.encode(text)) == text for text in texts)
print(json.dumps([gpt2.encode(text) for text in texts]))
"""
    result = run_check(project, code, json.dumps(TEXTS), env=offline)
    assert result.returncode == 0, result.stderr
    reference = GPT2TokenizerFast.from_pretrained(folder)  # reads the folder's vocab.json and merges.txt
    assert json.loads(result.stdout) == [reference.encode(text) for text in TEXTS]
