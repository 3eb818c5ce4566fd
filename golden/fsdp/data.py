"""Data: windows of a token stream, from the corpus 'input.txt' in --data-dir (Tiny Shakespeare when it is missing),
tokenized once by prepare.py into token files read through memory maps, or from a generated text tokenized in memory
(--dataset synthetic).

The tokenizer (tokenizer.py) goes into every checkpoint (data_info), so sample.py encodes prompts the way training
did. The stream is split in order: the first 90% for training, the next 5% for validation and the last 5% for test
(nanoGPT's 90/10 split, its held-out part halved). Training samples are windows at random offsets, `[data]
samples_per_epoch` of them an epoch; validation and test read their part once, in consecutive windows.
"""

import math
import mmap
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

from prepare import SPLITS, TEXT_FILE, TOKENS, prepare, split_points, token_dtype
from tokenizer import Tokenizer

BLOCK_SIZE = 256  # [data] block_size: tokens of context the model sees
SAMPLES_PER_EPOCH = 32000  # [data] samples_per_epoch: random training windows that make an epoch
SYNTHETIC_CHARS = 200_000  # length of the generated text (--dataset synthetic)


class Tokens:
    """A token stream: a token file, mapped afresh for each batch, or an array in memory (--dataset synthetic).

    A map kept open would hold every page an epoch has read in the process's memory, up to the whole file; mapped
    per batch (as nanoGPT does), memory holds a batch's pages only, whatever the corpus size. The file stays open:
    token files prepared again meanwhile (for a changed corpus) are new files, and this run reads on in its own.
    """

    def __init__(self, tokens: Path | np.ndarray, dtype: np.dtype, length: int) -> None:
        self.tokens, self.dtype, self.length = tokens, dtype, length
        self.file = None  # the token file, open from the first batch on

    def __len__(self) -> int:
        return self.length

    def __getstate__(self) -> dict:
        return {**self.__dict__, "file": None}  # a worker process that is spawned, not forked, opens it again

    def windows(self, starts: torch.Tensor) -> list[torch.Tensor]:
        """[inputs, targets] (B x BLOCK_SIZE, int64) of the windows starting at `starts`: targets are the inputs
        shifted by one token. Only the batch is widened to int64."""
        offsets = starts.numpy()[:, None] + np.arange(BLOCK_SIZE + 1)
        if isinstance(self.tokens, np.ndarray):
            chunk = self.tokens[offsets].astype(np.int64)
        else:  # mmap and a view of it: half the time of an np.memmap (20 us against 40)
            self.file = self.file or open(self.tokens, "rb")  # noqa: SIM115 (open as long as self)
            with mmap.mmap(self.file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                tokens = np.frombuffer(mapped, dtype=self.dtype, count=self.length)
                chunk = tokens[offsets].astype(np.int64)  # a copy: the map can close
                del tokens  # no view may outlive the map
        return [torch.from_numpy(chunk[:, :-1]), torch.from_numpy(chunk[:, 1:])]


class RandomWindows(Dataset):
    """Training: windows of BLOCK_SIZE + 1 tokens at random offsets, `size` of them an epoch.

    A window is a function of (batch seed, index) alone: the batch seed draws one offset for every index of
    the epoch and the batch takes those of its indices (about 2 microseconds per thousand samples), so ranks
    that share a batch seed draw the windows one process would.
    """

    def __init__(self, tokens: Tokens, size: int) -> None:
        self.tokens, self.size = tokens, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, item: tuple[int, torch.Tensor]) -> list[torch.Tensor]:
        seed, indices = item
        generator = torch.Generator().manual_seed(seed)
        starts = torch.randint(len(self.tokens) - BLOCK_SIZE, (self.size,), generator=generator)[indices]
        return self.tokens.windows(starts)


class ConsecutiveWindows(Dataset):
    """Validation and test: the stream cut into consecutive, non-overlapping windows (the same every time)."""

    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens

    def __len__(self) -> int:
        return (len(self.tokens) - 1) // BLOCK_SIZE

    def __getitem__(self, item: tuple[int, torch.Tensor]) -> list[torch.Tensor]:
        _, indices = item
        return self.tokens.windows(indices * BLOCK_SIZE)


def synthetic_text(seed: int) -> str:
    """A generated text with structure to learn: sentences of subject, verb and object from small word lists,
    drawn with `seed` (a model that learns the words and the grammar gets well below the unigram loss)."""
    subjects = ["the cat", "a dog", "the old man", "my sister", "a small bird", "the king", "our teacher"]
    verbs = ["sees", "eats", "likes", "finds", "follows", "draws"]
    objects = ["the fish", "a red ball", "the moon", "some bread", "his horse", "an apple"]
    endings = [". ", ".\n", "! "]
    sentences = SYNTHETIC_CHARS // 20  # more than enough: sentences run 20 to 35 characters
    generator = torch.Generator().manual_seed(seed)
    picks = [
        torch.randint(len(words), (sentences,), generator=generator).tolist()
        for words in (subjects, verbs, objects, endings)
    ]
    text = "".join(f"{subjects[s].capitalize()} {verbs[v]} {objects[o]}{endings[e]}" for s, v, o, e in zip(*picks))
    return text[:SYNTHETIC_CHARS]


def in_memory(text: str) -> tuple[dict, dict[str, Tokens]]:
    """(the tokenizer's state and vocabulary size, the three splits) of a text tokenized in memory, as prepare.py
    tokenizes a corpus of one document."""
    cuts = split_points(len(text))
    parts = dict(zip(SPLITS, (text[: cuts[0]], text[cuts[0] : cuts[1]], text[cuts[1] :])))
    tokenizer = Tokenizer("".join(sorted(set(text))))
    dtype = token_dtype(tokenizer.vocab_size)
    splits = {}
    for split, part in parts.items():
        ids = np.asarray(tokenizer.encode(part), dtype=dtype)
        splits[split] = Tokens(ids, dtype, len(ids))
    return {"tokenizer": tokenizer.state(), "vocab_size": tokenizer.vocab_size}, splits


def token_files(data_dir: Path) -> tuple[dict, dict[str, Tokens]]:
    """(meta.json, the three splits) of the corpus's token files, prepared first when they are missing or
    stale (under DDP by rank 0, while the other ranks wait)."""
    if dist.is_initialized() and dist.get_rank() > 0:
        dist.barrier()  # rank 0 prepares first; the others then find its files (or, on a node of their own, make them)
    meta = prepare(data_dir)  # returns at once when the token files are current
    if dist.is_initialized() and dist.get_rank() == 0:
        dist.barrier()
    dtype = np.dtype(meta["dtype"])
    return meta, {split: Tokens(data_dir / TOKENS / f"{split}.bin", dtype, meta["tokens"][split]) for split in SPLITS}


def make_datasets(dataset: str, data_dir: Path, seed: int) -> tuple[Dataset, Dataset, Dataset, dict]:
    """Train, validation and test sets, and what the model and sample.py need to know of the data (saved in
    checkpoints). The split is by position in the text, the same for every seed."""
    if dataset == "synthetic":
        (meta, splits), source = in_memory(synthetic_text(seed)), "the generated text"
    elif dataset == "text":
        (meta, splits), source = token_files(data_dir), str(data_dir / TEXT_FILE)
    else:
        raise SystemExit(f"unknown dataset {dataset!r}: choose text or synthetic")
    shortest = min(len(splits["val"]), len(splits["test"]), len(splits["train"]))
    if shortest <= BLOCK_SIZE:
        total = sum(map(len, splits.values()))
        raise SystemExit(
            f"{source} holds {total} tokens: too few for [data] block_size = {BLOCK_SIZE}. Validation and "
            f"test get 5% of the text each and need a window of block_size + 1 tokens: use a text of at least "
            f"{20 * (BLOCK_SIZE + 1)} tokens, or a smaller block_size."
        )
    train_set = RandomWindows(splits["train"], SAMPLES_PER_EPOCH)
    val_set, test_set = ConsecutiveWindows(splits["val"]), ConsecutiveWindows(splits["test"])
    data_info = {
        "tokenizer": meta["tokenizer"],
        "block_size": BLOCK_SIZE,
        "input_shape": [BLOCK_SIZE],
        "num_outputs": meta["vocab_size"],
    }
    return train_set, val_set, test_set, data_info


class EpochBatches(Sampler):
    """This process's batches of indices for one epoch, from batch `start` on, each with the seed of
    whatever is random in it (augmentation, sampled windows).

    Order and seeds are a function of (seed, epoch) alone, so a resumed run skips the batches it
    already trained on without loading them, and draws the same random numbers for the rest. Under DDP each rank
    takes every world_size-th index; with `pad`, a few indices repeat so that every rank gets as many batches.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        pad: bool = False,
    ) -> None:
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.share = math.ceil(size / world_size) if pad else len(range(rank, size, world_size))
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return math.ceil(self.share / self.batch_size)

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=generator) if self.shuffle else torch.arange(self.size)
        order = order.repeat(2)[self.rank : self.rank + self.share * self.world_size : self.world_size]
        # Python's generator, seeded with a string (hashed the same in every process). Every rank draws the same
        # seeds: the random numbers of a batch are drawn for the whole global batch, so N ranks train on exactly
        # what one process with an N times larger batch would.
        batch_seeds = random.Random(f"{self.seed}/{self.epoch}")
        seeds = [batch_seeds.getrandbits(63) for _ in range(len(self))]
        for i in range(self.start, len(self)):
            yield seeds[i], order[i * self.batch_size : (i + 1) * self.batch_size]


class Batches:
    """A dataset's batches in the sampler's order, moved to the device.
    A DataLoader without workers, minus its per-batch bookkeeping (about 15 us a batch, 5% of a step for a
    tiny model on a CPU). For worker processes, set [data] num_workers in ltgen.toml.
    """

    def __init__(self, dataset: Dataset, sampler: EpochBatches, device: torch.device, train: bool) -> None:
        self.dataset, self.sampler, self.device, self.train = dataset, sampler, device, train
        # Pinned and non_blocking on CUDA only: on an Apple GPU (MPS) such copies can read freed memory (pytorch#189690)
        self.pin_memory = device.type == "cuda"

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        for seed, indices in self.sampler:
            batch = self.dataset[seed, indices]
            if self.pin_memory:
                batch = [t.pin_memory() for t in batch]
            yield [t.to(self.device, non_blocking=self.pin_memory) for t in batch]


def make_loader(dataset: Dataset, batch_size: int, seed: int, device: torch.device, train: bool) -> Batches:
    """Whole batches on the device; `train`: shuffled, and padded to divide evenly across ranks."""
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    return Batches(
        dataset, EpochBatches(len(dataset), batch_size, train, seed, rank, world_size, pad=train), device, train
    )
