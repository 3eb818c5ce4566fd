"""The text task's corpus preparation (prepare.py) and its memory-mapped training windows: a folder of .txt, .md and
.jsonl(.gz) files becomes token files that equal a one-shot tokenization of the same text; a changed corpus is
prepared again and an unchanged one is not; a prepare killed at its worst moments leaves nothing that passes for
finished; bad corpora are one clear error each; train.py prepares a BPE corpus by itself and saves the tokenizer in
its checkpoints; a run killed with kill -9 and resumed ends bit for bit like an uninterrupted one.

The corpus order, as prepare.py documents it: the files sorted by their path in the folder; each text file is one
document, each JSONL line one; documents are joined with tokenizer.py's SEPARATOR, and the stream is split at 90% and
95% of the documents' characters."""

from __future__ import annotations

import gzip
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer as HFTokenizer

from conftest import make_project, run_dir, run_python

SPEC = {
    "data.dataset": "text",
    "model.arch": "gpt",
    "model.n_layer": 1,
    "model.n_head": 2,
    "model.n_embd": 16,
    "model.dropout": 0.1,
    "data.block_size": 16,
    "data.batch_size": 8,
    "data.samples_per_epoch": 80,  # 10 batches an epoch
    "data.text_file": "corpus",
    "logging.progress_bar": False,
}
ENV = {"OMP_NUM_THREADS": "1"}
WORDS = ["café", "naïve", "日本語", "straße", "the", "cat", "sat", "on", "a", "mat,", "and", "ran.", "“quoted”", "Ünï"]


def words(count: int, seed: int) -> str:
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(WORDS), (count,), generator=generator).tolist()
    return " ".join(WORDS[i] + ("\n" if i == 3 else "") for i in picks)


def write_corpus(folder: Path) -> list[str]:
    """A corpus folder of mixed files; returns its documents in prepare.py's order (files by sorted path)."""
    a, b, c = words(900, 1), "# A title\n\n" + words(700, 2), [words(30, 3 + i) for i in range(12)]
    d = words(500, 20)
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("\ufeff" + a, encoding="utf-8")  # a byte order mark is no character of the text
    (folder / "sub/b.md").write_text(b, encoding="utf-8")
    lines = [json.dumps({"text": text, "id": i}) for i, text in enumerate(c)]
    lines[4:4] = ["", json.dumps({"text": ""})]  # a blank line and an empty document: skipped
    (folder / "c.jsonl.gz").write_bytes(gzip.compress("\n".join(lines).encode()))
    (folder / "d.txt.gz").write_bytes(gzip.compress(d.encode()))
    (folder / "empty.txt").write_text("")  # no document
    (folder / "notes.csv").write_bytes(b"\xff not a corpus file")  # neither are these: never read
    (folder / ".hidden.txt").write_bytes(b"\xff")
    return [a, *c, d, b]  # a.txt, c.jsonl.gz, d.txt.gz, empty.txt, sub/b.md


def expected_splits(documents: list[str], separator: str) -> list[str]:
    """The three splits' texts: the documents split at 90% and 95% of their characters, joined by the separator."""
    total = sum(map(len, documents))
    cuts = [0, int(total * 0.9)]
    cuts += [cuts[1] + (total - cuts[1]) // 2, total]
    splits, position = [[], [], []], 0
    for document in documents:
        for split in range(3):
            start, end = max(cuts[split], position), min(cuts[split + 1], position + len(document))
            if start < end:
                splits[split].append(document[start - position : end - position])
        position += len(document)
    return [separator.join(pieces) for pieces in splits]


def token_files(data: Path) -> tuple[dict, list[np.ndarray]]:
    meta = json.loads((data / "tokens/meta.json").read_text())
    return meta, [np.fromfile(data / f"tokens/{split}.bin", dtype=meta["dtype"]) for split in ("train", "val", "test")]


def prepare(project: Path, data: Path, *args: str, env: dict[str, str] | None = None):
    return run_python(project, "prepare.py", "--data-dir", str(data), *args, env={**ENV, **(env or {})})


@pytest.fixture(scope="module")
def bpe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = make_project(
        tmp_path_factory.mktemp("bpe") / "lm", {**SPEC, "data.tokenizer": "bpe", "data.vocab_size": 400}
    )
    # Chunks of 200 characters (read 200 bytes at a time): the cuts between chunks, and characters of several bytes
    # cut between two reads, are exercised on a small corpus.
    source = (project / "prepare.py").read_text()
    (project / "prepare.py").write_text(source.replace("CHUNK_CHARS = 1 << 20", "CHUNK_CHARS = 200"))
    return project


@pytest.fixture(scope="module")
def char(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("char") / "lm", SPEC)


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_folder_corpus_equals_a_one_shot_tokenization(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    project = request.getfixturevalue(kind)
    documents = write_corpus(tmp_path / "data/corpus")
    result = prepare(project, tmp_path / "data", "--workers", "2")
    assert result.returncode == 0, result.stderr
    meta, files = token_files(tmp_path / "data")
    assert [source["path"] for source in meta["sources"]] == [
        "a.txt",
        "c.jsonl.gz",
        "d.txt.gz",
        "empty.txt",
        "sub/b.md",
    ]
    if kind == "bpe":
        tokenizer = HFTokenizer.from_str(meta["tokenizer"]["json"])
        assert tokenizer.get_vocab_size() == meta["vocab_size"] <= 400  # fewer when the words run out
        encode, separator = (lambda text: tokenizer.encode(text).ids), "<|endoftext|>"
    else:
        vocab = meta["tokenizer"]["vocab"]
        assert vocab == "".join(sorted(set("".join(documents) + "\n"))), "the corpus's characters and the separator's"
        encode, separator = (lambda text: [vocab.index(char) for char in text]), "\n\n"
    assert meta["dtype"] == "uint16"
    for split, text, tokens in zip(("train", "val", "test"), expected_splits(documents, separator), files):
        assert tokens.tolist() == encode(text), split
        assert meta["tokens"][split] == len(tokens)
    # One process gives the same files as two.
    (tmp_path / "one").mkdir()
    os.rename(tmp_path / "data/corpus", tmp_path / "one/corpus")
    assert prepare(project, tmp_path / "one", "--workers", "1").returncode == 0
    assert all(np.array_equal(a, b) for a, b in zip(token_files(tmp_path / "one")[1], files))


def test_a_touched_source_is_prepared_again_an_untouched_one_is_not(char: Path, tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus")
    assert prepare(char, tmp_path).returncode == 0
    meta = tmp_path / "tokens/meta.json"
    before = meta.stat().st_ino, meta.read_text()
    result = prepare(char, tmp_path)
    assert (
        result.returncode == 0 and "Prepared" not in result.stdout and (meta.stat().st_ino, meta.read_text()) == before
    )
    stat = (tmp_path / "corpus/d.txt.gz").stat()
    os.utime(tmp_path / "corpus/d.txt.gz", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # `touch`
    result = prepare(char, tmp_path)
    assert result.returncode == 0 and "Prepared" in result.stdout
    assert json.loads(meta.read_text())["sources"][2]["mtime_ns"] == stat.st_mtime_ns + 1_000_000_000
    (tmp_path / "corpus/sub/b.md").write_text("A new text entirely. " * 50)  # another size
    result = prepare(char, tmp_path)
    assert (
        result.returncode == 0 and "Prepared" in result.stdout and "A" in token_files(tmp_path)[0]["tokenizer"]["vocab"]
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["corpus", "tokens", "tokens.lock"]


# Where prepare.py kills itself: before the first line that holds this.
KILL_POINTS = {
    "tokenizing": "for number, text in enumerate(chunks(document)):",
    "finished, not yet renamed": "if tokens.exists():  # out of the way first",
}


def kill_before(source: str, marker: str) -> str:
    """prepare.py's source with a SIGKILL of its own process (as a power cut would) before the line with `marker`."""
    at = source.index(marker)
    line = source.rindex("\n", 0, at) + 1
    indent = source[line:at]
    return "import signal\n" + source[:line] + f"{indent}os.kill(os.getpid(), signal.SIGKILL)\n" + source[line:]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_killed_prepare_leaves_nothing_that_passes_for_finished(point: str, char: Path, tmp_path: Path) -> None:
    write_corpus(tmp_path / "old/corpus")
    write_corpus(tmp_path / "corpus")
    assert prepare(char, tmp_path / "old").returncode == 0
    os.rename(tmp_path / "old/tokens", tmp_path / "tokens")  # finished token files, of another corpus: stale
    source = (char / "prepare.py").read_text()
    (char / "prepare.py").write_text(kill_before(source, KILL_POINTS[point]))
    try:
        killed = prepare(char, tmp_path, "--workers", "1")
    finally:
        (char / "prepare.py").write_text(source)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert any(path.name.startswith("tokens.tmp-") for path in tmp_path.iterdir())
    stale = json.loads((tmp_path / "tokens/meta.json").read_text())["sources"][0]["mtime_ns"]
    assert stale != (tmp_path / "corpus/a.txt").stat().st_mtime_ns, "tokens/ is still the old, stale one"
    result = prepare(char, tmp_path)
    assert result.returncode == 0 and "Prepared" in result.stdout, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["corpus", "old", "tokens", "tokens.lock"]


BAD_CORPORA = {
    "no text": ({"a.txt": b"", "b.jsonl": b'{"text": ""}\n\n'}, "holds no text: there is nothing to train on"),
    "no corpus files": ({"data.csv": b"a,b\n1,2\n"}, "holds no .txt, .md or .jsonl files (each may be .gz)"),
    "line without text": ({"b.jsonl": b'{"text": "fine"}\n{"content": "x"}\n'}, 'b.jsonl, line 2: no "text" field'),
    "line not JSON": ({"b.jsonl.gz": gzip.compress(b'{"text": "fine"}\n{"text": \n')}, "b.jsonl.gz, line 2: not JSON"),
    "not UTF-8": ({"a.txt": b"plain text, then caf\xe9 au lait"}, "a.txt is not UTF-8 text: byte 20 (0xe9) is invalid"),
    "not UTF-8, gzipped": (
        {"z.md.gz": gzip.compress("ça va \xff".encode("latin1"))},
        "byte 0 of its uncompressed text",
    ),
    "one character": ({"a.txt": b"aaaaaaaaaa"}, "the text is one character, 'a', repeated"),
}


@pytest.mark.parametrize("case", BAD_CORPORA)
def test_bad_corpora_are_one_clear_error_each(case: str, char: Path, tmp_path: Path) -> None:
    files, message = BAD_CORPORA[case]
    for name, content in files.items():
        (tmp_path / "corpus" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "corpus" / name).write_bytes(content)
    result = prepare(char, tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "tokens").exists()


def test_train_py_prepares_a_bpe_corpus_and_saves_its_tokenizer(bpe: Path, tmp_path: Path) -> None:
    documents = write_corpus(tmp_path / "data/corpus")
    out = tmp_path / "out"
    args = ("--device", "cpu", "--max-steps", "2", "--limit-val-batches", "2", "--limit-test-batches", "2")
    result = run_python(bpe, "train.py", *args, "--data-dir", str(tmp_path / "data"), "--out-dir", str(out), env=ENV)
    assert result.returncode == 0, result.stderr
    assert "Prepared" in result.stdout
    data_info = torch.load(run_dir(out) / "checkpoints/last.pt", weights_only=True)["data_info"]
    meta = json.loads((tmp_path / "data/tokens/meta.json").read_text())
    assert data_info["tokenizer"] == meta["tokenizer"] and data_info["tokenizer"]["kind"] == "bpe"
    assert data_info["num_outputs"] == meta["vocab_size"]
    # sample.py's way back: tokenizer.from_state rebuilds the same tokenizer.
    check = (
        "import json, sys, torch, tokenizer; from pathlib import Path\n"
        "info = torch.load(sys.argv[1], weights_only=True)['data_info']\n"
        "rebuilt = tokenizer.from_state(info['tokenizer'])\n"
        "text = Path(sys.argv[2]).read_text()\n"
        "assert rebuilt.kind == 'bpe' and rebuilt.vocab_size == info['num_outputs']\n"
        "print(json.dumps(rebuilt.encode(text))); assert rebuilt.decode(rebuilt.encode(text)) == text"
    )
    (tmp_path / "text.txt").write_text(documents[1])
    result = run_python(bpe, "-c", check, str(run_dir(out) / "checkpoints/last.pt"), str(tmp_path / "text.txt"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == HFTokenizer.from_str(meta["tokenizer"]["json"]).encode(documents[1]).ids


KILL_AT_STEP = """
    import os
    import signal

    global _calls
    _calls = globals().get("_calls", 0) + 1
    if _calls == int(os.environ.get("KILL_AT_STEP", "0")):
        os.kill(os.getpid(), signal.SIGKILL)  # as a power cut would
"""


def test_kill_9_and_resume_with_memory_mapped_windows_ends_bit_for_bit(char: Path, tmp_path: Path) -> None:
    write_corpus(tmp_path / "data/corpus")
    steps = (char / "steps.py").read_text()
    docstring = '    """The loss to minimize on one batch; train.py runs the backward pass."""\n'
    (char / "steps.py").write_text(steps.replace(docstring, docstring + KILL_AT_STEP, 1))
    args = ("train.py", "--device", "cpu", "--data-dir", str(tmp_path / "data"), "--max-epochs", "3")
    args += ("--ckpt-every-n-steps", "4", "--num-sanity-val-steps", "0", "--limit-val-batches", "2")
    try:
        straight = run_python(char, *args, "--out-dir", str(tmp_path / "straight"), env=ENV)
        assert straight.returncode == 0, straight.stderr
        killed = run_python(char, *args, "--out-dir", str(tmp_path / "resumed"), env={**ENV, "KILL_AT_STEP": "15"})
        assert killed.returncode == -signal.SIGKILL, killed.stderr  # mid-epoch 1, after step 12's save
        resumed = run_python(char, *args, "--out-dir", str(tmp_path / "resumed"), "--resume", "last", env=ENV)
        assert resumed.returncode == 0, resumed.stderr
    finally:
        (char / "steps.py").write_text(steps)
    assert "Resumed from" in resumed.stdout
    expected, actual = (
        torch.load(run_dir(tmp_path / name) / "checkpoints/last.pt", weights_only=True)
        for name in ("straight", "resumed")
    )
    assert actual["global_step"] == expected["global_step"] == 30
    for name, tensor in expected["model"].items():
        assert torch.equal(actual["model"][name], tensor), name
