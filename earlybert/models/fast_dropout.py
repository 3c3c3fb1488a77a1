"""Dropout with cheaper masks on CPU.

torch draws CPU dropout masks with a Bernoulli sampler over floats, slow enough to show in a profile next
to the matmuls, most of all in MiniLM fine-tuning, where the attention probabilities (batch x heads x seq x
seq) are dropped in every layer. Drawing 64-bit integers and reading each as four 15-bit numbers is cheaper;
turning those numbers into a float keep mask by arithmetic (no bool tensor anywhere) makes applying it one
multiply forward and one backward, where a bool mask's `masked_fill` costs several times that on CPU
(`python -m benchmarks.fast_dropout`). The drop probability becomes a multiple of 2^-15 (0.1 -> 0.1000061) and
kept values are scaled by the exact inverse of the keep probability, so the expectation is unchanged. The mask
saved for backward is float32, four bytes an element. GPUs draw masks with fused Philox kernels: there the
torch path runs unchanged.

`use_fast_dropout(model)` swaps a model's `nn.Dropout` modules and routes its SDPA attention through
`fast_sdpa_attention`, which drops the attention probabilities the same way (the math path SDPA itself takes
on CPU when dropout is on) and hands everything else to transformers' SDPA function.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

LEVELS = 1 << 15  # 15 random bits per element
ATTENTION = "earlybert_sdpa"


def _uniform_15_bit(n: int, device: torch.device) -> torch.Tensor:
    """`n` int16 values uniform on [0, 2^15): each int64 draw (uniform on [0, 2^63)) read as four int16 lanes,
    sign bit cleared (every lane's low 15 bits are uniform and independent)."""
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_()
    return words.view(torch.int16)[:n].bitwise_and_(LEVELS - 1)


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> tuple[torch.Tensor, float]:
    """A float32 mask, 0.0 where an element is dropped (probability round(p * 2^15) / 2^15) and 1.0 elsewhere,
    and the scale that keeps the expectation of the kept elements."""
    threshold = round(p * LEVELS)
    lanes = _uniform_15_bit(shape.numel(), device).view(shape)
    # As exact floats, lane - (threshold - 1) is <= 0 where lane < threshold and >= 1 elsewhere.
    return lanes.float().sub_(threshold - 1).clamp_(0.0, 1.0), LEVELS / (LEVELS - threshold)


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`F.dropout(x, p, training)`, with integer masks on CPU."""
    if not training or p == 0.0 or x.device.type != "cpu":
        return nn.functional.dropout(x, p, training)
    if p >= 1.0:
        return x * 0.0
    keep, scale = keep_mask(x.shape, p, x.device)
    if x.dtype == torch.float32:
        return x * keep.mul_(scale)  # one multiply each way; kept values get x * float32(scale), as below
    return x * keep.to(x.dtype) * scale


class FastDropout(nn.Dropout):
    """`nn.Dropout` drawing its masks with `fast_dropout` (same `p`, same state dict: none)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


def fast_sdpa_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                        **kwargs):
    """transformers' SDPA attention; on CPU with dropout, softmax(q k^T + mask) dropped with integer masks."""
    plain = (dropout == 0.0 or query.device.type != "cpu" or key.shape[1] != query.shape[1]
             or getattr(module, "is_causal", False) or kwargs.get("s_aux") is not None)
    if plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query * scaling, key.transpose(-1, -2))  # scaling q touches seq x head_dim values, not seq^2
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # True = attend (transformers' SDPA masks)
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1)
    keep, scale = keep_mask(probs.shape, dropout, probs.device)
    # The keep scale goes on the (seq x head_dim) output rather than the (seq x seq) probabilities: fewer values.
    out = torch.matmul(probs * keep.to(probs.dtype), value) * scale
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION, fast_sdpa_attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def use_fast_dropout(model: nn.Module) -> nn.Module:
    """Swap `model`'s `nn.Dropout` modules for `FastDropout` and its SDPA attention for `fast_sdpa_attention`
    (in place; nothing saved changes: config.json never records the attention function)."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p, child.inplace))
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) == "sdpa" and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(ATTENTION)
    return model
