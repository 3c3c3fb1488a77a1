import pytest
import torch

from earlybert.errors import EarlyBertError
from earlybert.merging.methods import merge, module_of, rankmean_weights, ranks


def states(*per_model: list[float], base: float = 10.0, embed: list[float] = ()) -> list[dict]:
    """One state dict per model: a one-value tensor per layer (base + delta), an `embed` tensor outside the layers."""
    out = []
    for i, deltas in enumerate(per_model):
        state = {f"encoder.layer.{j}.w": torch.tensor([base + d]) for j, d in enumerate(deltas)}
        state["embed.weight"] = torch.tensor([embed[i] if embed else 0.0])
        out.append(state)
    return out


def test_module_of_takes_the_first_numbered_component_as_the_layer():
    assert module_of("bert.encoder.layer.3.attention.self.query.weight") == "bert.encoder.layer.3."
    assert module_of("model.layers.12.mlp.up_proj.weight") == "model.layers.12."
    assert module_of("h.0.attn.c_attn.weight") == "h.0."
    assert module_of("embeddings.word_embeddings.weight") is None
    assert module_of("encoder.layer.3.output.dense.weight", "tensor") == "encoder.layer.3.output.dense.weight"


def test_ranks_start_at_one_for_the_smallest_and_ties_share_their_mean_rank():
    assert ranks([5.0, 1.0, 3.0]) == [3.0, 1.0, 2.0]
    assert ranks([3.0, 3.0, 1.0]) == [2.5, 2.5, 1.0]
    assert ranks([2.0, 2.0, 2.0]) == [2.0, 2.0, 2.0]


def test_two_model_rankmean_matches_the_hand_computed_merge():
    # |changes| A: layer0 1, layer1 3 -> ranks 1, 2; B: layer0 4, layer1 1 -> ranks 2, 1 (signs must not matter).
    a, b = states([1.0, -3.0], [-4.0, 1.0], embed=[2.0, 6.0])
    base = states([0.0, 0.0])[0]
    weights = rankmean_weights([a, b], base)
    assert weights == {"encoder.layer.0.": [pytest.approx(1 / 3), pytest.approx(2 / 3)],
                       "encoder.layer.1.": [pytest.approx(2 / 3), pytest.approx(1 / 3)]}
    merged, _ = merge("rankmean", [a, b], base)
    assert merged["encoder.layer.0.w"].item() == pytest.approx(11 / 3 + 2 * 6 / 3)  # 1/3 * 11 + 2/3 * 6
    assert merged["encoder.layer.1.w"].item() == pytest.approx(2 * 7 / 3 + 11 / 3)  # 2/3 * 7 + 1/3 * 11
    assert merged["embed.weight"].item() == pytest.approx(4.0)  # outside the layers: the plain mean


def test_three_model_rankmean_with_tied_changes_matches_the_hand_computed_merge():
    # |changes| A 1, 2, 3 -> ranks 1, 2, 3; B 3, 3, 1 -> 2.5, 2.5, 1; C 2, 1, 2 -> 2.5, 1, 2.5.
    models = states([1.0, -2.0, 3.0], [3.0, 3.0, -1.0], [-2.0, 1.0, 2.0])
    base = states([0.0, 0.0, 0.0])[0]
    weights = rankmean_weights(models, base)
    assert weights["encoder.layer.0."] == pytest.approx([1 / 6, 2.5 / 6, 2.5 / 6])
    assert weights["encoder.layer.1."] == pytest.approx([2 / 5.5, 2.5 / 5.5, 1 / 5.5])
    assert weights["encoder.layer.2."] == pytest.approx([3 / 6.5, 1 / 6.5, 2.5 / 6.5])
    merged, _ = merge("rankmean", models, base)
    assert merged["encoder.layer.0.w"].item() == pytest.approx((1 * 11 + 2.5 * 13 + 2.5 * 8) / 6)
    assert merged["encoder.layer.1.w"].item() == pytest.approx((2 * 8 + 2.5 * 13 + 1 * 11) / 5.5)
    assert merged["encoder.layer.2.w"].item() == pytest.approx((3 * 13 + 1 * 9 + 2.5 * 12) / 6.5)


def test_a_layer_module_sums_changes_over_its_tensors_and_tensor_granularity_ranks_each_tensor():
    base = {"layers.0.a": torch.zeros(2), "layers.0.b": torch.zeros(1), "layers.1.a": torch.zeros(2),
            "layers.1.b": torch.zeros(1)}
    a = {"layers.0.a": torch.tensor([1.0, 1.0]), "layers.0.b": torch.tensor([5.0]),   # layer 0: 7
         "layers.1.a": torch.tensor([3.0, 3.0]), "layers.1.b": torch.tensor([0.0])}   # layer 1: 6
    b = {"layers.0.a": torch.tensor([0.0, 1.0]), "layers.0.b": torch.tensor([0.0]),   # layer 0: 1
         "layers.1.a": torch.tensor([1.0, 1.0]), "layers.1.b": torch.tensor([1.0])}   # layer 1: 3
    assert rankmean_weights([a, b], base) == {"layers.0.": [pytest.approx(2 / 3), pytest.approx(1 / 3)],
                                              "layers.1.": [pytest.approx(1 / 3), pytest.approx(2 / 3)]}
    per_tensor = rankmean_weights([a, b], base, "tensor")
    # A's changes 2, 5, 6, 0 -> ranks 2, 3, 4, 1; B's 1, 0, 2, 1 -> ranks 2.5, 1, 4, 2.5.
    assert per_tensor["layers.0.a"] == pytest.approx([2 / 4.5, 2.5 / 4.5])
    assert per_tensor["layers.0.b"] == pytest.approx([3 / 4, 1 / 4])
    assert per_tensor["layers.1.a"] == pytest.approx([0.5, 0.5])
    assert per_tensor["layers.1.b"] == pytest.approx([1 / 3.5, 2.5 / 3.5])
    merged, _ = merge("rankmean", [a, b], base, "tensor")
    assert merged["layers.0.b"].tolist() == pytest.approx([3.75])


def test_average_and_task_arithmetic_match_their_formulas():
    a, b = states([1.0, 2.0], [3.0, -2.0], embed=[1.0, 3.0])
    base = states([0.0, 0.0], embed=[0.0, 0.0])[0]
    average, weights = merge("average", [a, b], base)
    assert weights == {}
    assert average["encoder.layer.0.w"].item() == pytest.approx(12.0)
    assert average["encoder.layer.1.w"].item() == pytest.approx(10.0)
    summed, _ = merge("task_arithmetic", [a, b], base, scale=0.5)
    assert summed["encoder.layer.0.w"].item() == pytest.approx(10 + 0.5 * (1 + 3))
    assert summed["embed.weight"].item() == pytest.approx(0.5 * (1 + 3))


def test_merge_keeps_the_models_dtype_and_integer_buffers():
    a = {"layers.0.w": torch.tensor([1.0], dtype=torch.bfloat16), "ids": torch.tensor([0, 1, 2])}
    b = {"layers.0.w": torch.tensor([3.0], dtype=torch.bfloat16), "ids": torch.tensor([0, 1, 2])}
    base = {"layers.0.w": torch.tensor([0.0], dtype=torch.bfloat16), "ids": torch.tensor([0, 1, 2])}
    merged, _ = merge("rankmean", [a, b], base)
    assert merged["layers.0.w"].dtype == torch.bfloat16 and merged["layers.0.w"].item() == 2.0
    assert merged["ids"].tolist() == [0, 1, 2]


@pytest.mark.parametrize("method, models, message", [
    ("median", 2, "unknown merge method 'median'"),
    ("rankmean", 1, "merging needs at least 2 models, got 1"),
])
def test_merge_refuses_an_unknown_method_and_a_single_model(method, models, message):
    a, b = states([1.0], [2.0])
    with pytest.raises(EarlyBertError, match=message):
        merge(method, [a, b][:models], states([0.0])[0])
