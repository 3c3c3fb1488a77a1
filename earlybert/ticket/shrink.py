"""Physically remove pruned heads and FFN neurons, optionally folding coefficients, and slice AdamW state."""

from __future__ import annotations

import torch
from torch import nn

from earlybert.errors import EarlyBertError
from earlybert.models.adapters import get_adapter, head_size, kept_kv_heads, layer_sizes
from earlybert.models.modeling import linear_features, output_dim
from earlybert.ticket.coefficients import ffn_coefficients, has_coefficients, head_coefficients, is_coefficient_name
from earlybert.ticket.ticket import Ticket

# A prune plan maps a parameter name to (dimension, kept indices).
PrunePlan = dict[str, tuple[int, torch.Tensor]]


def _module_names(model: nn.Module) -> dict[int, str]:
    return {id(m): name for name, m in model.named_modules()}


def _kept(row: list[int]) -> torch.Tensor:
    return torch.tensor([i for i, v in enumerate(row) if v], dtype=torch.long)


def _rows(kept: torch.Tensor, groups: int, size: int) -> torch.Tensor:
    """Kept output rows of a linear whose rows are `groups` blocks of `size` (fused q/k/v, GLU input/gate)."""
    return torch.cat([g * size + kept for g in range(groups)])


def prune_plan(model: nn.Module, ticket: Ticket) -> PrunePlan:
    """For every parameter the ticket shrinks: the dimension it is sliced along and the indices kept."""
    heads, widths = layer_sizes(model)
    ticket.check_shapes(model.config.model_type, heads, widths)
    names = _module_names(model)
    d = head_size(model)
    plan: PrunePlan = {}

    def slice_linear(linear: nn.Module, dim: int, idx: torch.Tensor) -> None:
        # `dim` 0: output features, 1: input features, as in nn.Linear's weight (GPT-2's Conv1D holds the transpose).
        plan[names[id(linear)] + ".weight"] = (dim if output_dim(linear) == 0 else 1 - dim, idx)
        if dim == 0 and linear.bias is not None:
            plan[names[id(linear)] + ".bias"] = (0, idx)

    layers = get_adapter(model).layer_parts(model)
    for layer, (parts, n_heads, width, head_row, ffn_row) in enumerate(zip(layers, heads, widths, ticket.heads,
                                                                            ticket.ffn)):
        head_idx = _kept(head_row)
        # Head h owns the contiguous slice [h*d, (h+1)*d) of each group of a q/k/v output and of the
        # output projection's input.
        unit_idx = (head_idx[:, None] * d + torch.arange(d)[None, :]).flatten()
        for linear, groups in parts.head_linears:
            slice_linear(linear, 0, _rows(unit_idx, groups, n_heads * d))
        slice_linear(parts.attention_output, 1, unit_idx)
        if parts.kv_linears:
            kv_idx = kept_kv_heads(head_row, linear_features(parts.kv_linears[0])[1] // d, layer)
            for linear in parts.kv_linears:
                slice_linear(linear, 0, (kv_idx[:, None] * d + torch.arange(d)[None, :]).flatten())
        ffn_idx = _kept(ffn_row)
        linear, groups = parts.ffn_in
        slice_linear(linear, 0, _rows(ffn_idx, groups, width))
        if parts.ffn_gate is not None:
            slice_linear(parts.ffn_gate, 0, ffn_idx)
        slice_linear(parts.ffn_out, 1, ffn_idx)
    return plan


def apply_plan(tensors: dict[str, torch.Tensor], plan: PrunePlan) -> dict[str, torch.Tensor]:
    """Slice every tensor named in the plan; others pass through unchanged."""
    out = {}
    for name, t in tensors.items():
        if name in plan:
            dim, idx = plan[name]
            t = t.index_select(dim, idx.to(t.device)).contiguous()
        out[name] = t
    return out


def _coefficient_values(model: nn.Module, ticket: Ticket) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Coefficients to fold: the model's attached ones, else those stored in the ticket."""
    if has_coefficients(model):
        return [c.detach() for c in head_coefficients(model)], [c.detach() for c in ffn_coefficients(model)]
    if ticket.coefficients is not None:
        return (
            [torch.tensor(r, dtype=torch.float64) for r in ticket.coefficients["heads"]],
            [torch.tensor(r, dtype=torch.float64) for r in ticket.coefficients["ffn"]],
        )
    raise EarlyBertError(
        "fold_coefficients needs coefficient values: attach coefficients to the model or use a ticket "
        "drawn by a search (it stores them)"
    )


def slim_config(model: nn.Module, ticket: Ticket):
    """The slim config of `model` after applying `ticket`."""
    adapter = get_adapter(model)
    data = model.config.to_dict()
    for key in ("model_type", "transformers_version", "auto_map"):
        data.pop(key, None)
    data["layer_num_heads"] = ticket.layer_heads()
    data["layer_intermediate_sizes"] = ticket.layer_ffn()
    d = head_size(model)
    if adapter.layout.head_dim_field:  # fewer heads at the same hidden size: the head size must be explicit
        data[adapter.layout.head_dim_field] = d
    if adapter.layout.kv_linears:
        data["layer_num_kv_heads"] = [len(kept_kv_heads(row, linear_features(p.kv_linears[0])[1] // d, i))
                                      for i, (row, p) in enumerate(zip(ticket.heads, adapter.layer_parts(model)))]
    config = adapter.slim_config(**data)
    config._attn_implementation = model.config._attn_implementation
    return config


def _scale_inputs(state: dict[str, torch.Tensor], name: str, linear: nn.Module, scale: torch.Tensor) -> None:
    """Multiply the input columns of a linear's weight in `state` by `scale` (rows of a GPT-2 Conv1D)."""
    weight = state[name + ".weight"]
    scale = scale[None, :] if output_dim(linear) == 0 else scale[:, None]
    state[name + ".weight"] = (weight.double() * scale).to(weight.dtype)


@torch.no_grad()
def shrink_model(model: nn.Module, ticket: Ticket, fold_coefficients: bool = False) -> nn.Module:
    """A new slim model (the matching `Slim*` class) holding only the ticket's heads and neurons.

    With `fold_coefficients`, each kept unit's coefficient multiplies the following linear's input
    column, so the slim model computes what the coefficient-scaled model computed; without it the
    coefficients are dropped (as if 1.0). The input model is left unchanged.
    """
    adapter = get_adapter(model)
    plan = prune_plan(model, ticket)
    state = {k: v for k, v in model.state_dict().items() if not is_coefficient_name(k)}
    sliced = apply_plan(state, plan)
    if fold_coefficients:
        head_coefs, ffn_coefs = _coefficient_values(model, ticket)
        names = _module_names(model)
        d = head_size(model)
        for layer, parts in enumerate(adapter.layer_parts(model)):
            keep = _kept(ticket.heads[layer])
            _scale_inputs(sliced, names[id(parts.attention_output)], parts.attention_output,
                          head_coefs[layer].to(torch.float64)[keep].repeat_interleave(d))
            _scale_inputs(sliced, names[id(parts.ffn_out)], parts.ffn_out,
                          ffn_coefs[layer].to(torch.float64)[_kept(ticket.ffn[layer])])
    slim_cls = adapter.slim_classes[adapter.task_of(model)]
    first = next(model.parameters())
    slim = slim_cls(slim_config(model, ticket)).to(device=first.device, dtype=first.dtype)
    slim.load_state_dict(sliced, strict=True)
    slim.train(model.training)
    return slim


def transfer_adam_state(
    old_optimizer: torch.optim.Optimizer,
    old_model: nn.Module,
    new_optimizer: torch.optim.Optimizer,
    new_model: nn.Module,
    plan: PrunePlan,
) -> None:
    """Carry AdamW moments (`exp_avg`, `exp_avg_sq`, `step`) from the full to the slim model's optimizer.

    Parameters are matched by name; moments of sliced parameters are sliced with the same plan, and
    coefficient parameters (absent from the slim model) are dropped.
    """
    old_params = dict(old_model.named_parameters())
    for name, new_param in new_model.named_parameters():
        old_param = old_params.get(name)
        if old_param is None or old_param not in old_optimizer.state:
            continue
        state = {}
        for key, value in old_optimizer.state[old_param].items():
            if torch.is_tensor(value) and value.shape == old_param.shape:
                value = apply_plan({name: value}, plan)[name]
            state[key] = value.clone() if torch.is_tensor(value) else value
        new_optimizer.state[new_param] = state
