"""One-shot tickets at step 0, in the same format as learned ones: importance from the weights alone (magnitude), or
from weights and the activations of a few calibration batches (Wanda-style |W| x ||x||, FLAP's fluctuation).

Every score is taken where the coefficients sit: at the input columns of the linear that reads a head's context
(the attention output projection) and of the one that reads the FFN neurons (the second FFN linear). A head's
score is the sum over its columns. The scores are then ranked by the same `MaskSpec` as the coefficients are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from earlybert.errors import EarlyBertError
from earlybert.models.adapters import get_adapter, head_size, model_inputs
from earlybert.models.modeling import linear_features, linear_weight
from earlybert.ticket.masks import MaskSpec, spec_metadata, with_kv_heads
from earlybert.ticket.ticket import Ticket

METHODS = ("magnitude", "wanda", "flap")


class InputStatistics:
    """Per input feature of one linear: count, sum and sum of squares of its inputs over every position seen."""

    def __init__(self, linear: nn.Linear):
        self.count = 0
        self.sum = torch.zeros(linear_features(linear)[0], dtype=torch.float64)
        self.squares = torch.zeros(linear_features(linear)[0], dtype=torch.float64)
        self.handle = linear.register_forward_pre_hook(self._record)

    def _record(self, module: nn.Module, args: tuple) -> None:
        x = args[0].detach().reshape(-1, args[0].shape[-1]).double().cpu()
        self.count += x.shape[0]
        self.sum += x.sum(0)
        self.squares += (x * x).sum(0)

    def norm(self) -> torch.Tensor:
        """||x_j||_2 over all positions."""
        return self.squares.sqrt()

    def variance(self) -> torch.Tensor:
        """The variance of x_j over all positions (FLAP's fluctuation of a feature)."""
        mean = self.sum / max(self.count, 1)
        return (self.squares / max(self.count, 1) - mean * mean).clamp_min(0)


@torch.no_grad()
def column_scores(model: nn.Module, method: str, batches: Iterable[dict[str, torch.Tensor]] | None = None):
    """Per layer, (attention output scores, FFN output scores) per input column of the two consumer linears."""
    if method not in METHODS:
        raise EarlyBertError(f"one-shot method {method!r} is not one of {', '.join(METHODS)}")
    parts = get_adapter(model).layer_parts(model)
    linears = [(p.attention_output, p.ffn_out) for p in parts]
    if method == "magnitude":
        return [tuple(linear_weight(lin).detach().abs().double().sum(0).cpu() for lin in pair) for pair in linears]
    stats = [tuple(InputStatistics(lin) for lin in pair) for pair in linears]
    try:
        model.eval()
        seen = 0
        for batch in batches or ():
            model.base_model(**model_inputs(model, batch))
            seen += 1
    finally:
        for pair in stats:
            for s in pair:
                s.handle.remove()
    if not seen:
        raise EarlyBertError(f"one-shot method {method} needs calibration batches: give some text (--data FILE)")
    out = []
    for pair, lins in zip(stats, linears):
        row = []
        for s, lin in zip(pair, lins):
            w = linear_weight(lin).detach().double().cpu()
            row.append(w.abs().sum(0) * s.norm() if method == "wanda" else (w * w).sum(0) * s.variance())
        out.append(tuple(row))
    return out


def oneshot_scores(model: nn.Module, method: str, batches=None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(head scores, FFN neuron scores) per layer by a one-shot importance `method`."""
    d = head_size(model)
    columns = column_scores(model, method, batches)
    heads = [attention.reshape(-1, d).sum(1).float() for attention, _ in columns]
    return heads, [ffn.float() for _, ffn in columns]


def oneshot_ticket(model: nn.Module, method: str, spec: MaskSpec | None = None, batches=None,
                   **metadata: Any) -> Ticket:
    """A ticket drawn at step 0 from one-shot scores, ranked by `spec` as learned coefficients are."""
    spec = with_kv_heads(spec or MaskSpec(), model)
    head_scores, ffn_scores = oneshot_scores(model, method, batches)
    heads, ffn = spec.masks(head_scores, ffn_scores)
    return Ticket.from_masks(model.config.model_type, heads, ffn, oneshot=method, **spec_metadata(spec), **metadata)
