"""Data: MNIST-shaped synthetic data, held in memory and served a whole batch at a time.

Indexing the tensors with a batch of indices costs one gather per batch, where a
per-sample Dataset and collate would cost a Python call per sample.
"""

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler, TensorDataset

SYNTHETIC_SAMPLES = 12000  # training + validation; the test set is a sixth as large
VAL_FRACTION = 0.1  # of the training set, held out for validation


def synthetic(num_samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST-shaped random images: each of the 10 classes is a fixed pattern under heavy noise."""
    generator = torch.Generator().manual_seed(seed)
    patterns = torch.randn(10, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (num_samples,), generator=generator)
    return patterns[labels] + 4 * torch.randn(num_samples, 1, 28, 28, generator=generator), labels


def make_datasets(dataset: str, seed: int) -> tuple[Dataset, Dataset, Dataset]:
    """Train, validation and test sets. The validation split depends only on the seed."""
    if dataset == "synthetic":
        images, labels = synthetic(SYNTHETIC_SAMPLES + SYNTHETIC_SAMPLES // 6, seed)
        (images, test_images), (labels, test_labels) = images.split(SYNTHETIC_SAMPLES), labels.split(SYNTHETIC_SAMPLES)
    else:
        raise SystemExit(f"unknown dataset {dataset!r}: choose synthetic")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_val = int(len(labels) * VAL_FRACTION)
    val_indices, train_indices = order[:n_val], order[n_val:]
    return (
        TensorDataset(images[train_indices], labels[train_indices]),
        TensorDataset(images[val_indices], labels[val_indices]),
        TensorDataset(test_images, test_labels),
    )


class EpochBatches(Sampler):
    """This process's batches of indices for one epoch.

    The order is a function of (seed, epoch) alone.
    """

    def __init__(self, size: int, batch_size: int, shuffle: bool, seed: int) -> None:
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.size / self.batch_size)

    def __iter__(self) -> Iterator:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=generator) if self.shuffle else torch.arange(self.size)
        for i in range(len(self)):
            yield order[i * self.batch_size : (i + 1) * self.batch_size]


class BatchLoader:
    """Whole batches of an in-memory dataset, in the sampler's order: a DataLoader without workers, minus
    its per-batch bookkeeping (about 15 us a batch, 5% of a step for a tiny model on a CPU). For worker
    processes, set [data] num_workers in ltgen.toml: the loader becomes a DataLoader."""

    def __init__(self, dataset: TensorDataset, sampler: EpochBatches, pin_memory: bool) -> None:
        self.dataset, self.sampler, self.pin_memory = dataset, sampler, pin_memory

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        for indices in self.sampler:
            batch = self.dataset[indices]
            yield [t.pin_memory() for t in batch] if self.pin_memory else list(batch)


def make_loader(dataset: Dataset, batch_size: int, seed: int, device: torch.device, shuffle: bool) -> BatchLoader:
    """Whole batches."""
    batches = EpochBatches(len(dataset), batch_size, shuffle, seed)
    return BatchLoader(dataset, batches, pin_memory=device.type == "cuda")
