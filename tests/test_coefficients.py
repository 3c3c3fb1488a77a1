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


def activation_side_reference(model, heads, ffn):
    """The coefficients as the paper applies them: forward pre-hooks scaling the context of each head and
    each FFN activation (the inputs of the output projection and of the second FFN linear)."""
    from earlybert.models.adapters import get_adapter, head_size

    d = head_size(model)
    handles = []
    for parts, h, f in zip(get_adapter(model).layer_parts(model), heads, ffn):
        for linear, coef in ((parts.attention_output, h.repeat_interleave(d)), (parts.ffn_out, f)):
            handles.append(linear.register_forward_pre_hook(lambda m, args, c=coef: (args[0] * c,)))
    return handles


@pytest.mark.parametrize("family", FAMILIES)
def test_weight_side_coefficients_equal_activation_side_ones(family):
    """Outputs and coefficient gradients of the column-scaled weights match scaling the activations (1e-6)."""
    model = tiny_model(family, "masked_lm")
    inputs = random_inputs(model)
    gen = torch.Generator().manual_seed(3)
    heads = [(0.5 + torch.rand(4, generator=gen)).requires_grad_() for _ in range(2)]
    ffn = [(0.5 + torch.rand(48, generator=gen)).requires_grad_() for _ in range(2)]
    handles = activation_side_reference(model, heads, ffn)
    reference = model(**inputs).logits
    reference.square().mean().backward()
    for handle in handles:
        handle.remove()
    attach_coefficients(model)
    set_coefficients(model, [h.detach() for h in heads], [f.detach() for f in ffn])
    got = model(**inputs).logits
    got.square().mean().backward()
    assert (got - reference).abs().max().item() <= 1e-6
    for param, ref in zip(head_coefficients(model) + ffn_coefficients(model), heads + ffn):
        torch.testing.assert_close(param.grad, ref.grad, atol=1e-6, rtol=1e-5)
    assert all(p.grad.abs().sum() > 0 for p in head_coefficients(model))


def test_frozen_coefficients_still_scale_the_weight_gradient():
    """With the coefficients frozen (no gradient wanted) the weight's gradient is still that of W * c: c times
    the gradient a plain model with the scaled weights gets."""
    model, reference = tiny_model("bert", "masked_lm"), tiny_model("bert", "masked_lm")
    inputs = random_inputs(model)
    attach_coefficients(model)
    set_coefficients(model, [torch.full((4,), 0.5)] * 2, [torch.full((48,), 2.0)] * 2)
    for coef in head_coefficients(model) + ffn_coefficients(model):
        coef.requires_grad_(False)
    with torch.no_grad():
        for layer in reference.bert.encoder.layer:
            layer.attention.output.dense.weight.mul_(0.5)
            layer.output.dense.weight.mul_(2.0)
    model(**inputs).logits.square().mean().backward()
    reference(**inputs).logits.square().mean().backward()
    assert all(c.grad is None for c in head_coefficients(model) + ffn_coefficients(model))
    for layer, ref in zip(model.bert.encoder.layer, reference.bert.encoder.layer):
        torch.testing.assert_close(layer.attention.output.dense.weight.grad,
                                   ref.attention.output.dense.weight.grad * 0.5, atol=1e-7, rtol=1e-5)
        torch.testing.assert_close(layer.output.dense.weight.grad, ref.output.dense.weight.grad * 2.0,
                                   atol=1e-7, rtol=1e-5)
        assert layer.output.dense.weight.grad.abs().sum() > 0
