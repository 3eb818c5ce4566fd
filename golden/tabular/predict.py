"""Predict the target of each row of a CSV file with a trained checkpoint.

    python predict.py ROWS.csv [--output preds.csv] [--checkpoint FILE] [--out-dir outputs]
                               [--batch-size N] [--device auto|cpu|cuda]

ROWS.csv has a header row and every feature column the model was trained on (in any order; other columns,
the target among them, may be there too). Without --checkpoint, the best checkpoint in OUT_DIR/checkpoints/ is
used (the first of the top-k list that train.py keeps). The features are standardized with the training statistics
stored in it. The output is the input CSV with a "prediction" column added (in the target's own
units), written to --output, or to stdout.
"""

import argparse
import csv
import math
import sys
from pathlib import Path

import torch

import checkpoint
from flags import fail
from model import build_model

MAX_REPORTED = 10  # bad values listed one by one; the rest are counted


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "rows", type=Path, metavar="ROWS.csv", help="a CSV file with a header row and the feature columns"
    )
    parser.add_argument(
        "--checkpoint", type=Path, help="a checkpoint train.py saved (default: the best in OUT_DIR/checkpoints)"
    )
    parser.add_argument("--out-dir", type=Path, default=Path("outputs"), help="train.py's --out-dir")
    parser.add_argument("--output", type=Path, help="the CSV file to write (default: stdout)")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = parser.parse_args()
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    return args


def read_rows(path: Path, features: list[str]) -> tuple[list[str], list[list[str]], torch.Tensor]:
    """The header, the rows as text, and the feature columns as numbers (float64, rows x features, in the
    model's order); every missing or non-numeric feature value is reported with its line before exiting."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            header = next(reader, None)
            rows = [(reader.line_num, fields) for fields in reader if any(field.strip() for field in fields)]
    except FileNotFoundError:
        fail(f"{path}: no such file")
    except UnicodeDecodeError as error:
        fail(f"{path} is not UTF-8 text ({error}); save it as UTF-8 CSV")
    except OSError as error:
        fail(f"cannot read {path}: {error.strerror}")
    except csv.Error as error:
        fail(f"{path} line {reader.line_num}: {error}")
    if not header:
        fail(f"{path} is empty: expected a header row naming the columns, then the rows")
    names = [name.strip() for name in header]
    missing = [name for name in features if name not in names]
    if missing:
        columns = "column" if len(missing) == 1 else "columns"
        fail(f"{path} lacks the feature {columns} {', '.join(map(repr, missing))} that the model was trained on")
    columns = [names.index(name) for name in features]
    problems: list[str] = []
    values = []
    for line, fields in rows:
        if len(fields) != len(header):
            problems.append(f"line {line}: {len(fields)} fields, where the header has {len(header)}")
            continue
        row = []
        for name, column in zip(features, columns):
            field = fields[column].strip()
            try:
                value = float(field) if field else math.nan
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                problems.append(
                    f"line {line}, column {name!r}: " + (f"{field!r} is not a number" if field else "missing")
                )
            row.append(value)
        values.append(row)
    if problems:
        shown = problems[:MAX_REPORTED] + (
            [f"... and {len(problems) - MAX_REPORTED} more"] if len(problems) > MAX_REPORTED else []
        )
        fail(
            f"{path}: {len(problems)} bad value{'s' if len(problems) > 1 else ''} (every feature must be a number):\n  "
            + "\n  ".join(shown)
        )
    if not rows:
        fail(f"{path} has a header but no rows")
    return header, [fields for _, fields in rows], torch.tensor(values, dtype=torch.float64)


@torch.no_grad()
def predict(model: torch.nn.Module, features: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """The model's outputs for standardized features (rows x features), a batch at a time, on the CPU."""
    outputs = [model(batch.to(device)).float().cpu() for batch in features.split(batch_size)]
    return torch.cat(outputs)


def main() -> None:
    args = parse_args()
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but no CUDA device is available")
    device = torch.device("cuda" if use_cuda else "cpu")
    state, path = checkpoint.for_inference(args.checkpoint, args.out_dir / "checkpoints")
    data_info = state["data_info"]
    model = checkpoint.load_weights(build_model(data_info, device), state, path)

    header, rows, features = read_rows(args.rows, data_info["features"])
    mean, std = torch.tensor(data_info["mean"], dtype=torch.float64), torch.tensor(
        data_info["std"], dtype=torch.float64
    )
    outputs = predict(model, ((features - mean) / std).float(), args.batch_size, device)
    predictions = (outputs.squeeze(1).double() * data_info["target_std"] + data_info["target_mean"]).tolist()
    new_columns = ["prediction"]
    results = [[f"{value:.7g}"] for value in predictions]

    table = [header + new_columns] + [fields + result for fields, result in zip(rows, results)]
    if args.output:
        with open(args.output, "w", newline="", encoding="utf-8") as file:
            csv.writer(file).writerows(table)
    else:
        csv.writer(sys.stdout).writerows(table)
    print(f"{len(rows)} rows predicted with {path} (step {state.get('global_step', '?')})", file=sys.stderr)


if __name__ == "__main__":
    main()
