"""The text task at scale: memory that does not grow with the corpus, and prepare.py's tokenizing speed.

1. Peak RSS of a short training run (a few steps of a tiny GPT, char tokenizer) on a generated 200 MB corpus against
   the same run on a 2 MB one (target: <= 1.10x). The token files are prepared first, in a separate process whose
   own peak RSS is reported too, so the training runs measure training alone.
2. prepare.py's tokens per second (--workers 1, and --workers 2) against a plain script, written here, that
   tokenizes the same files with the same tokenizer in one process, nanoGPT's way: each file read whole, encoded,
   appended to one .bin (target: >= 1.0x).

--quick: 20 MB and 0.2 MB corpora. Peak RSS is each process's own (os.wait4), with its waited-for children at most.
Prints one JSON object of results.

    python benchmarks/text_scale.py [--quick] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ltgen import place, render, spec

SPEC = {
    "data.dataset": "text",
    "data.text_file": "corpus",
    "data.tokenizer": "char",
    "data.block_size": 64,
    "data.batch_size": 16,
    "model.arch": "gpt",
    "model.n_layer": 2,
    "model.n_head": 2,
    "model.n_embd": 64,
    "logging.tensorboard": False,
    "logging.wandb": False,
    "logging.progress_bar": False,
    "sweep.enabled": False,
    "trainer.val_check_interval": 10,  # validation reads its windows too
}
TRAIN = ["--device", "cpu", "--max-steps", "20", "--num-sanity-val-steps", "0", "--limit-val-batches", "2"]
TRAIN += ["--limit-test-batches", "2"]
FILES = 8  # a corpus is this many .txt files of equal size
WORDS = ["the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "time", "person"]
WORDS += ["year", "way", "day", "thing", "man", "world", "life", "hand", "part", "child", "eye", "woman", "place"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# The anchor: the same tokenizer (tokenizer.py, from the prepared meta.json), one process, whole files.
PLAIN = """
import json, sys
from pathlib import Path
import numpy as np
import tokenizer

meta = json.loads(Path(sys.argv[1], "meta.json").read_text())
tok = tokenizer.from_state(meta["tokenizer"])
encode = getattr(tok, "encode_array", tok.encode)
count = 0
with open(sys.argv[2], "wb") as out:
    for index, path in enumerate(sorted(Path(sys.argv[3]).glob("*.txt"))):
        text = path.read_text(encoding="utf-8")
        ids = np.asarray(encode(tokenizer.SEPARATOR + text if index else text), dtype=meta["dtype"])
        ids.tofile(out)
        count += len(ids)
print(count)
"""


def measure(command: list[str], cwd: Path) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of a command run to its end; its failure ends the benchmark."""
    with tempfile.TemporaryFile() as output:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=ENV, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)  # the child's own rusage, not this process's
        wall = time.perf_counter() - start
        output.seek(0)
        text = output.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} (in {cwd}) failed:\n{text[-3000:]}")
    return wall, usage.ru_maxrss / 1024, text  # ru_maxrss is in KiB on Linux


def write_corpus(folder: Path, megabytes: float) -> int:
    """FILES text files of random sentences, `megabytes` in all; returns the bytes written."""
    folder.mkdir(parents=True)
    rng = random.Random(0)
    block = " ".join(rng.choice(WORDS) + ("." if rng.random() < 0.08 else "") for _ in range(200_000)) + "\n"
    per_file = int(megabytes * 1e6 / FILES)
    for index in range(FILES):
        with open(folder / f"part{index:02d}.txt", "w", encoding="utf-8") as file:
            written = 0
            while written < per_file:
                shift = rng.randrange(len(block))
                piece = (block[shift:] + block[:shift])[: per_file - written]
                file.write(piece)
                written += len(piece)
    return sum(path.stat().st_size for path in folder.iterdir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 MB and 0.2 MB corpora instead of 200 MB and 2 MB")
    parser.add_argument("--work", type=Path, help="a folder for the corpora and runs (default: a temporary one)")
    args = parser.parse_args()
    big_mb, small_mb = (20, 0.2) if args.quick else (200, 2)
    work = Path(tempfile.mkdtemp(prefix="text-scale-")) if args.work is None else args.work
    work.mkdir(parents=True, exist_ok=True)
    try:
        text = spec.with_values(spec.default_text("textscale"), SPEC)
        project = work / "textscale"
        shutil.rmtree(project, ignore_errors=True)
        place.write_new(render.render(spec.parse(text)), text, project)
        results: dict = {"quick": args.quick, "cpus": len(os.sched_getaffinity(0))}
        runs = {}
        for name, megabytes in (("big", big_mb), ("small", small_mb)):
            data = work / name
            shutil.rmtree(data, ignore_errors=True)
            size = write_corpus(data / "corpus", megabytes)
            prepare = [sys.executable, "prepare.py", "--data-dir", str(data), "--workers", "1"]
            prepare_s, prepare_mib, _ = measure(prepare, project)
            meta = json.loads((data / "tokens/meta.json").read_text())
            tokens = sum(meta["tokens"].values())
            out = work / f"out-{name}"
            shutil.rmtree(out, ignore_errors=True)
            train = [sys.executable, "train.py", *TRAIN, "--data-dir", str(data), "--out-dir", str(out)]
            _, train_mib, log = measure(train, project)
            assert "Prepared" not in log, "the token files were prepared beforehand"
            runs[name] = {"corpus_mb": size / 1e6, "tokens": tokens, "prepare_s": prepare_s}
            runs[name] |= {"prepare_peak_rss_mib": prepare_mib, "train_peak_rss_mib": train_mib}
        results["runs"] = runs
        results["train_rss_ratio"] = runs["big"]["train_peak_rss_mib"] / runs["small"]["train_peak_rss_mib"]
        results["train_rss_target"] = 1.10

        # 2: tokens per second on the big corpus, its tokenizer fixed by the first prepare.
        data, tokens = work / "big", runs["big"]["tokens"]
        plain_s, plain_mib, printed = measure(
            [sys.executable, "-c", PLAIN, str(data / "tokens"), str(work / "plain.bin"), str(data / "corpus")], project
        )
        assert int(printed.split()[-1]) == tokens, "the plain script tokenizes the same text"
        (work / "plain.bin").unlink()
        speeds = {"plain_s": plain_s, "plain_tokens_per_s": tokens / plain_s, "plain_peak_rss_mib": plain_mib}
        speeds["prepare_s"], speeds["prepare_workers2_s"] = runs["big"]["prepare_s"], None
        speeds["prepare_tokens_per_s"] = tokens / runs["big"]["prepare_s"]
        shutil.rmtree(data / "tokens")
        workers2_s, _, _ = measure([sys.executable, "prepare.py", "--data-dir", str(data), "--workers", "2"], project)
        speeds["prepare_workers2_s"] = workers2_s
        speeds["prepare_workers2_tokens_per_s"] = tokens / workers2_s
        speeds["ratio"] = speeds["prepare_tokens_per_s"] / speeds["plain_tokens_per_s"]
        speeds["ratio_workers2"] = speeds["prepare_workers2_tokens_per_s"] / speeds["plain_tokens_per_s"]
        speeds["target"] = 1.0
        results["prepare_speed"] = speeds
        print(json.dumps(results, indent=1))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
