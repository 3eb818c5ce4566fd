"""Data: a character-level token stream from 'input.txt' in --data-dir (Tiny Shakespeare when it is missing),
or from a generated text (--dataset synthetic).

The vocabulary is the sorted set of the text's characters; it goes into every checkpoint (data_info), so
sample.py encodes prompts the way training did. The text is split in order: the first 90% for training,
the next 5% for validation and the last 5% for test (nanoGPT's 90/10 split, its held-out part halved).
Training samples are windows at random offsets, `[data] samples_per_epoch` of them an epoch; validation
and test read their part once, in consecutive windows.
"""

import hashlib
import http.client
import math
import random
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

from flags import fail  # a path that is no file ends as a bad flag does

TEXT_FILE = "input.txt"  # [data] text_file, in --data-dir
BLOCK_SIZE = 256  # [data] block_size: characters of context the model sees
SAMPLES_PER_EPOCH = 32000  # [data] samples_per_epoch: random training windows that make an epoch
TRAIN_FRACTION = 0.9  # the first 90% of the text trains; the rest is halved into validation and test
SYNTHETIC_CHARS = 200_000  # length of the generated text (--dataset synthetic)
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"  # of its 1115394 bytes
DOWNLOAD_TIMEOUT = 5  # seconds a server may take to accept a connection or to send the next bytes


class RandomWindows(Dataset):
    """Training: windows of BLOCK_SIZE + 1 tokens at random offsets, `size` of them an epoch.

    A window is a function of (batch seed, index) alone: the batch seed draws one offset for every index of
    the epoch and the batch takes those of its indices (about 2 microseconds per thousand samples), so ranks
    that share a batch seed draw the windows one process would.
    """

    def __init__(self, tokens: torch.Tensor, size: int) -> None:
        self.tokens, self.size = tokens, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, item: tuple[int, torch.Tensor]) -> list[torch.Tensor]:
        seed, indices = item
        generator = torch.Generator().manual_seed(seed)
        starts = torch.randint(len(self.tokens) - BLOCK_SIZE, (self.size,), generator=generator)[indices]
        return windows(self.tokens, starts)


class ConsecutiveWindows(Dataset):
    """Validation and test: the text cut into consecutive, non-overlapping windows (the same every time)."""

    def __init__(self, tokens: torch.Tensor) -> None:
        self.tokens = tokens

    def __len__(self) -> int:
        return (len(self.tokens) - 1) // BLOCK_SIZE

    def __getitem__(self, item: tuple[int, torch.Tensor]) -> list[torch.Tensor]:
        _, indices = item
        return windows(self.tokens, indices * BLOCK_SIZE)


def windows(tokens: torch.Tensor, starts: torch.Tensor) -> list[torch.Tensor]:
    """[inputs, targets] (B x BLOCK_SIZE, int64) of the windows starting at `starts`: targets are the inputs
    shifted by one character. The stream stays compact in memory; only the batch is widened."""
    chunk = tokens[starts[:, None] + torch.arange(BLOCK_SIZE + 1)].long()
    return [chunk[:, :-1], chunk[:, 1:]]


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


def read_text(path: Path) -> str:
    """The text of a UTF-8 file, without the byte order mark some editors put first; a clear error for anything else."""
    if path.is_dir():
        fail(f"{path.resolve()} is a folder: set [data] text_file to a UTF-8 text file in --data-dir")
    if path.exists() and not path.is_file():  # refused unopened: reading a named pipe or a device can block for ever
        fail(f"{path.resolve()} is not a regular file (a named pipe or a device): copy the text into a file")
    if not path.exists():
        raise SystemExit(
            f"{path.resolve()} not found: put your UTF-8 text there (or set [data] text_file), "
            "or train on generated text with --dataset synthetic"
        )
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")  # a BOM is no character of the text
    except UnicodeDecodeError as error:
        raise SystemExit(
            f"{path} is not UTF-8 text: byte {error.start} (0x{raw[error.start]:02x}) is {error.reason}. "
            "Convert it first, e.g. iconv -f latin1 -t utf-8"
        ) from None


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


def tokenize(text: str) -> tuple[str, torch.Tensor]:
    """(vocabulary, token stream): the sorted set of the text's characters, and each character's index in it,
    as the narrowest integer type that holds the vocabulary (one byte a character for up to 256)."""
    if not text:
        raise SystemExit("the text is empty: there is nothing to train on")
    code_points = torch.frombuffer(bytearray(text.encode("utf-32-le")), dtype=torch.int32)
    vocab, tokens = code_points.unique(sorted=True, return_inverse=True)
    if len(vocab) < 2:  # the model would learn to predict it at loss 0
        raise SystemExit(
            f"the text is one character, {chr(vocab[0])!r}, repeated: there is nothing to learn; use a real text"
        )
    dtype = torch.uint8 if len(vocab) <= 256 else torch.int16 if len(vocab) <= 2**15 else torch.int32
    return "".join(map(chr, vocab.tolist())), tokens.to(dtype)


def make_datasets(dataset: str, data_dir: Path, seed: int) -> tuple[Dataset, Dataset, Dataset, dict]:
    """Train, validation and test sets, and what the model and sample.py need to know of the data (saved in
    checkpoints). The split is by position in the text, the same for every seed."""
    if dataset == "synthetic":
        text, source = synthetic_text(seed), "the generated text"
    elif dataset == "text":
        path = data_dir / TEXT_FILE
        if not path.exists() and (not dist.is_initialized() or dist.get_rank() == 0):
            download_shakespeare(path)
        if dist.is_initialized():
            dist.barrier()  # the other ranks wait for rank 0's download
        text, source = read_text(path), str(path)
    else:
        raise SystemExit(f"unknown dataset {dataset!r}: choose text or synthetic")
    vocab, tokens = tokenize(text)
    n_train = int(len(tokens) * TRAIN_FRACTION)
    n_val = (len(tokens) - n_train) // 2
    if n_val <= BLOCK_SIZE:
        raise SystemExit(
            f"{source} holds {len(tokens)} characters: too few for [data] block_size = {BLOCK_SIZE}. Validation and "
            f"test get 5% of the text each and need a window of block_size + 1 characters: use a text of at least "
            f"{20 * (BLOCK_SIZE + 1)} characters, or a smaller block_size."
        )
    train_set = RandomWindows(tokens[:n_train], SAMPLES_PER_EPOCH)
    val_set = ConsecutiveWindows(tokens[n_train : n_train + n_val])
    test_set = ConsecutiveWindows(tokens[n_train + n_val :])
    data_info = {"vocab": vocab, "block_size": BLOCK_SIZE, "input_shape": [BLOCK_SIZE], "num_outputs": len(vocab)}
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
        self.pin_memory = device.type == "cuda"

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        for seed, indices in self.sampler:
            batch = self.dataset[seed, indices]
            if self.pin_memory:
                batch = [t.pin_memory() for t in batch]
            yield [t.to(self.device, non_blocking=True) for t in batch]


def make_loader(dataset: Dataset, batch_size: int, seed: int, device: torch.device, train: bool) -> Batches:
    """Whole batches on the device; `train`: shuffled, and padded to divide evenly across ranks."""
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    return Batches(
        dataset, EpochBatches(len(dataset), batch_size, train, seed, rank, world_size, pad=train), device, train
    )
