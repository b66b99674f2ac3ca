"""The GPT's forward pass with a KV cache, and token sampling: what a serving step runs.

`KVCache` holds, for every layer, the keys and values of `slots` sequences of up
to `context` positions. `prefill` runs one prompt through the model and stores
its keys and values in its slot; `decode` runs one new token for each of a batch
of slots, each at its own position, attending to its own cached prefix (a mask
hides the rest of the padded batch). Both reuse the training model's modules
(`lm.model.GPT`) without changing them: the same weights, the same maths, so a
cached decode equals the plain full forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lm.model import GPT
from lm.tokenizer import EOT


class KVCache:
    """Keys and values per layer, each (slots, heads, context, head width)."""

    def __init__(self, model: GPT, slots: int, context: int | None = None):
        config = model.config
        self.context = config.context if context is None else context
        if not 1 <= self.context <= config.context:
            raise ValueError(
                f"context {self.context} must be between 1 and the model's "
                f"{config.context}"
            )
        self.slots = slots
        head_width = config.d_model // config.n_head
        param = next(model.parameters())
        shape = (slots, config.n_head, self.context, head_width)
        self.k = [
            torch.zeros(shape, dtype=param.dtype, device=param.device)
            for _ in range(config.n_layer)
        ]
        self.v = [torch.zeros_like(k) for k in self.k]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)


def _heads(z: torch.Tensor, n_head: int) -> torch.Tensor:
    """(batch, time, d_model) -> (batch, heads, time, head width)."""
    b, t, c = z.shape
    return z.view(b, t, n_head, c // n_head).transpose(1, 2)


@torch.no_grad()
def prefill(model: GPT, cache: KVCache, slot: int, ids: list[int]) -> torch.Tensor:
    """Run prompt `ids` into `slot` of `cache`; the logits (vocab,) of its last
    position, from which the first new token is drawn."""
    t = len(ids)
    if not 1 <= t <= cache.context:
        raise ValueError(f"prompt of {t} tokens; the cache holds 1 to {cache.context}")
    device = cache.k[0].device
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    x = model.tok_emb(idx) + model.pos_emb(torch.arange(t, device=device))
    for layer, block in enumerate(model.blocks):
        attn = block.attn
        q, k, v = attn.qkv(block.ln_1(x)).split(x.shape[-1], dim=2)
        q, k, v = (_heads(z, attn.n_head) for z in (q, k, v))
        cache.k[layer][slot, :, :t] = k[0]
        cache.v[layer][slot, :, :t] = v[0]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + attn.proj(y.transpose(1, 2).reshape(1, t, -1))
        x = x + block.mlp(block.ln_2(x))
    return model.head(model.ln_f(x[:, -1]))[0]


@torch.no_grad()
def decode(
    model: GPT,
    cache: KVCache,
    slots: list[int],
    tokens: list[int],
    positions: list[int],
) -> torch.Tensor:
    """One step for a batch: `tokens[i]` at `positions[i]` of sequence `slots[i]`
    (its prefix already cached), each attending to its own prefix only. Returns
    the next-token logits, (batch, vocab)."""
    device = cache.k[0].device
    slot_t = torch.tensor(slots, dtype=torch.long, device=device)
    pos_t = torch.tensor(positions, dtype=torch.long, device=device)
    if int(pos_t.max()) >= cache.context:
        raise ValueError(f"a position is past the cache's {cache.context}")
    width = int(pos_t.max()) + 1  # the longest prefix in the batch
    # (batch, 1 query, width keys): each row sees its own positions 0..p only
    mask = torch.arange(width, device=device)[None, :] <= pos_t[:, None]
    mask = mask[:, None, None, :]
    lo = slots[0]
    contiguous = slots == list(range(lo, lo + len(slots)))
    idx = torch.tensor(tokens, dtype=torch.long, device=device)[:, None]
    x = model.tok_emb(idx) + model.pos_emb(pos_t)[:, None, :]
    for layer, block in enumerate(model.blocks):
        attn = block.attn
        q, k, v = attn.qkv(block.ln_1(x)).split(x.shape[-1], dim=2)
        q, k, v = (_heads(z, attn.n_head) for z in (q, k, v))
        # advanced indices around a slice: the batch dimension comes first
        cache.k[layer][slot_t, :, pos_t] = k[:, :, 0]
        cache.v[layer][slot_t, :, pos_t] = v[:, :, 0]
        if contiguous:  # a view: no copy of the cached prefixes
            keys = cache.k[layer][lo : lo + len(slots), :, :width]
            values = cache.v[layer][lo : lo + len(slots), :, :width]
        else:
            keys = cache.k[layer][:, :, :width].index_select(0, slot_t)
            values = cache.v[layer][:, :, :width].index_select(0, slot_t)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        x = x + attn.proj(y.transpose(1, 2).reshape(len(slots), 1, -1))
        x = x + block.mlp(block.ln_2(x))
    return model.head(model.ln_f(x[:, 0]))


def sample(
    logits: torch.Tensor,
    temperatures: list[float],
    top_ps: list[float],
    generators: list[torch.Generator],
) -> list[int]:
    """One token id per row of next-token logits (batch, vocab) on the CPU: the
    most likely at temperature 0, else drawn (with the row's own generator) from
    the tempered distribution cut to its top-p nucleus. Ids past EOT are the
    vocabulary's padding, never seen in training: never drawn."""
    logits = logits.float()[:, : EOT + 1]
    out = logits.argmax(-1).tolist()
    rows = [i for i, t in enumerate(temperatures) if t > 0.0]
    if not rows:
        return out
    temps = torch.tensor([temperatures[i] for i in rows])[:, None]
    probs = torch.softmax(logits[rows] / temps, dim=-1)
    top_p = torch.tensor([top_ps[i] for i in rows])[:, None]
    if bool((top_p < 1.0).any()):
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        # keep the smallest head whose mass reaches top_p (at least one token)
        keep = sorted_probs.cumsum(-1) - sorted_probs < top_p
        probs = torch.zeros_like(probs).scatter_(1, order, sorted_probs * keep)
    for j, i in enumerate(rows):
        out[i] = int(torch.multinomial(probs[j], 1, generator=generators[i]))
    return out
