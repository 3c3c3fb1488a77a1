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
from torch.autograd.function import once_differentiable

from earlybert.models.adapters import get_adapter, head_size

HEAD_COEF = "earlybert_head_coef"
FFN_COEF = "earlybert_ffn_coef"


def _column_scaled_forward(self: nn.Linear, input: torch.Tensor) -> torch.Tensor:
    # Column i of the weight reads input feature i; a head's coefficient covers its head_size columns.
    coef = getattr(self, HEAD_COEF) if hasattr(self, HEAD_COEF) else getattr(self, FFN_COEF)
    scale = coef if coef.numel() == self.in_features else coef.repeat_interleave(self.in_features // coef.numel())
    scale = scale.to(self.weight.dtype)
    if torch.is_autocast_enabled(input.device.type):  # autocast casts the operands: leave it to its linear
        return F.linear(input, self.weight * scale, self.bias)
    return _ColumnScaledLinear.apply(input, self.weight, scale, self.bias)


class _ColumnScaledLinear(torch.autograd.Function):
    """input @ (weight * scale)^T + bias, with a backward that passes over the weight-sized tensors once.

    Autograd's backward of `weight * scale` makes two weight-sized tensors (the weight's gradient and the
    product summed into the scale's gradient) and reads the linear's weight gradient three times: together
    the largest cost of a search step over a plain one. Here both gradients come out of one pass over row
    blocks small enough to stay in cache, and the weight's gradient is scaled in place.
    """

    @staticmethod
    def forward(ctx, input, weight, scale, bias):
        scaled = weight * scale
        ctx.save_for_backward(input, weight, scale, scaled)
        return F.linear(input, scaled, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        input, weight, scale, scaled = ctx.saved_tensors
        needs_input, needs_weight, needs_scale, needs_bias = ctx.needs_input_grad
        rows_out = grad_out.reshape(-1, grad_out.shape[-1])
        grad_input = (grad_out @ scaled) if needs_input else None
        grad_weight = grad_scale = None
        if needs_weight or needs_scale:
            grad_weight = rows_out.t() @ input.reshape(-1, input.shape[-1])  # d loss / d (weight * scale)
            grad_scale = _column_dots_then_scale(grad_weight, weight, scale)
        grad_bias = rows_out.sum(0) if needs_bias else None
        return grad_input, grad_weight if needs_weight else None, grad_scale if needs_scale else None, grad_bias


def _column_dots_then_scale(grad: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor,
                            block_bytes: int = 1 << 21) -> torch.Tensor:
    """Sum over rows of `grad * weight` (the scale's gradient, accumulated in fp32), then `grad *= scale` in
    place (the weight's), a block of rows at a time so that each block is read from cache the second time."""
    dots = torch.zeros(grad.shape[1], dtype=torch.float32, device=grad.device)
    rows = max(1, block_bytes // (grad.shape[1] * grad.element_size()))
    for start in range(0, grad.shape[0], rows):
        block = grad[start:start + rows]
        dots += (block * weight[start:start + rows]).sum(0, dtype=torch.float32)
        block.mul_(scale)
    return dots.to(scale.dtype)


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
        _attach(parts.attention_output, HEAD_COEF, parts.attention_output.in_features // d, init)
        _attach(parts.ffn_out, FFN_COEF, parts.ffn_out.in_features, init)


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
