"""DSEE's pruning step after fine-tuning: heads scored by their update (structured), or the merged weights'
magnitude (unstructured)."""

from __future__ import annotations

import torch
from torch import nn

from earlybert.errors import EarlyBertError
from earlybert.models.adapters import get_adapter, head_size, kv_head_counts, layer_sizes
from earlybert.models.modeling import linear_features, linear_weight
from earlybert.ticket.masks import check_grouped_ratio, head_masks
from earlybert.ticket.ticket import Ticket

HEAD_SCORES = ("update", "merged")


def head_scores(model: nn.Module, pretrained: nn.Module, targets: list[str], score: str = "update"
                ) -> list[torch.Tensor]:
    """Per layer, one score per head: the L1 norm of its rows' update W - W_pretrained in the targeted head
    projections (full names in `targets`; `update`), or of the merged weights W there (`merged`)."""
    if score not in HEAD_SCORES:
        raise EarlyBertError(f"unknown head score {score!r}: use one of {', '.join(HEAD_SCORES)}")
    adapter, d = get_adapter(model), head_size(model)
    names = {id(m): n for n, m in model.named_modules()}
    before = dict(pretrained.named_modules())
    scores = []
    for layer in adapter.layer_parts(model):
        total = None
        for linear, groups in layer.head_linears:
            name = names[id(linear)]
            if name not in targets:
                continue
            weight = linear_weight(linear).detach().float()
            if score == "update":
                weight = weight - linear_weight(before[name]).detach().float()
            per_head = weight.view(groups, -1, d, weight.shape[1]).abs().sum(dim=(0, 2, 3))
            total = per_head if total is None else total + per_head
        if total is None:
            raise EarlyBertError("dsee.prune=structured scores heads by the update of their projections: include a "
                                 "query, key or value projection in dsee.targets")
        scores.append(total)
    return scores


def check_head_groups(model: nn.Module, dsee) -> None:
    """With dsee.prune=structured, refuse a dsee.heads_ratio that a grouped-query model's KV groups cannot share
    evenly (before any training)."""
    if dsee.prune != "structured":
        return
    for n, kv in zip(layer_sizes(model)[0], kv_head_counts(model)):
        if kv not in (1, n):
            check_grouped_ratio(n, kv, dsee.heads_ratio, dsee.kv_groups)


def structured_ticket(model: nn.Module, pretrained: nn.Module, targets: list[str], heads_ratio: float,
                      score: str = "update", kv_groups: str = "keep") -> Ticket:
    """A ticket pruning the lowest-scoring `heads_ratio` of the heads in every layer and no FFN neuron; in a
    grouped-query model as many from every KV group (`keep`) or whole groups (`prune`)."""
    scores = head_scores(model, pretrained, targets, score)
    widths = [linear_features(p.ffn_out)[0] for p in get_adapter(model).layer_parts(model)]
    masks = head_masks(scores, heads_ratio, kv_heads=kv_head_counts(model) or None, kv_groups=kv_groups)
    return Ticket.from_masks(model.config.model_type, masks, [torch.ones(w, dtype=torch.int64) for w in widths],
                             method="dsee", head_score=score, heads_ratio=heads_ratio)


def magnitude_masks(model: nn.Module, targets: list[str], sparsity: float) -> dict[str, torch.Tensor]:
    """Per targeted linear (full names), a 0/1 mask zeroing its `sparsity` smallest |W| (unstructured)."""
    if not 0 < sparsity < 1:
        raise EarlyBertError(f"dsee.sparsity={sparsity} is not in (0, 1): give the share of weights to zero, e.g. 0.5")
    masks = {}
    for name in targets:
        weight = model.get_submodule(name).weight.detach()
        mask = torch.ones(weight.numel(), dtype=weight.dtype)
        mask[weight.abs().flatten().argsort()[:int(sparsity * weight.numel())]] = 0
        masks[name] = mask.view_as(weight)
    return masks


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the masked weights in place."""
    with torch.no_grad():
        for name, mask in masks.items():
            weight = model.get_submodule(name).weight
            weight.mul_(mask.to(weight))
