"""Generate text with a trained checkpoint (nanoGPT's sample.py). Each sample is printed as it is generated.

The prompt is encoded, and the output decoded, with the tokenizer saved in the checkpoint; each new token reuses
the keys and values the model computed for the ones before it (model.py's KVCache).

Usage:
    python sample.py --prompt "ROMEO:"                      # the best checkpoint of the newest run in outputs/
    python sample.py --num-samples 3 --temperature 0.8 --top-k 50 --top-p 0.95
    python sample.py --prompt-file prompt.txt               # a longer prompt, from a UTF-8 file
    python sample.py --checkpoint outputs/version_0/checkpoints/last --device cpu
"""

import argparse
import math
import sys
from pathlib import Path

import torch

import checkpoint
import flags
import tokenizer
from model import build_model, stream

MAX_NEW_TOKENS = 1_000_000  # characters per sample: hours on a CPU already
MAX_SAMPLES = 10_000
# Temperatures below this sample as 0 does (the likeliest character): they pick it anyway, and dividing the
# logits by a far smaller one overflows them to inf, which no distribution can be drawn from.
GREEDY_BELOW = 1e-3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--checkpoint",
        type=flags.existing("folder"),
        help="a checkpoint train.py saved (default: the best in --out-dir)",
    )
    parser.add_argument("--out-dir", type=Path, default=Path("outputs"), help="train.py's --out-dir")
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument(
        "--prompt",
        help="the text to continue, in characters of the training text (default: a newline, else the first of them)",
    )
    prompt.add_argument("--prompt-file", type=flags.existing("file"), help="a UTF-8 text file whose text to continue")
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
    parser.add_argument(
        "--top-p",
        type=float,
        default=1.0,
        help="sample from the fewest likeliest characters whose probabilities add up to p (nucleus sampling); 1: all",
    )
    parser.add_argument("--num-samples", type=flags.integer(1, MAX_SAMPLES), default=1)
    parser.add_argument("--seed", type=flags.integer(0), default=1337)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    args = parser.parse_args()
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        parser.error(f"argument --temperature: {args.temperature} is not a finite number >= 0")
    if not 0 < args.top_p <= 1:  # NaN too
        parser.error(f"argument --top-p: {args.top_p} is not a probability in (0, 1]")
    return args


def read_prompt(args: argparse.Namespace, tok: tokenizer.Tokenizer, data_info: dict) -> tuple[str, list[int]]:
    """The prompt's text and token ids: --prompt's, --prompt-file's, or the default."""
    flag = "--prompt-file" if args.prompt_file else "--prompt"
    if args.prompt_file:
        try:
            prompt = args.prompt_file.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            byte = f"byte {error.start} (0x{error.object[error.start]:02x})"
            flags.fail(f"--prompt-file {args.prompt_file} is not UTF-8 text: {byte}; save it as UTF-8")
        except OSError as error:
            flags.fail(f"--prompt-file {args.prompt_file}: {error.strerror}")
    elif args.prompt is not None:
        prompt = args.prompt
    else:
        vocab = data_info["tokenizer"]["vocab"]
        prompt = "\n" if "\n" in vocab else vocab[0]
    if not prompt:
        flags.fail(f"{flag} is empty: give at least one character, or leave --prompt out")
    try:
        return prompt, tok.encode(prompt)
    except ValueError:  # characters not in the vocabulary
        vocab = data_info["tokenizer"]["vocab"]
        unknown = sorted(set(prompt) - set(vocab))
        flags.fail(
            f"{flag} has characters the model never saw in training: {' '.join(map(repr, unknown))}; "
            f"use characters of the training text, such as {vocab[:40]!r}"
        )


def main() -> None:
    args = parse_args()
    device = flags.choose_device(args.device)
    state, path = checkpoint.for_inference(args.checkpoint, args.out_dir)
    data_info = state["data_info"]
    model = checkpoint.load_weights(build_model(data_info, device), state, path)
    print(f"Sampling from {path} (step {state.get('global_step', '?')})", file=sys.stderr)
    tok = tokenizer.from_state(data_info["tokenizer"])
    prompt, ids = read_prompt(args, tok, data_info)

    temperature = args.temperature if args.temperature >= GREEDY_BELOW else 0.0
    torch.manual_seed(args.seed)
    for i in range(args.num_samples):
        if i:
            print("\n---------------")
        print(prompt, end="", flush=True)
        tokens = torch.tensor([ids], device=device)
        for token in stream(model, tokens, args.max_new_tokens, temperature, args.top_k or None, args.top_p):
            print(tok.decode(token[0].tolist()), end="", flush=True)  # each character as soon as it is drawn
    print()


if __name__ == "__main__":
    flags.run(main)
