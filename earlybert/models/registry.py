"""Registration of the slim classes with transformers' Auto classes (idempotent)."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
)

from earlybert.models.adapters import ADAPTERS

_AUTO = {
    "base": AutoModel,
    "masked_lm": AutoModelForMaskedLM,
    "sequence_classification": AutoModelForSequenceClassification,
    "question_answering": AutoModelForQuestionAnswering,
    "pretraining": AutoModelForPreTraining,
    "discriminator": AutoModelForPreTraining,
    "causal_lm": AutoModelForCausalLM,
}


def register_auto_classes() -> None:
    """Register every adapter's slim config and model classes with the Auto classes."""
    for adapter in {id(a): a for a in ADAPTERS.values()}.values():
        config_cls = adapter.slim_config
        AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
        for task, cls in adapter.slim_classes.items():
            _AUTO[task].register(config_cls, cls, exist_ok=True)
