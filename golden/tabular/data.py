"""Data: the rows of a CSV file (regression of one column from the others), or synthetic rows.

The file has a header row; TARGET names the column to predict and every other column is a numeric feature.
Features are standardized with the mean and standard deviation of the training split, which are stored in
checkpoints (data_info) so that predict.py scales new rows the same. So is the target: the model predicts
it in those units, and predict.py turns predictions back into the target's own.
Rows are held as tensors and served a whole batch at a time.
"""

import csv
import difflib
import math
import random
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import Dataset, Sampler

from flags import fail  # a bad input file ends as a bad flag does: one message, exit status 2

CSV_FILE = "data.csv"  # [data] csv_file, in --data-dir
TARGET = "target"  # [data] target: the column to predict
REGRESSION = True  # [data] task = "regression"
VAL_FRACTION = 0.1  # [data] val_fraction: share of the rows held out for validation
TEST_FRACTION = VAL_FRACTION  # share of the rows held out for the test pass (as large as validation)
SYNTHETIC_SAMPLES = 12000  # [data] synthetic_samples: rows of --dataset synthetic (split as a file is)
SYNTHETIC_FEATURES = [f"x{i}" for i in range(8)]  # the columns of --dataset synthetic
MAX_REPORTED = 10  # bad values listed one by one; the rest are counted


class Rows(Dataset):
    """Standardized features and their targets, indexed with (batch seed, batch of indices)."""

    def __init__(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        self.features, self.targets = features, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, item: tuple[int, torch.Tensor]) -> list[torch.Tensor]:
        _, indices = item
        return [self.features[indices], self.targets[indices]]


def read_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header's column names and the (line number, fields) of each non-empty row."""
    if not path.is_file():
        fail(
            f"No {path}: put your CSV file there (a header row, then one row per sample), or point --data-dir or\n"
            "[data] csv_file at it; or train on generated rows with --dataset synthetic."
        )
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:  # -sig: a byte-order mark is not part of the header
            reader = csv.reader(file)
            header = next(reader, None)
            rows = [(reader.line_num, fields) for fields in reader if any(field.strip() for field in fields)]
    except UnicodeDecodeError as error:
        fail(f"{path} is not UTF-8 text ({error}); save it as UTF-8 CSV")
    except OSError as error:
        fail(f"cannot read {path}: {error.strerror}")
    except csv.Error as error:
        fail(f"{path} line {reader.line_num}: {error}")
    if not header:
        fail(f"{path} is empty: expected a header row naming the columns, then the rows")
    return [name.strip() for name in header], rows


def target_column(header: list[str], path: Path) -> int:
    """The index of the TARGET column in the header; a clear error naming the columns if it is not there."""
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        fail(f"{path}: the header names these columns more than once: {', '.join(map(repr, duplicates))}")
    if TARGET in header:
        return header.index(TARGET)
    close = [name for name in header if name.lower() == TARGET.lower()] or difflib.get_close_matches(
        TARGET, header, n=1
    )
    hint = f" Did you mean {close[0]!r}?" if close else ""
    fail(
        f"{path} has no column {TARGET!r} ([data] target).{hint}\n"
        f"Its columns: {', '.join(map(repr, header))}. Set [data] target in ltgen.toml and run ltgen regen "
        "(or edit TARGET in data.py)."
    )


def parse_rows(
    rows: list[tuple[int, list[str]]], header: list[str], target: int, path: Path
) -> tuple[list[list[float]], list[str]]:
    """Each row's features as numbers and its target as text; every missing or non-numeric value is reported
    (with its line and column) before exiting."""
    problems: list[str] = []
    features, targets = [], []
    for line, fields in rows:
        if len(fields) != len(header):
            problems.append(f"line {line}: {len(fields)} fields, where the header has {len(header)}")
            continue
        values = []
        for column, (name, field) in enumerate(zip(header, fields)):
            field = field.strip()
            if column == target and not REGRESSION:
                if not field:
                    problems.append(f"line {line}, column {name!r}: missing")
                continue
            if not field:
                problems.append(f"line {line}, column {name!r}: missing")
                continue
            try:
                value = float(field)
            except ValueError:
                problems.append(f"line {line}, column {name!r}: {field!r} is not a number")
                continue
            if not math.isfinite(value):
                problems.append(f"line {line}, column {name!r}: {field!r} is not a finite number")
            elif column != target:
                values.append(value)
        features.append(values)
        targets.append(fields[target].strip())
    if problems:
        shown = problems[:MAX_REPORTED]
        if len(problems) > MAX_REPORTED:
            shown.append(f"... and {len(problems) - MAX_REPORTED} more")
        fail(
            f"{path}: {len(problems)} bad value{'s' if len(problems) > 1 else ''} "
            "(every feature, and the target, must be a number; fix or delete these rows):\n  " + "\n  ".join(shown)
        )
    if not rows:
        fail(f"{path} has a header but no rows")
    return features, targets


def load_csv(path: Path) -> tuple[list[str], torch.Tensor, list[str]]:
    """Feature names, features (float64, rows x features) and the target column as text."""
    header, rows = read_csv(path)
    target = target_column(header, path)
    if len(header) < 2:
        fail(f"{path} has only the target column {TARGET!r}: there are no features to predict it from")
    features, targets = parse_rows(rows, header, target, path)
    names = [name for column, name in enumerate(header) if column != target]
    return names, torch.tensor(features, dtype=torch.float64), targets


def synthetic(num_rows: int, seed: int) -> tuple[list[str], torch.Tensor, list[str]]:
    """Random rows of SYNTHETIC_FEATURES on different scales, with a target that is a linear function of them:
    w.x plus a little noise."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.rand(len(SYNTHETIC_FEATURES), generator=generator, dtype=torch.float64) * 10
    offsets = torch.randn(len(SYNTHETIC_FEATURES), generator=generator, dtype=torch.float64) * 10
    unit = torch.randn(num_rows, len(SYNTHETIC_FEATURES), generator=generator, dtype=torch.float64)
    features = unit * scales + offsets
    weights = torch.randn(len(SYNTHETIC_FEATURES), generator=generator, dtype=torch.float64)
    targets = unit @ weights + 0.1 * torch.randn(num_rows, generator=generator, dtype=torch.float64)
    return SYNTHETIC_FEATURES, features, [repr(value) for value in targets.tolist()]


def split_sizes(num_rows: int) -> tuple[int, int]:
    """(validation rows, test rows); the rest train."""
    # At least one row each, so that a small file still validates (unless VAL_FRACTION is 0) and tests.
    n_val = max(int(num_rows * VAL_FRACTION), 1) if VAL_FRACTION > 0 else 0
    n_test = max(int(num_rows * TEST_FRACTION), 1)
    if n_val + n_test >= num_rows:
        fail(
            f"{num_rows} rows leave nothing to train on after {n_val} for validation and {n_test} for the test: "
            "use more rows, or lower [data] val_fraction in ltgen.toml "
            "(then ltgen regen) or VAL_FRACTION and TEST_FRACTION in data.py"
        )
    return n_val, n_test


def make_datasets(dataset: str, data_dir: Path, seed: int) -> tuple[Dataset, Dataset, Dataset, dict]:
    """Train, validation and test sets, and what the model and predict.py need to know of the data (saved in
    checkpoints). The rows are shuffled by the seed, then split: validation, test, and the rest to train."""
    if dataset == "synthetic":
        names, features, labels = synthetic(SYNTHETIC_SAMPLES, seed)
    elif dataset == "csv":
        names, features, labels = load_csv(data_dir / CSV_FILE)
    else:
        raise SystemExit(f"unknown dataset {dataset!r}: choose csv or synthetic")
    n_val, n_test = split_sizes(len(labels))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    val, test, train = order[:n_val], order[n_val : n_val + n_test], order[n_val + n_test :]
    # Statistics of the training rows only: nothing of the validation or test rows leaks into training.
    mean, std = features[train].mean(0), features[train].std(0, correction=0)
    std[std == 0] = 1.0  # a constant column stays 0 instead of dividing by zero
    features = ((features - mean) / std).float()
    info = {
        "input_shape": [len(names)],
        "features": names,
        "mean": mean.tolist(),
        "std": std.tolist(),
        "target": TARGET,
    }
    values = torch.tensor([float(label) for label in labels], dtype=torch.float64)
    target_mean, target_std = values[train].mean().item(), values[train].std(correction=0).item() or 1.0
    targets = ((values - target_mean) / target_std).float()
    info |= {"num_outputs": 1, "target_mean": target_mean, "target_std": target_std}
    about_target = f"mean {target_mean:.4g}, std {target_std:.4g} (val_loss and val_mae are in units of this std)"
    split = f"{len(train)} train, {n_val} val, {n_test} test"
    about = f"{dataset}: {len(labels)} rows of {len(names)} features ({split}); target {TARGET!r}: {about_target}"
    print(about)
    return (
        Rows(features[train], targets[train]),
        Rows(features[val], targets[val]),
        Rows(features[test], targets[test]),
        info,
    )


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
    """Whole batches on the device; `train`: shuffled."""
    return Batches(dataset, EpochBatches(len(dataset), batch_size, train, seed), device, train)
