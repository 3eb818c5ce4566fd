"""Generate text with a trained checkpoint (nanoGPT's sample.py).

Usage:
    python sample.py --prompt "ROMEO:"                      # the best checkpoint in outputs/checkpoints
    python sample.py --num-samples 3 --temperature 0.8 --top-k 50
    python sample.py --checkpoint outputs/checkpoints/last.pt --device cpu
"""

import argparse
import sys
from pathlib import Path

import torch

import checkpoint
from model import build_model, generate


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="a checkpoint train.py saved (default: the best in --out-dir)")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs"), help="train.py's --out-dir")
    parser.add_argument("--prompt", default="\n", help="the text to continue (only characters of the training text)")
    parser.add_argument("--max-new-tokens", type=int, default=500, help="characters to generate per sample")
    parser.add_argument(
        "--temperature", type=float, default=0.8, help="< 1: more predictable, > 1: more random; 0: greedy"
    )
    parser.add_argument("--top-k", type=int, default=200, help="sample from the k likeliest characters only; 0: all")
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = parser.parse_args()
    for name, low in (("max_new_tokens", 0), ("temperature", 0), ("top_k", 0), ("num_samples", 1)):
        if not getattr(args, name) >= low:
            parser.error(f"--{name.replace('_', '-')} must be >= {low}")
    return args


def main() -> None:
    args = parse_args()
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but no CUDA device is available")
    device = torch.device("cuda" if use_cuda else "cpu")
    state, path = checkpoint.for_inference(args.checkpoint, args.out_dir / "checkpoints")
    data_info = state["data_info"]
    model = checkpoint.load_weights(build_model(data_info, device), state, path)
    print(f"Sampling from {path} (step {state.get('global_step', '?')})", file=sys.stderr)

    vocab = data_info["vocab"]
    stoi = {char: i for i, char in enumerate(vocab)}
    unknown = sorted(set(args.prompt) - set(stoi))
    if unknown:
        raise SystemExit(f"--prompt has characters the model never saw in training: {' '.join(map(repr, unknown))}")
    if not args.prompt:
        raise SystemExit("--prompt is empty: give at least one character (the default is a newline)")
    prompt = torch.tensor([stoi[char] for char in args.prompt], device=device).repeat(args.num_samples, 1)
    torch.manual_seed(args.seed)
    samples = generate(model, prompt, args.max_new_tokens, args.temperature, args.top_k or None)
    for i, tokens in enumerate(samples.tolist()):
        print("".join(vocab[t] for t in tokens))
        if i + 1 < args.num_samples:
            print("---------------")


if __name__ == "__main__":
    main()
