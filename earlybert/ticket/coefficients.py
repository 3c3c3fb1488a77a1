"""Slimming coefficients: a learnable scale per attention head and per FFN neuron, plus their L1 penalty.

Coefficients are parameters registered on the attention and intermediate modules and applied by
forward hooks on their outputs, so the model keeps its own (SDPA) attention path and the
coefficients travel with `parameters()`, optimizers, DeepSpeed and `state_dict()`.
"""

from __future__ import annotations

import torch
from torch import nn

from earlybert.models.adapters import get_adapter, head_size

HEAD_COEF = "earlybert_head_coef"
FFN_COEF = "earlybert_ffn_coef"
_HOOK_ATTR = "_earlybert_hook"


def _scale_heads(module: nn.Module, args, output):
    # output[0]: [batch, seq, heads * head_size], head-major, as the output projection reads it.
    coef = getattr(module, HEAD_COEF)
    context = output[0] * coef.repeat_interleave(output[0].shape[-1] // coef.numel()).to(output[0].dtype)
    return (context, *output[1:])


def _scale_ffn(module: nn.Module, args, output):
    coef = getattr(module, FFN_COEF)
    return output * coef.to(output.dtype)


def attach_coefficients(model: nn.Module, init: float = 1.0) -> None:
    """Add a head and an FFN coefficient vector to every layer (init 1.0 leaves outputs unchanged).

    Coefficients are fp32 whatever the model's dtype: near 1.0, bf16 values are 0.004 apart, so small
    updates would be lost and masks decided by ties. The hooks cast them to the activations' dtype.
    """
    if has_coefficients(model):
        raise ValueError("coefficients are already attached: detach them first")
    d = head_size(model)
    for parts in get_adapter(model).layer_parts(model):
        w = parts.query.weight
        heads = nn.Parameter(torch.full((parts.query.out_features // d,), init, dtype=torch.float32, device=w.device))
        ffn = nn.Parameter(torch.full((parts.ffn_in.out_features,), init, dtype=torch.float32, device=w.device))
        parts.attention.register_parameter(HEAD_COEF, heads)
        parts.intermediate.register_parameter(FFN_COEF, ffn)
        setattr(parts.attention, _HOOK_ATTR, parts.attention.register_forward_hook(_scale_heads))
        setattr(parts.intermediate, _HOOK_ATTR, parts.intermediate.register_forward_hook(_scale_ffn))


def has_coefficients(model: nn.Module) -> bool:
    """Whether `attach_coefficients` was applied."""
    return any(name.endswith(HEAD_COEF) for name, _ in model.named_parameters())


def head_coefficients(model: nn.Module) -> list[nn.Parameter]:
    """The per-layer head coefficient vectors."""
    return [getattr(p.attention, HEAD_COEF) for p in get_adapter(model).layer_parts(model)]


def ffn_coefficients(model: nn.Module) -> list[nn.Parameter]:
    """The per-layer FFN coefficient vectors."""
    return [getattr(p.intermediate, FFN_COEF) for p in get_adapter(model).layer_parts(model)]


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
        for module, name in ((parts.attention, HEAD_COEF), (parts.intermediate, FFN_COEF)):
            # Remove our hooks from this module's own table: a stored handle would point at the
            # original's table after a deepcopy.
            for key, hook in list(module._forward_hooks.items()):
                if hook in (_scale_heads, _scale_ffn):
                    del module._forward_hooks[key]
            if hasattr(module, _HOOK_ATTR):
                delattr(module, _HOOK_ATTR)
            delattr(module, name)
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
