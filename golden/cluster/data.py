"""Data: MNIST (or MNIST-shaped synthetic data), held in memory and served a whole batch at a time.

Indexing the tensors with a batch of indices costs one gather per batch, where a
per-sample Dataset and collate would cost a Python call per sample.
"""

import gzip
import hashlib
import http.client
import math
import random
import struct
import sys
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MNIST_MD5 = {  # of the gzipped files the mirrors serve
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
DOWNLOAD_TIMEOUT = 5  # seconds a mirror may take to accept a connection or to send the next bytes
SYNTHETIC_SAMPLES = 12000  # training + validation; the test set is a sixth as large
VAL_FRACTION = 0.1  # of the training set, held out for validation


def find_mnist_file(data_dir: Path, name: str) -> Path | None:
    """The file `name` in data_dir, plain or gzipped."""
    return next((p for p in (data_dir / name, data_dir / f"{name}.gz") if p.exists()), None)


def download_mnist(data_dir: Path) -> None:
    """Download the MNIST files missing from data_dir, checking each against its MD5.

    A mirror that fails once is not tried again: offline, or behind a proxy that never answers, the
    download gives up after one short timeout per mirror instead of one per file and mirror.
    """
    missing = [name for name in MNIST_MD5 if find_mnist_file(data_dir, name) is None]
    failed, down = [], set()
    for name in missing:
        for mirror in MNIST_MIRRORS:
            if mirror in down:
                continue
            print(f"Downloading {name}.gz from {mirror}", flush=True)
            try:
                with urllib.request.urlopen(f"{mirror}{name}.gz", timeout=DOWNLOAD_TIMEOUT) as response:
                    payload = response.read()
            except (OSError, http.client.HTTPException) as error:
                problem = getattr(error, "reason", error)
            else:
                if hashlib.md5(payload).hexdigest() == MNIST_MD5[name]:
                    data_dir.mkdir(parents=True, exist_ok=True)
                    partial = data_dir / f"{name}.gz.part"
                    partial.write_bytes(payload)
                    partial.replace(data_dir / f"{name}.gz")
                    break
                problem = "the file fails its MD5 check"
            print(f"warning: {mirror} failed ({problem}); not trying it again", file=sys.stderr)
            down.add(mirror)
        else:
            failed.append(name)
    if failed:
        raise SystemExit(
            f"Could not download MNIST ({', '.join(failed)}) from {' or '.join(MNIST_MIRRORS)}.\n"
            f"Put the four files, gzipped or not, into {data_dir.resolve()}/: {', '.join(MNIST_MD5)}\n"
            "or train on generated data with --dataset synthetic."
        )


def damaged(path: Path, problem: str) -> SystemExit:
    """The error for a data file that cannot be used: which file, what is wrong, what to do."""
    return SystemExit(f"{path} is damaged: {problem}. Delete it and run again to download it afresh.")


def read_idx(path: Path) -> torch.Tensor:
    """Read an IDX file (MNIST's format: 2 zero bytes, a type byte, the rank, big-endian sizes, raw data)."""
    raw = path.read_bytes()
    if path.suffix == ".gz" and raw:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:  # not gzip data, cut short, or corrupt
            raise damaged(path, f"it is not a whole gzip file ({error})") from None
    if not raw:
        raise damaged(path, "it is empty")
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise damaged(path, "it is not an IDX file of unsigned bytes")
    rank = raw[3]
    if len(raw) < 4 + 4 * rank:
        raise damaged(path, f"its header is cut short ({len(raw)} bytes, where rank {rank} needs {4 + 4 * rank})")
    shape = struct.unpack(f">{rank}I", raw[4 : 4 + 4 * rank])
    data = raw[4 + 4 * rank :]
    if len(data) != math.prod(shape):
        raise damaged(path, f"{len(data)} bytes of data for shape {shape}")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(shape)


def load_mnist(data_dir: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (normalized, N x 1 x 28 x 28) and labels of the "train" or "t10k" split."""
    paths = {
        kind: find_mnist_file(data_dir, f"{split}-{kind}-idx{rank}-ubyte")
        for kind, rank in (("images", 3), ("labels", 1))
    }
    if None in paths.values():
        raise SystemExit(f"MNIST's {split} files are not in {data_dir.resolve()}/ (download_mnist fetches them)")
    images, labels = read_idx(paths["images"]), read_idx(paths["labels"])
    # A valid IDX file can still be the wrong one: check what the model and the loss expect.
    if images.shape[1:] != (28, 28):
        raise damaged(
            paths["images"],
            f"images of shape {tuple(images.shape)}, where MNIST's are N x 28 x 28 (as model.py expects)",
        )
    if labels.dim() != 1:
        raise damaged(paths["labels"], f"labels of shape {tuple(labels.shape)}, where MNIST's are one number per image")
    if (labels > 9).any():
        raise damaged(paths["labels"], f"label {int(labels.max())} where MNIST's labels are 0 to 9")
    if len(images) != len(labels):  # never train on a subset silently
        raise SystemExit(
            f"{paths['images']} holds {len(images)} images but {paths['labels']} holds {len(labels)} labels. "
            "Delete both and run again to download them afresh."
        )
    images = images.float().div_(255).sub_(MNIST_MEAN).div_(MNIST_STD).unsqueeze(1)
    return images, labels.long()


def synthetic(num_samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST-shaped random images: each of the 10 classes is a fixed pattern under heavy noise."""
    generator = torch.Generator().manual_seed(seed)
    patterns = torch.randn(10, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (num_samples,), generator=generator)
    return patterns[labels] + 4 * torch.randn(num_samples, 1, 28, 28, generator=generator), labels


class InMemoryDataset(Dataset):
    """Images and labels in memory, indexed with (seed, batch of indices)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, item: tuple[int, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        seed, indices = item
        if get_worker_info() is not None:
            # Seed a worker per batch: random augmentation added here depends only on
            # (seed, epoch, batch), whatever the number of workers, and survives a resume.
            torch.manual_seed(seed)
            random.seed(seed)
        return self.images[indices], self.labels[indices]


def make_datasets(dataset: str, data_dir: Path, seed: int) -> tuple[Dataset, Dataset, Dataset]:
    """Train, validation and test sets. The validation split depends only on the seed."""
    if dataset == "synthetic":
        images, labels = synthetic(SYNTHETIC_SAMPLES + SYNTHETIC_SAMPLES // 6, seed)
        (images, test_images), (labels, test_labels) = images.split(SYNTHETIC_SAMPLES), labels.split(SYNTHETIC_SAMPLES)
    elif dataset == "mnist":
        (images, labels), (test_images, test_labels) = load_mnist(data_dir, "train"), load_mnist(data_dir, "t10k")
    else:
        raise SystemExit(f"unknown dataset {dataset!r}: choose mnist or synthetic")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_val = int(len(labels) * VAL_FRACTION)
    val_indices, train_indices = order[:n_val], order[n_val:]
    return (
        InMemoryDataset(images[train_indices], labels[train_indices]),
        InMemoryDataset(images[val_indices], labels[val_indices]),
        InMemoryDataset(test_images, test_labels),
    )


class EpochBatches(Sampler):
    """This process's batches of indices for one epoch, from batch `start` on.

    The order is a function of (seed, epoch) alone, so a resumed run skips the batches it
    already trained on without loading them. Under DDP each rank takes every world_size-th
    index; with `pad`, a few indices repeat so that every rank gets as many batches.
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

    def __iter__(self) -> Iterator:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=generator) if self.shuffle else torch.arange(self.size)
        order = order.repeat(2)[self.rank : self.rank + self.share * self.world_size : self.world_size]
        seeds = torch.randint(2**62, (len(self), self.world_size), generator=generator)[:, self.rank].tolist()
        for i in range(self.start, len(self)):
            yield seeds[i], order[i * self.batch_size : (i + 1) * self.batch_size]


def make_loader(
    dataset: Dataset, batch_size: int, seed: int, device: torch.device, num_workers: int, shuffle: bool
) -> DataLoader:
    """Whole batches of this rank's share; the shuffled (training) set is padded to divide evenly across ranks."""
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    batches = EpochBatches(len(dataset), batch_size, shuffle, seed, rank, world_size, pad=shuffle)
    # batch_size=None: the sampler yields whole batches. A generator of its own keeps the loader
    # from drawing on the global random state, which a resumed run must find exactly as it was.
    return DataLoader(
        dataset,
        sampler=batches,
        batch_size=None,
        pin_memory=device.type == "cuda",
        generator=torch.Generator(),
        num_workers=num_workers,
        persistent_workers=True,
    )
