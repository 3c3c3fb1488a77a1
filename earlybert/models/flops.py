"""Parameter and FLOP accounting for full and slim models of every family (multiply-add = 2 FLOPs)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from torch import nn

from earlybert.models.adapters import get_adapter, head_size, kept_kv_heads, kv_head_counts, layer_sizes
from earlybert.models.modeling import linear_features


@dataclass
class ModelShape:
    """The sizes that decide an encoder's cost."""

    hidden: int
    head_size: int
    vocab: int
    layer_heads: list[int]
    layer_ffn: list[int]
    task: str
    num_labels: int = 2
    layer_window: list[int | None] = field(default_factory=list)
    """Keys each query attends to per layer (ModernBERT's local layers: 2 * half-window + 1); None: all."""
    ffn_groups: int = 1
    """Rows per FFN neuron in the FFN's input linears (2 for a GLU: input and gate)."""
    layer_kv_heads: list[int] = field(default_factory=list)
    """Grouped-query decoders: key/value heads per layer (empty: as many as query heads)."""
    relative_span: int = 0
    """DeBERTa: relative positions each query scores against (2 x buckets); 0 without relative attention."""
    relative_terms: int = 0
    """DeBERTa: content-to-position and position-to-content score terms (0-2)."""
    relative_projections: int = 0
    """DeBERTa: per-head projections of the relative embeddings computed in each layer's forward."""
    embedding_size: int = 0
    """ELECTRA: embedding width when it differs from the hidden width (projected up); 0 otherwise."""

    @classmethod
    def of(cls, model: nn.Module) -> ModelShape:
        heads, ffn = layer_sizes(model)
        config, adapter = model.config, get_adapter(model)
        groups = adapter.layout.ffn_in[1] + bool(adapter.layout.ffn_gate)
        shape = cls(config.hidden_size, head_size(model), config.vocab_size, heads, ffn, adapter.task_of(model),
                    getattr(config, "num_labels", 2), ffn_groups=groups, layer_kv_heads=kv_head_counts(model))
        if adapter.family == "modernbert":
            shape.layer_window = [None if t == "full_attention" else 2 * config.sliding_window + 1
                                  for t in config.layer_types]
        if adapter.family == "deberta-v2" and config.relative_attention:
            buckets = config.position_buckets if config.position_buckets > 0 else config.max_relative_positions
            shape.relative_span = 2 * (buckets if buckets > 0 else config.max_position_embeddings)
            shape.relative_terms = len({"c2p", "p2c"} & set(config.pos_att_type or []))
            shape.relative_projections = 2 if config.share_att_key else shape.relative_terms
        if getattr(config, "embedding_size", config.hidden_size) != config.hidden_size:
            shape.embedding_size = config.embedding_size
        return shape


def forward_flops_per_token(shape: ModelShape, seq_len: int, mlm_fraction: float = 1.0) -> int:
    """Forward FLOPs per input token at `seq_len`: projections, attention scores and mixing, FFN, task head.

    `mlm_fraction` is the share of positions the MLM head runs on: 1.0 for full-sequence logits,
    0.15 when logits are computed at masked positions only. ModernBERT's local layers count the keys in
    their window (what a windowed kernel computes; SDPA with a window mask computes the whole square).
    DeBERTa's relative-position projections run once per forward; they are counted once per sequence.
    """
    h = shape.hidden
    windows = shape.layer_window or [None] * len(shape.layer_heads)
    kv_heads = shape.layer_kv_heads or shape.layer_heads
    total = 0
    for heads, kv, width, window in zip(shape.layer_heads, kv_heads, shape.layer_ffn, windows, strict=True):
        inner = heads * shape.head_size
        keys = seq_len if window is None else min(seq_len, window)
        total += 2 * h * (inner + 2 * kv * shape.head_size)  # q, k, v
        total += 2 * 2 * keys * inner  # q @ k^T and probs @ v
        total += shape.relative_terms * 2 * shape.relative_span * inner  # c2p / p2c scores
        total += 2 * inner * h  # output projection
        total += 2 * (shape.ffn_groups + 1) * h * width  # first FFN linear (GLU: twice the rows), second
        total += round(shape.relative_projections * 2 * shape.relative_span * h * inner / seq_len)
    e = shape.embedding_size or h
    total += 2 * e * h if shape.embedding_size else 0  # ELECTRA's embedding projection
    if shape.task in ("masked_lm", "pretraining"):
        total += round(mlm_fraction * (2 * h * e + 2 * e * shape.vocab))
    elif shape.task == "discriminator":
        total += 2 * h * h + 2 * h  # ELECTRA: replaced-token logit at every position
    elif shape.task == "causal_lm":
        total += 2 * h * shape.vocab  # next-token logits at every position
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


def slim_parameter_count(model: nn.Module, ticket) -> int:
    """Parameters the model will have after `ticket` is applied, derived from the ticket without building it."""
    d = head_size(model)
    removed = 0
    for parts, head_row, ffn_row in zip(get_adapter(model).layer_parts(model), ticket.heads, ticket.ffn, strict=True):
        heads_gone, neurons_gone = head_row.count(0), ffn_row.count(0)
        for linear, groups in parts.head_linears:  # rows of every group, with their biases
            removed += groups * heads_gone * d * (linear_features(linear)[0] + (linear.bias is not None))
        removed += heads_gone * d * linear_features(parts.attention_output)[1]
        for linear, groups in (parts.ffn_in, *([(parts.ffn_gate, 1)] if parts.ffn_gate is not None else [])):
            removed += groups * neurons_gone * (linear_features(linear)[0] + (linear.bias is not None))
        removed += neurons_gone * linear_features(parts.ffn_out)[1]
        if parts.kv_linears:  # KV heads that no kept query head reads any more
            kv = linear_features(parts.kv_linears[0])[1] // d
            kv_gone = kv - len(kept_kv_heads(head_row, kv))
            removed += sum(kv_gone * d * (linear_features(k)[0] + (k.bias is not None)) for k in parts.kv_linears)
    # The search's coefficients (parameters named earlybert_*) are not part of the slim model.
    kept = {id(p): p for name, p in model.named_parameters() if ".earlybert_" not in name}
    return sum(p.numel() for p in kept.values()) - removed


def accounting(model: nn.Module, seq_len: int = 128, mlm_fraction: float = 1.0) -> dict:
    """Parameters, FLOPs per token and the shape summary, as one dict for reports.

    `mlm_fraction` < 1 means `MaskedLMObjective` training: the MLM head runs at that share of positions.
    """
    shape = ModelShape.of(model)
    return {
        "params": count_parameters(model),
        "forward_flops_per_token": forward_flops_per_token(shape, seq_len, mlm_fraction),
        "train_flops_per_token": training_flops_per_token(shape, seq_len, mlm_fraction),
        "seq_len": seq_len,
        **asdict(shape),
    }
