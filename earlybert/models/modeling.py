"""Slim BERT/RoBERTa for transformers v5: per-layer head counts and FFN widths.

This file is self-contained (torch and transformers only): `save_pretrained` copies it into the
checkpoint as `modeling_earlybert.py`, so a slim folder also loads with `trust_remote_code=True`
where earlybert is not installed.
"""

import json
import os
import shutil

from torch import nn
from transformers import BertConfig, RobertaConfig
from transformers.models.bert.modeling_bert import (
    BertForMaskedLM,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertModel,
)
from transformers.models.roberta.modeling_roberta import (
    RobertaForMaskedLM,
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaModel,
)

REMOTE_CODE_FILE = "modeling_earlybert.py"


class SlimBertConfig(BertConfig):
    """BertConfig plus the kept head count and FFN width of every layer."""

    model_type = "slim_bert"
    layer_num_heads: list[int] | None = None
    layer_intermediate_sizes: list[int] | None = None


class SlimRobertaConfig(RobertaConfig):
    """RobertaConfig plus the kept head count and FFN width of every layer."""

    model_type = "slim_roberta"
    layer_num_heads: list[int] | None = None
    layer_intermediate_sizes: list[int] | None = None


def slim_layer_sizes(config) -> tuple[list[int], list[int]]:
    """Per-layer (heads, FFN widths) of a slim config; full sizes where a list is unset."""
    n = config.num_hidden_layers
    heads = list(config.layer_num_heads or [config.num_attention_heads] * n)
    widths = list(config.layer_intermediate_sizes or [config.intermediate_size] * n)
    if len(heads) != n or len(widths) != n:
        raise ValueError(
            f"slim config lists {len(heads)} head counts and {len(widths)} FFN widths for {n} layers"
        )
    return heads, widths


def resize_encoder_layers(base_model: nn.Module, config) -> None:
    """Replace each layer's q/k/v/output and FFN linears by ones of the slim sizes (fresh weights)."""
    heads, widths = slim_layer_sizes(config)
    hidden = config.hidden_size
    head_size = hidden // config.num_attention_heads
    for layer, n_heads, width in zip(base_model.encoder.layer, heads, widths):
        attn = layer.attention.self
        attn.num_attention_heads = n_heads
        attn.all_head_size = n_heads * head_size
        attn.query = nn.Linear(hidden, n_heads * head_size)
        attn.key = nn.Linear(hidden, n_heads * head_size)
        attn.value = nn.Linear(hidden, n_heads * head_size)
        layer.attention.output.dense = nn.Linear(n_heads * head_size, hidden)
        layer.intermediate.dense = nn.Linear(hidden, width)
        layer.output.dense = nn.Linear(width, hidden)


class SlimModelMixin:
    """Builds the full-size parent, shrinks its layers, re-runs weight init on the new linears."""

    slim_family = ""

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        resize_encoder_layers(self.base_model, config)
        # post_init initialises only modules not yet flagged as initialised: the new linears.
        self.post_init()

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save weights and config, plus this file and an `auto_map` for `trust_remote_code` loading."""
        out = super().save_pretrained(save_directory, *args, **kwargs)
        shutil.copyfile(os.path.abspath(__file__), os.path.join(save_directory, REMOTE_CODE_FILE))
        config_path = os.path.join(save_directory, "config.json")
        with open(config_path, encoding="utf-8") as f:
            data = json.load(f)
        module = REMOTE_CODE_FILE.removesuffix(".py")
        family = self.slim_family
        data["auto_map"] = {
            "AutoConfig": f"{module}.Slim{family}Config",
            "AutoModel": f"{module}.Slim{family}Model",
            "AutoModelForMaskedLM": f"{module}.Slim{family}ForMaskedLM",
            "AutoModelForSequenceClassification": f"{module}.Slim{family}ForSequenceClassification",
            "AutoModelForQuestionAnswering": f"{module}.Slim{family}ForQuestionAnswering",
        }
        if f"Slim{family}ForPreTraining" in globals():  # MLM + next-sentence heads (BERT only)
            data["auto_map"]["AutoModelForPreTraining"] = f"{module}.Slim{family}ForPreTraining"
        with open(config_path, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
        return out


class SlimBertModel(SlimModelMixin, BertModel):
    config: SlimBertConfig
    slim_family = "Bert"


class SlimBertForMaskedLM(SlimModelMixin, BertForMaskedLM):
    config: SlimBertConfig
    slim_family = "Bert"


class SlimBertForSequenceClassification(SlimModelMixin, BertForSequenceClassification):
    config: SlimBertConfig
    slim_family = "Bert"


class SlimBertForQuestionAnswering(SlimModelMixin, BertForQuestionAnswering):
    config: SlimBertConfig
    slim_family = "Bert"


class SlimBertForPreTraining(SlimModelMixin, BertForPreTraining):
    config: SlimBertConfig
    slim_family = "Bert"


class SlimRobertaModel(SlimModelMixin, RobertaModel):
    config: SlimRobertaConfig
    slim_family = "Roberta"


class SlimRobertaForMaskedLM(SlimModelMixin, RobertaForMaskedLM):
    config: SlimRobertaConfig
    slim_family = "Roberta"


class SlimRobertaForSequenceClassification(SlimModelMixin, RobertaForSequenceClassification):
    config: SlimRobertaConfig
    slim_family = "Roberta"


class SlimRobertaForQuestionAnswering(SlimModelMixin, RobertaForQuestionAnswering):
    config: SlimRobertaConfig
    slim_family = "Roberta"
