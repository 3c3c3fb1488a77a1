"""The last encoder layer computed only at the rows a loss reads (BERT-layout families).

An MLM loss reads the last layer's output at the masked positions alone (about 15%); a BERT-layout
sequence classifier reads it at the first position alone (the [CLS] vector its pooler or head takes). Keys
and values still need every position, but that layer's queries, attention output projection, layer norms
and FFN do not: computing them at the read rows removes about 70% of the last layer for MLM and over 80%
for a classifier (a twelfth of a 12-layer encoder's work, a sixth of a 6-layer one's) with the same loss
and gradients.

`enable_last_layer_rows(model)` swaps the last layer's forward, once; `last_layer_rows(model, rows)` is
the context in which it computes only `rows` (a [batch, seq] bool mask). Outside that context, and for
layers it cannot handle, the family's own forward runs.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from transformers import (
    BertForSequenceClassification,
    ElectraForSequenceClassification,
    RobertaForSequenceClassification,
    XLMRobertaForSequenceClassification,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from earlybert.models.adapters import get_adapter
from earlybert.models.fast_dropout import ATTENTION as FAST_SDPA
from earlybert.models.modeling import BERT_LAYOUT, has_submodule

ROWS_ATTR = "_earlybert_rows"  # the [batch, seq] bool mask of rows to compute, while inside the context
# Classifiers whose head reads the encoder's output at position 0 alone: BERT's pooler takes `hidden[:, 0]`,
# the RoBERTa, XLM-R and ELECTRA heads `features[:, 0, :]` (transformers 5). Slim classes subclass these.
FIRST_POSITION_CLASSIFIERS = (BertForSequenceClassification, RobertaForSequenceClassification,
                              XLMRobertaForSequenceClassification, ElectraForSequenceClassification)


def _last_layer(model: nn.Module) -> nn.Module | None:
    base = model.base_model
    return base.get_submodule(BERT_LAYOUT.layers)[-1] if has_submodule(base, BERT_LAYOUT.layers) else None


def supports_last_layer_rows(model: nn.Module) -> bool:
    """Whether the model's last layer is a BERT-layout encoder layer this module can run at chosen rows."""
    config = model.config
    if get_adapter(model).layout is not BERT_LAYOUT or config.is_decoder or config.add_cross_attention:
        return False
    attention = getattr(_last_layer(model), "attention", None)
    return config._attn_implementation in ("eager", "sdpa", FAST_SDPA) and all(
        hasattr(getattr(attention, "self", None), name) for name in ("query", "key", "value", "scaling"))


def reads_first_position_only(model: nn.Module) -> bool:
    """Whether the model is a sequence classifier that reads only position 0 and whose last layer can run there."""
    return isinstance(model, FIRST_POSITION_CLASSIFIERS) and supports_last_layer_rows(model)


def first_position(input_ids: torch.Tensor) -> torch.Tensor:
    """The [batch, seq] bool mask of each sequence's first position, for `last_layer_rows`."""
    rows = torch.zeros(input_ids.shape, dtype=torch.bool, device=input_ids.device)
    rows[:, 0] = True
    return rows


def enable_last_layer_rows(model: nn.Module) -> bool:
    """Let `last_layer_rows` restrict the last layer to chosen rows; returns whether the model supports it."""
    if not supports_last_layer_rows(model):
        return False
    layer = _last_layer(model)
    # An instance attribute shadows the class's forward; the module, its parameters and state dict stay.
    layer.forward = types.MethodType(_forward_at_rows, layer)
    setattr(layer, ROWS_ATTR, None)
    return True


def disable_last_layer_rows(model: nn.Module) -> None:
    """Undo `enable_last_layer_rows`: the last layer runs its family's forward at every row again."""
    layer = _last_layer(model)
    if layer is not None and hasattr(layer, ROWS_ATTR):
        del layer.forward
        delattr(layer, ROWS_ATTR)


@contextmanager
def last_layer_rows(model: nn.Module, rows: torch.Tensor | None) -> Iterator[bool]:
    """Within the block the last layer computes only `rows` (others come out as zeros; None: every row);
    yields whether on."""
    layer = _last_layer(model)
    if layer is None or not hasattr(layer, ROWS_ATTR):
        yield False
        return
    setattr(layer, ROWS_ATTR, rows)
    try:
        yield True
    finally:
        setattr(layer, ROWS_ATTR, None)


def _forward_at_rows(self: nn.Module, hidden_states: torch.Tensor, attention_mask=None, *args, **kwargs):
    rows = getattr(self, ROWS_ATTR)
    seq_of, pos = rows.nonzero(as_tuple=True) if rows is not None else (None, None)  # row-major, as `hidden[rows]`
    # This bypasses transformers' checkpointing wrapper (the class's forward): at a few rows the layer's
    # activations are small, so it is not recomputed in backward; the other layers still are.
    if seq_of is None or seq_of.numel() == 0:
        return type(self).forward(self, hidden_states, attention_mask, *args, **kwargs)
    batch, seq, width = hidden_states.shape
    # Lay the chosen rows out as [batch, slots]: attention needs each query beside its own sequence's keys.
    counts = torch.bincount(seq_of, minlength=batch)
    slots = int(counts.max())
    slot = torch.arange(seq_of.numel(), device=pos.device) - (counts.cumsum(0) - counts)[seq_of]
    positions = torch.zeros(batch, slots, dtype=torch.long, device=pos.device)  # spare slots read row 0, dropped
    positions[seq_of, slot] = pos
    queries_in = hidden_states.gather(1, positions.unsqueeze(-1).expand(-1, -1, width))

    attention = self.attention.self
    head_size = attention.attention_head_size
    query = attention.query(queries_in).view(batch, slots, -1, head_size).transpose(1, 2)
    key = attention.key(hidden_states).view(batch, seq, -1, head_size).transpose(1, 2)
    value = attention.value(hidden_states).view(batch, seq, -1, head_size).transpose(1, 2)
    if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 4:
        attention_mask = attention_mask[:, :, :1]  # bidirectional: every query row of the mask is the same
    eager = sys.modules[type(attention).__module__].eager_attention_forward
    interface = ALL_ATTENTION_FUNCTIONS.get_interface(attention.config._attn_implementation, eager)
    context, _ = interface(attention, query, key, value, attention_mask,
                           dropout=attention.dropout.p if self.training else 0.0, scaling=attention.scaling)
    context = context.reshape(batch, slots, -1)[seq_of, slot]

    attended = self.attention.output(context, hidden_states[seq_of, pos])
    out = self.feed_forward_chunk(attended)
    return hidden_states.new_zeros(batch, seq, out.shape[-1]).index_put((seq_of, pos), out)
