"""Tokenize the corpus once into token files that training reads through memory maps (nanoGPT's train.bin/val.bin).

Usage:
    python prepare.py [--data-dir data] [--workers N]   # train.py runs it by itself when the files are missing or stale

The corpus is [data] text_file in --data-dir (Tiny Shakespeare, downloaded, when it is missing): a UTF-8
file, or a folder whose *.txt, *.md and *.jsonl files (each may be .gz; JSONL: one document a line, its "text" field)
are read at any depth, in the order of their sorted paths. A text file is one document. The documents are joined with
SEPARATOR (tokenizer.py) and the stream is split by position: the first 90% of its characters train, the next 5%
validate, the last 5% test (counting the documents' characters only; a document may straddle a boundary).

It writes DATA_DIR/tokens/: train.bin, val.bin and test.bin (the ids: uint16, or uint32 for a vocabulary past 65,536
tokens) and meta.json (the tokenizer's state, the counts, and each source file's size and time, so that a changed
corpus is prepared again). Memory stays flat whatever the corpus's size: the text streams through in chunks of
CHUNK_CHARS, each file in a worker process. All is written into a temporary folder, renamed tokens/ once complete.
"""

import argparse
import codecs
import contextlib
import fcntl
import gzip
import hashlib
import http.client
import json
import multiprocessing
import os
import shutil
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from tqdm import tqdm

from flags import fail
from tokenizer import KIND, SEPARATOR, Tokenizer, from_state

TEXT_FILE = "input.txt"  # [data] text_file, in --data-dir: a file, or a folder of them
TOKENS = "tokens"  # the token files' folder, in --data-dir
SPLITS = ("train", "val", "test")
TRAIN_FRACTION = 0.9  # the first 90% of the text trains; the rest is halved into validation and test
SUFFIXES = (".txt", ".md", ".jsonl")  # a folder's files that are read, each also as .gz
CHUNK_CHARS = 1 << 20  # characters tokenized at a time (and bytes read at a time)
JSONL_LINE = 'write one JSON object a line, such as {"text": "A document."}'  # how a JSONL file is made
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"  # of its 1115394 bytes
DOWNLOAD_TIMEOUT = 5  # seconds a server may take to accept a connection or to send the next bytes


class CorpusError(Exception):
    """Bad input, found in a worker process: the main process reports it (a SystemExit would hang the pool)."""


def corpus_files(source: Path) -> list[Path]:
    """The corpus's files: `source`, or the folder's *.txt, *.md and *.jsonl files (also .gz) at any depth, sorted by
    their paths in it (hidden files and folders, whose names start with a dot, are left out)."""
    if source.is_dir():
        files = {path.relative_to(source).as_posix(): path for path in source.rglob("*") if path.is_file()}
        files = [
            files[name]
            for name in sorted(files)
            if name.removesuffix(".gz").endswith(SUFFIXES) and "/." not in f"/{name}"
        ]
        if not files:
            fail(f"{source.resolve()} holds no .txt, .md or .jsonl files (each may be .gz): put the corpus there")
        return files
    # Refused unopened: reading a named pipe or a device can block for ever.
    if source.exists() and not source.is_file():
        fail(f"{source.resolve()} is not a regular file (a named pipe or a device): copy the text into a file")
    if not source.exists():
        raise SystemExit(
            f"{source.resolve()} not found: put your UTF-8 text there (or set [data] text_file), "
            "or train on generated text with --dataset synthetic"
        )
    return [source]


def read_documents(path: Path) -> Iterator[Iterable[str]]:
    """The documents of one corpus file, each as pieces of its text: a text file is one document, a JSONL file one a
    line (its "text" field). Documents without text are skipped."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as file:
            if path.name.removesuffix(".gz").endswith(".jsonl"):
                yield from jsonl_documents(file, path)
            else:
                yield utf8_text(file, path)
    except OSError as error:  # opening it (reading errors are CorpusErrors already)
        raise CorpusError(f"cannot read {path}: {error.strerror or error}") from None


def read(file: BinaryIO, path: Path, line: bool = False) -> bytes:
    """The next CHUNK_CHARS bytes (or line) of `file`; a damaged .gz file is bad input."""
    try:
        return file.readline() if line else file.read(CHUNK_CHARS)
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError; a truncated one ends in EOFError
        raise CorpusError(f"cannot read {path}: {error}; is it a complete, valid file?") from None


def not_utf8(path: Path, error: UnicodeDecodeError, offset: int) -> CorpusError:
    """The error for bytes that are not UTF-8, at byte `offset` of the file (of its uncompressed text, for a .gz)."""
    where = f"byte {offset}" + (" of its uncompressed text" if path.suffix == ".gz" else "")
    return CorpusError(
        f"{path} is not UTF-8 text: {where} (0x{error.object[error.start]:02x}) is {error.reason}. "
        "Convert it first, e.g. iconv -f latin1 -t utf-8"
    )


def utf8_text(file: BinaryIO, path: Path) -> Iterator[str]:
    """A text file's text in pieces, without the byte order mark some editors put first."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # bytes read before this block
    while True:
        block = read(file, path)
        pending = len(decoder.getstate()[0])  # the start of a character cut by the previous block
        try:
            text = decoder.decode(block, final=not block)
        except UnicodeDecodeError as error:
            raise not_utf8(path, error, offset - pending + error.start) from None
        if text:
            yield text.removeprefix("\ufeff") if offset == 0 else text
        if not block:
            return
        offset += len(block)


def jsonl_documents(file: BinaryIO, path: Path) -> Iterator[list[str]]:
    """The "text" of each line of a JSONL file (blank lines are skipped)."""
    offset, number = 0, 0
    while line := read(file, path, line=True):
        number += 1
        try:
            record = line.decode("utf-8").removeprefix("\ufeff") if number == 1 else line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise not_utf8(path, error, offset + error.start) from None
        offset += len(line)
        if not record.strip():
            continue
        try:
            record = json.loads(record)
        except ValueError as error:
            raise CorpusError(f"{path}, line {number}: not JSON ({error}); {JSONL_LINE}") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise CorpusError(f'{path}, line {number}: no "text" field (a string); {JSONL_LINE}')
        if record["text"]:
            yield [record["text"]]


def chunks(document: Iterable[str]) -> Iterator[str]:
    """A document's text in chunks of at most CHUNK_CHARS, cut where the tokenizer would cut it anyway: before a space
    that is between two other characters ("... word| word"). Byte-level BPE splits text into words first, at exactly
    such places, so the chunks' tokens are the whole text's (text without spaces, e.g. Chinese, is cut anywhere)."""
    buffer = ""
    for text in document:
        buffer += text
        while len(buffer) > CHUNK_CHARS:
            cut = buffer.rfind(" ", 1, CHUNK_CHARS)
            while cut > 0 and (buffer[cut - 1].isspace() or buffer[cut + 1].isspace()):
                cut = buffer.rfind(" ", 1, cut)
            cut = cut if cut > 0 else CHUNK_CHARS
            yield buffer[:cut]
            buffer = buffer[cut:]
    if buffer:
        yield buffer


def download_shakespeare(path: Path) -> None:
    """Download Tiny Shakespeare (nanoGPT's shakespeare_char) to `path`, checking its SHA-256."""
    print(f"{path} not found: downloading Tiny Shakespeare from {SHAKESPEARE_URL}", flush=True)
    try:
        with urllib.request.urlopen(SHAKESPEARE_URL, timeout=DOWNLOAD_TIMEOUT) as response:
            payload = response.read()
    except (OSError, http.client.HTTPException) as error:
        raise SystemExit(
            f"Could not download Tiny Shakespeare ({getattr(error, 'reason', error)}).\n"
            f"Put a UTF-8 text file at {path.resolve()}, or train on generated text with --dataset synthetic."
        ) from None
    if hashlib.sha256(payload).hexdigest() != SHAKESPEARE_SHA256:
        raise SystemExit(
            f"The download from {SHAKESPEARE_URL} fails its SHA-256 check ({len(payload)} bytes; 1115394 expected).\n"
            f"Run again, or put a UTF-8 text file at {path.resolve()}."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(payload)
    partial.replace(path)  # atomic: a killed download leaves no half file under the real name


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest type that holds every id: uint16 (nanoGPT's, for GPT-2's 50,257) up to 65,536 tokens."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def split_points(characters: int) -> tuple[int, int]:
    """Where validation and test start, in characters of the whole corpus."""
    train_end = int(characters * TRAIN_FRACTION)
    return train_end, train_end + (characters - train_end) // 2


def survey(path: Path) -> tuple[int, int, np.ndarray]:
    """(documents, characters, the code points seen) of one corpus file, checking all of it."""
    seen = np.zeros(0x110000, dtype=bool)
    documents = characters = 0
    for document in read_documents(path):
        start = characters
        for text in document:
            characters += len(text)
            seen[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)] = True
        documents += characters > start  # an empty text file is no document
    return documents, characters, np.flatnonzero(seen)


def tokenize_file(job: tuple[Path, int, int, tuple[int, int], dict, Path]) -> dict[str, int]:
    """Tokenize one corpus file, whose text starts at character `start` of the corpus, into OUT/INDEX.SPLIT.bin;
    returns the tokens written to each split."""
    path, index, start, (val_start, test_start), state, out = job
    tokenizer = from_state(state)
    dtype = token_dtype(tokenizer.vocab_size)
    counts = dict.fromkeys(SPLITS, 0)
    position = start  # of the next character in the corpus
    with contextlib.ExitStack() as stack:
        files = {split: stack.enter_context(open(out / f"{index}.{split}.bin", "wb")) for split in SPLITS}

        def write(text: str, new_document: bool) -> None:
            nonlocal position
            for cut in (val_start, test_start):  # a chunk that straddles a split boundary is cut there
                if position < cut < position + len(text):
                    head, tail = text[: cut - position], text[cut - position :]
                    write(head, new_document)
                    return write(tail, False)
            split = SPLITS[(position >= val_start) + (position >= test_start)]
            if new_document and position not in (0, val_start, test_start):  # between documents; no split starts so
                ids = np.asarray(tokenizer.encode(SEPARATOR), dtype=dtype)
                ids.tofile(files[split])
                counts[split] += len(ids)
            ids = np.asarray(tokenizer.encode_array(text), dtype=dtype)
            ids.tofile(files[split])
            counts[split] += len(ids)
            position += len(text)

        for document in read_documents(path):
            for number, text in enumerate(chunks(document)):
                write(text, new_document=number == 0)
    return counts


def make_tokenizer(files: list[Path], surveys: list[tuple[int, int, np.ndarray]], val_start: int) -> Tokenizer:
    """The tokenizer of this corpus: its characters (and SEPARATOR's when it has several documents)."""
    codes = set(np.concatenate([seen for _, _, seen in surveys]).tolist())
    if sum(documents for documents, _, _ in surveys) > 1:
        codes |= set(map(ord, SEPARATOR))
    if len(codes) < 2:  # the model would learn to predict it at loss 0
        fail(f"the text is one character, {chr(min(codes))!r}, repeated: there is nothing to learn; use a real text")
    return Tokenizer("".join(map(chr, sorted(codes))))


def prepare(data_dir: Path, workers: int = 0) -> dict:
    """Tokenize the corpus into DATA_DIR/tokens/ unless it is there and current; returns its meta.json.
    `workers`: processes (0: one per CPU, at most one per file)."""
    source, tokens = data_dir / TEXT_FILE, data_dir / TOKENS
    if source.exists() and (meta := load_meta(data_dir, fingerprint(source, corpus_files(source)))):
        return meta  # read without the lock: finished token files never change (and a read-only folder may hold them)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with open(data_dir / f"{TOKENS}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one prepare at a time (parallel sweep trials share --data-dir)
            if not source.exists():
                download_shakespeare(source)
            files = corpus_files(source)
            # Taken before the files are read: a file that changes meanwhile is read again next time.
            sources = fingerprint(source, files)
            if meta := load_meta(data_dir, sources):
                return meta  # another process prepared it while this one waited for the lock
            for stale in data_dir.glob(f"{TOKENS}.*-*"):  # what a killed prepare left (the lock says none is running)
                shutil.rmtree(stale)
            temporary = data_dir / f"{TOKENS}.tmp-{os.getpid()}"
            temporary.mkdir()
            meta = {"settings": settings(), **tokenize_corpus(source, files, temporary, workers), "sources": sources}
            (temporary / "meta.json").write_text(json.dumps(meta))  # last: a folder without it is not finished
            if tokens.exists():  # out of the way first: a folder can only be renamed onto an empty one
                tokens.rename(data_dir / f"{TOKENS}.old-{os.getpid()}")
            temporary.rename(tokens)
            shutil.rmtree(data_dir / f"{TOKENS}.old-{os.getpid()}", ignore_errors=True)
    except OSError as error:  # a full disk, a read-only folder
        reason = error.strerror or error
        fail(
            f"cannot write the token files in {data_dir.resolve()}: {reason}; free space, or choose another --data-dir"
        )
    counts = ", ".join(f"{split} {n:,}" for split, n in meta["tokens"].items())
    print(f"Prepared {tokens}: {counts} tokens", flush=True)
    return meta


def tokenize_corpus(source: Path, files: list[Path], out: Path, workers: int) -> dict:
    """Survey the files (characters, documents), make the tokenizer, then tokenize each file; the files' token files
    are joined into OUT/SPLIT.bin. Returns what meta.json says of them."""
    if not workers:  # one per CPU: on Linux, those this process may run on (SLURM's share, taskset's)
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    pool = multiprocessing.get_context().Pool(min(workers, len(files))) if min(workers, len(files)) > 1 else None
    run = pool.imap if pool else map  # in the order of the files, whichever worker finishes first
    sizes = [path.stat().st_size for path in files]
    bar = tqdm(total=2 * sum(sizes), unit="B", unit_scale=True, desc="prepare", disable=None)  # read twice
    try:
        surveys = []
        for size, result in zip(sizes, run(survey, files)):
            surveys.append(result)
            bar.update(size)
        characters = np.cumsum([0] + [n for _, n, _ in surveys]).tolist()  # where each file starts in the corpus
        if characters[-1] == 0:
            fail(f"{source.resolve()} holds no text: there is nothing to train on")
        cuts = split_points(characters[-1])
        tokenizer = make_tokenizer(files, surveys, cuts[0])
        counts = dict.fromkeys(SPLITS, 0)
        jobs = [(path, i, characters[i], cuts, tokenizer.state(), out) for i, path in enumerate(files)]
        for size, written in zip(sizes, run(tokenize_file, jobs)):
            counts = {split: counts[split] + written[split] for split in SPLITS}
            bar.update(size)
    except CorpusError as error:
        bar.close()  # before the message, not across it
        fail(str(error))
    finally:
        bar.close()
        if pool:
            pool.terminate()
    for split in SPLITS:  # the files' parts, end to end in the corpus's order
        with open(out / f"{split}.bin", "wb") as joined:
            for i in range(len(files)):
                with open(out / f"{i}.{split}.bin", "rb") as part:
                    shutil.copyfileobj(part, joined, 16 << 20)
                (out / f"{i}.{split}.bin").unlink()
    return {
        "tokenizer": tokenizer.state(),
        "vocab_size": tokenizer.vocab_size,
        "dtype": token_dtype(tokenizer.vocab_size).name,
        "tokens": counts,
        "characters": characters[-1],
    }


def settings() -> dict:
    """What the token files depend on besides the corpus: other settings, other files."""
    return {"text_file": TEXT_FILE, "tokenizer": KIND, "train_fraction": TRAIN_FRACTION}


def fingerprint(source: Path, files: list[Path]) -> list[dict]:
    """Each corpus file's path, size and modification time: a corpus that changes changes these."""
    stats = [(path, path.stat()) for path in files]
    return [
        {
            "path": path.relative_to(source).as_posix() if path != source else path.name,
            "bytes": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
        }
        for path, stat in stats
    ]


def load_meta(data_dir: Path, sources: list[dict]) -> dict | None:
    """meta.json of DATA_DIR/tokens when its token files are complete and were made from `sources` (fingerprint()) with
    these settings; None when the corpus must be prepared (again)."""
    folder = data_dir / TOKENS
    try:
        meta = json.loads((folder / "meta.json").read_text())
        sizes = [(folder / f"{split}.bin").stat().st_size for split in SPLITS]
    except (OSError, ValueError):  # not prepared yet
        return None
    if meta.get("settings") != settings() or meta.get("sources") != sources:
        return None
    itemsize = np.dtype(meta["dtype"]).itemsize
    return meta if sizes == [meta["tokens"][split] * itemsize for split in SPLITS] else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data", help="the folder that holds [data] text_file (default: data)")
    parser.add_argument("--workers", type=int, default=0, help="processes that tokenize (default: one per CPU)")
    args = parser.parse_args()
    if args.workers < 0:
        fail(f"--workers {args.workers}: give a number of processes, or 0 for one per CPU")
    prepare(Path(args.data_dir), args.workers)


if __name__ == "__main__":
    main()
