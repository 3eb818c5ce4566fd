"""Data: MNIST (or synthetic images of the same shape).

Images are held as uint8 and served a whole batch at a time, indexed
with a batch of indices; prepare_batch() converts and normalizes them on the device.
"""

import functools
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

from flags import fail  # data that cannot train ends as a bad flag does: one line, exit status 2

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
IDX_LIMIT = 1 << 26  # bytes: MNIST's largest file holds 47 MB; a larger one (or a gzip bomb) is refused, not read whole
DOWNLOAD_TIMEOUT = 5  # seconds a server may take to accept a connection or to send the next bytes
# Per-channel mean and standard deviation of MNIST's training images, in [0, 1].
MEAN, STD = (0.1307,), (0.3081,)
IMAGE_SHAPE = (1, 28, 28)  # channels, height, width
SYNTHETIC_SAMPLES = 12000  # training + validation; the test set is a sixth as large
VAL_FRACTION = 0.1  # of the training set, held out for validation


class InMemoryImages(Dataset):
    """uint8 images and their labels, indexed with (batch seed, batch of indices)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, item: tuple[int, torch.Tensor]) -> list[torch.Tensor]:
        seed, indices = item
        if get_worker_info() is not None:
            # Seed the worker per batch: random augmentation added here depends only on the batch (its seed, and
            # its first sample, which differs between ranks), whatever the number of workers, and survives a resume.
            torch.manual_seed(seed + int(indices[0]))
            random.seed(seed + int(indices[0]))
        return [self.images[indices], self.labels[indices]]

    def subset(self, indices: torch.Tensor) -> "InMemoryImages":
        return InMemoryImages(self.images[indices], self.labels[indices])


def damaged(path: Path | str, problem: str) -> SystemExit:
    """The error for a data file that cannot be used: which file, what is wrong, what to do."""
    return SystemExit(f"{path} is damaged: {problem}. Delete it and run again to download it afresh.")


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
                    payload = response.read(IDX_LIMIT)  # no more: a wrong server could send without end
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


def read_idx(path: Path) -> torch.Tensor:
    """Read an IDX file (MNIST's format: 2 zero bytes, a type byte, the rank, big-endian sizes, raw data)."""
    if not path.is_file():  # open() would wait forever on a named pipe
        raise damaged(path, "it is not a regular file")
    gzipped = path.suffix == ".gz"
    try:
        with gzip.open(path) if gzipped else open(path, "rb") as file:
            raw = file.read(IDX_LIMIT + 1)  # no more: a gzip bomb would fill the memory
    except (OSError, EOFError, zlib.error) as error:  # not gzip data, cut short, or corrupt
        problem = f"it is not a whole gzip file ({error})" if gzipped else f"it cannot be read ({error.strerror})"
        raise damaged(path, problem) from None
    if len(raw) > IDX_LIMIT:
        unpacked = " once decompressed" if gzipped else ""
        raise damaged(path, f"it holds more than {IDX_LIMIT} bytes{unpacked}, where MNIST's largest file holds 47 MB")
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
    if not data:
        raise damaged(path, f"it holds no data (shape {shape})")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(shape)


def load_mnist(data_dir: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (uint8, N x 1 x 28 x 28) and labels of the "train" or "t10k" split."""
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
    return images.unsqueeze(1), labels.long()


def synthetic(num_samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 images of IMAGE_SHAPE: each of 10 classes is a fixed pattern under heavy noise."""
    generator = torch.Generator().manual_seed(seed)
    patterns = torch.randn(10, *IMAGE_SHAPE, generator=generator)
    labels = torch.randint(0, 10, (num_samples,), generator=generator)
    levels = 16 * patterns + 128  # grey levels: the pattern, 16 levels a unit, around mid-grey
    images = torch.empty(num_samples, *IMAGE_SHAPE, dtype=torch.uint8)
    for start in range(0, num_samples, 4096):  # a slice at a time: float temporaries of 4096 images, not all
        chunk = labels[start : start + 4096]
        noise = torch.randn(len(chunk), *IMAGE_SHAPE, generator=generator).mul_(64)  # 4 units of noise
        images[start : start + len(chunk)] = noise.add_(levels[chunk]).clamp_(0, 255)
    return images, labels


def make_datasets(dataset: str, data_dir: Path, seed: int) -> tuple[Dataset, Dataset, Dataset, dict]:
    """Train, validation and test sets, and what the model and predict.py need to know of the data (saved in
    checkpoints). The validation split depends only on the seed."""
    if dataset == "synthetic":
        images, labels = synthetic(SYNTHETIC_SAMPLES + SYNTHETIC_SAMPLES // 6, seed)
        (images, test_images), (labels, test_labels) = images.split(SYNTHETIC_SAMPLES), labels.split(SYNTHETIC_SAMPLES)
        classes = [str(label) for label in range(10)]
    elif dataset == "mnist":
        if not dist.is_initialized() or dist.get_rank() == 0:
            download_mnist(data_dir)
        if dist.is_initialized():
            dist.barrier()  # the other ranks wait for rank 0's download
        (images, labels), (test_images, test_labels) = load_mnist(data_dir, "train"), load_mnist(data_dir, "t10k")
        classes = [str(label) for label in range(10)]
    else:
        raise SystemExit(f"unknown dataset {dataset!r}: choose mnist or synthetic")
    train_set, val_set = split(InMemoryImages(images, labels), seed)
    return (
        train_set,
        val_set,
        InMemoryImages(test_images, test_labels),
        {"input_shape": list(IMAGE_SHAPE), "num_outputs": len(classes), "classes": classes},
    )


def split(data: InMemoryImages, seed: int) -> tuple[Dataset, Dataset]:
    """(training, validation): a random share of `data` held out, the same for a given seed."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    n_val = int(len(data) * VAL_FRACTION)
    if n_val == 0 and VAL_FRACTION > 0:  # else validation would find no batch, and the error would blame a flag
        fail(
            f"[data] val_fraction = {VAL_FRACTION} of {len(data)} images holds out none for validation: use more images, "
            "or set [data] val_size or a larger val_fraction in ltgen.toml "
            "and run ltgen regen (or edit VAL_FRACTION in data.py)."
        )
    return data.subset(order[n_val:]), data.subset(order[:n_val])


@functools.cache
def normalization(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """MEAN and STD in uint8 units, on `device`, shaped to broadcast over a batch: made once per device (a tensor
    made from a list on the GPU for every batch would wait for the GPU each time)."""
    return (255 * torch.tensor(MEAN).view(-1, 1, 1)).to(device), (255 * torch.tensor(STD).view(-1, 1, 1)).to(device)


def prepare_batch(batch: list[torch.Tensor], seed: int, train: bool) -> list[torch.Tensor]:
    """Finish a batch on its device: uint8 to float, normalized."""
    images, labels = batch
    mean, std = normalization(images.device)
    images = (images.float() - mean) / std
    return [images, labels]


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
    """A dataset's batches in the sampler's order, moved to the device and finished there by prepare_batch.
    Worker processes ([data] num_workers) assemble them; the device work stays in this process.
    """

    def __init__(
        self, dataset: Dataset, sampler: EpochBatches, device: torch.device, train: bool, num_workers: int
    ) -> None:
        self.sampler, self.device, self.train = sampler, device, train
        # Pinned and non_blocking on CUDA only: on an Apple GPU (MPS) such copies can read freed memory (pytorch#189690)
        self.pin_memory = device.type == "cuda"
        # batch_size=None: the sampler yields whole batches. A generator of its own keeps the loader from
        # drawing on the global random state, which a resumed run must find exactly as it was.
        self.loader = DataLoader(
            dataset,
            sampler=sampler,
            batch_size=None,
            pin_memory=self.pin_memory,
            generator=torch.Generator(),
            num_workers=num_workers,
            persistent_workers=True,
        )

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        # The sampler is a pure function of (seed, epoch): iterated beside the workers, it gives each batch's seed.
        for (seed, _), batch in zip(self.sampler, self.loader):
            yield prepare_batch([t.to(self.device, non_blocking=self.pin_memory) for t in batch], seed, self.train)


def make_loader(
    dataset: Dataset, batch_size: int, seed: int, device: torch.device, num_workers: int, train: bool
) -> Batches:
    """Whole batches on the device; `train`: shuffled, and padded to divide evenly across ranks."""
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    return Batches(
        dataset,
        EpochBatches(len(dataset), batch_size, train, seed, rank, world_size, pad=train),
        device,
        train,
        num_workers,
    )
