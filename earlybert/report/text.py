"""Plain-text summaries of models and tickets for the console."""

from __future__ import annotations

from torch import nn

from earlybert.models.adapters import get_adapter
from earlybert.models.flops import ModelShape, count_parameters, forward_flops_per_token, training_flops_per_token


def _human(n: float) -> str:
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.3g}{unit}"
        n /= 1000
    return f"{n:.3g}P"


def model_info_lines(model: nn.Module, seq_len: int = 128) -> list[str]:
    """Lines describing a model: class, per-layer heads and FFN widths, params and FLOPs per token."""
    shape = ModelShape.of(model)
    full_heads = model.config.num_attention_heads
    full_ffn = getattr(model.config, get_adapter(model).layout.ffn_width)
    lines = [
        f"{type(model).__name__} ({model.config.model_type}): {len(shape.layer_heads)} layers, "
        f"hidden {shape.hidden}, head size {shape.head_size}, vocab {shape.vocab}",
        f"{'layer':>5}  {'heads':>9}  {'ffn':>13}",
    ]
    for i, (h, f) in enumerate(zip(shape.layer_heads, shape.layer_ffn)):
        lines.append(f"{i:>5}  {h:>4}/{full_heads:<4}  {f:>6}/{full_ffn:<6}")
    lines.append(
        f"heads kept {sum(shape.layer_heads)}/{full_heads * len(shape.layer_heads)}, "
        f"ffn kept {sum(shape.layer_ffn)}/{full_ffn * len(shape.layer_ffn)}"
    )
    lines.append(
        f"params {_human(count_parameters(model))}, forward FLOPs/token at seq {seq_len}: "
        f"{_human(forward_flops_per_token(shape, seq_len))}, "
        f"training: {_human(training_flops_per_token(shape, seq_len))}"
    )
    return lines
