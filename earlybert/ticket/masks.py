"""Turn slimming coefficients into keep-masks: exact counts, deterministic ties, floors and rounding."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from earlybert.errors import EarlyBertError
from earlybert.models.adapters import layer_sizes
from earlybert.ticket.coefficients import ffn_coefficients, head_coefficients
from earlybert.ticket.ticket import Ticket


def check_ratio(name: str, ratio: float) -> float:
    """Return `ratio` if it lies in [0, 1), else raise a one-line error."""
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0.0 <= float(ratio) < 1.0:
        raise EarlyBertError(f"{name}={ratio!r} is outside [0, 1): give the fraction of units to prune, e.g. 0.4")
    return float(ratio)


def prune_count(n: int, ratio: float) -> int:
    """How many of `n` units a prune `ratio` removes: round half up, so 1/3 of 12 is 4 and 1/3 of 2 is 1."""
    return min(n, math.floor(ratio * n + 0.5 + 1e-9))


def _keep_top(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """0/1 mask keeping the `keep` largest scores; among equal scores the lower index is kept."""
    mask = torch.zeros(scores.numel(), dtype=torch.int8)
    if keep > 0:
        # Stable sort of -score puts equal scores in index order, so ties prune the higher index.
        order = torch.sort(-scores.double().flatten(), stable=True).indices
        mask[order[:keep]] = 1
    return mask


def head_masks(
    coefficients: Sequence[torch.Tensor], prune_ratio: float = 1 / 3, min_heads_per_layer: int = 1
) -> list[torch.Tensor]:
    """Layer-wise head masks: prune the smallest |c| in each layer, never below `min_heads_per_layer`."""
    check_ratio("heads prune ratio", prune_ratio)
    masks = []
    for c in coefficients:
        n = c.numel()
        keep = max(n - prune_count(n, prune_ratio), min(min_heads_per_layer, n))
        masks.append(_keep_top(c.detach().abs().cpu(), keep))
    return masks


def ffn_masks(
    coefficients: Sequence[torch.Tensor],
    prune_ratio: float = 0.4,
    scope: str = "global",
    round_to: int = 1,
) -> list[torch.Tensor]:
    """FFN neuron masks by |c|, pruned across all layers (`global`) or in each (`layer`).

    `round_to` > 1 rounds each layer's kept width to the nearest multiple (at least one multiple,
    at most the layer's width) so the slim matmuls stay tensor-core friendly.
    """
    check_ratio("ffn prune ratio", prune_ratio)
    if scope not in ("global", "layer"):
        raise EarlyBertError(f"ffn scope {scope!r} is unknown: use 'global' or 'layer'")
    if round_to < 1:
        raise EarlyBertError(f"round_to={round_to} must be >= 1 (1 turns rounding off)")
    scores = [c.detach().abs().cpu().double().flatten() for c in coefficients]
    widths = [s.numel() for s in scores]
    if scope == "layer":
        keeps = [w - prune_count(w, prune_ratio) for w in widths]
    else:
        flat = torch.cat(scores)
        global_mask = _keep_top(flat, flat.numel() - prune_count(flat.numel(), prune_ratio))
        keeps = [int(m.sum()) for m in torch.split(global_mask, widths)]
    if round_to > 1:
        keeps = [min(w, max(round_to, round_to * math.floor(k / round_to + 0.5))) for k, w in zip(keeps, widths)]
    return [_keep_top(s, k) for s, k in zip(scores, keeps)]


def _tied_at_cut(scores: torch.Tensor, keep: int) -> bool:
    """Whether the last kept and the first pruned score are equal (the mask then depends on index order)."""
    if not 0 < keep < scores.numel():
        return False
    top = torch.topk(scores.double().flatten(), keep + 1).values
    return bool(top[keep - 1] == top[keep])


def hamming_distance(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """Normalized Hamming distance between two per-layer masks: the fraction of units that differ."""
    fa = torch.cat([m.flatten() for m in a])
    fb = torch.cat([m.flatten() for m in b])
    if fa.shape != fb.shape:
        raise EarlyBertError(f"masks of {fa.numel()} and {fb.numel()} units cannot be compared")
    return float((fa != fb).sum()) / max(1, fa.numel())


def random_scores(shapes: Sequence[int], seed: int) -> list[torch.Tensor]:
    """Seeded random scores per layer: fed to the mask functions they give a random ticket."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(n, generator=gen, dtype=torch.float64) for n in shapes]


@dataclass
class MaskSpec:
    """How coefficients become a ticket."""

    heads_ratio: float = 1 / 3
    """Fraction of heads pruned in each layer."""
    ffn_ratio: float = 0.4
    """Fraction of FFN neurons pruned."""
    ffn_scope: str = "global"
    """Rank FFN neurons across all layers (`global`) or within each layer (`layer`)."""
    min_heads_per_layer: int = 1
    """Never keep fewer heads than this in a layer."""
    ffn_round_to: int = 8
    """Round each layer's kept FFN width to a multiple of this (8: aligned matmuls; 64: tensor cores); 1 = off."""

    def __post_init__(self):
        check_ratio("heads_ratio", self.heads_ratio)
        check_ratio("ffn_ratio", self.ffn_ratio)
        if self.min_heads_per_layer < 1:
            raise EarlyBertError(f"min_heads_per_layer={self.min_heads_per_layer} must be >= 1")

    def masks(
        self, head_scores: Sequence[torch.Tensor], ffn_scores: Sequence[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(head masks, FFN masks) from per-layer scores."""
        return (
            head_masks(head_scores, self.heads_ratio, self.min_heads_per_layer),
            ffn_masks(ffn_scores, self.ffn_ratio, self.ffn_scope, self.ffn_round_to),
        )

    def tied(self, head_scores: Sequence[torch.Tensor], ffn_scores: Sequence[torch.Tensor]) -> bool:
        """Whether equal |scores| straddle any cut, so index order, not the scores, decides some units."""
        heads = [c.detach().abs().cpu() for c in head_scores]
        for scores, mask in zip(heads, head_masks(heads, self.heads_ratio, self.min_heads_per_layer)):
            if _tied_at_cut(scores, int(mask.sum())):
                return True
        ffn = [c.detach().abs().cpu().double().flatten() for c in ffn_scores]
        if self.ffn_scope == "global":  # the global cut decides each layer's width before any rounding
            flat = torch.cat(ffn)
            if _tied_at_cut(flat, flat.numel() - prune_count(flat.numel(), self.ffn_ratio)):
                return True
        masks = ffn_masks(ffn, self.ffn_ratio, self.ffn_scope, self.ffn_round_to)
        return any(_tied_at_cut(s, int(m.sum())) for s, m in zip(ffn, masks))


def draw_ticket(model: nn.Module, spec: MaskSpec | None = None, **metadata: Any) -> Ticket:
    """The ticket given by the model's attached coefficients (their values are stored for folding)."""
    spec = spec or MaskSpec()
    heads_c, ffn_c = head_coefficients(model), ffn_coefficients(model)
    heads, ffn = spec.masks(heads_c, ffn_c)
    return Ticket.from_masks(
        model.config.model_type, heads, ffn, coefficients={"heads": heads_c, "ffn": ffn_c},
        **_spec_metadata(spec), **metadata,
    )


def random_ticket(model: nn.Module, spec: MaskSpec | None = None, seed: int = 0, like: Ticket | None = None,
                  **metadata: Any) -> Ticket:
    """A random ticket at the same ratios (the paper's random-pruning baseline), reproducible by seed.

    With `like` (a learned ticket of the same model) it keeps exactly that ticket's heads per layer and total FFN
    width, so a random-versus-learned comparison trains models of the same size; the FFN width is spread over
    the layers at random, in multiples of the spec's `ffn_round_to`.
    """
    spec = spec or MaskSpec()
    heads_n, ffn_n = layer_sizes(model)
    head_scores, ffn_scores = random_scores(heads_n, seed), random_scores(ffn_n, seed + 1)
    if like is None:
        heads, ffn = spec.masks(head_scores, ffn_scores)
    else:
        if [len(h) for h in like.heads] != heads_n or [len(f) for f in like.ffn] != ffn_n:
            raise EarlyBertError("the learned ticket does not fit this model (other layer sizes): pass the ticket "
                                 "drawn from the same model")
        heads = [_keep_top(s, sum(row)) for s, row in zip(head_scores, like.heads)]
        widths = _random_widths(ffn_scores, sum(map(sum, like.ffn)), spec.ffn_round_to)
        ffn = [_keep_top(s, k) for s, k in zip(ffn_scores, widths)]
    return Ticket.from_masks(model.config.model_type, heads, ffn, random_seed=seed, **_spec_metadata(spec), **metadata)


def _random_widths(scores: Sequence[torch.Tensor], total: int, round_to: int) -> list[int]:
    """Per-layer kept widths summing to exactly `total`: the layers' shares of the `total` highest random scores,
    rounded down to multiples of `round_to`, then topped up a multiple at a time, largest remainder first."""
    sizes = [s.numel() for s in scores]
    shares = [int(m.sum()) for m in torch.split(_keep_top(torch.cat(list(scores)), total), sizes)]
    widths = [min(w, round_to * (k // round_to)) for k, w in zip(shares, sizes)]
    order = sorted(range(len(sizes)), key=lambda i: (widths[i] - shares[i], i))
    while (short := total - sum(widths)) > 0:
        i = next((i for i in order if widths[i] < sizes[i]), None)
        if i is None:
            break
        widths[i] += min(round_to, sizes[i] - widths[i], short)
        order.remove(i)
        order.append(i)
    return widths


def _spec_metadata(spec: MaskSpec) -> dict[str, Any]:
    return {"heads_ratio": spec.heads_ratio, "ffn_ratio": spec.ffn_ratio, "ffn_scope": spec.ffn_scope,
            "min_heads_per_layer": spec.min_heads_per_layer, "ffn_round_to": spec.ffn_round_to}
