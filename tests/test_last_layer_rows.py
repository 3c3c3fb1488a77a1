import copy

import pytest
import torch
import torch.nn.functional as F

from earlybert.models.adapters import get_adapter
from earlybert.models.fast_dropout import ATTENTION as FAST_SDPA
from earlybert.models.last_layer_rows import (
    disable_last_layer_rows,
    enable_last_layer_rows,
    last_layer_rows,
    supports_last_layer_rows,
)
from earlybert.ticket.coefficients import attach_coefficients, ffn_coefficients, head_coefficients
from earlybert.ticket.shrink import shrink_model
from earlybert.ticket.ticket import Ticket
from earlybert.train.objectives import ClassificationObjective, MaskedLMObjective
from tests.conftest import FAMILIES, random_inputs, tiny_model

BERT_LAYOUT_FAMILIES = ("bert", "roberta", "xlm-roberta", "electra")


def masked_labels(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """About a quarter of the real tokens masked; row 1 masks nothing."""
    gen = torch.Generator().manual_seed(3)
    ids = inputs["input_ids"]
    chosen = (torch.rand(ids.shape, generator=gen) < 0.25) & inputs["attention_mask"].bool()
    chosen[0, 2] = chosen[2, 0] = True
    chosen[1] = False
    return torch.where(chosen, ids, -100)


def reference_loss(model, inputs, labels) -> torch.Tensor:
    """The mean MLM loss from the family's own forward over every position."""
    logits = model(**inputs).logits
    return F.cross_entropy(logits[labels != -100], labels[labels != -100])


def gradients(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", FAMILIES)
def test_supported_exactly_for_the_bert_layout_families(family):
    assert supports_last_layer_rows(tiny_model(family)) == (family in BERT_LAYOUT_FAMILIES)


@pytest.mark.parametrize("attention", ["sdpa", "eager", FAST_SDPA])
@pytest.mark.parametrize("family", BERT_LAYOUT_FAMILIES)
def test_loss_and_every_gradient_equal_the_full_forward(family, attention):
    model = tiny_model(family)
    model.set_attn_implementation(attention)
    reference = copy.deepcopy(model)
    objective = MaskedLMObjective(model)
    inputs = random_inputs(model, batch=3, seq=11)  # the last row has a padded tail
    labels = masked_labels(inputs)

    loss, stats = objective(**inputs, labels=labels)
    loss.backward()
    expected = reference_loss(reference, inputs, labels)
    expected.backward()

    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert stats[2].item() == (labels != -100).sum().item()
    ours, theirs = gradients(model), gradients(reference)
    assert ours.keys() == theirs.keys()
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-6, rtol=1e-5, msg=name)
    last = get_adapter(model).layer_parts(model)[-1]
    assert last.ffn_out.weight.grad.abs().sum() > 0  # the last layer did learn


def slim_with_coefficients(task: str, **overrides):
    """A shrunk tiny BERT with coefficients attached and set away from 1.0 (a missed scale would show)."""
    full = tiny_model("bert", task, **overrides)
    ticket = Ticket("bert", heads=[[1, 0, 1, 1], [0, 1, 0, 0]], ffn=[[1] * 40 + [0] * 8, [0, 1] * 20 + [1] * 8])
    model = shrink_model(full, ticket)
    attach_coefficients(model)
    with torch.no_grad():
        for c in head_coefficients(model) + ffn_coefficients(model):
            c.uniform_(0.5, 1.5)
    return model


def test_slim_layers_with_coefficients_give_the_full_forward_gradients():
    model = slim_with_coefficients("masked_lm")
    reference = copy.deepcopy(model)
    inputs = random_inputs(model, batch=4, seq=9)
    labels = masked_labels(inputs)

    MaskedLMObjective(model)(**inputs, labels=labels)[0].backward()
    reference_loss(reference, inputs, labels).backward()

    for name, grad in gradients(reference).items():
        torch.testing.assert_close(gradients(model)[name], grad, atol=1e-6, rtol=1e-5, msg=name)
    assert head_coefficients(model)[-1].grad.abs().sum() > 0


def test_outside_the_context_the_layer_computes_every_row():
    model = tiny_model("bert")
    reference = copy.deepcopy(model)
    assert enable_last_layer_rows(model)
    inputs = random_inputs(model)
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, reference(**inputs).logits)
        rows = torch.zeros_like(inputs["input_ids"], dtype=torch.bool)
        rows[0, 3] = True
        with last_layer_rows(model, rows) as on:
            hidden = model.base_model(**inputs).last_hidden_state
        full = reference.base_model(**inputs).last_hidden_state
    assert on
    torch.testing.assert_close(hidden[0, 3], full[0, 3])
    assert hidden[~rows].abs().sum() == 0  # rows not asked for are left at zero
    with torch.no_grad(), last_layer_rows(model, torch.zeros_like(rows)):  # nothing asked: the whole layer runs
        torch.testing.assert_close(model.base_model(**inputs).last_hidden_state, full)
    disable_last_layer_rows(model)
    with torch.no_grad(), last_layer_rows(model, rows) as on:
        torch.testing.assert_close(model.base_model(**inputs).last_hidden_state, full)
    assert not on


def test_unsupported_family_is_left_untouched():
    model = tiny_model("distilbert")
    assert not enable_last_layer_rows(model)
    with last_layer_rows(model, torch.ones(3, 11, dtype=torch.bool)) as on:
        assert not on


def test_gradients_are_unchanged_under_activation_checkpointing():
    model = tiny_model("bert").train()  # tiny configs have no dropout: train mode is deterministic
    model.activation_checkpointing_enable({"use_reentrant": False})  # transformers v5 name
    reference = copy.deepcopy(model)
    inputs = random_inputs(model)
    labels = masked_labels(inputs)
    MaskedLMObjective(model)(**inputs, labels=labels)[0].backward()
    reference_loss(reference, inputs, labels).backward()
    for name, grad in gradients(reference).items():
        torch.testing.assert_close(gradients(model)[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def classifier_loss(model, inputs, labels) -> torch.Tensor:
    """The summed classification loss from the family's own forward over every position."""
    return F.cross_entropy(model(**inputs).logits, labels, reduction="sum")


@pytest.mark.parametrize("attention", ["sdpa", FAST_SDPA])
@pytest.mark.parametrize("family", BERT_LAYOUT_FAMILIES)
def test_a_classifier_runs_its_last_layer_at_the_first_position_with_every_gradient_unchanged(family, attention):
    model = tiny_model(family, "sequence_classification", num_labels=3)
    model.set_attn_implementation(attention)
    reference = copy.deepcopy(model)
    objective = ClassificationObjective(model)
    inputs = random_inputs(model, batch=3, seq=11)  # the last row has a padded tail
    labels = torch.tensor([0, 2, 1])
    ffn_rows = []
    last = get_adapter(model).layer_parts(model)[-1]
    last.ffn_out.register_forward_hook(lambda module, args, out: ffn_rows.append(args[0].shape[:-1].numel()))

    loss, stats = objective(**inputs, labels=labels)
    loss.backward()
    expected = classifier_loss(reference, inputs, labels) / 3
    expected.backward()

    assert objective.first_position_only
    assert ffn_rows == [3]  # one row a sequence went through the last FFN, not 3 x 11
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    ours, theirs = gradients(model), gradients(reference)
    assert ours.keys() == theirs.keys()
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-6, rtol=1e-5, msg=name)
    assert last.ffn_out.weight.grad.abs().sum() > 0


def test_a_slim_classifier_with_coefficients_gets_the_full_forward_gradients():
    model = slim_with_coefficients("sequence_classification", num_labels=2)
    reference = copy.deepcopy(model)
    inputs = random_inputs(model, batch=4, seq=9)
    labels = torch.tensor([1, 0, 0, 1])

    ClassificationObjective(model)(**inputs, labels=labels)[0].backward()
    (classifier_loss(reference, inputs, labels) / 4).backward()

    for name, grad in gradients(reference).items():
        torch.testing.assert_close(gradients(model)[name], grad, atol=1e-6, rtol=1e-5, msg=name)
    assert head_coefficients(model)[-1].grad.abs().sum() > 0 and ffn_coefficients(model)[-1].grad.abs().sum() > 0


@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in BERT_LAYOUT_FAMILIES])
def test_other_classifiers_run_every_row(family):
    model = tiny_model(family, "sequence_classification", num_labels=2)
    assert not ClassificationObjective(model).first_position_only
    with torch.no_grad():  # and their logits are the family's own
        inputs = random_inputs(model, batch=2, seq=7)
        torch.testing.assert_close(ClassificationObjective(model)(**inputs, labels=torch.tensor([0, 1]))[0],
                                   classifier_loss(model, inputs, torch.tensor([0, 1])) / 2)
