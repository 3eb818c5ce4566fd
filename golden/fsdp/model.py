"""The model: a GPT (nanoGPT's), 6 pre-LayerNorm transformer blocks of causal self-attention and a GELU MLP,
learned position embeddings, and an output layer that shares the token embedding's weights.
stream() continues a text with a cache of each block's keys and values (sample.py uses it)."""

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

N_LAYER = 6  # [model] n_layer: transformer blocks
N_HEAD = 6  # [model] n_head: attention heads
N_EMBD = 384  # [model] n_embd: embedding width, a multiple of N_HEAD
BIAS = False  # [model] bias: biases in the Linear layers and LayerNorms (GPT-2 has them)
DROPOUT = 0.1  # [model] dropout: on the embeddings, the attention weights and each residual branch
# [model] activation_checkpointing: in training, keep only each block's input and recompute its activations in the
# backward pass: far less memory for activations, for about one more forward pass of compute.
ACTIVATION_CHECKPOINTING = True


class KVCache:
    """The keys and values of the positions a block has seen so far (B x heads x positions x head size), so that
    generating a token runs the model on that token alone."""

    def __init__(self) -> None:
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self.length = 0  # positions cached

    def extend(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the new positions' keys and values; return those of every position so far."""
        if self.keys is not None:
            keys, values = torch.cat([self.keys, keys], dim=2), torch.cat([self.values, values], dim=2)
        self.keys, self.values, self.length = keys, values, keys.shape[2]
        return keys, values


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which each position sees only itself and the positions before it."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(N_EMBD, 3 * N_EMBD, bias=BIAS)  # queries, keys and values of all heads at once
        self.proj = nn.Linear(N_EMBD, N_EMBD, bias=BIAS)
        self.dropout = nn.Dropout(DROPOUT)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        batch, time, channels = x.shape
        q, k, v = (
            t.view(batch, time, N_HEAD, channels // N_HEAD).transpose(1, 2) for t in self.qkv(x).split(N_EMBD, dim=2)
        )
        if cache is not None:
            k, v = cache.extend(k, v)
        # Flash or memory-efficient attention where the device has it; is_causal masks the future. With a cache,
        # either all positions are new (the prompt) or one is, which may see every cached one: no mask.
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=DROPOUT if self.training else 0.0, is_causal=k.shape[2] == time
        )
        y = y.transpose(1, 2).contiguous().view(batch, time, channels)
        return self.dropout(self.proj(y))


class Block(nn.Module):
    """A transformer block: x + attention(LayerNorm(x)), then x + MLP(LayerNorm(x))."""

    def __init__(self) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(N_EMBD, bias=BIAS)
        self.attn = CausalSelfAttention()
        self.ln_2 = nn.LayerNorm(N_EMBD, bias=BIAS)
        self.mlp = nn.Sequential(
            nn.Linear(N_EMBD, 4 * N_EMBD, bias=BIAS),
            nn.GELU(),
            nn.Linear(4 * N_EMBD, N_EMBD, bias=BIAS),
            nn.Dropout(DROPOUT),
        )

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        if ACTIVATION_CHECKPOINTING and self.training and torch.is_grad_enabled():
            # Non-reentrant checkpointing: only x is kept; the backward pass reruns the block (with the same
            # dropout masks: the random state is restored), under DDP and FSDP alike (FSDP gathers the block's
            # weights for its backward pass, which the rerun uses).
            return checkpoint(self.residual, x, use_reentrant=False)
        return self.residual(x, cache)

    def residual(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """The block's computation, which forward() may have checkpointed."""
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Token ids (B x T, T <= block_size) to next-token logits (B x T x vocab_size)."""

    def __init__(self, vocab_size: int, block_size: int) -> None:
        super().__init__()
        self.block_size = block_size
        self.tok_emb = nn.Embedding(vocab_size, N_EMBD)
        self.pos_emb = nn.Embedding(block_size, N_EMBD)
        self.dropout = nn.Dropout(DROPOUT)
        self.blocks = nn.ModuleList(Block() for _ in range(N_LAYER))
        self.ln_f = nn.LayerNorm(N_EMBD, bias=BIAS)
        self.lm_head = nn.Linear(N_EMBD, vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # weight tying: one matrix embeds and reads out tokens
        # GPT-2's initialization: N(0, 0.02) everywhere, and the projections that add into the residual stream
        # scaled by 1/sqrt(2 * N_LAYER), so the stream's variance does not grow with depth.
        self.apply(init_weights)
        for block in self.blocks:
            for layer in (block.attn.proj, block.mlp[2]):
                nn.init.normal_(layer.weight, mean=0.0, std=0.02 / math.sqrt(2 * N_LAYER))

    def forward(self, idx: torch.Tensor, caches: list[KVCache] | None = None) -> torch.Tensor:
        """caches (stream()'s): one per block; idx then holds the positions after the cached ones."""
        start = caches[0].length if caches else 0
        positions = torch.arange(start, start + idx.shape[1], device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(positions)
        x = self.dropout(x)
        for i, block in enumerate(self.blocks):
            x = block(x, caches[i] if caches else None)
        return self.lm_head(self.ln_f(x))


def init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def build_model(data_info: dict, device: torch.device) -> nn.Module:
    """A fresh, randomly initialized GPT for data_info's vocabulary and block size, on `device`."""
    if N_EMBD % N_HEAD:
        raise SystemExit(
            f"N_EMBD = {N_EMBD} must be a multiple of N_HEAD = {N_HEAD} (model.py, [model] n_embd and n_head)"
        )
    return GPT(data_info["num_outputs"], data_info["block_size"]).to(device)


def flops_per_token(model: GPT) -> float:
    """Training FLOPs per token, nanoGPT's (PaLM's) estimate: 6 per weight (forward and backward) plus the attention
    scores, 12 * layers * heads * head size * context. Position embeddings are a lookup, not a multiply."""
    weights = sum(p.numel() for p in model.parameters()) - model.pos_emb.weight.numel()
    return 6 * weights + 12 * N_LAYER * N_HEAD * (N_EMBD // N_HEAD) * model.block_size


@torch.no_grad()
def stream(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    kv_cache: bool = True,
) -> Iterator[torch.Tensor]:
    """The tokens that continue each row of `idx` (B x T token ids), B x 1 at a time as each is drawn, max_new_tokens
    of them: sampled from the model's distribution, sharpened by temperature < 1 (0: always the likeliest), cut to
    the top_k likeliest and to the fewest likeliest whose probabilities add up to top_p (nucleus sampling).
    kv_cache=False runs the whole context at every step: the same tokens, more slowly."""
    caches = None
    for _ in range(max_new_tokens):
        if caches and caches[0].length < model.block_size:
            logits = model(idx[:, -1:], caches)  # the newest token alone: the others' keys and values are cached
        else:
            # The prompt; or a context past block_size, whose window of the last block_size tokens moves at each
            # step: every token's position changes, and with it every key and value, so the window runs whole.
            caches = [KVCache() for _ in model.blocks] if kv_cache and idx.shape[1] < model.block_size else None
            logits = model(idx[:, -model.block_size :], caches)
        token = next_token(logits[:, -1, :], temperature, top_k, top_p)
        idx = torch.cat([idx, token], dim=1)
        yield token


def next_token(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """A token for each row of logits (B x vocab_size), drawn as stream() says: B x 1 ids."""
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = F.softmax(sorted_logits, dim=-1)
        # A token is dropped when the likelier ones already add up to top_p; the likeliest always stays.
        drop = probs.cumsum(dim=-1) - probs >= top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), -math.inf)
    return torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)


def fsdp_blocks(model: nn.Module) -> list[nn.Module]:
    """The parts FSDP shards one at a time (a block's weights are gathered only while it runs): the transformer blocks."""
    return list(model.blocks)


def example_input(data_info: dict, batch_size: int, device: torch.device) -> torch.Tensor:
    """A batch of zeros shaped and typed as training feeds the model: token ids, block_size of them a row."""
    return torch.zeros(batch_size, *data_info["input_shape"], dtype=torch.long, device=device)


def summary(model: nn.Module, example: torch.Tensor) -> str:
    """Per top-level layer its parameter count, and the shapes going in and out of it when the model runs
    `example` (Lightning's ModelSummary with example_input_array); then the parameters in all. The forward pass
    runs in eval mode without gradients, which changes no weight, buffer or random state. Sharded by FSDP,
    the model gathers each part's weights as it runs, a collective: every rank must call this (train.py does, and
    prints rank 0's)."""
    seen_in: dict[str, str] = {}
    seen_out: dict[str, str] = {}
    hooks = []
    for name, child in model.named_children():
        # A ModuleList is never called itself: its first module's input and its last one's output stand for it.
        first, last = (child[0], child[-1]) if isinstance(child, nn.ModuleList) and len(child) else (child, child)
        hooks.append(first.register_forward_pre_hook(lambda _, args, name=name: note_shapes(seen_in, name, args)))
        hooks.append(last.register_forward_hook(lambda _, args, out, name=name: note_shapes(seen_out, name, out)))
    training = model.training
    model.eval()
    with torch.no_grad():
        model(example)
    model.train(training)
    for hook in hooks:
        hook.remove()
    rows = [("layer", "type", "params", "in", "out")]
    for name, child in model.named_children():
        params = f"{sum(p.numel() for p in child.parameters()):,}"
        # -: the forward pass did not call it
        rows.append((name, type(child).__name__, params, seen_in.get(name, "-"), seen_out.get(name, "-")))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d:<{widths[3]}}  {e}" for a, b, c, d, e in rows]
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lines.append(f"{total:,} parameters ({trainable:,} trainable), {total * 4 / 2**20:.1f} MiB in float32")
    return "\n".join(lines)


def note_shapes(shapes: dict[str, str], name: str, values: object) -> None:
    """Record under `name` the shapes of the tensors in `values` (a module's inputs or its output); a module called
    more than once keeps its first call's. Returns None, as a pre-hook must to leave the inputs as they are."""
    tensors = values if isinstance(values, tuple | list) else (values,)
    shapes.setdefault(name, ", ".join(str(list(t.shape)) for t in tensors if isinstance(t, torch.Tensor)))
