"""Architecture adapters: where each family keeps its attention projections and FFN linears.

Adding a BERT-like family (ELECTRA, say) is one more `Adapter(...)` entry: its model types, its
Hugging Face and slim classes per task, and the attribute paths below if they differ.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from transformers import (
    BertForMaskedLM,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertModel,
    RobertaForMaskedLM,
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaModel,
)

from earlybert.errors import EarlyBertError
from earlybert.models import modeling

TASKS = ("base", "masked_lm", "sequence_classification", "question_answering")


@dataclass(frozen=True)
class LayerParts:
    """The modules of one encoder layer that slimming touches."""

    attention: nn.Module  # computes the per-head context; its output[0] is [batch, seq, heads*head_size]
    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    attention_output: nn.Linear  # input columns are grouped by head
    intermediate: nn.Module  # output is the FFN activation
    ffn_in: nn.Linear
    ffn_out: nn.Linear


@dataclass(frozen=True)
class Adapter:
    """How to find the slimmable parts of one model family, and its slim classes."""

    family: str
    model_types: tuple[str, ...]
    hf_classes: dict[str, type]
    slim_classes: dict[str, type]
    slim_config: type
    attention: str = "attention.self"
    query: str = "attention.self.query"
    key: str = "attention.self.key"
    value: str = "attention.self.value"
    attention_output: str = "attention.output.dense"
    intermediate: str = "intermediate"
    ffn_in: str = "intermediate.dense"
    ffn_out: str = "output.dense"
    layers: str = "encoder.layer"
    mlm_head: str = "cls.predictions"  # maps hidden states [..., hidden] to vocabulary logits

    def layer_parts(self, model: nn.Module) -> list[LayerParts]:
        """The slimmable modules of every encoder layer of `model`."""
        layers = model.base_model.get_submodule(self.layers)
        return [
            LayerParts(**{name: layer.get_submodule(getattr(self, name)) for name in LayerParts.__annotations__})
            for layer in layers
        ]

    def task_of(self, model: nn.Module) -> str:
        """Which task head the model carries: base, masked_lm, sequence_classification or question_answering."""
        for task in self.hf_classes:
            if isinstance(model, (self.hf_classes[task], self.slim_classes[task])):
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


ADAPTERS: dict[str, Adapter] = {}


def register_adapter(adapter: Adapter) -> None:
    """Make a family available to coefficients, masks, shrink and checkpoints."""
    for model_type in adapter.model_types:
        ADAPTERS[model_type] = adapter


register_adapter(
    Adapter(
        family="bert",
        model_types=("bert", "slim_bert"),
        hf_classes=dict(zip((*TASKS, "pretraining"), (BertModel, BertForMaskedLM, BertForSequenceClassification,
                                                       BertForQuestionAnswering, BertForPreTraining))),
        slim_classes=dict(zip((*TASKS, "pretraining"), (modeling.SlimBertModel, modeling.SlimBertForMaskedLM,
                                                         modeling.SlimBertForSequenceClassification,
                                                         modeling.SlimBertForQuestionAnswering,
                                                         modeling.SlimBertForPreTraining))),
        slim_config=modeling.SlimBertConfig,
    )
)
register_adapter(
    Adapter(
        family="roberta",
        model_types=("roberta", "slim_roberta"),
        hf_classes=dict(zip(TASKS, (RobertaModel, RobertaForMaskedLM, RobertaForSequenceClassification,
                                    RobertaForQuestionAnswering))),
        slim_classes=dict(zip(TASKS, (modeling.SlimRobertaModel, modeling.SlimRobertaForMaskedLM,
                                      modeling.SlimRobertaForSequenceClassification,
                                      modeling.SlimRobertaForQuestionAnswering))),
        slim_config=modeling.SlimRobertaConfig,
        mlm_head="lm_head",
    )
)


def supported_model_types() -> list[str]:
    """Model types every earlybert operation accepts."""
    return sorted(ADAPTERS)


def adapter_for_type(model_type: str) -> Adapter:
    """The adapter of a `config.model_type`, or a one-line error listing the supported ones."""
    if model_type not in ADAPTERS:
        raise EarlyBertError(
            f"model type {model_type!r} is not supported: use one of {', '.join(supported_model_types())}"
        )
    return ADAPTERS[model_type]


def get_adapter(model: nn.Module) -> Adapter:
    """The adapter for a model instance."""
    config = getattr(model, "config", None)
    return adapter_for_type(getattr(config, "model_type", type(model).__name__))


def head_size(model: nn.Module) -> int:
    """Width of one attention head."""
    return model.config.hidden_size // model.config.num_attention_heads


def layer_sizes(model: nn.Module) -> tuple[list[int], list[int]]:
    """Current (heads per layer, FFN width per layer) of a model, read off its linears."""
    parts = get_adapter(model).layer_parts(model)
    d = head_size(model)
    return [p.query.out_features // d for p in parts], [p.ffn_in.out_features for p in parts]
