"""The model: a GPT (nanoGPT's), 6 pre-LayerNorm transformer blocks of causal self-attention and a GELU MLP,
learned position embeddings, and an output layer that shares the token embedding's weights."""

import math

import torch
import torch.nn.functional as F
from torch import nn

N_LAYER = 6  # [model] n_layer: transformer blocks
N_HEAD = 6  # [model] n_head: attention heads
N_EMBD = 384  # [model] n_embd: embedding width, a multiple of N_HEAD
BIAS = False  # [model] bias: biases in the Linear layers and LayerNorms (GPT-2 has them)
DROPOUT = 0.1  # [model] dropout: on the embeddings, the attention weights and each residual branch


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which each position sees only itself and the positions before it."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(N_EMBD, 3 * N_EMBD, bias=BIAS)  # queries, keys and values of all heads at once
        self.proj = nn.Linear(N_EMBD, N_EMBD, bias=BIAS)
        self.dropout = nn.Dropout(DROPOUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, time, channels = x.shape
        q, k, v = (
            t.view(batch, time, N_HEAD, channels // N_HEAD).transpose(1, 2) for t in self.qkv(x).split(N_EMBD, dim=2)
        )
        # Flash or memory-efficient attention where the device has it; is_causal masks the future.
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=DROPOUT if self.training else 0.0, is_causal=True)
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
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

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(positions)
        x = self.dropout(x)
        for block in self.blocks:
            x = block(x)
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
def generate(
    model: GPT, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None
) -> torch.Tensor:
    """Continue each row of `idx` (B x T token ids) by max_new_tokens tokens, sampled one at a time from the
    model's distribution: sharpened by temperature < 1 (0: always the likeliest), cut to the top_k likeliest."""
    for _ in range(max_new_tokens):
        logits = model(idx[:, -model.block_size :])[:, -1, :]  # the model sees at most block_size tokens
        if temperature == 0:
            next_token = logits.argmax(-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, [-1]]
                logits = logits.masked_fill(logits < kth, -math.inf)
            next_token = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
        idx = torch.cat([idx, next_token], dim=1)
    return idx


def fsdp_blocks(model: nn.Module) -> list[nn.Module]:
    """The parts FSDP shards one at a time (a block's weights are gathered only while it runs): the transformer blocks."""
    return list(model.blocks)


def summary(model: nn.Module) -> str:
    """Parameter counts per top-level layer, and in all."""
    lines = [f"{'layer':<8} {'type':<18} {'params':>10}"]
    for name, child in model.named_children():
        lines.append(f"{name:<8} {type(child).__name__:<18} {sum(p.numel() for p in child.parameters()):>10,}")
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lines.append(f"{total:,} parameters ({trainable:,} trainable), {total * 4 / 2**20:.1f} MiB in float32")
    return "\n".join(lines)
