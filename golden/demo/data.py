"""Data: MNIST-shaped synthetic images.

Images are held as uint8 and served a whole batch at a time, indexed
with a batch of indices; prepare_batch() converts and normalizes them on the device.
"""

import functools
import math
import random
from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler

from flags import fail  # data that cannot train ends as a bad flag does: one line, exit status 2

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
        _, indices = item
        return [self.images[indices], self.labels[indices]]

    def subset(self, indices: torch.Tensor) -> "InMemoryImages":
        return InMemoryImages(self.images[indices], self.labels[indices])


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


def make_datasets(dataset: str, seed: int) -> tuple[Dataset, Dataset, Dataset, dict]:
    """Train, validation and test sets, and what the model and predict.py need to know of the data (saved in
    checkpoints). The validation split depends only on the seed."""
    if dataset == "synthetic":
        images, labels = synthetic(SYNTHETIC_SAMPLES + SYNTHETIC_SAMPLES // 6, seed)
        (images, test_images), (labels, test_labels) = images.split(SYNTHETIC_SAMPLES), labels.split(SYNTHETIC_SAMPLES)
        classes = [str(label) for label in range(10)]
    else:
        raise SystemExit(f"unknown dataset {dataset!r}: choose synthetic")
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
    if images.is_cuda:  # convolutions run fastest on NHWC on the GPU (model.py puts the weights in that layout too)
        images = images.contiguous(memory_format=torch.channels_last)
    return [images, labels]


class EpochBatches(Sampler):
    """This process's batches of indices for one epoch, from batch `start` on, each with the seed of
    whatever is random in it (augmentation, sampled windows).

    Order and seeds are a function of (seed, epoch) alone, so a resumed run skips the batches it
    already trained on without loading them, and draws the same random numbers for the rest.
    """

    def __init__(self, size: int, batch_size: int, shuffle: bool, seed: int) -> None:
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return math.ceil(self.size / self.batch_size)

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=generator) if self.shuffle else torch.arange(self.size)
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
    """Whole batches on the device; `train`: shuffled."""
    return Batches(dataset, EpochBatches(len(dataset), batch_size, train, seed), device, train)
