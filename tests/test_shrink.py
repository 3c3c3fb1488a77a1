import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
)

from earlybert.errors import EarlyBertError
from earlybert.models.adapters import get_adapter, layer_sizes
from earlybert.ticket.coefficients import attach_coefficients, ffn_coefficients, head_coefficients, set_coefficients
from earlybert.ticket.shrink import prune_plan, shrink_model, transfer_adam_state
from earlybert.ticket.ticket import Ticket
from tests.conftest import FAMILIES, FAMILY_TASKS, outputs_of, random_inputs, tiny_model

AUTO = {"masked_lm": AutoModelForMaskedLM, "sequence_classification": AutoModelForSequenceClassification,
        "question_answering": AutoModelForQuestionAnswering, "base": AutoModel,
        "pretraining": AutoModelForPreTraining, "discriminator": AutoModelForPreTraining}


def uneven_ticket(model_type: str, seed: int = 0) -> Ticket:
    """Layer 0 keeps 3 of 4 heads and 30 of 48 neurons, layer 1 keeps 1 head and 7 neurons."""
    gen = torch.Generator().manual_seed(seed)
    ffn = []
    for keep in (30, 7):
        row = [0] * 48
        for i in torch.randperm(48, generator=gen)[:keep].tolist():
            row[i] = 1
        ffn.append(row)
    return Ticket(model_type=model_type, heads=[[1, 0, 1, 1], [0, 0, 1, 0]], ffn=ffn)


def hard_masks(ticket: Ticket) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The ticket's 0/1 masks as float coefficient values."""
    return [torch.tensor(m).float() for m in ticket.heads], [torch.tensor(m).float() for m in ticket.ffn]


def masked_model(family: str, task: str, ticket: Ticket, seed: int = 0):
    """A model whose coefficients are random on kept units and 0 on pruned ones."""
    model = tiny_model(family, task, seed=seed)
    attach_coefficients(model)
    gen = torch.Generator().manual_seed(seed + 100)
    heads = [torch.tensor(m) * (0.5 + torch.rand(len(m), generator=gen)) for m in ticket.heads]
    ffn = [torch.tensor(m) * (0.5 + torch.rand(len(m), generator=gen)) for m in ticket.ffn]
    set_coefficients(model, heads, ffn)
    return model


@pytest.mark.parametrize(("family", "task"), FAMILY_TASKS)
def test_folded_slim_model_equals_masked_model_and_round_trips(family, task, tmp_path):
    ticket = uneven_ticket(family)
    model = masked_model(family, task, ticket)
    inputs = random_inputs(model)
    expected = outputs_of(model, inputs)
    slim = shrink_model(model, ticket, fold_coefficients=True)
    assert type(slim).__name__.startswith("Slim")
    assert layer_sizes(slim) == ([3, 1], [30, 7])
    assert (outputs_of(slim, inputs) - expected).abs().max().item() <= 1e-5

    slim.save_pretrained(tmp_path)
    reloaded = AUTO[task].from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(slim)
    assert (outputs_of(reloaded, inputs) - expected).abs().max().item() <= 1e-5


def test_without_folding_coefficients_count_as_one():
    ticket = uneven_ticket("bert")
    model = masked_model("bert", "masked_lm", ticket)
    slim = shrink_model(model, ticket, fold_coefficients=False)
    # Same as the masked model with every kept coefficient reset to 1.
    set_coefficients(model, *hard_masks(ticket))
    inputs = random_inputs(model)
    assert (outputs_of(slim, inputs) - outputs_of(model, inputs)).abs().max().item() <= 1e-5


def test_folding_uses_ticket_coefficients_for_a_plain_model():
    ticket = uneven_ticket("bert")
    model = masked_model("bert", "masked_lm", ticket)
    ticket.coefficients = {"heads": [c.tolist() for c in head_coefficients(model)],
                           "ffn": [c.tolist() for c in ffn_coefficients(model)]}
    expected = outputs_of(model, random_inputs(model))
    plain = tiny_model("bert", "masked_lm")  # same seed, same weights, no coefficients
    slim = shrink_model(plain, ticket, fold_coefficients=True)
    assert (outputs_of(slim, random_inputs(model)) - expected).abs().max().item() <= 1e-5
    with pytest.raises(EarlyBertError, match="needs coefficient values"):
        shrink_model(plain, uneven_ticket("bert"), fold_coefficients=True)


def test_slim_model_can_be_shrunk_again():
    ticket = uneven_ticket("bert")
    slim = shrink_model(masked_model("bert", "masked_lm", ticket), ticket, fold_coefficients=True)
    second = Ticket("slim_bert", heads=[[1, 1, 0], [1]], ffn=[[1] * 20 + [0] * 10, [1] * 7])
    slimmer = shrink_model(slim, second)
    assert layer_sizes(slimmer) == ([2, 1], [20, 7])
    with pytest.raises(EarlyBertError, match="do not match the model"):
        shrink_model(slim, uneven_ticket("bert"))


def test_ticket_for_another_model_type_is_refused():
    with pytest.raises(EarlyBertError, match="model type 'roberta'"):
        shrink_model(tiny_model("bert"), uneven_ticket("roberta"))


@pytest.mark.parametrize("family", ["modernbert", "deberta-v2"])
def test_family_specific_attention_survives_a_per_layer_ticket(family):
    """ModernBERT: a local layer on inputs longer than its window; DeBERTa-v2 with its own (unshared)
    relative-position projections, which are sliced per head like q/k/v."""
    overrides = {"share_att_key": False} if family == "deberta-v2" else {}
    ticket = Ticket(family, heads=[[0, 1, 1, 0], [1, 0, 0, 0]], ffn=uneven_ticket(family).ffn)
    model = tiny_model(family, "masked_lm", **overrides)
    attach_coefficients(model)
    set_coefficients(model, *hard_masks(ticket))
    inputs = random_inputs(model, seq=24)
    if family == "modernbert":
        assert model.config.layer_types == ["full_attention", "sliding_attention"]
        assert model.config.sliding_window * 2 + 1 < 24  # the local layer cannot see the whole input
        # The window is in effect: the same weights attending globally give other outputs.
        wide = tiny_model(family, "masked_lm", local_attention=64)
        wide.load_state_dict({k: v for k, v in model.state_dict().items() if "earlybert" not in k})
        attach_coefficients(wide)
        set_coefficients(wide, *hard_masks(ticket))
        assert (outputs_of(wide, inputs) - outputs_of(model, inputs)).abs().max() > 1e-4  # 10x the tolerance below
    else:
        names = [n for n, _ in model.named_parameters()]
        assert any("pos_key_proj" in n for n in names) and any("pos_query_proj" in n for n in names)
    slim = shrink_model(model, ticket, fold_coefficients=True)
    assert layer_sizes(slim) == ([2, 1], [30, 7])
    assert (outputs_of(slim, inputs) - outputs_of(model, inputs)).abs().max().item() <= 1e-5


# Key biases have a true gradient of 0 (softmax ignores a per-query shift), so Adam normalises float
# round-off on them: no two computation orders agree. They are checked by shape only.
ZERO_GRADIENT_BIASES = ("attention.self.key.bias", "key_proj.bias", "k_lin.bias")


@pytest.mark.parametrize("family", FAMILIES)
def test_adam_step_after_state_slicing_equals_masked_step(family):
    ticket = uneven_ticket(family)
    model = masked_model(family, "masked_lm", ticket)
    # Hard 0/1 masks, frozen, so the masked model trains exactly the parameters the slim one keeps.
    set_coefficients(model, *hard_masks(ticket))
    for c in head_coefficients(model) + ffn_coefficients(model):
        c.requires_grad_(False)
    batch = random_inputs(model, batch=4, seq=9)
    labels = batch["input_ids"].clone()
    weights = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(weights, lr=1e-2, weight_decay=0.01)
    for _ in range(3):  # build up non-trivial moments
        opt.zero_grad()
        model(**batch, labels=labels).loss.backward()
        opt.step()

    slim = shrink_model(model, ticket)
    slim_opt = torch.optim.AdamW(slim.parameters(), lr=1e-2, weight_decay=0.01)
    plan = prune_plan(model, ticket)
    transfer_adam_state(opt, model, slim_opt, slim, plan)

    opt.zero_grad()
    model(**batch, labels=labels).loss.backward()
    opt.step()
    slim_opt.zero_grad()
    slim(**batch, labels=labels).loss.backward()
    slim_opt.step()

    full = {k: v for k, v in model.state_dict().items() if "earlybert" not in k}
    from earlybert.ticket.shrink import apply_plan

    restricted = apply_plan(full, plan)
    for name, value in slim.state_dict().items():
        if name.endswith(ZERO_GRADIENT_BIASES):
            assert value.shape == restricted[name].shape
            continue
        torch.testing.assert_close(value, restricted[name], atol=1e-6, rtol=1e-5, msg=name)
    query, groups = get_adapter(slim).layer_parts(slim)[1].head_linears[0]
    step_state = slim_opt.state[query.weight]
    assert step_state["exp_avg"].shape == (groups * 8, 32) and float(step_state["step"]) == 4
