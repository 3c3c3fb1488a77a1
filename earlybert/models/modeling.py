"""Slim encoders for transformers v5: per-layer head counts and FFN widths for every supported family.

This file is self-contained (torch and transformers only): `save_pretrained` copies it into the
checkpoint as `modeling_earlybert.py`, so a slim folder also loads with `trust_remote_code=True`
where earlybert is not installed.

A slim model is its family's own model class built at full size, whose slimmable linears are then
replaced by ones of the kept sizes; the family's forward (and its attention kernel) runs unchanged.
Where a family reads the head count in its forward (BERT, DeBERTa) that attribute is set per layer;
the others infer it from the tensor shapes.
"""

import json
import os
import shutil
from dataclasses import dataclass

from torch import nn
from transformers import (
    BertConfig,
    DebertaV2Config,
    DistilBertConfig,
    ElectraConfig,
    ModernBertConfig,
    RobertaConfig,
    XLMRobertaConfig,
)
from transformers.models.bert import modeling_bert
from transformers.models.deberta_v2 import modeling_deberta_v2
from transformers.models.distilbert import modeling_distilbert
from transformers.models.electra import modeling_electra
from transformers.models.modernbert import modeling_modernbert
from transformers.models.roberta import modeling_roberta
from transformers.models.xlm_roberta import modeling_xlm_roberta

REMOTE_CODE_FILE = "modeling_earlybert.py"
# Class-name suffix -> the Auto class a saved folder names it under.
AUTO_CLASSES = {
    "Model": "AutoModel",
    "ForMaskedLM": "AutoModelForMaskedLM",
    "ForSequenceClassification": "AutoModelForSequenceClassification",
    "ForQuestionAnswering": "AutoModelForQuestionAnswering",
    "ForPreTraining": "AutoModelForPreTraining",  # BERT: MLM + next sentence; ELECTRA: the discriminator
}


@dataclass(frozen=True)
class Layout:
    """Where a family keeps what slimming touches; paths are relative to one encoder layer.

    Head h of a linear in `head_linears` owns output rows `g*H*d + [h*d, (h+1)*d)` for each of its
    `groups` (3 for a fused q/k/v); FFN neuron j owns rows `g*I + j` of `ffn_in` (2 groups for a GLU).
    """

    layers: str  # the ModuleList of encoder layers, relative to the base model
    attention: str  # the module holding the head-count attributes
    head_linears: tuple[tuple[str, int], ...]  # (path, groups); a missing path is skipped
    attention_output: str  # input columns grouped by head
    ffn_in: tuple[str, int]
    ffn_out: str  # input columns are FFN neurons
    ffn_width: str = "intermediate_size"  # the config attribute of the full FFN width


BERT_LAYOUT = Layout(
    layers="encoder.layer", attention="attention.self",
    head_linears=(("attention.self.query", 1), ("attention.self.key", 1), ("attention.self.value", 1)),
    attention_output="attention.output.dense", ffn_in=("intermediate.dense", 1), ffn_out="output.dense",
)
DEBERTA_LAYOUT = Layout(
    layers="encoder.layer", attention="attention.self",
    # The relative-position projections (absent where v3 shares the content projections) are per head too.
    head_linears=tuple((f"attention.self.{n}", 1) for n in ("query_proj", "key_proj", "value_proj",
                                                             "pos_key_proj", "pos_query_proj")),
    attention_output="attention.output.dense", ffn_in=("intermediate.dense", 1), ffn_out="output.dense",
)
DISTILBERT_LAYOUT = Layout(
    layers="transformer.layer", attention="attention",
    head_linears=(("attention.q_lin", 1), ("attention.k_lin", 1), ("attention.v_lin", 1)),
    attention_output="attention.out_lin", ffn_in=("ffn.lin1", 1), ffn_out="ffn.lin2", ffn_width="hidden_dim",
)
MODERNBERT_LAYOUT = Layout(
    layers="layers", attention="attn", head_linears=(("attn.Wqkv", 3),), attention_output="attn.Wo",
    ffn_in=("mlp.Wi", 2), ffn_out="mlp.Wo",
)


def head_size_of(config) -> int:
    """Width of one attention head."""
    return getattr(config, "attention_head_size", None) or config.hidden_size // config.num_attention_heads


def slim_layer_sizes(config, layout: Layout) -> tuple[list[int], list[int]]:
    """Per-layer (heads, FFN widths) of a slim config; full sizes where a list is unset."""
    n = config.num_hidden_layers
    heads = list(getattr(config, "layer_num_heads", None) or [config.num_attention_heads] * n)
    widths = list(getattr(config, "layer_intermediate_sizes", None) or [getattr(config, layout.ffn_width)] * n)
    if len(heads) != n or len(widths) != n:
        raise ValueError(
            f"slim config lists {len(heads)} head counts and {len(widths)} FFN widths for {n} layers"
        )
    return heads, widths


def _resized(linear: nn.Linear, in_features: int, out_features: int) -> nn.Linear:
    return nn.Linear(in_features, out_features, bias=linear.bias is not None)


def _replace(layer: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(layer.get_submodule(parent) if parent else layer, name, module)


def resize_encoder_layers(base_model: nn.Module, config, layout: Layout) -> None:
    """Replace each layer's head and FFN linears by ones of the slim sizes (fresh weights)."""
    heads, widths = slim_layer_sizes(config, layout)
    d = head_size_of(config)
    for layer, n_heads, width in zip(base_model.get_submodule(layout.layers), heads, widths):
        for path, groups in layout.head_linears:
            linear = layer.get_submodule(path) if has_submodule(layer, path) else None
            if linear is not None:
                _replace(layer, path, _resized(linear, linear.in_features, groups * n_heads * d))
        out = layer.get_submodule(layout.attention_output)
        _replace(layer, layout.attention_output, _resized(out, n_heads * d, out.out_features))
        path, groups = layout.ffn_in
        ffn_in = layer.get_submodule(path)
        _replace(layer, path, _resized(ffn_in, ffn_in.in_features, groups * width))
        ffn_out = layer.get_submodule(layout.ffn_out)
        _replace(layer, layout.ffn_out, _resized(ffn_out, width, ffn_out.out_features))
        attention = layer.get_submodule(layout.attention)
        for name in ("num_attention_heads", "n_heads", "num_heads"):
            if hasattr(attention, name):
                setattr(attention, name, n_heads)
        if hasattr(attention, "all_head_size"):
            attention.all_head_size = n_heads * d


def has_submodule(module: nn.Module, path: str) -> bool:
    """Whether `module.get_submodule(path)` exists."""
    try:
        module.get_submodule(path)
    except AttributeError:
        return False
    return True


class SlimModelMixin:
    """Builds the full-size parent, shrinks its layers, re-runs weight init on the new linears."""

    slim_family = ""
    slim_layout: Layout = BERT_LAYOUT

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        resize_encoder_layers(self.base_model, config, self.slim_layout)
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
        prefix = f"Slim{self.slim_family}"
        data["auto_map"] = {"AutoConfig": f"{module}.{prefix}Config"}
        for suffix, auto in AUTO_CLASSES.items():
            if prefix + suffix in globals():
                data["auto_map"][auto] = f"{module}.{prefix}{suffix}"
        with open(config_path, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
        return out


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


class SlimXLMRobertaConfig(XLMRobertaConfig):
    """XLMRobertaConfig plus the kept head count and FFN width of every layer."""

    model_type = "slim_xlm-roberta"
    layer_num_heads: list[int] | None = None
    layer_intermediate_sizes: list[int] | None = None


class SlimElectraConfig(ElectraConfig):
    """ElectraConfig plus the kept head count and FFN width of every layer."""

    model_type = "slim_electra"
    layer_num_heads: list[int] | None = None
    layer_intermediate_sizes: list[int] | None = None


class SlimDistilBertConfig(DistilBertConfig):
    """DistilBertConfig plus the kept head count and FFN width of every layer."""

    model_type = "slim_distilbert"
    layer_num_heads: list[int] | None = None
    layer_intermediate_sizes: list[int] | None = None


class SlimDebertaV2Config(DebertaV2Config):
    """DebertaV2Config (DeBERTa v2 and v3) plus the kept head count and FFN width of every layer."""

    model_type = "slim_deberta-v2"
    layer_num_heads: list[int] | None = None
    layer_intermediate_sizes: list[int] | None = None


class SlimModernBertConfig(ModernBertConfig):
    """ModernBertConfig plus the kept head count and FFN width of every layer."""

    model_type = "slim_modernbert"
    layer_num_heads: list[int] | None = None
    layer_intermediate_sizes: list[int] | None = None


# Class-name prefix -> (slim config, layout, the transformers module holding the family's classes).
FAMILIES = {
    "Bert": (SlimBertConfig, BERT_LAYOUT, modeling_bert),
    "Roberta": (SlimRobertaConfig, BERT_LAYOUT, modeling_roberta),
    "XLMRoberta": (SlimXLMRobertaConfig, BERT_LAYOUT, modeling_xlm_roberta),
    "Electra": (SlimElectraConfig, BERT_LAYOUT, modeling_electra),
    "DistilBert": (SlimDistilBertConfig, DISTILBERT_LAYOUT, modeling_distilbert),
    "DebertaV2": (SlimDebertaV2Config, DEBERTA_LAYOUT, modeling_deberta_v2),
    "ModernBert": (SlimModernBertConfig, MODERNBERT_LAYOUT, modeling_modernbert),
}


def _define_slim_classes() -> None:
    """`Slim<Family><Suffix>` for every task class the family has (e.g. SlimBertForMaskedLM)."""
    for family, (config_cls, layout, module) in FAMILIES.items():
        for suffix in AUTO_CLASSES:
            parent = getattr(module, family + suffix, None)
            if parent is None:
                continue
            name = f"Slim{family}{suffix}"
            globals()[name] = type(name, (SlimModelMixin, parent), {
                "__module__": __name__, "__doc__": f"{parent.__name__} with per-layer head counts and FFN widths.",
                "config_class": config_cls, "slim_family": family, "slim_layout": layout,
            })


_define_slim_classes()
