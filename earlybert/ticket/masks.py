"""Turn slimming coefficients into keep-masks: exact counts, deterministic ties, floors and rounding."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from earlybert.errors import EarlyBertError
from earlybert.models.adapters import kv_head_counts, layer_sizes
from earlybert.ticket.coefficients import ffn_coefficients, head_coefficients
from earlybert.ticket.ticket import Ticket

KV_GROUPS = ("keep", "prune")


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


def check_grouped_ratio(n: int, kv_heads: int, prune_ratio: float, kv_groups: str) -> None:
    """With kv_groups=keep, refuse a head ratio whose count of `n` heads the KV groups cannot share evenly, naming
    the nearest counts that they can (multiples of the group count). `prune` rounds the ratio to whole groups."""
    wanted = prune_count(n, prune_ratio)
    if kv_groups != "keep" or wanted % kv_heads == 0:
        return
    below, above = kv_heads * (wanted // kv_heads), min(kv_heads * (wanted // kv_heads + 1), n - kv_heads)
    counts = sorted({below, above})
    raise EarlyBertError(f"heads_ratio={prune_ratio:g} prunes {wanted} of {n} heads a layer, but with kv_groups=keep "
                         f"each of the {kv_heads} KV groups must lose the same number: prune "
                         f"{' or '.join(map(str, counts))} heads (heads_ratio "
                         f"{' or '.join(f'{c / n:.4g}' for c in counts)}), or set kv_groups=prune")


def _head_cuts(scores: torch.Tensor, prune_ratio: float, min_heads: int, kv_heads: int | None,
               kv_groups: str) -> list[tuple[torch.Tensor, int]]:
    """One layer's head ranking as (scores, how many to keep) per cut: the layer, each KV group (`keep`), or the
    KV groups scored by their heads' sum (`prune`). A KV group serves `heads / kv_heads` consecutive heads."""
    n = scores.numel()
    if not kv_heads or kv_heads in (1, n):  # no grouped-query attention: one cut per layer
        return [(scores, max(n - prune_count(n, prune_ratio), min(min_heads, n)))]
    check_grouped_ratio(n, kv_heads, prune_ratio, kv_groups)
    size = n // kv_heads
    blocks = scores.reshape(kv_heads, size)
    if kv_groups == "keep":  # the same number of heads leaves every group, so every KV head stays
        keep = max(size - prune_count(size, prune_ratio), min(size, math.ceil(min_heads / kv_heads)))
        return [(block, keep) for block in blocks]
    keep = max(kv_heads - prune_count(kv_heads, prune_ratio), min(kv_heads, math.ceil(min_heads / size)))
    return [(blocks.sum(dim=1), keep)]


def head_masks(
    coefficients: Sequence[torch.Tensor], prune_ratio: float = 1 / 3, min_heads_per_layer: int = 1,
    kv_heads: Sequence[int] | None = None, kv_groups: str = "keep",
) -> list[torch.Tensor]:
    """Layer-wise head masks: prune the smallest |c| in each layer, never below `min_heads_per_layer`.

    With grouped-query attention (`kv_heads` per layer), `keep` prunes the same number of query heads in every KV
    group and `prune` removes whole KV groups (the sum of their heads' |c| ranks them) with all their heads.
    """
    check_ratio("heads prune ratio", prune_ratio)
    if kv_groups not in KV_GROUPS:
        raise EarlyBertError(f"kv_groups {kv_groups!r} is unknown: use 'keep' or 'prune'")
    masks = []
    for layer, c in enumerate(coefficients):
        scores = c.detach().abs().cpu().double().flatten()
        cuts = _head_cuts(scores, prune_ratio, min_heads_per_layer, kv_heads[layer] if kv_heads else None, kv_groups)
        mask = torch.cat([_keep_top(block, keep) for block, keep in cuts])
        if kv_groups == "prune" and len(cuts) == 1 and mask.numel() < scores.numel():  # groups -> their heads
            mask = mask.repeat_interleave(scores.numel() // mask.numel())
        masks.append(mask)
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
    kv_groups: str = "keep"
    """Grouped-query attention: prune heads evenly within every KV group (`keep`) or whole KV groups (`prune`)."""
    kv_heads: list[int] | None = None
    """KV heads per layer of the model the masks are for (set from the model; None: no grouped-query attention)."""

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
            head_masks(head_scores, self.heads_ratio, self.min_heads_per_layer, self.kv_heads, self.kv_groups),
            ffn_masks(ffn_scores, self.ffn_ratio, self.ffn_scope, self.ffn_round_to),
        )

    def tied(self, head_scores: Sequence[torch.Tensor], ffn_scores: Sequence[torch.Tensor]) -> bool:
        """Whether equal |scores| straddle any cut, so index order, not the scores, decides some units."""
        for layer, c in enumerate(head_scores):
            scores = c.detach().abs().cpu().double().flatten()
            kv = self.kv_heads[layer] if self.kv_heads else None
            if any(_tied_at_cut(block, keep) for block, keep in _head_cuts(
                    scores, self.heads_ratio, self.min_heads_per_layer, kv, self.kv_groups)):
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
    spec = with_kv_heads(spec or MaskSpec(), model)
    heads_c, ffn_c = head_coefficients(model), ffn_coefficients(model)
    heads, ffn = spec.masks(heads_c, ffn_c)
    return Ticket.from_masks(
        model.config.model_type, heads, ffn, coefficients={"heads": heads_c, "ffn": ffn_c},
        **spec_metadata(spec), **metadata,
    )


def random_ticket(model: nn.Module, spec: MaskSpec | None = None, seed: int = 0, like: Ticket | None = None,
                  **metadata: Any) -> Ticket:
    """A random ticket at the same ratios (the paper's random-pruning baseline), reproducible by seed.

    With `like` (a learned ticket of the same model) it keeps exactly that ticket's heads per layer and total FFN
    width, so a random-versus-learned comparison trains models of the same size; the FFN width is spread over
    the layers at random, in multiples of the spec's `ffn_round_to`.
    """
    spec = with_kv_heads(spec or MaskSpec(), model)
    heads_n, ffn_n = layer_sizes(model)
    head_scores, ffn_scores = random_scores(heads_n, seed), random_scores(ffn_n, seed + 1)
    heads, ffn = spec.masks(head_scores, ffn_scores)
    if like is not None:
        if [len(h) for h in like.heads] != heads_n or [len(f) for f in like.ffn] != ffn_n:
            raise EarlyBertError("the learned ticket does not fit this model (other layer sizes): pass the ticket "
                                 "drawn from the same model")
        if not spec.kv_heads:  # grouped heads already keep the learned ticket's count in every group
            heads = [_keep_top(s, sum(row)) for s, row in zip(head_scores, like.heads)]
        widths = _random_widths(ffn_scores, sum(map(sum, like.ffn)), spec.ffn_round_to)
        ffn = [_keep_top(s, k) for s, k in zip(ffn_scores, widths)]
    return Ticket.from_masks(model.config.model_type, heads, ffn, random_seed=seed, **spec_metadata(spec), **metadata)


def with_kv_heads(spec: MaskSpec, model: nn.Module) -> MaskSpec:
    """`spec` with the model's KV heads per layer filled in (grouped-query decoders; unchanged for others); refuses a
    head ratio the KV groups cannot share (so a run stops on it before it starts)."""
    counts = kv_head_counts(model)
    for n, kv in zip(layer_sizes(model)[0], counts or []):
        if kv not in (1, n):
            check_grouped_ratio(n, kv, spec.heads_ratio, spec.kv_groups)
    return replace(spec, kv_heads=counts or None)


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


def spec_metadata(spec: MaskSpec) -> dict[str, Any]:
    """The spec's settings as a ticket stores them."""
    return {"heads_ratio": spec.heads_ratio, "ffn_ratio": spec.ffn_ratio, "ffn_scope": spec.ffn_scope,
            "min_heads_per_layer": spec.min_heads_per_layer, "ffn_round_to": spec.ffn_round_to,
            **({"kv_groups": spec.kv_groups} if spec.kv_heads else {})}
