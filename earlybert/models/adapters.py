"""Architecture adapters: each family's task classes, slim classes and where its slimmable linears live.

A family is one `register_adapter(Adapter(...))` entry here plus its slim config and `Layout` in
`modeling.py` (self-contained, since it is copied into slim checkpoints).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
import transformers
from torch import nn

from earlybert.errors import EarlyBertError
from earlybert.models import modeling
from earlybert.models.modeling import Layout, has_submodule, head_size_of, linear_features

# Task name -> class-name suffix. ELECTRA's `ForPreTraining` is its discriminator, BERT's adds next-sentence
# prediction: the same suffix, so they are told apart by task name.
TASK_SUFFIXES = {
    "base": "Model",
    "masked_lm": "ForMaskedLM",
    "sequence_classification": "ForSequenceClassification",
    "question_answering": "ForQuestionAnswering",
    "causal_lm": "ForCausalLM",  # decoder families only
}
TASKS = tuple(TASK_SUFFIXES)


@dataclass(frozen=True)
class LayerParts:
    """The linears of one layer that slimming touches."""

    head_linears: list[tuple[nn.Linear, int]]  # (linear, groups): output rows grouped [groups, heads, head_size]
    attention_output: nn.Linear  # input columns are grouped by head
    ffn_in: tuple[nn.Linear, int]  # output rows grouped [groups, neurons]
    ffn_out: nn.Linear  # input columns are FFN neurons
    ffn_gate: nn.Linear | None = None  # SwiGLU's gate: one output row per neuron
    kv_linears: tuple[nn.Linear, ...] = ()  # grouped-query key and value projections: rows [kv_heads, head_size]


@dataclass(frozen=True)
class Adapter:
    """How to find the slimmable parts of one model family, and its HF and slim classes."""

    family: str  # the HF model_type
    prefix: str  # class-name prefix in transformers and in modeling.py ("Bert" -> BertModel, SlimBertModel)
    mlm_head: tuple[str, ...] = ()  # submodules mapping hidden states to vocabulary logits, applied in order
    pretraining_task: str = ""  # what `<prefix>ForPreTraining` is: "pretraining" (BERT) or "discriminator"
    token_types: bool = True  # whether the model takes token_type_ids
    position_offset: int = 0  # position ids start after the padding index (RoBERTa-style: 2)
    decoder: bool = False  # a causal LM family: a causal-LM class, KV heads of their own where grouped
    causal_lm_suffix: str = "ForCausalLM"  # GPT-2: LMHeadModel

    @property
    def layout(self) -> Layout:
        """Where this family's slimmable linears live."""
        return modeling.FAMILIES[self.prefix][1]

    @property
    def slim_config(self) -> type:
        """The slim config class (the family's config plus per-layer sizes)."""
        return modeling.FAMILIES[self.prefix][0]

    @property
    def model_types(self) -> tuple[str, str]:
        """The HF and the slim `model_type`."""
        return self.family, self.slim_config.model_type

    def _classes(self, namespace) -> dict[str, type]:
        suffixes = dict(TASK_SUFFIXES, **({self.pretraining_task: "ForPreTraining"} if self.pretraining_task else {}))
        suffixes["causal_lm"] = self.causal_lm_suffix
        if not self.decoder:
            suffixes.pop("causal_lm")
        found = {task: getattr(namespace, self.prefix + suffix, None) for task, suffix in suffixes.items()}
        return {task: cls for task, cls in found.items() if cls is not None}

    @cached_property
    def hf_classes(self) -> dict[str, type]:
        """Task name -> the transformers class."""
        return self._classes(transformers)

    @cached_property
    def slim_classes(self) -> dict[str, type]:
        """Task name -> the slim class in modeling.py."""
        return {task: getattr(modeling, "Slim" + cls.__name__) for task, cls in self.hf_classes.items()}

    def layer_parts(self, model: nn.Module) -> list[LayerParts]:
        """The slimmable linears of every layer of `model`."""
        layout = self.layout
        parts = []
        for layer in model.base_model.get_submodule(layout.layers):
            heads = [(layer.get_submodule(p), g) for p, g in layout.head_linears if has_submodule(layer, p)]
            parts.append(LayerParts(heads, layer.get_submodule(layout.attention_output),
                                    (layer.get_submodule(layout.ffn_in[0]), layout.ffn_in[1]),
                                    layer.get_submodule(layout.ffn_out),
                                    layer.get_submodule(layout.ffn_gate) if layout.ffn_gate else None,
                                    tuple(layer.get_submodule(p) for p in layout.kv_linears)))
        return parts

    def task_of(self, model: nn.Module) -> str:
        """Which task head the model carries (base, masked_lm, sequence_classification, ...)."""
        for task, cls in self.hf_classes.items():
            if isinstance(model, (cls, self.slim_classes[task])):
                return task
        raise EarlyBertError(
            f"{type(model).__name__} is not supported: use one of "
            + ", ".join(c.__name__ for c in self.hf_classes.values())
        )

    def class_by_name(self, name: str) -> type | None:
        """The HF or slim class of this family called `name`, if any."""
        for cls in (*self.hf_classes.values(), *self.slim_classes.values()):
            if cls.__name__ == name:
                return cls
        return None

    def mlm_logits(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits of the masked-LM head for the given hidden states (any leading shape)."""
        if self.family == "deberta-v2" and not model.config.legacy:  # its head takes the word embeddings too
            return model.lm_predictions(hidden, model.get_input_embeddings())
        for path in self.mlm_head:
            hidden = model.get_submodule(path)(hidden)
        return hidden

    def new_config(self, vocab_size: int, hidden_size: int, num_layers: int, num_heads: int, intermediate_size: int,
                   max_positions: int, hidden_dropout: float, attention_dropout: float, pad_token_id: int, **extra):
        """A fresh HF config of this family with the given sizes (the family's own field names); `extra`
        overrides the family defaults of a new model (DeBERTa: v3's relative attention; ELECTRA: embeddings as
        wide as the hidden states)."""
        config_cls = self.hf_classes["base"].config_class
        extra = {**NEW_MODEL_DEFAULTS.get(self.family, {}), "pad_token_id": pad_token_id, **extra}
        if self.family == "electra":
            extra.setdefault("embedding_size", hidden_size)
        if self.family == "distilbert":
            return config_cls(vocab_size=vocab_size, dim=hidden_size, n_layers=num_layers, n_heads=num_heads,
                              hidden_dim=intermediate_size, max_position_embeddings=max_positions,
                              dropout=hidden_dropout, attention_dropout=attention_dropout, **extra)
        if self.family == "gpt2":
            return config_cls(vocab_size=vocab_size, n_embd=hidden_size, n_layer=num_layers, n_head=num_heads,
                              n_inner=intermediate_size, n_positions=max_positions, resid_pdrop=hidden_dropout,
                              embd_pdrop=hidden_dropout, attn_pdrop=attention_dropout, **extra)
        if self.family == "modernbert":
            return config_cls(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                              num_attention_heads=num_heads, intermediate_size=intermediate_size,
                              max_position_embeddings=max_positions, mlp_dropout=hidden_dropout,
                              embedding_dropout=hidden_dropout, attention_dropout=attention_dropout, **extra)
        return config_cls(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                          num_attention_heads=num_heads, intermediate_size=intermediate_size,
                          max_position_embeddings=max_positions, hidden_dropout_prob=hidden_dropout,
                          attention_probs_dropout_prob=attention_dropout, **extra)


# What a new model of a family gets beyond its config class's defaults: DeBERTa-v3-base's attention.
NEW_MODEL_DEFAULTS = {
    "deberta-v2": dict(relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=256,
                       max_relative_positions=-1, share_att_key=True, norm_rel_ebd="layer_norm",
                       position_biased_input=False, type_vocab_size=0),
}


ADAPTERS: dict[str, Adapter] = {}


def register_adapter(adapter: Adapter) -> None:
    """Make a family available to coefficients, masks, shrink and checkpoints."""
    for model_type in adapter.model_types:
        ADAPTERS[model_type] = adapter


for _adapter in (
    Adapter("bert", "Bert", mlm_head=("cls.predictions",), pretraining_task="pretraining"),
    Adapter("roberta", "Roberta", mlm_head=("lm_head",), position_offset=2),
    Adapter("xlm-roberta", "XLMRoberta", mlm_head=("lm_head",), position_offset=2),
    Adapter("electra", "Electra", mlm_head=("generator_predictions", "generator_lm_head"),
            pretraining_task="discriminator"),
    Adapter("distilbert", "DistilBert", token_types=False,
            mlm_head=("vocab_transform", "activation", "vocab_layer_norm", "vocab_projector")),
    Adapter("deberta-v2", "DebertaV2", mlm_head=("cls.predictions",)),
    Adapter("modernbert", "ModernBert", mlm_head=("head", "decoder"), token_types=False),
    Adapter("llama", "Llama", token_types=False, decoder=True),
    Adapter("qwen2", "Qwen2", token_types=False, decoder=True),
    Adapter("qwen3", "Qwen3", token_types=False, decoder=True),
    Adapter("gpt2", "GPT2", token_types=False, decoder=True, causal_lm_suffix="LMHeadModel"),
):
    register_adapter(_adapter)


def supported_model_types() -> list[str]:
    """Model types every earlybert operation accepts."""
    return sorted(ADAPTERS)


def supported_families() -> list[str]:
    """The HF model types (families) earlybert slims."""
    return sorted({a.family for a in ADAPTERS.values()})


def adapter_for_type(model_type: str) -> Adapter:
    """The adapter of a `config.model_type`, or a one-line error listing the supported ones."""
    if model_type not in ADAPTERS:
        raise EarlyBertError(
            f"model type {model_type!r} is not supported: use one of {', '.join(supported_families())} "
            "(or their slim_ versions)"
        )
    return ADAPTERS[model_type]


def get_adapter(model: nn.Module) -> Adapter:
    """The adapter for a model instance."""
    config = getattr(model, "config", None)
    return adapter_for_type(getattr(config, "model_type", type(model).__name__))


def model_inputs(model: nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`inputs` without token types where the family takes none (DistilBERT, ModernBERT)."""
    if get_adapter(model).token_types:
        return inputs
    return {k: v for k, v in inputs.items() if k != "token_type_ids"}


def head_size(model: nn.Module) -> int:
    """Width of one attention head."""
    return head_size_of(model.config)


def kv_head_counts(model: nn.Module) -> list[int]:
    """KV heads per layer of a grouped-query decoder, read off its key projections (empty for other families)."""
    d = head_size(model)
    return [linear_features(p.kv_linears[0])[1] // d for p in get_adapter(model).layer_parts(model) if p.kv_linears]


def kept_kv_heads(head_row: list[int], kv_heads: int, layer: int = 0) -> torch.Tensor:
    """The KV heads a grouped-query layer keeps: those serving a kept query head. Every kept group must keep the
    same number of query heads (attention repeats each KV head that many times)."""
    size = len(head_row) // kv_heads
    counts = [sum(head_row[k * size:(k + 1) * size]) for k in range(kv_heads)]
    if len({c for c in counts if c}) > 1:
        raise EarlyBertError(f"the ticket keeps {counts} query heads in the KV groups of layer {layer}: grouped-query "
                             "attention needs the same number in every kept group; draw it with search.kv_groups="
                             "keep or prune")
    return torch.tensor([k for k, c in enumerate(counts) if c], dtype=torch.long)


def layer_sizes(model: nn.Module) -> tuple[list[int], list[int]]:
    """Current (heads per layer, FFN width per layer) of a model, read off its output linears."""
    parts = get_adapter(model).layer_parts(model)
    d = head_size(model)
    return ([linear_features(p.attention_output)[0] // d for p in parts],
            [linear_features(p.ffn_out)[0] for p in parts])
