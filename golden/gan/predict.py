"""Generate images with a trained GAN checkpoint's generator.

    python predict.py [--count 64] [--output generated] [--seed 0] [--checkpoint PATH] [--out-dir outputs] [--device auto|cpu|cuda|mps]

Writes OUTPUT/0000.png, 0001.png, ... (--count images) and OUTPUT/grid.png, all of them in one picture, each
whole or not at all (a failed write leaves the file as it was). Without
--checkpoint, the newest checkpoint of the newest run in OUT_DIR is used. The same --seed gives the same images.
"""

import argparse
import sys
from pathlib import Path

import torch

import checkpoint
import flags
from model import build_model
from steps import sample_images, sample_latent, save_grid


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=flags.integer(1, 100_000), default=64, help="how many images to generate")
    parser.add_argument(
        "--output", type=Path, default=Path("generated"), help="the folder to write them to (made if missing)"
    )
    parser.add_argument(
        "--seed", type=flags.integer(0), default=0, help="seeds the noise the images are generated from"
    )
    parser.add_argument(
        "--checkpoint",
        type=flags.existing("file"),
        help="a checkpoint train.py saved (default: the newest of the newest run in --out-dir)",
    )
    parser.add_argument("--out-dir", type=Path, default=Path("outputs"), help="train.py's --out-dir")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    args = parser.parse_args()
    if not flags.is_folder_path(args.output):
        parser.error(f"argument --output: {args.output} is a file, or under one: name a folder")
    return args


def main() -> None:
    args = parse_args()
    device = flags.choose_device(args.device)
    state, path = checkpoint.for_inference(args.checkpoint, args.out_dir)
    models = checkpoint.load_weights(build_model(state["data_info"], device), state, path)
    latent = sample_latent(args.count, torch.Generator().manual_seed(args.seed)).to(device)
    images = torch.cat([sample_images(models, chunk) for chunk in latent.split(256)])  # in [0, 1]
    written = 0
    try:
        for i, image in enumerate(images):
            save_grid(image[None], args.output / f"{i:04d}.png", gap=0)
            written += 1
        save_grid(images, args.output / "grid.png")
    except OSError as error:  # a full disk, a refused permission
        reason = error.strerror or error
        flags.fail(
            f"--output {args.output}: writing stopped at {written} of {len(images)} images ({reason}); none is half-written"
        )
    print(f"Wrote {len(images)} images from {path} to {args.output}/ (and grid.png)", file=sys.stderr)


if __name__ == "__main__":
    main()
