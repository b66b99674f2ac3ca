"""A GPT-style decoder (pre-norm blocks, causal self-attention, GELU MLP) and its
named size presets, from about half a million parameters to about a billion.

Plain modules only: how the model is sharded lives in `parallelize`. The shape is
fully described by a `GPTConfig`, which checkpoints record so that a resume or the
serving side rebuilds the same network.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

from lm.tokenizer import VOCAB_SIZE
from mlcore.errors import JobInputError


@dataclass(frozen=True)
class GPTConfig:
    n_layer: int
    n_head: int
    d_model: int
    context: int  # positions the model has embeddings for: the longest sequence
    vocab_size: int = VOCAB_SIZE
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def describe(self) -> str:
        return (
            f"n_layer={self.n_layer} n_head={self.n_head} d_model={self.d_model} "
            f"context={self.context} vocab_size={self.vocab_size}"
        )


# Head width 64 or 128; the tests run "nano", a GPU pool the larger ones.
PRESETS: dict[str, GPTConfig] = {
    "nano": GPTConfig(n_layer=2, n_head=4, d_model=128, context=128),
    "micro": GPTConfig(n_layer=4, n_head=4, d_model=256, context=256),
    "small": GPTConfig(n_layer=6, n_head=6, d_model=384, context=512),
    "base": GPTConfig(n_layer=12, n_head=12, d_model=768, context=1024),
    "medium": GPTConfig(n_layer=24, n_head=16, d_model=1024, context=1024),
    "large": GPTConfig(n_layer=36, n_head=20, d_model=1280, context=1024),
    "1b": GPTConfig(n_layer=20, n_head=16, d_model=2048, context=2048),
}


def resolve_config(
    preset: str,
    n_layer: int | None = None,
    n_head: int | None = None,
    d_model: int | None = None,
    context: int | None = None,
    dropout: float | None = None,
) -> tuple[GPTConfig, int]:
    """(model shape, training sequence length) from a preset and flag overrides.

    Raises JobInputError naming the flag when the shape cannot be built.
    """
    if preset not in PRESETS:
        raise JobInputError(
            "--preset", f"unknown {preset!r}; choose one of {', '.join(PRESETS)}"
        )
    base = PRESETS[preset]
    overrides = {"n_layer": n_layer, "n_head": n_head, "d_model": d_model}
    for name, value in overrides.items():
        if value is not None and value <= 0:
            flag = "--" + name.replace("_", "-")
            raise JobInputError(flag, f"must be a positive number (got {value})")
    config = replace(base, **{k: v for k, v in overrides.items() if v is not None})
    if dropout is not None:
        if not 0.0 <= dropout < 1.0:
            raise JobInputError("--dropout", f"must be in [0, 1) (got {dropout})")
        config = replace(config, dropout=dropout)
    if config.d_model % config.n_head:
        raise JobInputError(
            "--d-model",
            f"width {config.d_model} does not divide across {config.n_head} heads "
            f"(--n-head); choose a width that is a multiple of the head count",
        )
    seq_len = config.context if context is None else context
    if seq_len <= 1:
        raise JobInputError("--context", f"must be at least 2 tokens (got {seq_len})")
    if seq_len > config.context:
        raise JobInputError(
            "--context",
            f"{seq_len} is longer than preset {preset!r} allows ({config.context} "
            "positions); choose --context <= that or a larger --preset",
        )
    return config, seq_len


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=False)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (
            z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
            for z in (q, k, v)
        )
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).contiguous().view(b, t, c))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(config.d_model, 4 * config.d_model, bias=False)
        self.proj = nn.Linear(4 * config.d_model, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model, bias=False)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model, bias=False)
        self.mlp = MLP(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln_1(x)))
        return x + self.drop(self.mlp(self.ln_2(x)))


class GPT(nn.Module):
    """Token and position embeddings, `n_layer` blocks, a final norm and an
    untied output head (a tied one would have to share one FSDP group)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.context, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.d_model, bias=False)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)

    def init_weights(self, seed: int = 0) -> None:
        """GPT-2's initialisation, in place, also on sharded parameters (the
        sharded path calls it after `to_empty`). Each parameter is drawn whole
        from its own generator (seed, index), then sliced to the local shard: a
        model sharded over any number of ranks gets the values a whole one
        does. (DTensor's own random ops on a CPU mesh draw the same numbers on
        every rank, so every shard would be a copy of the first.)"""
        resid_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        with torch.no_grad():
            for i, (name, p) in enumerate(self.named_parameters()):
                device = p.to_local().device if isinstance(p, DTensor) else p.device
                if "ln_" in name:
                    full = torch.ones(p.shape, dtype=p.dtype, device=device)
                else:
                    std = resid_std if name.endswith("proj.weight") else 0.02
                    g = torch.Generator(device=device).manual_seed(seed * 7919 + i)
                    full = torch.empty(p.shape, dtype=p.dtype, device=device)
                    full.normal_(0.0, std, generator=g)
                _assign(p, full)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (batch, time, vocab) for token ids (batch, time)."""
        t = idx.shape[1]
        if t > self.config.context:
            raise ValueError(f"sequence of {t} tokens > context {self.config.context}")
        pos = torch.arange(t, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def _assign(p: torch.Tensor, full: torch.Tensor) -> None:
    """Copy `full` into `p`, or into its local shard when `p` is a DTensor."""
    if isinstance(p, DTensor):
        # src_data_rank=None: every rank holds `full`; slice it, no communication
        shard = distribute_tensor(full, p.device_mesh, p.placements, src_data_rank=None)
        p.to_local().copy_(shard.to_local())
    else:
        p.copy_(full)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy, in fp32 whatever the compute precision."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


def build_model(
    config: GPTConfig, device: str | torch.device = "cpu", seed: int = 0
) -> GPT:
    """A GPT on `device`; on "meta" nothing is allocated and no init runs."""
    with torch.device(device):
        model = GPT(config)
    if torch.device(device).type != "meta":
        model.init_weights(seed)
    return model


def num_parameters(config: GPTConfig) -> int:
    """Exact parameter count, from the modules built on the meta device."""
    return sum(p.numel() for p in build_model(config, "meta").parameters())


def flops_per_token(config: GPTConfig, seq_len: int) -> float:
    """Training FLOPs per token (forward and backward): 6 per weight that takes
    part in a matmul, plus attention's scores and values (PaLM's appendix B)."""
    d, layers = config.d_model, config.n_layer
    matmul_weights = layers * 12 * d * d + config.vocab_size * d
    return 6.0 * matmul_weights + 12.0 * layers * seq_len * d
