"""Predict the target of each row of a CSV file with a trained checkpoint.

    python predict.py ROWS.csv [--output preds.csv] [--checkpoint FILE] [--out-dir outputs]
                               [--batch-size N] [--device auto|cpu|cuda|mps]

ROWS.csv has a header row and every feature column the model was trained on (in any order; other columns,
the target among them, may be there too), read as train.py reads its file (data.py). Without --checkpoint, the
best checkpoint of the newest run in OUT_DIR is used (the first of the top-k list that train.py keeps). The features are standardized with the training statistics
stored in it. The output is the input CSV with a "prediction" column added (in the target's own
units), written to --output whole or not at all, or to stdout.
"""

import argparse
import csv
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import torch

import checkpoint
from data import read_columns, read_header, records, refuse_duplicates, utf8_error
from flags import choose_device, fail, integer, run, write_output
from model import build_model

MAX_BATCH_SIZE = 1 << 20  # rows the model takes at once, at most: a typo of extra digits is an error, not a crash


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "rows", type=Path, metavar="ROWS.csv", help="a CSV file with a header row and the feature columns"
    )
    parser.add_argument(
        "--checkpoint", type=Path, help="a checkpoint train.py saved (default: the best of the newest run in --out-dir)"
    )
    parser.add_argument("--out-dir", type=Path, default=Path("outputs"), help="train.py's --out-dir")
    parser.add_argument("--output", type=Path, help="the CSV file to write (default: stdout)")
    parser.add_argument(
        "--batch-size", type=integer(1, MAX_BATCH_SIZE), default=1024, help=f"rows at a time, 1 to {MAX_BATCH_SIZE}"
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    return parser.parse_args()


def read_features(path: Path, features: list[str]) -> tuple[torch.Tensor, str]:
    """The feature columns as numbers (float64, rows x features, in the model's order) and the file's delimiter;
    every missing or non-numeric feature value is reported with its line before exiting."""
    if not path.is_file():
        fail(
            f"{path}: no such file"
            if not path.exists()
            else f"{path} is not a regular file (a folder, or a named pipe)"
        )
    if error := utf8_error(path):  # checked whole: the output copies every column, read here or not
        fail(error)
    header, delimiter = read_header(path)
    missing = [name for name in features if name not in header]
    if missing:
        columns = "column" if len(missing) == 1 else "columns"
        fail(f"{path} lacks the feature {columns} {', '.join(map(repr, missing))} that the model was trained on")
    refuse_duplicates(header, features, path)
    columns = [header.index(name) for name in features]
    values, _ = read_columns(path, header, delimiter, columns, None, "every feature must be a number")
    return values, delimiter


@torch.no_grad()
def predict(model: torch.nn.Module, features: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """The model's outputs for standardized features (rows x features), a batch at a time, on the CPU."""
    outputs = [model(batch.to(device)).float().cpu() for batch in features.split(batch_size)]
    return torch.cat(outputs)


def write_rows(file: TextIO, path: Path, delimiter: str, new_columns: list[str], results: Iterator[list[str]]) -> None:
    """The input file's records, as read (blank lines left out), each with its results appended."""
    writer = csv.writer(file, delimiter=delimiter)
    with open(path, newline="", encoding="utf-8-sig") as rows:
        lines = records(rows, delimiter, path)
        _, header = next(lines)
        writer.writerow(header + new_columns)
        for (_, fields), result in zip(lines, results, strict=True):  # one result per row that was read
            writer.writerow(fields + result)


def main() -> None:
    args = parse_args()
    device = choose_device(args.device)
    state, path = checkpoint.for_inference(args.checkpoint, args.out_dir)
    data_info = state["data_info"]
    model = checkpoint.load_weights(build_model(data_info, device), state, path)

    features, delimiter = read_features(args.rows, data_info["features"])
    mean = torch.tensor(data_info["mean"], dtype=torch.float64)
    std = torch.tensor(data_info["std"], dtype=torch.float64)
    outputs = predict(model, features.sub_(mean).div_(std).float(), args.batch_size, device)
    predictions = (outputs.squeeze(1).double() * data_info["target_std"] + data_info["target_mean"]).tolist()
    new_columns = ["prediction"]
    results = ([f"{value:.7g}"] for value in predictions)  # made as the rows are written: no list of them all

    def write(file: TextIO) -> None:
        write_rows(file, args.rows, delimiter, new_columns, results)

    if args.output:
        write_output(args.output, write)
    else:
        write(sys.stdout)
    print(f"{len(outputs)} rows predicted with {path} (step {state.get('global_step', '?')})", file=sys.stderr)


if __name__ == "__main__":
    run(main)
