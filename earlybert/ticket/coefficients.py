"""Slimming coefficients: a learnable scale per attention head and per FFN neuron, plus their L1 penalty.

A head's coefficient scales its context, an FFN neuron's its activation. Both are the inputs of the
next linear (the attention output projection; the second FFN linear), so the coefficients are
applied to that linear's weight columns instead: `x @ (W * c)^T == (x * c) @ W^T`, with the same
gradients, at a cost of one weight-sized product rather than an activation-sized one per step. The
coefficients are parameters of those linears, so they travel with `parameters()`, optimizers,
DeepSpeed (ZeRO-3 gathers them with the weight) and `state_dict()`; the model keeps its own (SDPA)
attention path.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

from earlybert.models.adapters import get_adapter, head_size
from earlybert.models.modeling import linear_features, linear_weight

HEAD_COEF = "earlybert_head_coef"
FFN_COEF = "earlybert_ffn_coef"


def _column_scaled_forward(self: nn.Module, input: torch.Tensor) -> torch.Tensor:
    # Column i of the weight reads input feature i; a head's coefficient covers its head_size columns. GPT-2's
    # Conv1D keeps the transposed weight: `linear_weight` is its [out, in] view.
    coef = getattr(self, HEAD_COEF) if hasattr(self, HEAD_COEF) else getattr(self, FFN_COEF)
    width = linear_features(self)[0]
    scale = coef if coef.numel() == width else coef.repeat_interleave(width // coef.numel())
    weight = linear_weight(self)
    return F.linear(input, weight * scale.to(weight.dtype), self.bias)


def _attach(linear: nn.Linear, name: str, units: int, init: float) -> None:
    w = linear.weight
    linear.register_parameter(name, nn.Parameter(torch.full((units,), init, dtype=torch.float32, device=w.device)))
    # An instance attribute shadows nn.Linear.forward; a deepcopy rebinds it to the copy.
    linear.forward = types.MethodType(_column_scaled_forward, linear)


def attach_coefficients(model: nn.Module, init: float = 1.0) -> None:
    """Add a head and an FFN coefficient vector to every layer (init 1.0 leaves outputs unchanged).

    Coefficients are fp32 whatever the model's dtype: near 1.0, bf16 values are 0.004 apart, so small
    updates would be lost and masks decided by ties. They are cast to the weight's dtype when applied.
    """
    if has_coefficients(model):
        raise ValueError("coefficients are already attached: detach them first")
    d = head_size(model)
    for parts in get_adapter(model).layer_parts(model):
        _attach(parts.attention_output, HEAD_COEF, linear_features(parts.attention_output)[0] // d, init)
        _attach(parts.ffn_out, FFN_COEF, linear_features(parts.ffn_out)[0], init)


def has_coefficients(model: nn.Module) -> bool:
    """Whether `attach_coefficients` was applied."""
    return any(name.endswith(HEAD_COEF) for name, _ in model.named_parameters())


def head_coefficients(model: nn.Module) -> list[nn.Parameter]:
    """The per-layer head coefficient vectors."""
    return [getattr(p.attention_output, HEAD_COEF) for p in get_adapter(model).layer_parts(model)]


def ffn_coefficients(model: nn.Module) -> list[nn.Parameter]:
    """The per-layer FFN coefficient vectors."""
    return [getattr(p.ffn_out, FFN_COEF) for p in get_adapter(model).layer_parts(model)]


def is_coefficient_name(name: str) -> bool:
    """Whether a parameter or state-dict key is a slimming coefficient."""
    return name.endswith(HEAD_COEF) or name.endswith(FFN_COEF)


def detach_coefficients(model: nn.Module) -> dict[str, list[torch.Tensor]]:
    """Remove coefficients and hooks, restoring the plain model; return the values they had."""
    values = {
        "heads": [c.detach().clone() for c in head_coefficients(model)],
        "ffn": [c.detach().clone() for c in ffn_coefficients(model)],
    }
    for parts in get_adapter(model).layer_parts(model):
        for linear, name in ((parts.attention_output, HEAD_COEF), (parts.ffn_out, FFN_COEF)):
            del linear.forward  # back to nn.Linear.forward
            delattr(linear, name)
    return values


@torch.no_grad()
def set_coefficients(model: nn.Module, heads: list[torch.Tensor], ffn: list[torch.Tensor]) -> None:
    """Overwrite the attached coefficient values (e.g. with 0/1 masks)."""
    for param, value in zip(head_coefficients(model), heads, strict=True):
        param.copy_(torch.as_tensor(value, dtype=param.dtype))
    for param, value in zip(ffn_coefficients(model), ffn, strict=True):
        param.copy_(torch.as_tensor(value, dtype=param.dtype))


def l1_penalty(model: nn.Module, lambda_heads: float = 1e-4, lambda_ffn: float = 1e-4) -> torch.Tensor:
    """`lambda_heads * sum|c_heads| + lambda_ffn * sum|c_ffn|` over all layers (a sum, not a mean)."""
    heads = torch.stack([c.abs().sum() for c in head_coefficients(model)]).sum()
    ffn = torch.stack([c.abs().sum() for c in ffn_coefficients(model)]).sum()
    return lambda_heads * heads + lambda_ffn * ffn
