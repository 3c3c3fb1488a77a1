import pytest
from transformers import GPT2Config, GPT2Model

from earlybert.errors import EarlyBertError
from earlybert.models.adapters import get_adapter, layer_sizes, supported_model_types
from tests.conftest import TASKS, tiny_model


@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("task", [*TASKS, "base"])
def test_adapter_finds_layers_and_task(family, task):
    model = tiny_model(family, task)
    adapter = get_adapter(model)
    assert adapter.task_of(model) == task
    parts = adapter.layer_parts(model)
    assert len(parts) == 2
    assert parts[0].query.out_features == 32 and parts[0].ffn_out.in_features == 48
    assert layer_sizes(model) == ([4, 4], [48, 48])


def test_unsupported_model_lists_supported_types():
    model = GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=10))
    with pytest.raises(EarlyBertError) as err:
        get_adapter(model)
    assert str(err.value) == (
        "model type 'gpt2' is not supported: use one of " + ", ".join(supported_model_types())
    )
    assert "\n" not in str(err.value)
