"""Data: the rows of a CSV file (regression of one column from the others), or synthetic rows.

The file has a header row; TARGET names the column to predict and every other column is a numeric feature.
Its delimiter is found in the header: a file saved with ";", tab or "|" reads as it was meant.
Features are standardized with the mean and standard deviation of the training split, which are stored in
checkpoints (data_info) so that predict.py scales new rows the same. So is the target: the model predicts
it in those units, and predict.py turns predictions back into the target's own.

pyarrow reads the file (read_columns says why); rows are held as tensors and served a whole batch at a time.
"""

import codecs
import csv
import difflib
import math
import random
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
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
DELIMITERS = ",;\t|"  # what may separate the columns: the one that splits the header into the most (first: ",")
MAX_REPORTED = 10  # bad values listed one by one; the rest are counted
Labels = tuple[torch.Tensor, list[str]]  # each row's index into a list of labels, and the list


class Rows(Dataset):
    """Standardized features and their targets, indexed with (batch seed, batch of indices)."""

    def __init__(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        self.features, self.targets = features, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, item: tuple[int, torch.Tensor]) -> list[torch.Tensor]:
        _, indices = item
        return [self.features[indices], self.targets[indices]]


def load_csv(path: Path) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Feature names, features (float64, rows x features) and the target (float64)."""
    if path.exists() and not path.is_file():
        fail(
            f"{path} is not a regular file (a folder, or a named pipe): point --data-dir or [data] csv_file at a CSV file"
        )
    if not path.is_file():
        fail(
            f"No {path}: put your CSV file there (a header row, then one row per sample), or point --data-dir or\n"
            "[data] csv_file at it; or train on generated rows with --dataset synthetic."
        )
    header, delimiter = read_header(path)
    if "" in header:  # every column but the target is a feature: one without a name is most likely a stray delimiter
        fail(
            f"{path}: column {header.index('') + 1} of the header has no name (a delimiter at the end of the line?): name it or remove it"
        )
    target = target_column(header, path)
    if len(header) < 2:
        fail(f"{path} has only the target column {TARGET!r}: there are no features to predict it from")
    features = [column for column in range(len(header)) if column != target]
    names = [header[column] for column in features]
    values, _ = read_columns(
        path,
        header,
        delimiter,
        features + [target],
        None,
        'every feature, and the target, must be a number; for a target of classes, set [data] task = "classification"',
    )
    return names, values[:, :-1], values[:, -1]


def target_column(header: list[str], path: Path) -> int:
    """The index of the TARGET column in the header; a clear error naming the columns if it is not there."""
    refuse_duplicates(header, header, path)
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


def read_header(path: Path) -> tuple[list[str], str]:
    """The column names of a CSV file (stripped; a byte-order mark is not part of them) and its delimiter: the one
    of DELIMITERS that splits the header line into the most columns, "," when none splits it."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            first = file.readline(1 << 20)
            delimiter = max(DELIMITERS, key=lambda d: len(next(csv.reader([first], delimiter=d), [])))
            file.seek(0)
            header = next((fields for _, fields in records(file, delimiter, path)), [])
    except UnicodeDecodeError:
        fail(utf8_error(path))
    except OSError as error:
        fail(f"cannot read {path}: {error.strerror}")
    if not header:
        fail(f"{path} is empty: expected a header row naming the columns, then the rows")
    return [name.strip() for name in header], delimiter


def records(file: TextIO, delimiter: str, path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each record with a non-blank field: the header, then the rows (blank lines are
    no rows)."""
    reader = csv.reader(file, delimiter=delimiter)
    try:
        for fields in reader:
            if any(field.strip() for field in fields):
                yield reader.line_num, fields
    except csv.Error as error:
        fail(f"{path} line {reader.line_num}: {error}")


def utf8_error(path: Path) -> str | None:
    """What is not UTF-8 in the file, naming the line of its first bad byte (a decoding reader reads ahead, so
    where it stopped does not say); None if the file is UTF-8 throughout."""
    decoder, line = codecs.getincrementaldecoder("utf-8")(), 1
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                line += error.object[: error.start].count(b"\n")
                return f"{path} line {line} is not UTF-8 text ({error.reason}); save it as UTF-8 CSV"
            line += chunk.count(b"\n")
    if decoder.getstate()[0]:
        return f"{path} is not UTF-8 text: it ends inside a character; save it as UTF-8 CSV"
    return None


def refuse_duplicates(header: list[str], used: list[str], path: Path) -> None:
    """Exit if a column the script reads is named twice in the header: which of the two is meant is not known."""
    duplicates = sorted({name for name in used if header.count(name) > 1})
    if duplicates:
        fail(f"{path}: the header names these columns more than once: {', '.join(map(repr, duplicates))}")


def read_columns(
    path: Path, header: list[str], delimiter: str, numeric: list[int], label: int | None, rule: str
) -> tuple[torch.Tensor, Labels | None]:
    """The `numeric` columns of a CSV file (float64, rows x columns, in that order) and, with a `label` column,
    each row's index into its distinct values (stripped) and those values; `rule` says what must be a number.

    pyarrow's reader parses the file in C++ on every core, straight into arrays of numbers: as fast as
    pandas.read_csv, at about the size of the numbers (Python lists of the rows took 18 times the file). Whatever
    it would not read as Python does (a missing or non-numeric value, nan, a ragged row, a quoted line break) sends
    the file to the careful reader, which reports every bad value with its line and column."""
    table = read_fast(path, len(header), delimiter, numeric, label)
    return table or read_careful(path, header, delimiter, numeric, label, rule)


def read_fast(
    path: Path, width: int, delimiter: str, numeric: list[int], label: int | None
) -> tuple[torch.Tensor, Labels | None] | None:
    """pyarrow's reader; None where the file needs the careful reader (or has no rows)."""
    names = [str(column) for column in range(width)]  # by position: names in the header may repeat or be blank
    types = {names[column]: pa.float64() for column in numeric}
    if label is not None:
        types[names[label]] = pa.dictionary(pa.int32(), pa.string())  # each row's index into the values it holds
    try:
        table = pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(column_names=names, skip_rows=1),
            parse_options=pa_csv.ParseOptions(delimiter=delimiter),
            # Nothing is read as missing ("NA", "null", ""): a missing value is an error to report with its line.
            convert_options=pa_csv.ConvertOptions(
                column_types=types,
                include_columns=list(types),
                null_values=[],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid:
        return None
    if table.num_rows == 0:
        return None
    num_rows, columns = table.num_rows, dict(zip(table.column_names, table.columns))
    del table  # each column is freed once copied: the table and its copy are never both whole
    values = torch.empty(len(numeric), num_rows, dtype=torch.float64)  # filled a column at a time
    for row, column in zip(values, numeric):
        start = 0
        for chunk in columns.pop(names[column]).chunks:
            numbers = values_of(chunk, np.float64)
            if not np.isfinite(numbers).all():
                return None
            np.copyto(row[start : start + len(numbers)].numpy(), numbers)
            start += len(numbers)
        pa.default_memory_pool().release_unused()  # else arrow's allocator keeps the freed column for itself
    if label is None:
        return values.T, None
    column = columns.pop(names[label]).unify_dictionaries()
    stripped = [text.strip() for text in column.chunk(0).dictionary.to_pylist()]
    if not all(stripped):
        return None  # a missing label: reported by the careful reader
    distinct: dict[str, int] = {}
    index = np.array([distinct.setdefault(text, len(distinct)) for text in stripped])
    codes, start = torch.empty(num_rows, dtype=torch.int64), 0
    for chunk in column.chunks:
        np.copyto(codes[start : start + len(chunk)].numpy(), index[values_of(chunk.indices, np.int32)])
        start += len(chunk)
    return values.T, (codes, list(distinct))


def values_of(array: pa.Array, dtype: type) -> np.ndarray:
    """The values of a pyarrow array without nulls, in place (its to_numpy() imports pandas where it is installed:
    a third of a second)."""
    return np.frombuffer(array.buffers()[1], dtype, len(array), array.offset * np.dtype(dtype).itemsize)


def read_careful(
    path: Path, header: list[str], delimiter: str, numeric: list[int], label: int | None, rule: str
) -> tuple[torch.Tensor, Labels | None]:
    """Python's csv module, row by row, into compact arrays: every ragged row and every missing or non-numeric
    value is reported with its line and column (MAX_REPORTED of them, the rest counted) before exiting."""
    values, codes, distinct = array("d"), array("q"), {}
    problems: list[str] = []  # the first MAX_REPORTED
    bad = rows = 0

    def report(problem: str) -> None:
        nonlocal bad
        bad += 1
        if len(problems) < MAX_REPORTED:
            problems.append(problem)

    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            lines = records(file, delimiter, path)
            next(lines)  # the header
            for line, fields in lines:
                rows += 1
                if len(fields) != len(header):
                    report(f"line {line}: {len(fields)} fields, where the header has {len(header)}")
                    continue
                for column in numeric:
                    text = fields[column].strip()
                    try:
                        values.append(float(text))
                    except ValueError:
                        report(
                            f"line {line}, column {header[column]!r}: "
                            + (f"{text!r} is not a number" if text else "missing")
                        )
                    else:
                        if not math.isfinite(values[-1]):
                            report(f"line {line}, column {header[column]!r}: {text!r} is not a finite number")
                if label is not None:
                    text = fields[label].strip()
                    if not text:
                        report(f"line {line}, column {header[label]!r}: missing")
                    codes.append(distinct.setdefault(text, len(distinct)))
    except UnicodeDecodeError:
        fail(utf8_error(path))
    if bad:
        more = [f"... and {bad - MAX_REPORTED} more"] if bad > MAX_REPORTED else []
        where = "" if delimiter == "," else f", in a file separated by {delimiter!r}"
        fail(
            f"{path}: {bad} bad value{'s' if bad > 1 else ''} ({rule}{where}; fix or delete these rows):\n  "
            + "\n  ".join(problems + more)
        )
    if not rows:
        fail(f"{path} has a header but no rows")
    table = torch.frombuffer(values, dtype=torch.float64).view(rows, len(numeric))
    return table, None if label is None else (torch.frombuffer(codes, dtype=torch.int64), list(distinct))


def synthetic(num_rows: int, seed: int) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Random rows of SYNTHETIC_FEATURES on different scales, with a target that is a linear function of them:
    w.x plus a little noise."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.rand(len(SYNTHETIC_FEATURES), generator=generator, dtype=torch.float64) * 10
    offsets = torch.randn(len(SYNTHETIC_FEATURES), generator=generator, dtype=torch.float64) * 10
    unit = torch.randn(num_rows, len(SYNTHETIC_FEATURES), generator=generator, dtype=torch.float64)
    features = unit * scales + offsets
    weights = torch.randn(len(SYNTHETIC_FEATURES), generator=generator, dtype=torch.float64)
    return (
        SYNTHETIC_FEATURES,
        features,
        unit @ weights + 0.1 * torch.randn(num_rows, generator=generator, dtype=torch.float64),
    )


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
        names, features, target = synthetic(SYNTHETIC_SAMPLES, seed)
    elif dataset == "csv":
        names, features, target = load_csv(data_dir / CSV_FILE)
    else:
        raise SystemExit(f"unknown dataset {dataset!r}: choose csv or synthetic")
    num_rows = len(features)
    n_val, n_test = split_sizes(num_rows)
    order = torch.randperm(num_rows, generator=torch.Generator().manual_seed(seed))
    val, test, train = order[:n_val], order[n_val : n_val + n_test], order[n_val + n_test :]
    # Statistics of the training rows only: nothing of the validation or test rows leaks into training.
    std, mean = torch.std_mean(features[train], dim=0, correction=0)
    std[std == 0] = 1.0  # a constant column stays 0 instead of dividing by zero
    if huge := [name for name, value in zip(names, std.tolist()) if not math.isfinite(value)]:
        fail(
            f"the values of {', '.join(map(repr, huge))} are too large to standardize (their variance overflows): rescale them"
        )
    features = features.sub_(mean).div_(std).float()  # in place: a large table is not copied twice more
    info = {
        "input_shape": [len(names)],
        "features": names,
        "mean": mean.tolist(),
        "std": std.tolist(),
        "target": TARGET,
    }
    target_std, target_mean = (value.item() for value in torch.std_mean(target[train], correction=0))
    if not target_std > 0 or not math.isfinite(target_std):  # a constant target, or one too large to standardize
        fail(
            f"the target column {TARGET!r} has a standard deviation of {target_std}: there is nothing to learn, or it needs rescaling"
        )
    targets = ((target - target_mean) / target_std).float()
    info |= {"num_outputs": 1, "target_mean": target_mean, "target_std": target_std}
    about_target = f"mean {target_mean:.4g}, std {target_std:.4g} (val_loss and val_mae are in units of this std)"
    split = f"{len(train)} train, {n_val} val, {n_test} test"
    about = f"{dataset}: {num_rows} rows of {len(names)} features ({split}); target {TARGET!r}: {about_target}"
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
    """Whole batches on the device; `train`: shuffled."""
    return Batches(dataset, EpochBatches(len(dataset), batch_size, train, seed), device, train)
