"""Predict the classes of image files with a trained checkpoint.

    python predict.py PATH [PATH ...] [--checkpoint FILE] [--out-dir outputs] [--batch-size N] [--device auto|cpu|cuda] [--top N]

PATH is an image file or a folder, searched recursively for .png, .jpg and .jpeg files. Without --checkpoint, the
best checkpoint in OUT_DIR/checkpoints/ is used (the first of the top-k list that train.py keeps).
Each image is read with Pillow, converted to the model's channels, resized to its input size and normalized
by data.py's prepare_batch, as in validation. One line per image: its path, then the top classes and their
probabilities, separated by tabs. Unreadable files are reported on stderr and skipped.
"""

import argparse
import sys
from pathlib import Path

import torch

try:
    from PIL import Image
except ImportError:  # Pillow is only needed here, to read image files; training does not use it
    Image = None

import checkpoint
from data import prepare_batch
from model import build_model

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files, or folders of them")
    parser.add_argument(
        "--checkpoint", type=Path, help="a checkpoint train.py saved (default: the best in OUT_DIR/checkpoints)"
    )
    parser.add_argument("--out-dir", type=Path, default=Path("outputs"), help="train.py's --out-dir")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--top", type=int, default=1, help="how many classes to print per image, most probable first")
    args = parser.parse_args()
    if args.batch_size < 1 or args.top < 1:
        parser.error("--batch-size and --top must be >= 1")
    return args


def find_images(paths: list[Path]) -> list[Path]:
    """The files named, and the image files in the folders named (sorted)."""
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            raise SystemExit(f"{path}: no such file or folder")
    if not found:
        raise SystemExit(f"No image files ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, paths))}")
    return found


def read_image(path: Path, shape: list[int]) -> torch.Tensor:
    """An image file as uint8 (channels, height, width), converted and resized (bilinear, as data.py's images) to `shape`."""
    channels, height, width = shape
    with Image.open(path) as image:
        image = image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.Resampling.BILINEAR)
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return pixels.view(height, width, channels).permute(2, 0, 1)


def main() -> None:
    args = parse_args()
    if Image is None:
        raise SystemExit(
            "predict.py reads image files with Pillow, which is not installed: pip install pillow to read image files"
        )
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but no CUDA device is available")
    device = torch.device(
        "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    paths = find_images(args.paths)

    state, path = checkpoint.for_inference(args.checkpoint, args.out_dir / "checkpoints")
    data_info = state["data_info"]
    model = checkpoint.load_weights(build_model(data_info, device), state, path)
    classes, top = data_info["classes"], min(args.top, data_info["num_outputs"])
    print(f"Predicting {len(paths)} files with {path}", file=sys.stderr)

    skipped = 0
    for start in range(0, len(paths), args.batch_size):
        images, names = [], []
        for image_path in paths[start : start + args.batch_size]:
            try:
                images.append(read_image(image_path, data_info["input_shape"]))
                names.append(image_path)
            except (
                OSError,
                ValueError,
                SyntaxError,
                Image.DecompressionBombError,
            ) as error:  # not an image, cut short, too big
                print(f"warning: skipping {image_path}: {error}", file=sys.stderr)
                skipped += 1
        if not images:
            continue
        batch = [torch.stack(images).to(device), torch.zeros(len(images), dtype=torch.long, device=device)]
        inputs, _ = prepare_batch(batch, seed=0, train=False)  # converted and normalized as in validation
        with torch.inference_mode():
            probabilities, indices = model(inputs).float().softmax(dim=1).topk(top, dim=1)
        for image_path, p, i in zip(names, probabilities.tolist(), indices.tolist()):
            print("\t".join([str(image_path), *(f"{classes[c]}\t{q:.4f}" for c, q in zip(i, p))]))
    if skipped:
        print(f"{skipped} unreadable file{'s' if skipped > 1 else ''} skipped", file=sys.stderr)


if __name__ == "__main__":
    main()
