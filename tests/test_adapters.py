import pytest
from transformers import OPTConfig, OPTModel

from earlybert.errors import EarlyBertError
from earlybert.models.adapters import get_adapter, layer_sizes, supported_families
from tests.conftest import FAMILIES, TASKS, tiny_model

# Output rows of each family's per-head linears in the tiny config (4 heads of 8): q, k, v apart, or fused.
HEAD_ROWS = {"modernbert": [96], "deberta-v2": [32, 32, 32]}
FFN_ROWS = {"modernbert": 96}  # GLU: input and gate halves


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("task", [*TASKS, "base"])
def test_adapter_finds_layers_and_task(family, task):
    model = tiny_model(family, task)
    adapter = get_adapter(model)
    assert adapter.task_of(model) == task
    parts = adapter.layer_parts(model)
    assert len(parts) == 2
    assert [linear.out_features for linear, _ in parts[0].head_linears] == HEAD_ROWS.get(family, [32, 32, 32])
    assert parts[0].attention_output.in_features == 32 and parts[0].ffn_out.in_features == 48
    assert parts[0].ffn_in[0].out_features == FFN_ROWS.get(family, 48)
    assert layer_sizes(model) == ([4, 4], [48, 48])


def test_unsupported_model_lists_supported_types():
    model = OPTModel(OPTConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=2, ffn_dim=32,
                               vocab_size=10, word_embed_proj_dim=16))
    with pytest.raises(EarlyBertError) as err:
        get_adapter(model)
    assert str(err.value) == (
        "model type 'opt' is not supported: use one of " + ", ".join(supported_families())
        + " (or their slim_ versions)"
    )
    assert supported_families() == ["bert", "deberta-v2", "distilbert", "electra", "gpt2", "llama", "modernbert",
                                    "qwen2", "qwen3", "roberta", "xlm-roberta"]
    assert "\n" not in str(err.value)
