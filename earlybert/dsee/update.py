"""DSEE's weight update (Chen et al., ACL 2023): dW = (alpha / r) B A + S, with S non-zero only on a fixed support.

The update is a torch parametrization of each chosen linear's weight, so the module stays an `nn.Linear` (or GPT-2's
Conv1D, whose weight is the transpose) that shrink, FLOP accounting and checkpoints handle as before, and
`merge_updates` folds it into a plain weight. (peft's LoRA replaces the linear with its own wrapper layer and has no
sparse part on the same weight; DSEE's update is one sum on one weight, which a parametrization expresses directly.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from earlybert.errors import EarlyBertError
from earlybert.models.modeling import LINEAR_TYPES, linear_features, output_dim


class LowRankSparseUpdate(nn.Module):
    """weight -> weight + (alpha / rank) B A + S, S holding `sparse_values` at the flat positions `support` of the
    [out, in] matrix; with a 0/1 `mask`, the sum is masked (weights pruned before stay zero). `transposed`: the weight
    is stored [in, out] (Conv1D), and so are the mask and the sum."""

    def __init__(self, out_features: int, in_features: int, rank: int, alpha: float, support: torch.Tensor,
                 mask: torch.Tensor | None = None, transposed: bool = False):
        super().__init__()
        self.rank, self.alpha, self.transposed = rank, alpha, transposed
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))  # B = 0: the update starts at zero
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.sparse_values = nn.Parameter(torch.zeros(support.numel()))
        self.register_buffer("support", support.long().clone())
        self.register_buffer("mask", None if mask is None else mask.clone())

    def delta(self) -> torch.Tensor:
        """dW as a dense [out, in] matrix."""
        out_features, in_features = self.lora_B.shape[0], self.lora_A.shape[1]
        low_rank = (self.alpha / self.rank) * (self.lora_B @ self.lora_A) if self.rank else \
            self.lora_B.new_zeros(out_features, in_features)
        return low_rank.flatten().index_add(0, self.support, self.sparse_values).view(out_features, in_features)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        delta = self.delta().to(weight.dtype)
        updated = weight + (delta.t() if self.transposed else delta)
        return updated if self.mask is None else updated * self.mask.to(weight.dtype)


def low_rank_plus_sparse(weight: torch.Tensor, rank: int, entries: int, iterations: int = 10,
                         seed: int = 0) -> torch.Tensor:
    """Flat positions of the `entries` largest |S| in W ~ L + S (L of rank `rank`, S with `entries` non-zeros),
    found by alternating projections: L = the best rank-`rank` fit of W - S, S = the largest entries of W - L
    (GoDec; GreBsmo grows the rank greedily on the same two steps)."""
    w = weight.detach().float()
    if entries == 0:
        return torch.zeros(0, dtype=torch.long)
    sparse = torch.zeros_like(w)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(iterations):
            if rank:
                u, s, v = torch.svd_lowrank(w - sparse, q=min(rank + 4, *w.shape), niter=2)
                low = (u[:, :rank] * s[:rank]) @ v[:, :rank].T
            else:
                low = torch.zeros_like(w)
            residual = (w - low).flatten()
            keep = residual.abs().topk(entries).indices
            sparse = torch.zeros_like(residual).index_copy_(0, keep, residual[keep]).view_as(w)
    return keep.sort().values


def magnitude_support(weight: torch.Tensor, entries: int) -> torch.Tensor:
    """Flat positions of the `entries` largest |W|."""
    return weight.detach().float().abs().flatten().topk(entries).indices.sort().values if entries else \
        torch.zeros(0, dtype=torch.long)


@dataclass(frozen=True)
class UpdateShape:
    """What `attach_updates` needs to rebuild one linear's update (its values come from a state dict)."""

    rank: int
    alpha: float
    entries: int
    masked: bool = False


def update_modules(model: nn.Module) -> dict[str, LowRankSparseUpdate]:
    """Module name -> its update, for every linear of `model` carrying one."""
    return {name: module.parametrizations.weight[0] for name, module in model.named_modules()
            if parametrize.is_parametrized(module, "weight")
            and isinstance(module.parametrizations.weight[0], LowRankSparseUpdate)}


def update_shapes(model: nn.Module) -> dict[str, UpdateShape]:
    """Module name -> the shape of its update ({} for a model without updates)."""
    return {name: UpdateShape(u.rank, u.alpha, u.support.numel(), u.mask is not None)
            for name, u in update_modules(model).items()}


def attach_updates(model: nn.Module, shapes: dict[str, UpdateShape], supports: dict[str, torch.Tensor] | None = None,
                   masks: dict[str, torch.Tensor] | None = None) -> None:
    """Parametrize each named linear with an update of the given shape (support and mask given, or placeholders
    that a state dict fills)."""
    for name, shape in shapes.items():
        linear = model.get_submodule(name)
        if not isinstance(linear, LINEAR_TYPES):
            raise EarlyBertError(f"DSEE target {name} is a {type(linear).__name__}, not a linear layer: choose "
                                 "linear layers in dsee.targets")
        support = supports[name] if supports else torch.zeros(shape.entries, dtype=torch.long)
        mask = masks[name] if masks else torch.ones_like(linear.weight) if shape.masked else None
        in_features, out_features = linear_features(linear)
        update = LowRankSparseUpdate(out_features, in_features, shape.rank, shape.alpha, support, mask,
                                     transposed=output_dim(linear) == 1)
        parametrize.register_parametrization(linear, "weight", update.to(linear.weight.device), unsafe=True)


def merge_updates(model: nn.Module) -> nn.Module:
    """Fold every update into its linear's weight and remove the parametrizations (a plain model again)."""
    for name in update_modules(model):
        parametrize.remove_parametrizations(model.get_submodule(name), "weight", leave_parametrized=True)
    return model


def trainable_parameters(model: nn.Module) -> int:
    """Parameters that train (requires_grad), counted once."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters() if p.requires_grad}.values())
