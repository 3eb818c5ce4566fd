"""Generate text with a trained checkpoint (nanoGPT's sample.py). Each sample is printed as it is generated.

Usage:
    python sample.py --prompt "ROMEO:"                      # the best checkpoint of the newest run in outputs/
    python sample.py --num-samples 3 --temperature 0.8 --top-k 50
    python sample.py --checkpoint outputs/version_0/checkpoints/last.pt --device cpu
"""

import argparse
import math
import sys
from pathlib import Path

import torch

import checkpoint
import flags
from model import build_model, generate

MAX_NEW_TOKENS = 1_000_000  # characters per sample: hours on a CPU already
MAX_SAMPLES = 10_000
# Temperatures below this sample as 0 does (the likeliest character): they pick it anyway, and dividing the
# logits by a far smaller one overflows them to inf, which no distribution can be drawn from.
GREEDY_BELOW = 1e-3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--checkpoint", type=flags.existing("file"), help="a checkpoint train.py saved (default: the best in --out-dir)"
    )
    parser.add_argument("--out-dir", type=Path, default=Path("outputs"), help="train.py's --out-dir")
    parser.add_argument(
        "--prompt",
        help="the text to continue, in characters of the training text (default: a newline, else the first of them)",
    )
    parser.add_argument(
        "--max-new-tokens", type=flags.integer(0, MAX_NEW_TOKENS), default=500, help="characters to generate per sample"
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.8,
        help=f"< 1: more predictable, > 1: more random; 0 (or below {GREEDY_BELOW}): greedy",
    )
    parser.add_argument(
        "--top-k", type=flags.integer(0), default=200, help="sample from the k likeliest characters only; 0: all"
    )
    parser.add_argument("--num-samples", type=flags.integer(1, MAX_SAMPLES), default=1)
    parser.add_argument("--seed", type=flags.integer(0), default=1337)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = parser.parse_args()
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        parser.error(f"argument --temperature: {args.temperature} is not a finite number >= 0")
    return args


def main() -> None:
    args = parse_args()
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but no CUDA device is available")
    device = torch.device("cuda" if use_cuda else "cpu")
    state, path = checkpoint.for_inference(args.checkpoint, args.out_dir)
    data_info = state["data_info"]
    model = checkpoint.load_weights(build_model(data_info, device), state, path)
    print(f"Sampling from {path} (step {state.get('global_step', '?')})", file=sys.stderr)

    vocab = data_info["vocab"]
    stoi = {char: i for i, char in enumerate(vocab)}
    prompt = args.prompt if args.prompt is not None else "\n" if "\n" in stoi else vocab[0]
    unknown = sorted(set(prompt) - set(stoi))
    if unknown:
        flags.fail(
            f"--prompt has characters the model never saw in training: {' '.join(map(repr, unknown))}; "
            f"use characters of the training text, such as {vocab[:40]!r}"
        )
    if not prompt:
        flags.fail("--prompt is empty: give at least one character, or leave --prompt out")
    temperature = args.temperature if args.temperature >= GREEDY_BELOW else 0.0
    top_k = args.top_k or None
    torch.manual_seed(args.seed)
    for i in range(args.num_samples):
        if i:
            print("\n---------------")
        print(prompt, end="", flush=True)
        tokens = torch.tensor([[stoi[char] for char in prompt]], device=device)
        for _ in range(args.max_new_tokens):  # one character at a time, printed as soon as it is drawn
            tokens = generate(model, tokens[:, -data_info["block_size"] :], 1, temperature, top_k)
            print(vocab[tokens[0, -1].item()], end="", flush=True)
    print()


if __name__ == "__main__":
    flags.run(main)
