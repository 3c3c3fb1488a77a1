"""Parameter and FLOP accounting for full and slim models (multiply-add = 2 FLOPs)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from earlybert.models.adapters import get_adapter, head_size, layer_sizes


@dataclass
class ModelShape:
    """The sizes that decide a BERT-like encoder's cost."""

    hidden: int
    head_size: int
    vocab: int
    layer_heads: list[int]
    layer_ffn: list[int]
    task: str
    num_labels: int = 2

    @classmethod
    def of(cls, model: nn.Module) -> ModelShape:
        heads, ffn = layer_sizes(model)
        config = model.config
        return cls(config.hidden_size, head_size(model), config.vocab_size, heads, ffn,
                   get_adapter(model).task_of(model), getattr(config, "num_labels", 2))


def forward_flops_per_token(shape: ModelShape, seq_len: int, mlm_fraction: float = 1.0) -> int:
    """Forward FLOPs per input token at `seq_len`: projections, attention scores and mixing, FFN, task head.

    `mlm_fraction` is the share of positions the MLM head runs on: 1.0 for full-sequence logits,
    0.15 when logits are computed at masked positions only.
    """
    h = shape.hidden
    total = 0
    for heads, width in zip(shape.layer_heads, shape.layer_ffn):
        inner = heads * shape.head_size
        total += 2 * h * 3 * inner  # q, k, v
        total += 2 * 2 * seq_len * inner  # q @ k^T and probs @ v
        total += 2 * inner * h  # output projection
        total += 2 * 2 * h * width  # two FFN linears
    if shape.task in ("masked_lm", "pretraining"):
        total += round(mlm_fraction * (2 * h * h + 2 * h * shape.vocab))
    elif shape.task == "question_answering":
        total += 2 * h * 2
    elif shape.task == "sequence_classification":
        total += round((2 * h * h + 2 * h * shape.num_labels) / seq_len)  # pooler + classifier, once per sequence
    return total


def training_flops_per_token(shape: ModelShape, seq_len: int, mlm_fraction: float = 1.0) -> int:
    """Forward + backward (twice the forward) FLOPs per token."""
    return 3 * forward_flops_per_token(shape, seq_len, mlm_fraction)


def count_parameters(model: nn.Module) -> int:
    """Unique parameters (tied embeddings counted once; ZeRO-3 partitions counted whole)."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in {id(p): p for p in model.parameters()}.values())


def accounting(model: nn.Module, seq_len: int = 128, mlm_fraction: float = 1.0) -> dict:
    """Parameters, FLOPs per token and the shape summary, as one dict for reports."""
    shape = ModelShape.of(model)
    return {
        "params": count_parameters(model),
        "forward_flops_per_token": forward_flops_per_token(shape, seq_len, mlm_fraction),
        "train_flops_per_token": training_flops_per_token(shape, seq_len, mlm_fraction),
        "seq_len": seq_len,
        **asdict(shape),
    }
