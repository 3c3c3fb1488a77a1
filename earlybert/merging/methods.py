"""Data-free merging of models fine-tuned from one base: plain averaging, task arithmetic and RankMean.

Everything here works on state dicts of the shared body (the task heads stay with their models). RankMean
(Findings of ACL 2024): for model k and module m, d_k(m) = sum |theta_k(m) - theta_base(m)|; r_k(m) is the rank of
d_k(m) among model k's modules (1 = smallest, ties share their mean rank); the module's weights are
p_k(m) = r_k(m) / sum_j r_j(m), and theta(m) = sum_k p_k(m) theta_k(m). Parameters outside the layers are averaged.
"""

from __future__ import annotations

import re

import torch

from earlybert.errors import EarlyBertError

METHODS = ("rankmean", "average", "task_arithmetic")
GRANULARITIES = ("layer", "tensor")
StateDict = dict[str, torch.Tensor]
# The first numbered component of a parameter name is its layer: `encoder.layer.3.`, `layers.3.`, `h.3.`, ...
_LAYER_INDEX = re.compile(r"^(.*?\.)?(\d+)\.")


def module_of(name: str, granularity: str = "layer") -> str | None:
    """The module a parameter belongs to: its layer's prefix (or the tensor's own name); None outside the layers."""
    match = _LAYER_INDEX.match(name)
    if match is None:
        return None
    return name if granularity == "tensor" else match.group(0)


def modules(names: list[str], granularity: str = "layer") -> dict[str, list[str]]:
    """Parameter names grouped by module, in the order their first parameter appears (outside the layers left out)."""
    grouped: dict[str, list[str]] = {}
    for name in names:
        module = module_of(name, granularity)
        if module is not None:
            grouped.setdefault(module, []).append(name)
    return grouped


def ranks(values: list[float]) -> list[float]:
    """Ranks of `values`, 1 = smallest; tied values share the mean of the ranks they span."""
    order = sorted(range(len(values)), key=values.__getitem__)
    out = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start:end + 1]:
            out[i] = (start + end) / 2 + 1
        start = end + 1
    return out


def rankmean_weights(models: list[StateDict], base: StateDict, granularity: str = "layer") -> dict[str, list[float]]:
    """Per module, each model's weight p_k(m): the rank of its change magnitude among its own modules, normalized."""
    grouped = modules([n for n in models[0] if n in base], granularity)
    per_model = []
    for model in models:
        changes = [sum(float((model[n].double() - base[n].double()).abs().sum()) for n in names)
                   for names in grouped.values()]
        per_model.append(ranks(changes))
    weights = {}
    for i, module in enumerate(grouped):
        total = sum(r[i] for r in per_model)
        weights[module] = [r[i] / total for r in per_model]
    return weights


def merge(method: str, models: list[StateDict], base: StateDict, granularity: str = "layer",
          scale: float = 1.0) -> tuple[StateDict, dict[str, list[float]]]:
    """The merged body and, for RankMean, each module's weights per model (empty for the other methods).

    Task arithmetic is base + scale * sum_k (theta_k - base) (Ilharco et al. 2023, who tune `scale` on held-out data).
    """
    if method not in METHODS:
        raise EarlyBertError(f"unknown merge method {method!r}: use one of {', '.join(METHODS)}")
    if granularity not in GRANULARITIES:
        raise EarlyBertError(f"unknown granularity {granularity!r}: use one of {', '.join(GRANULARITIES)}")
    if len(models) < 2:
        raise EarlyBertError(f"merging needs at least 2 models, got {len(models)}: give two or more model folders")
    weights = rankmean_weights(models, base, granularity) if method == "rankmean" else {}
    merged = {}
    for name, first in models[0].items():
        if not first.is_floating_point():  # integer buffers (ids, counters) are the same in every model
            merged[name] = first
            continue
        stack = torch.stack([m[name].double() for m in models])
        module = module_of(name, granularity)
        if method == "task_arithmetic" and name in base:
            value = base[name].double() + scale * (stack - base[name].double()).sum(0)
        elif module in weights:
            p = torch.tensor(weights[module], dtype=torch.float64).view(-1, *[1] * first.dim())
            value = (p * stack).sum(0)
        else:  # outside the layers (embeddings, final norms, pooler), or a tensor the base lacks
            value = stack.mean(0)
        merged[name] = value.to(first.dtype)
    return merged, weights
