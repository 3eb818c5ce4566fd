"""Data: CIFAR-10 (or synthetic images of the same shape).

Images are held as uint8 and served a whole batch at a time, indexed
with a batch of indices; prepare_batch() converts, augments and normalizes them on the device.
"""

import functools
import hashlib
import http.client
import io
import math
import pickle
import pickletools
import random
import tarfile
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

from flags import fail  # data that cannot train ends as a bad flag does: one line, exit status 2

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_BYTES = 170_498_071  # the archive's size: a server that sends more is cut off there
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
BATCH_LIMIT = 1 << 26  # bytes: an official batch file holds 31 MB; a larger one is refused before it is read
DOWNLOAD_TIMEOUT = 5  # seconds a server may take to accept a connection or to send the next bytes
# Per-channel mean and standard deviation of CIFAR-10's training images, in [0, 1].
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGE_SHAPE = (3, 32, 32)  # channels, height, width
AUGMENT = True  # [data] augment: random crops (4 pixels of zero padding) and horizontal flips in training
SYNTHETIC_SAMPLES = 12000  # training + validation; the test set is a sixth as large
VAL_FRACTION = 0.1  # of the training set, held out for validation


class InMemoryImages(Dataset):
    """uint8 images and their labels, indexed with (batch seed, batch of indices)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, item: tuple[int, torch.Tensor]) -> list[torch.Tensor]:
        _, indices = item
        return [self.images[indices], self.labels[indices]]

    def subset(self, indices: torch.Tensor) -> "InMemoryImages":
        return InMemoryImages(self.images[indices], self.labels[indices])


def damaged(path: Path | str, problem: str) -> SystemExit:
    """The error for a data file that cannot be used: which file, what is wrong, what to do."""
    return SystemExit(f"{path} is damaged: {problem}. Delete it and run again to download it afresh.")


def download_cifar10(data_dir: Path) -> None:
    """Download cifar-10-python.tar.gz into data_dir, unless it (or its extracted folder) is there; check its MD5."""
    archive = data_dir / "cifar-10-python.tar.gz"
    if archive.exists() or (data_dir / "cifar-10-batches-py").is_dir():
        return
    print(f"Downloading {archive.name} (163 MB) from {CIFAR10_URL}", flush=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    partial, md5 = archive.with_name(archive.name + ".part"), hashlib.md5()
    try:
        with urllib.request.urlopen(CIFAR10_URL, timeout=DOWNLOAD_TIMEOUT) as response, open(partial, "wb") as file:
            while (chunk := response.read(1 << 20)) and file.tell() <= CIFAR10_BYTES:
                md5.update(chunk)
                file.write(chunk)
    except (OSError, http.client.HTTPException) as error:
        partial.unlink(missing_ok=True)
        raise SystemExit(
            f"Could not download CIFAR-10 from {CIFAR10_URL} ({getattr(error, 'reason', error)}).\n"
            f"Put cifar-10-python.tar.gz, or the cifar-10-batches-py/ folder it holds, into {data_dir.resolve()}/\n"
            "or train on generated data with --dataset synthetic."
        ) from None
    if md5.hexdigest() != CIFAR10_MD5:
        partial.unlink()
        raise SystemExit(f"The download from {CIFAR10_URL} fails its MD5 check; run again to retry.")
    partial.replace(archive)


class BatchUnpickler(pickle.Unpickler):
    """Reads a CIFAR-10 batch: a dict of numpy arrays, lists and bytes. A pickle may name any function to call
    while it loads; this one may only make numpy arrays the way numpy pickles them: an empty array (its
    _reconstruct), then filled from bytes the file holds. An array of any other shape could be as large as the
    file declares, not as it is."""

    RECONSTRUCT = frozenset({("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")})

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self.RECONSTRUCT:
            return self.empty_array
        if (module, name) == ("numpy", "ndarray"):
            return "ndarray"  # only an argument of _reconstruct: called, it is a TypeError
        if (module, name) == ("numpy", "dtype"):
            return numpy.dtype
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR-10 batch never does")

    @staticmethod
    def empty_array(kind: str, shape: tuple, dtype: bytes) -> numpy.ndarray:
        if kind != "ndarray" or shape != (0,):
            raise pickle.UnpicklingError(
                f"it makes an array of shape {shape}: numpy's pickles make an empty one and fill it"
            )
        return numpy.ndarray(shape, numpy.dtype(dtype))


def read_cifar10_batch(file, size: int, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (uint8, N x 3 x 32 x 32) and labels of one pickled batch, `size` bytes read from `file`; `where`
    names it in errors."""
    if size > BATCH_LIMIT:  # a damaged size, or a decompression bomb in the tarball
        raise damaged(where, f"it holds {size} bytes, where a CIFAR-10 batch holds about 31 MB")
    raw = file.read()
    try:
        # A first pass checks every length the pickle declares against the bytes it holds: the loader would
        # allocate a declared 2**44-byte string before finding that the file is much shorter.
        for _ in pickletools.genops(raw):
            pass
        batch = BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
        data, labels = batch[b"data"], batch[b"labels"]
    except (pickle.UnpicklingError, EOFError, KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        raise damaged(where, f"not a CIFAR-10 batch ({error})") from None
    labels = labels.tolist() if isinstance(labels, numpy.ndarray) else labels
    if not isinstance(labels, list):
        raise damaged(where, f"its labels are a {type(labels).__name__}, not a list")
    # torch.tensor(labels, dtype=torch.long) would silently truncate a label of 2.7 to 2.
    if (bad := next((i for i, label in enumerate(labels) if type(label) is not int), None)) is not None:
        raise damaged(where, f"label {bad} is {labels[bad]!r}, where CIFAR-10's labels are whole numbers 0 to 9")
    if labels and not 0 <= min(labels) <= max(labels) <= 9:
        raise damaged(where, f"label {max(labels) if max(labels) > 9 else min(labels)} where CIFAR-10's are 0 to 9")
    if not isinstance(data, numpy.ndarray) or data.dtype != numpy.uint8 or data.shape != (len(labels), 3 * 32 * 32):
        raise damaged(where, f"its data is not {len(labels)} rows of 3072 bytes")
    return torch.from_numpy(data.copy()).view(-1, 3, 32, 32), torch.tensor(labels, dtype=torch.long)


def load_cifar10(data_dir: Path) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(train images, labels), (test images, labels), from cifar-10-batches-py/ or else the tarball."""
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    folder, archive = data_dir / "cifar-10-batches-py", data_dir / "cifar-10-python.tar.gz"
    batches = []
    if folder.is_dir():
        for path in (folder / name for name in names):
            if not path.is_file():  # missing, or not a regular file: open() would wait forever on a named pipe
                raise SystemExit(
                    f"{folder}/ has no file {path.name}: put back the whole folder, or delete it to download it afresh."
                )
            try:
                with open(path, "rb") as file:
                    batches.append(read_cifar10_batch(file, path.stat().st_size, str(path)))
            except OSError as error:
                raise damaged(path, f"it cannot be read ({error.strerror})") from None
    elif not archive.is_file():
        raise SystemExit(f"{archive} is not a regular file: delete it, and run again to download the archive.")
    else:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for name in names:
                    member = tar.getmember(f"cifar-10-batches-py/{name}")
                    if not member.isfile():
                        raise KeyError(f"{name} is not a file")
                    batches.append(read_cifar10_batch(tar.extractfile(member), member.size, f"{archive}: {name}"))
        except (tarfile.TarError, OSError, EOFError, KeyError, zlib.error) as error:  # zlib.error: a corrupt gzip block
            raise damaged(archive, f"not the whole CIFAR-10 archive ({error})") from None
    images, labels = (torch.cat(parts) for parts in zip(*batches[:5]))
    return (images, labels), batches[5]


def synthetic(num_samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 images of IMAGE_SHAPE: each of 10 classes is a fixed pattern under heavy noise."""
    generator = torch.Generator().manual_seed(seed)
    # Smooth patterns, symmetric left to right, so that random crops and flips keep them recognizable.
    coarse = torch.randn(10, IMAGE_SHAPE[0], 4, 4, generator=generator)
    patterns = torch.nn.functional.interpolate(coarse, size=IMAGE_SHAPE[1:], mode="bilinear", align_corners=False)
    patterns = patterns + patterns.flip(-1)
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
    elif dataset == "cifar10":
        if not dist.is_initialized() or dist.get_rank() == 0:
            download_cifar10(data_dir)
        if dist.is_initialized():
            dist.barrier()  # the other ranks wait for rank 0's download
        (images, labels), (test_images, test_labels) = load_cifar10(data_dir)
        classes = CIFAR10_CLASSES
    else:
        raise SystemExit(f"unknown dataset {dataset!r}: choose cifar10 or synthetic")
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
    """Finish a batch on its device: uint8 to float, normalized; in training, augmented with random numbers from `seed`."""
    images, labels = batch
    if train and AUGMENT:
        images = augment(images, seed)
    mean, std = normalization(images.device)
    images = (images.float() - mean) / std
    if images.is_cuda:  # convolutions run fastest on NHWC on the GPU (model.py puts the weights in that layout too)
        images = images.contiguous(memory_format=torch.channels_last)
    return [images, labels]


def augment(images: torch.Tensor, seed: int) -> torch.Tensor:
    """The standard CIFAR augmentation, for a whole batch at once: a random crop of the image padded by 4
    pixels of zeros, and a horizontal flip with probability 1/2. The random numbers come from the batch's seed,
    drawn on the CPU for the whole global batch (this rank takes its share), so a batch is augmented the same on any
    device and any number of ranks, and after a resume."""
    n, _, height, width = images.shape
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    generator = torch.Generator().manual_seed(seed)
    # non_blocking on CUDA: a copy from the CPU that does not wait for the GPU to finish its queue (on an Apple GPU
    # it could read these temporaries after they are freed).
    shifts = torch.randint(0, 9, (n * world_size, 2), generator=generator)[rank::world_size].to(
        images.device, non_blocking=images.is_cuda
    )
    flips = (torch.rand(n * world_size, generator=generator) < 0.5)[rank::world_size].to(
        images.device, non_blocking=images.is_cuda
    )
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    rows = (shifts[:, 0:1] + torch.arange(height, device=images.device)).view(n, 1, height, 1)
    cols = (shifts[:, 1:2] + torch.arange(width, device=images.device)).view(n, 1, 1, width)
    cols = torch.where(flips.view(n, 1, 1, 1), cols.flip(3), cols)
    batch = torch.arange(n, device=images.device).view(n, 1, 1, 1)
    channels = torch.arange(images.shape[1], device=images.device).view(1, -1, 1, 1)
    return padded[batch, channels, rows, cols]


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
            yield prepare_batch([t.to(self.device, non_blocking=self.pin_memory) for t in batch], seed, self.train)


def make_loader(dataset: Dataset, batch_size: int, seed: int, device: torch.device, train: bool) -> Batches:
    """Whole batches on the device; `train`: shuffled and augmented, and padded to divide evenly across ranks."""
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    return Batches(
        dataset, EpochBatches(len(dataset), batch_size, train, seed, rank, world_size, pad=train), device, train
    )
