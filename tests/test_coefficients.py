import pytest
import torch
import torch.nn.functional as F

from earlybert.ticket.coefficients import (
    attach_coefficients,
    detach_coefficients,
    ffn_coefficients,
    has_coefficients,
    head_coefficients,
    l1_penalty,
    set_coefficients,
)
from tests.conftest import FAMILIES, TASKS, outputs_of, random_inputs, tiny_model


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("task", TASKS)
def test_attaching_leaves_outputs_unchanged(family, task):
    model = tiny_model(family, task)
    inputs = random_inputs(model)
    before = outputs_of(model, inputs)
    attach_coefficients(model)
    assert torch.equal(outputs_of(model, inputs), before)
    assert [c.shape[0] for c in head_coefficients(model)] == [4, 4]
    assert [c.shape[0] for c in ffn_coefficients(model)] == [48, 48]


def test_attached_model_stays_on_sdpa(monkeypatch):
    model = tiny_model("bert")
    attach_coefficients(model)
    calls = []
    real = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)
    import transformers.integrations.sdpa_attention as sdpa_mod

    monkeypatch.setattr(sdpa_mod.torch.nn.functional, "scaled_dot_product_attention", counting)
    outputs_of(model, random_inputs(model))
    assert model.config._attn_implementation == "sdpa"
    assert len(calls) == model.config.num_hidden_layers


def test_coefficients_scale_heads_and_neurons():
    model = tiny_model("bert")
    inputs = random_inputs(model)
    attach_coefficients(model)
    base = outputs_of(model, inputs)
    with torch.no_grad():
        head_coefficients(model)[1][2] = 0.0
    assert not torch.allclose(outputs_of(model, inputs), base)
    # Zeroing a head equals zeroing the output projection's input columns of that head.
    reference = tiny_model("bert")
    with torch.no_grad():
        reference.bert.encoder.layer[1].attention.output.dense.weight[:, 16:24] = 0
    torch.testing.assert_close(outputs_of(model, inputs), outputs_of(reference, inputs), atol=1e-5, rtol=0)
    with torch.no_grad():
        head_coefficients(model)[1][2] = 1.0
        ffn_coefficients(model)[0][[3, 7]] = 0.0
        reference = tiny_model("bert")
        reference.bert.encoder.layer[0].output.dense.weight[:, [3, 7]] = 0
    torch.testing.assert_close(outputs_of(model, inputs), outputs_of(reference, inputs), atol=1e-5, rtol=0)


def test_detach_restores_plain_model():
    model = tiny_model("roberta", "sequence_classification")
    inputs = random_inputs(model)
    keys = set(model.state_dict())
    before = outputs_of(model, inputs)
    attach_coefficients(model)
    assert has_coefficients(model)
    assert len(set(model.state_dict()) - keys) == 4
    set_coefficients(model, [torch.full((4,), 0.5)] * 2, [torch.full((48,), 2.0)] * 2)
    values = detach_coefficients(model)
    assert not has_coefficients(model)
    assert set(model.state_dict()) == keys
    assert torch.equal(outputs_of(model, inputs), before)
    assert values["heads"][0].tolist() == [0.5] * 4 and values["ffn"][1][0].item() == 2.0


def test_l1_penalty_is_a_weighted_sum():
    model = tiny_model("bert")
    attach_coefficients(model)
    set_coefficients(model, [torch.tensor([1.0, -2.0, 0.0, 0.5])] * 2, [torch.full((48,), -0.25)] * 2)
    penalty = l1_penalty(model, lambda_heads=0.1, lambda_ffn=0.01)
    assert penalty.item() == pytest.approx(0.1 * 2 * 3.5 + 0.01 * 2 * 48 * 0.25)
    penalty.backward()
    assert head_coefficients(model)[0].grad.tolist() == pytest.approx([0.1, -0.1, 0.0, 0.1])


def test_coefficients_are_trained_by_an_optimizer():
    model = tiny_model("bert")
    attach_coefficients(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    out = model(**random_inputs(model), labels=random_inputs(model)["input_ids"])
    (out.loss + l1_penalty(model)).backward()
    opt.step()
    assert any((c != 1.0).any() for c in head_coefficients(model) + ffn_coefficients(model))


def test_detach_on_a_deep_copy_leaves_the_original_searching():
    import copy

    model = tiny_model("bert")
    inputs = random_inputs(model)
    attach_coefficients(model)
    set_coefficients(model, [torch.full((4,), 0.5)] * 2, [torch.ones(48)] * 2)
    scaled = outputs_of(model, inputs)
    plain = copy.deepcopy(model)
    detach_coefficients(plain)
    assert torch.equal(outputs_of(model, inputs), scaled)  # the original keeps its hooks
    assert torch.equal(outputs_of(plain, inputs), outputs_of(tiny_model("bert"), inputs))
