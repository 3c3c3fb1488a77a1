"""DSEE settings and the set-up of a model for DSEE fine-tuning (updates attached, everything else frozen)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import torch
from torch import nn

from earlybert.config import Choice, Range
from earlybert.dsee.prune import HEAD_SCORES
from earlybert.dsee.update import UpdateShape, attach_updates, low_rank_plus_sparse, magnitude_support
from earlybert.errors import EarlyBertError
from earlybert.models.adapters import get_adapter
from earlybert.models.modeling import LINEAR_TYPES, linear_weight
from earlybert.ticket.masks import KV_GROUPS

# The query and value projections of each family (fused ones whole): the defaults of LoRA and DSEE.
QUERY_VALUE = ("query", "value", "query_proj", "value_proj", "q_lin", "v_lin", "Wqkv", "q_proj", "v_proj", "c_attn")


@dataclass
class DseeConfig:
    """DSEE fine-tuning (mode=dsee): a low-rank plus sparse update on chosen linears, then a pruning step."""

    targets: list[str] = field(default_factory=list)
    """Last name component of the linears that get an update (e.g. [query, value]); empty: each family's query
    and value projections (ModernBERT: its fused Wqkv; Llama and Qwen: q_proj and v_proj; GPT-2: its fused c_attn)."""
    rank: Annotated[int, Range(0)] = 16
    """Rank r of the low-rank part B A (0: sparse part only); 16 as in the DSEE authors' GLUE runs."""
    alpha: Annotated[float, Range(0, open_low=True)] = 32.0
    """The low-rank part is scaled by alpha / rank (2 by default)."""
    sparse_entries: Annotated[int, Range(0)] = 64
    """Entries N of the sparse part S in each updated matrix (0: low-rank part only)."""
    support: Annotated[str, Choice(("decomposition", "magnitude"))] = "decomposition"
    """Where S may be non-zero: the N largest |S0| of W ~ L + S0 (decomposition), or the N largest |W|."""
    decomposition_rank: Annotated[int, Range(0)] = 8
    """Rank of L in the decomposition W ~ L + S0."""
    decomposition_iterations: Annotated[int, Range(1)] = 10
    """Alternating projections of the decomposition."""
    prune: Annotated[str, Choice(("structured", "unstructured", "none"))] = "structured"
    """After fine-tuning: remove heads (structured), zero the smallest merged weights (unstructured), or nothing."""
    heads_ratio: Annotated[float, Range(0, 1, open_low=True, open_high=True)] = 0.25
    """structured: fraction of heads removed in each layer."""
    head_score: Annotated[str, Choice(HEAD_SCORES)] = "update"
    """structured: rank heads by the magnitude of their update (update) or of their merged weights (merged)."""
    kv_groups: Annotated[str, Choice(KV_GROUPS)] = "keep"
    """structured, grouped-query decoders: remove the same number of query heads from every KV group (keep), or
    whole KV groups with their query heads (prune)."""
    sparsity: Annotated[float, Range(0, 1, open_low=True, open_high=True)] = 0.5
    """unstructured: fraction of each targeted matrix's merged weights set to zero."""
    retrain_epochs: Annotated[float, Range(0)] = 1.0
    """Epochs of DSEE fine-tuning again after the pruning step (fresh updates); 0: none."""


def target_names(model: nn.Module, cfg: DseeConfig) -> list[str]:
    """Full names of the body's linears that get an update; refuses targets that match nothing."""
    wanted = set(cfg.targets or QUERY_VALUE)
    names = [f"{model.base_model_prefix}.{n}" if model.base_model is not model else n
             for n, m in model.base_model.named_modules()
             if isinstance(m, LINEAR_TYPES) and n.rsplit(".", 1)[-1] in wanted]
    if not names:
        raise EarlyBertError(f"dsee.targets={sorted(wanted)} matches no linear layer of this "
                             f"{get_adapter(model).family} model: name the last component of its projections, e.g. "
                             "dsee.targets=[query,value]")
    return names


def add_updates(model: nn.Module, cfg: DseeConfig, seed: int = 0, masks: dict[str, torch.Tensor] | None = None
                ) -> list[str]:
    """Attach a DSEE update to each target linear (masked by `masks`, by full name) and freeze all but the updates
    and the task head; returns the targets' full names."""
    names = target_names(model, cfg)
    supports = {}
    for name in names:
        weight = linear_weight(model.get_submodule(name))  # [out, in], as the update's positions
        entries = min(cfg.sparse_entries, weight.numel())
        supports[name] = (low_rank_plus_sparse(weight, cfg.decomposition_rank, entries, cfg.decomposition_iterations,
                                               seed) if cfg.support == "decomposition" else
                          magnitude_support(weight, entries))
    for p in model.base_model.parameters():
        p.requires_grad_(False)
    attach_updates(model, {n: UpdateShape(cfg.rank, cfg.alpha, supports[n].numel(), masks is not None) for n in names},
                   supports, masks)
    return names
