r"""Predict the classes of image files with a trained checkpoint.

    python predict.py PATH [PATH ...] [--checkpoint FILE] [--out-dir outputs] [--batch-size N] [--device auto|cpu|cuda|mps] [--top N]

PATH is an image file or a folder, searched at any depth for image files (.png, .jpg, .jpeg, .bmp, .gif, .webp, .tif).
Hidden names (starting with a dot) and anything that is not a regular file (a named pipe, a socket) are left out, and
said so on stderr. Without --checkpoint, the best checkpoint of the newest run in OUT_DIR is used (the first of the top-k list that train.py keeps).
Each image is read with Pillow, scaled to 8 bits (16-bit grey levels as 0-65535), converted to the model's channels,
resized to its input size and normalized by data.py's prepare_batch, as in validation. Unreadable files are reported
on stderr and skipped.

One line per image: its path, then the top classes and their probabilities, separated by tabs. A backslash, a tab,
a newline or another unprintable character in a path or a class name is written as a Python string escape (\\, \t,
\n, \x1b), so that each line stays one record of tab-separated fields.
"""

import argparse
import os
import sys
from pathlib import Path

import torch

try:
    from PIL import Image
except ImportError:  # Pillow is only needed here, to read image files; training does not use it
    raise SystemExit(
        "predict.py reads image files with Pillow, which is not installed: pip install pillow to read image files"
    ) from None

import checkpoint
from data import prepare_batch
from flags import choose_device, fail, integer, run
from model import build_model

IMAGE_SUFFIXES = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
)  # what Pillow reads (a GIF: its first frame)
# What Pillow raises on a file it cannot decode (a truncated file, a file that is not an image, a bomb).
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def image_files(folder: Path) -> list[Path]:
    """The image files in folder and in its subfolders at any depth, sorted. Hidden names (starting with ".":
    .ipynb_checkpoints/, .DS_Store) are left out, all said in one line; so is each file that is not a regular
    file (a named pipe, a socket, a device: open() could wait on it forever), without opening it, and each
    folder that cannot be listed. Links are followed, except to a folder that holds the link (a loop)."""
    found, hidden, others = [], [], []
    to_search = [(folder, {folder.resolve()})]  # a folder, and the real folders from `folder` down to it
    while to_search:
        root, chain = to_search.pop()
        try:
            with os.scandir(root) as listing:
                entries = list(listing)
        except OSError as error:
            print(f"warning: skipping {root}/: {error.strerror}", file=sys.stderr)
            continue
        for entry in entries:  # an entry knows its kind from the listing: no file is opened, most are not stat()ed
            path = root / entry.name
            if entry.name.startswith("."):
                hidden.append(path)
            elif entry.is_dir():
                real = path.resolve()
                if not any(seen.is_relative_to(real) for seen in chain):
                    to_search.append((path, chain | {real}))
            elif path.suffix.lower() in IMAGE_SUFFIXES:
                if entry.is_file():
                    found.append(path)
                else:
                    print(f"warning: skipping {path}: not a regular file", file=sys.stderr)
            else:
                others.append(path)
    if others:
        names = some([str(path.relative_to(folder)) for path in sorted(others)])
        print(f"{folder}/: ignoring files not named as images ({', '.join(IMAGE_SUFFIXES)}): {names}", file=sys.stderr)
    if hidden:
        names = some([str(path.relative_to(folder)) for path in sorted(hidden)])
        print(f"{folder}/: ignoring hidden files and folders (names that start with a dot): {names}", file=sys.stderr)
    return sorted(found)


def some(names: list[str], shown: int = 3) -> str:
    """The first few of `names`, and how many more: a warning stays one line."""
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def eight_bit(image: Image.Image) -> Image.Image:
    """`image` with grey levels deeper than 8 bits scaled to 0-255 (convert() would clip them at 255): integer
    modes (I;16, I;16B, I;16L, and I, which holds 16-bit PNGs too) are read as 0-65535, floating point (F) as 0-1."""
    if image.mode.startswith("I"):
        return image.convert("I").point(lambda level: level / 257 + 0.5).convert("L")  # + 0.5: round, not truncate
    if image.mode == "F":
        return image.point(lambda level: level * 255 + 0.5).convert("L")
    return image


def decode(path: Path, shape: tuple[int, ...] | list[int]) -> torch.Tensor:
    """An image file as uint8 (channels, height, width) of `shape`: scaled to 8 bits, converted to grey (1 channel)
    or RGB (3), then resized (bilinear, without keeping the aspect ratio)."""
    channels, height, width = shape
    with Image.open(path) as image:
        image = (
            eight_bit(image).convert("L" if channels == 1 else "RGB").resize((width, height), Image.Resampling.BILINEAR)
        )
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return pixels.view(height, width, channels).permute(2, 0, 1)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files, or folders of them")
    parser.add_argument(
        "--checkpoint", type=Path, help="a checkpoint train.py saved (default: the best of the newest run in --out-dir)"
    )
    parser.add_argument("--out-dir", type=Path, default=Path("outputs"), help="train.py's --out-dir")
    parser.add_argument("--batch-size", type=integer(1, 65536), default=64, help="images per forward pass, 1 to 65536")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    parser.add_argument(
        "--top",
        type=integer(1, 1000),
        default=1,
        help="how many classes to print per image, most probable first (1 to 1000)",
    )
    return parser.parse_args()


def find_images(paths: list[Path]) -> list[Path]:
    """The files named, and the image files in the folders named (sorted); a named file that is not a regular file
    is reported and skipped without opening it."""
    found = []
    for path in paths:
        if path.is_dir():
            found += image_files(path)
        elif path.is_file():
            found.append(path)
        elif path.exists():
            print(f"warning: skipping {escaped(str(path))}: not a regular file", file=sys.stderr)
        else:
            fail(f"{path}: no such file or folder")
    if not found:
        fail(f"No image files ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, paths))}")
    return found


def escaped(text: str) -> str:
    """`text` as one tab-separated field: a backslash and every unprintable character (tab, newline, a file name's
    undecodable bytes) written as Python writes them in a string literal."""
    return "".join(repr(c)[1:-1] if c == "\\" or not c.isprintable() else c for c in text)


def main() -> None:
    args = parse_args()
    device = choose_device(args.device)
    paths = find_images(args.paths)

    state, path = checkpoint.for_inference(args.checkpoint, args.out_dir)
    data_info = state["data_info"]
    model = checkpoint.load_weights(build_model(data_info, device), state, path)
    classes, top = [escaped(name) for name in data_info["classes"]], min(args.top, data_info["num_outputs"])
    print(f"Predicting {len(paths)} files with {path}", file=sys.stderr)

    skipped = 0
    for start in range(0, len(paths), args.batch_size):
        images, names = [], []
        for image_path in paths[start : start + args.batch_size]:
            try:
                images.append(decode(image_path, data_info["input_shape"]))
                names.append(escaped(str(image_path)))
            except UNREADABLE as error:  # not an image, cut short, too big
                print(f"warning: skipping {escaped(str(image_path))}: {error}", file=sys.stderr)
                skipped += 1
        if not images:
            continue
        batch = [torch.stack(images).to(device), torch.zeros(len(images), dtype=torch.long, device=device)]
        inputs, _ = prepare_batch(batch, seed=0, train=False)  # converted and normalized as in validation
        with torch.inference_mode():
            probabilities, indices = model(inputs).float().softmax(dim=1).topk(top, dim=1)
        for name, p, i in zip(names, probabilities.tolist(), indices.tolist()):
            print("\t".join([name, *(f"{classes[c]}\t{q:.4f}" for c, q in zip(i, p))]))
    if skipped:
        print(f"{skipped} unreadable file{'s' if skipped > 1 else ''} skipped", file=sys.stderr)


if __name__ == "__main__":
    run(main)
