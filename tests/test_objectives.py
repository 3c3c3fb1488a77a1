import copy

import pytest
import torch

from earlybert.ticket.coefficients import attach_coefficients, l1_penalty
from earlybert.train.objectives import MaskedLMObjective
from tests.conftest import FAMILIES, random_inputs, tiny_model


@pytest.mark.parametrize("family", [*FAMILIES, "deberta-v2 (non-legacy head)"])
def test_masked_position_loss_equals_full_logit_loss(family):
    # DeBERTa's non-legacy MLM head takes the word embeddings as a second argument.
    extra = {"legacy": False} if family.startswith("deberta-v2 ") else {}
    model = tiny_model(family.split()[0], "masked_lm", vocab_size=300, **extra)
    inputs = random_inputs(model, batch=4, seq=16)
    # A tokenizer's token types are given to every objective; families without them must ignore them.
    typed = {**inputs, "token_type_ids": torch.zeros_like(inputs["input_ids"])}
    gen = torch.Generator().manual_seed(0)
    labels = torch.where(torch.rand(inputs["input_ids"].shape, generator=gen) < 0.15, inputs["input_ids"], -100)
    labels[:, 1] = inputs["input_ids"][:, 1]  # every row predicts something
    with torch.no_grad():
        reference = model(**inputs, labels=labels).loss
        loss, stats = MaskedLMObjective(model)(**typed, labels=labels)
    assert abs(loss.item() - reference.item()) <= 1e-5
    assert abs(stats[0].item() / stats[2].item() - reference.item()) <= 1e-5
    assert stats[2].item() == (labels != -100).sum().item()
    assert 0 <= stats[1].item() <= stats[2].item()


def test_objective_adds_the_l1_penalty_while_coefficients_are_attached():
    model = tiny_model("bert", "masked_lm")
    inputs = random_inputs(model)
    labels = inputs["input_ids"].clone()
    plain, _ = MaskedLMObjective(model, 0.5, 0.25)(**inputs, labels=labels)
    attach_coefficients(model)
    searched, stats = MaskedLMObjective(model, 0.5, 0.25)(**inputs, labels=labels)
    expected_l1 = l1_penalty(model, 0.5, 0.25).item()
    assert expected_l1 == pytest.approx(0.5 * 8 + 0.25 * 96)
    assert searched.item() == pytest.approx(plain.item() + expected_l1, rel=1e-6)
    assert stats[3].item() == pytest.approx(expected_l1)


def test_pretraining_objective_equals_hugging_face_mlm_plus_nsp():
    from transformers import BertForPreTraining

    from earlybert.train.objectives import PretrainingObjective
    from tests.conftest import tiny_config

    torch.manual_seed(0)
    model = BertForPreTraining(tiny_config("bert", vocab_size=300)).eval()
    inputs = random_inputs(model, batch=4, seq=16)
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[:, 2:5] = inputs["input_ids"][:, 2:5]
    nsp = torch.tensor([0, 1, 1, 0])
    types = torch.zeros_like(labels)
    types[:, 8:] = 1
    with torch.no_grad():
        reference = model(**inputs, token_type_ids=types, labels=labels, next_sentence_label=nsp).loss
        loss, _ = PretrainingObjective(model)(**inputs, token_type_ids=types, labels=labels, next_sentence_label=nsp)
    assert abs(loss.item() - reference.item()) <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_tied_gradient_in_place_equals_autograds(family):
    # Tied word embeddings add the lookup's rows into the decoder's dense gradient in place:
    # the parameters' gradients and one fused AdamW step must be what autograd's dense sum gives.
    from earlybert.train.engine import adamw
    from earlybert.train.trainer_config import TrainConfig

    dense = tiny_model(family, "masked_lm", vocab_size=300).train()
    in_place = copy.deepcopy(dense)
    tied = MaskedLMObjective(in_place).tied_gradient_in_place()
    inputs = random_inputs(dense, batch=4, seq=16)
    labels = torch.where(torch.rand(inputs["input_ids"].shape, generator=torch.Generator().manual_seed(0)) < 0.15,
                         inputs["input_ids"], -100)
    labels[:, 1] = inputs["input_ids"][:, 1]
    for model in (dense, in_place):
        opt = adamw([{"params": list(model.parameters()), "weight_decay": 0.01}], TrainConfig(lr=1e-2))
        for _ in range(2):  # two micro-batches: the second adds onto gradients already there
            MaskedLMObjective(model)(**inputs, labels=labels)[0].backward()
        model.grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        opt.step()
    assert tied == (dense.get_output_embeddings() is not None
                    and dense.get_output_embeddings().weight is dense.get_input_embeddings().weight)
    assert dense.grads.keys() == in_place.grads.keys()
    for name, grad in in_place.grads.items():
        assert not grad.is_sparse and torch.allclose(grad, dense.grads[name], atol=1e-6), name
    for (name, a), b in zip(dense.named_parameters(), in_place.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_kept_decoder_gradient_is_overwritten_after_zero_grad_and_reused():
    # After zero_grad(set_to_none=True) the next step writes into the same buffer: its gradient is that step's
    # alone (not the sum with the last), and no new vocabulary-sized tensor is allocated.
    from earlybert.train.objectives import KeptGradientDecoder

    plain = tiny_model("bert", "masked_lm", vocab_size=300).train()
    kept = copy.deepcopy(plain)
    assert MaskedLMObjective(kept).tied_gradient_in_place()
    assert isinstance(kept.get_output_embeddings(), KeptGradientDecoder)
    addresses = []
    for seed in range(3):
        inputs = random_inputs(plain, batch=4, seq=16, seed=seed)
        labels = torch.where(torch.rand(inputs["input_ids"].shape, generator=torch.Generator().manual_seed(seed))
                             < 0.3, inputs["input_ids"], -100)
        for model in (plain, kept):
            model.zero_grad(set_to_none=True)
            MaskedLMObjective(model)(**inputs, labels=labels)[0].backward()
        grad = kept.get_input_embeddings().weight.grad
        addresses.append(grad.data_ptr())
        assert grad.data_ptr() == kept.get_output_embeddings()._kept_gradient.data_ptr()
        torch.testing.assert_close(grad, plain.get_input_embeddings().weight.grad, atol=1e-6, rtol=0)
    assert len(set(addresses)) == 1


def test_a_hook_on_the_tied_weight_gets_the_decoder_gradient_and_its_result_lands():
    # The kept buffer reaches .grad through autograd, so hooks on the weight run (NaN checks and clipping hooks
    # rely on it); the lookup's rows are added after them, where the gradient lies.
    model = tiny_model("bert", "masked_lm", vocab_size=300).train()
    assert MaskedLMObjective(model).tied_gradient_in_place()
    inputs = random_inputs(model, batch=4, seq=16)
    labels = torch.where(torch.rand(inputs["input_ids"].shape, generator=torch.Generator().manual_seed(0)) < 0.3,
                         inputs["input_ids"], -100)
    seen = []
    weight = model.get_input_embeddings().weight
    weight.register_hook(lambda grad: (seen.append(grad.clone()), torch.zeros_like(grad))[1])
    MaskedLMObjective(model)(**inputs, labels=labels)[0].backward()
    looked_up = torch.zeros(weight.shape[0], dtype=torch.bool)
    looked_up[inputs["input_ids"].unique()] = True
    assert len(seen) == 1 and seen[0][~looked_up].abs().sum() > 0  # the decoder's gradient covers every row
    assert weight.grad[~looked_up].eq(0).all()  # the hook's zeros landed ...
    assert weight.grad[looked_up].abs().sum() > 0  # ... and the lookup's rows were added after it


def test_kept_decoder_outside_training_is_a_plain_linear():
    model = tiny_model("bert", "masked_lm", vocab_size=300)
    reference = copy.deepcopy(model)
    assert MaskedLMObjective(model).tied_gradient_in_place()
    hidden = torch.randn(5, model.config.hidden_size)
    with torch.no_grad():
        assert torch.equal(model.get_output_embeddings()(hidden), reference.get_output_embeddings()(hidden))
    assert not hasattr(model.get_output_embeddings(), "_kept_gradient")
    assert model.state_dict().keys() == reference.state_dict().keys()


def test_a_lookup_gradient_landing_alone_starts_from_zeros():
    model = tiny_model("bert", "masked_lm")
    assert MaskedLMObjective(model).tied_gradient_in_place()
    embeddings = model.get_input_embeddings()
    embeddings(torch.tensor([[5, 6, 5, embeddings.padding_idx]])).sum().backward()
    grad = embeddings.weight.grad  # the padding row gets none, as in nn.Embedding
    assert grad[5].eq(2).all() and grad[6].eq(1).all() and grad[7].eq(0).all()
    assert grad[embeddings.padding_idx].eq(0).all()


def test_untied_or_classification_models_keep_dense_lookups():
    classifier = tiny_model("bert", "sequence_classification")
    assert not MaskedLMObjective(classifier).tied_gradient_in_place()
    assert type(classifier.get_input_embeddings()) is torch.nn.Embedding
