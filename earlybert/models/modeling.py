"""Slim models for transformers v5: per-layer head counts and FFN widths for every supported family.

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
    GPT2Config,
    LlamaConfig,
    ModernBertConfig,
    Qwen2Config,
    Qwen3Config,
    RobertaConfig,
    XLMRobertaConfig,
)
from transformers.models.bert import modeling_bert
from transformers.models.deberta_v2 import modeling_deberta_v2
from transformers.models.distilbert import modeling_distilbert
from transformers.models.electra import modeling_electra
from transformers.models.gpt2 import modeling_gpt2
from transformers.models.llama import modeling_llama
from transformers.models.modernbert import modeling_modernbert
from transformers.models.qwen2 import modeling_qwen2
from transformers.models.qwen3 import modeling_qwen3
from transformers.models.roberta import modeling_roberta
from transformers.models.xlm_roberta import modeling_xlm_roberta
from transformers.pytorch_utils import Conv1D

REMOTE_CODE_FILE = "modeling_earlybert.py"
# Class-name suffix -> the Auto class a saved folder names it under.
AUTO_CLASSES = {
    "Model": "AutoModel",
    "ForMaskedLM": "AutoModelForMaskedLM",
    "ForSequenceClassification": "AutoModelForSequenceClassification",
    "ForQuestionAnswering": "AutoModelForQuestionAnswering",
    "ForPreTraining": "AutoModelForPreTraining",  # BERT: MLM + next sentence; ELECTRA: the discriminator
    "ForCausalLM": "AutoModelForCausalLM",  # decoder families only
    "LMHeadModel": "AutoModelForCausalLM",  # GPT-2's name for it
}
CAUSAL_LM_SUFFIXES = ("ForCausalLM", "LMHeadModel")
DECODER_FAMILIES = ("Llama", "Qwen2", "Qwen3", "GPT2")


@dataclass(frozen=True)
class Layout:
    """Where a family keeps what slimming touches; paths are relative to one encoder layer.

    Head h of a linear in `head_linears` owns output rows `g*H*d + [h*d, (h+1)*d)` for each of its
    `groups` (3 for a fused q/k/v); FFN neuron j owns rows `g*I + j` of `ffn_in` (2 groups for a GLU) and row j of
    `ffn_gate` (a separate gate linear). With grouped-query attention, KV head k owns rows `[k*d, (k+1)*d)` of each
    of `kv_linears` and serves query heads `[k*H/K, (k+1)*H/K)`.
    """

    layers: str  # the ModuleList of encoder layers, relative to the base model
    attention: str  # the module holding the head-count attributes
    head_linears: tuple[tuple[str, int], ...]  # (path, groups); a missing path is skipped
    attention_output: str  # input columns grouped by head
    ffn_in: tuple[str, int]
    ffn_out: str  # input columns are FFN neurons
    ffn_width: str = "intermediate_size"  # the config attribute of the full FFN width
    ffn_gate: str = ""  # a second FFN input linear whose rows are the neurons (SwiGLU's gate); "" for none
    kv_linears: tuple[str, ...] = ()  # key and value projections with one row block per KV head (decoders)
    kv_heads: str = ""  # the config attribute of the KV head count
    head_dim_field: str = ""  # the config attribute of an explicit head size; "" where it is hidden / heads


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
# GPT-2: fused q/k/v and transformers' Conv1D, whose weight is [in, out] (the transpose of nn.Linear's).
GPT2_LAYOUT = Layout(
    layers="h", attention="attn", head_linears=(("attn.c_attn", 3),), attention_output="attn.c_proj",
    ffn_in=("mlp.c_fc", 1), ffn_out="mlp.c_proj", ffn_width="n_inner",
)
# Llama, Qwen2 (q/k/v biases) and Qwen3 (q_norm/k_norm act within a head, so they are never sliced).
DECODER_LAYOUT = Layout(
    layers="layers", attention="self_attn", head_linears=(("self_attn.q_proj", 1),),
    attention_output="self_attn.o_proj", ffn_in=("mlp.up_proj", 1), ffn_out="mlp.down_proj",
    ffn_gate="mlp.gate_proj", kv_linears=("self_attn.k_proj", "self_attn.v_proj"), kv_heads="num_key_value_heads",
    head_dim_field="head_dim",
)


def head_size_of(config) -> int:
    """Width of one attention head."""
    return (getattr(config, "attention_head_size", None) or getattr(config, "head_dim", None)
            or config.hidden_size // config.num_attention_heads)


def ffn_width_of(config, layout: Layout) -> int:
    """The full FFN width of a config (GPT-2's `n_inner` unset means 4 x hidden)."""
    return getattr(config, layout.ffn_width, None) or 4 * config.hidden_size


LINEAR_TYPES = (nn.Linear, Conv1D)  # the projections a layout names: nn.Linear, or GPT-2's Conv1D ([in, out] weight)


def linear_features(linear: nn.Module) -> tuple[int, int]:
    """(input, output) features of an nn.Linear or a GPT-2 Conv1D."""
    return (linear.nx, linear.nf) if isinstance(linear, Conv1D) else (linear.in_features, linear.out_features)


def output_dim(linear: nn.Module) -> int:
    """The weight dimension that indexes output features: 0 for nn.Linear, 1 for Conv1D ([in, out])."""
    return 1 if isinstance(linear, Conv1D) else 0


def linear_weight(linear: nn.Module):
    """The weight laid out as nn.Linear's, [out, in] (a transposed view for Conv1D)."""
    return linear.weight.t() if isinstance(linear, Conv1D) else linear.weight


def slim_layer_sizes(config, layout: Layout) -> tuple[list[int], list[int]]:
    """Per-layer (heads, FFN widths) of a slim config; full sizes where a list is unset."""
    n = config.num_hidden_layers
    heads = list(getattr(config, "layer_num_heads", None) or [config.num_attention_heads] * n)
    widths = list(getattr(config, "layer_intermediate_sizes", None) or [ffn_width_of(config, layout)] * n)
    if len(heads) != n or len(widths) != n:
        raise ValueError(
            f"slim config lists {len(heads)} head counts and {len(widths)} FFN widths for {n} layers"
        )
    return heads, widths


def slim_kv_heads(config, layout: Layout) -> list[int]:
    """Per-layer KV head counts of a slim decoder config (empty for families without separate KV heads)."""
    if not layout.kv_heads:
        return []
    n = config.num_hidden_layers
    return list(getattr(config, "layer_num_kv_heads", None) or [getattr(config, layout.kv_heads)] * n)


def _resized(linear: nn.Module, in_features: int, out_features: int) -> nn.Module:
    if isinstance(linear, Conv1D):
        return Conv1D(out_features, in_features)
    return nn.Linear(in_features, out_features, bias=linear.bias is not None)


def _replace(layer: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(layer.get_submodule(parent) if parent else layer, name, module)


def resize_encoder_layers(base_model: nn.Module, config, layout: Layout) -> None:
    """Replace each layer's head and FFN linears by ones of the slim sizes (fresh weights)."""
    heads, widths = slim_layer_sizes(config, layout)
    kv_heads = slim_kv_heads(config, layout) or [None] * len(heads)
    d = head_size_of(config)
    for layer, n_heads, width, n_kv in zip(base_model.get_submodule(layout.layers), heads, widths, kv_heads):
        for path in layout.kv_linears:
            kv = layer.get_submodule(path)
            _replace(layer, path, _resized(kv, linear_features(kv)[0], n_kv * d))
        for path, groups in layout.head_linears:
            linear = layer.get_submodule(path) if has_submodule(layer, path) else None
            if linear is not None:
                _replace(layer, path, _resized(linear, linear_features(linear)[0], groups * n_heads * d))
        out = layer.get_submodule(layout.attention_output)
        _replace(layer, layout.attention_output, _resized(out, n_heads * d, linear_features(out)[1]))
        path, groups = layout.ffn_in
        ffn_in = layer.get_submodule(path)
        _replace(layer, path, _resized(ffn_in, linear_features(ffn_in)[0], groups * width))
        if layout.ffn_gate:
            gate = layer.get_submodule(layout.ffn_gate)
            _replace(layer, layout.ffn_gate, _resized(gate, linear_features(gate)[0], width))
        ffn_out = layer.get_submodule(layout.ffn_out)
        _replace(layer, layout.ffn_out, _resized(ffn_out, width, linear_features(ffn_out)[1]))
        attention = layer.get_submodule(layout.attention)
        for name in ("num_attention_heads", "n_heads", "num_heads"):
            if hasattr(attention, name):
                setattr(attention, name, n_heads)
        if hasattr(attention, "all_head_size"):
            attention.all_head_size = n_heads * d
        if hasattr(attention, "split_size"):  # GPT-2 splits its fused q/k/v output at this width
            attention.split_size = n_heads * d
        if n_kv is not None:  # grouped-query attention repeats each KV head for this many query heads
            attention.num_key_value_groups = n_heads // n_kv


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
        """Save weights and config, plus this file and an `auto_map` for `trust_remote_code` loading; a decoder
        whose layers all have the same sizes is saved as its family's stock config instead."""
        out = super().save_pretrained(save_directory, *args, **kwargs)
        config_path = os.path.join(save_directory, "config.json")
        with open(config_path, encoding="utf-8") as f:
            data = json.load(f)
        config = self.config
        stock = (stock_decoder_config(data, self.slim_layout, config.num_attention_heads, head_size_of(config))
                 if self.slim_family in DECODER_FAMILIES else None)
        if stock is not None and _builds(type(self.config).__mro__[1], stock):
            data = stock
        else:
            shutil.copyfile(os.path.abspath(__file__), os.path.join(save_directory, REMOTE_CODE_FILE))
            module = REMOTE_CODE_FILE.removesuffix(".py")
            prefix = f"Slim{self.slim_family}"
            data["auto_map"] = {"AutoConfig": f"{module}.{prefix}Config"}
            for suffix, auto in AUTO_CLASSES.items():
                if prefix + suffix in globals():
                    data["auto_map"][auto] = f"{module}.{prefix}{suffix}"
        with open(config_path, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
        return out


SLIM_LISTS = ("layer_num_heads", "layer_num_kv_heads", "layer_intermediate_sizes")


def _builds(config_cls, data: dict) -> bool:
    # Llama's config refuses a head count that does not divide the hidden size, even with head_dim given; its
    # strict-dataclass validation raises huggingface_hub's own error class, not a ValueError.
    try:
        config_cls(**{k: v for k, v in data.items() if k not in ("model_type", "transformers_version")})
    except Exception:
        return False
    return True


def stock_decoder_config(data: dict, layout: Layout, full_heads: int, head_dim: int) -> dict | None:
    """A slim decoder's saved config with equal sizes in every layer, as its family's own (heads, KV heads, MLP
    width, and an explicit head size where the family takes one), loadable by transformers alone; None if the
    layers differ, or if heads were removed from a family that derives the head size from hidden / heads."""
    if not all(len(set(data.get(key) or [0])) == 1 for key in SLIM_LISTS):
        return None
    data = dict(data)
    heads, kv_heads, widths = (data.pop(key, None) for key in SLIM_LISTS)
    if layout.head_dim_field:
        if heads:
            data["num_attention_heads"] = heads[0]
        if kv_heads:
            data[layout.kv_heads] = kv_heads[0]
        data[layout.head_dim_field] = head_dim
    elif heads and heads[0] != full_heads:
        return None
    if widths:
        data[layout.ffn_width] = widths[0]
    data["model_type"] = data["model_type"].removeprefix("slim_")
    data["architectures"] = [a.removeprefix("Slim") for a in data.get("architectures") or []]
    data.pop("auto_map", None)
    return data


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


class SlimLlamaConfig(LlamaConfig):
    """LlamaConfig plus the kept head, KV head and MLP width of every layer."""

    model_type = "slim_llama"
    layer_num_heads: list[int] | None = None
    layer_num_kv_heads: list[int] | None = None
    layer_intermediate_sizes: list[int] | None = None


class SlimQwen2Config(Qwen2Config):
    """Qwen2Config plus the kept head, KV head and MLP width of every layer."""

    model_type = "slim_qwen2"
    layer_num_heads: list[int] | None = None
    layer_num_kv_heads: list[int] | None = None
    layer_intermediate_sizes: list[int] | None = None


class SlimGPT2Config(GPT2Config):
    """GPT2Config plus the kept head count and MLP width of every layer."""

    model_type = "slim_gpt2"
    layer_num_heads: list[int] | None = None
    layer_intermediate_sizes: list[int] | None = None


class SlimQwen3Config(Qwen3Config):
    """Qwen3Config plus the kept head, KV head and MLP width of every layer."""

    model_type = "slim_qwen3"
    layer_num_heads: list[int] | None = None
    layer_num_kv_heads: list[int] | None = None
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
    "Llama": (SlimLlamaConfig, DECODER_LAYOUT, modeling_llama),
    "Qwen2": (SlimQwen2Config, DECODER_LAYOUT, modeling_qwen2),
    "Qwen3": (SlimQwen3Config, DECODER_LAYOUT, modeling_qwen3),
    "GPT2": (SlimGPT2Config, GPT2_LAYOUT, modeling_gpt2),
}


def _define_slim_classes() -> None:
    """`Slim<Family><Suffix>` for every task class the family has (e.g. SlimBertForMaskedLM)."""
    for family, (config_cls, layout, module) in FAMILIES.items():
        for suffix in AUTO_CLASSES:
            parent = getattr(module, family + suffix, None)
            if parent is None or (suffix in CAUSAL_LM_SUFFIXES and family not in DECODER_FAMILIES):
                continue
            name = f"Slim{family}{suffix}"
            globals()[name] = type(name, (SlimModelMixin, parent), {
                "__module__": __name__, "__doc__": f"{parent.__name__} with per-layer head counts and FFN widths.",
                "config_class": config_cls, "slim_family": family, "slim_layout": layout,
            })


_define_slim_classes()
