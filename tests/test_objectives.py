
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


def test_causal_lm_objective_equals_hugging_face_next_token_loss():
    from transformers import LlamaConfig, LlamaForCausalLM

    from earlybert.train.objectives import CausalLMObjective

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                         num_key_value_heads=2, intermediate_size=64)).eval()
    ids = torch.randint(50, (3, 12))
    labels = ids.clone()
    labels[0, 5:] = -100  # ignored positions count neither in the loss nor in the count
    loss, stats = CausalLMObjective(model)(ids, torch.ones_like(ids), labels)
    expected = model(input_ids=ids, labels=labels).loss
    torch.testing.assert_close(loss, expected)
    assert CausalLMObjective.count({"labels": labels}) == int(stats[2]) == 3 * 11 - 7


def test_distillation_mixes_the_teachers_kl_into_the_loss_and_trains_only_the_student():
    import copy

    import torch.nn.functional as F
    from transformers import BertConfig, BertForSequenceClassification

    from earlybert.train.objectives import ClassificationObjective

    torch.manual_seed(0)
    config = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    student, teacher = BertForSequenceClassification(config), BertForSequenceClassification(config)
    ids, labels = torch.randint(60, (4, 9)), torch.tensor([0, 2, 1, 2])
    plain, _ = ClassificationObjective(student)(ids, torch.ones_like(ids), labels)
    objective = ClassificationObjective(student)
    objective.set_teacher(copy.deepcopy(student), alpha=0.25, temperature=2.0)
    same, _ = objective(ids, torch.ones_like(ids), labels)  # a teacher equal to the student adds nothing
    torch.testing.assert_close(same, 0.75 * plain)
    objective.set_teacher(teacher, alpha=0.25, temperature=2.0)
    loss, stats = objective(ids, torch.ones_like(ids), labels)
    s, t = student(ids).logits / 2, teacher(ids).logits.detach() / 2
    kl = (F.softmax(t, -1) * (F.log_softmax(t, -1) - F.log_softmax(s, -1))).sum() / 4
    torch.testing.assert_close(loss, 0.75 * plain + 0.25 * 4 * kl)
    torch.testing.assert_close(stats[0] / 4, plain)  # the logged loss stays the task loss
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert {id(p) for p in objective.parameters()} == {id(p) for p in student.parameters()}
