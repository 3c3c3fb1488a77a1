import pytest
import torch

from earlybert.dsee.config import DseeConfig, add_updates, target_names
from earlybert.dsee.update import (
    low_rank_plus_sparse,
    magnitude_support,
    merge_updates,
    trainable_parameters,
    update_modules,
)
from earlybert.errors import EarlyBertError
from earlybert.train.engine import consolidated_copy
from tests.conftest import outputs_of, random_inputs, tiny_model


def randomized(model) -> None:
    """Give every update non-zero B, A and S so that it changes the model."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for update in update_modules(model).values():
            for p in (update.lora_A, update.lora_B, update.sparse_values):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def test_updates_start_at_zero_and_only_they_and_the_task_head_train():
    model = tiny_model("bert", "sequence_classification")
    inputs = random_inputs(model)
    before = outputs_of(model, inputs)
    names = add_updates(model, DseeConfig(rank=4, sparse_entries=10))
    assert names == [f"bert.encoder.layer.{i}.attention.self.{p}" for i in (0, 1) for p in ("query", "value")]
    torch.testing.assert_close(outputs_of(model, inputs), before)
    # 4 linears of 32 x 32: rank 4 (4 x 32 + 32 x 4) + 10 sparse entries each; the 3-class head 32 x 3 + 3.
    assert trainable_parameters(model) == 4 * (4 * 64 + 10) + 99
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == {"bert", "classifier"}
    assert all("parametrizations" in n for n, p in model.bert.named_parameters() if p.requires_grad)


def test_the_sparse_part_adds_its_values_at_its_support_only_and_merging_gives_a_plain_model():
    model = tiny_model("bert", "sequence_classification")
    linear = model.bert.encoder.layer[0].attention.self.query
    original = linear.weight.detach().clone()
    add_updates(model, DseeConfig(rank=2, sparse_entries=5, support="magnitude"))
    update = update_modules(model)["bert.encoder.layer.0.attention.self.query"]
    assert update.support.tolist() == original.abs().flatten().topk(5).indices.sort().values.tolist()
    with torch.no_grad():
        update.sparse_values.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    change = (linear.weight - original).flatten()
    assert change[update.support].tolist() == pytest.approx([1.0, 2.0, 3.0, 4.0, 5.0])
    assert change.count_nonzero() == 5  # B = 0: no low-rank part yet
    randomized(model)
    inputs = random_inputs(model)
    expected = outputs_of(model, inputs)
    copy = consolidated_copy(model)  # the trainer's fp32 copy rebuilds the updates
    torch.testing.assert_close(outputs_of(copy, inputs), expected)
    merge_updates(copy)
    assert not any("parametrizations" in k for k in copy.state_dict())
    torch.testing.assert_close(outputs_of(copy, inputs), expected, atol=1e-5, rtol=1e-5)


def test_the_low_rank_part_is_alpha_over_rank_times_b_a():
    model = tiny_model("bert", "sequence_classification")
    add_updates(model, DseeConfig(rank=2, alpha=8.0, sparse_entries=0))
    linear = model.bert.encoder.layer[1].attention.self.value
    update = update_modules(model)["bert.encoder.layer.1.attention.self.value"]
    start = linear.parametrizations.weight.original.detach().clone()
    with torch.no_grad():
        update.lora_A.zero_()
        update.lora_A[0, 3] = 1.0
        update.lora_B.zero_()
        update.lora_B[5, 0] = 0.5
    change = linear.weight - start
    assert change[5, 3].item() == pytest.approx(8.0 / 2 * 0.5) and change.count_nonzero() == 1


def test_the_decomposition_finds_the_sparse_spikes_on_top_of_a_low_rank_matrix():
    gen = torch.Generator().manual_seed(0)
    low = torch.randn(40, 2, generator=gen) @ torch.randn(2, 30, generator=gen)
    spikes = torch.randperm(1200, generator=gen)[:12].sort().values
    weight = low.flatten().clone()
    weight[spikes] += 4.0 * torch.sign(torch.randn(12, generator=gen))
    weight = weight.view(40, 30)
    assert low_rank_plus_sparse(weight, rank=2, entries=12).tolist() == spikes.tolist()
    # The largest |W| alone mixes spikes with large low-rank entries.
    assert magnitude_support(weight, 12).tolist() == weight.abs().flatten().topk(12).indices.sort().values.tolist()


def test_a_mask_keeps_pruned_weights_zero_however_the_update_moves():
    model = tiny_model("bert", "sequence_classification")
    name = "bert.encoder.layer.0.attention.self.query"
    mask = (torch.arange(32 * 32) % 2).float().view(32, 32)
    add_updates(model, DseeConfig(rank=2, sparse_entries=8), masks={n: mask for n in target_names(model, DseeConfig())})
    randomized(model)
    weight = model.get_submodule(name).weight
    assert (weight[mask == 0] == 0).all() and (weight[mask == 1] != 0).all()
    copy = merge_updates(consolidated_copy(model))
    assert (copy.get_submodule(name).weight[mask == 0] == 0).all()


def test_targets_that_match_no_linear_are_refused():
    model = tiny_model("bert", "sequence_classification")
    with pytest.raises(EarlyBertError, match=r"dsee.targets=\['q_proj'\] matches no linear layer of this bert model"):
        add_updates(model, DseeConfig(targets=["q_proj"]))


def test_gpt2s_fused_conv1d_gets_its_update_in_its_own_transposed_layout():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=16,
                                                     pad_token_id=0)).eval()
    linear = model.transformer.h[0].attn.c_attn  # Conv1D: weight [16 in, 48 out]
    original = linear.weight.detach().clone()
    inputs = {"input_ids": torch.randint(1, 50, (2, 8), generator=torch.Generator().manual_seed(1))}
    before = outputs_of(model, inputs)
    names = add_updates(model, DseeConfig(rank=2, sparse_entries=4, support="magnitude"))
    assert names == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]
    torch.testing.assert_close(outputs_of(model, inputs), before)
    update = update_modules(model)["transformer.h.0.attn.c_attn"]
    assert (update.lora_A.shape, update.lora_B.shape) == ((2, 16), (48, 2))
    with torch.no_grad():
        update.sparse_values.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    change = (linear.weight - original).t().flatten()  # the support indexes [out, in], as for nn.Linear
    assert update.support.tolist() == original.t().abs().flatten().topk(4).indices.sort().values.tolist()
    assert change[update.support].tolist() == pytest.approx([1.0, 2.0, 3.0, 4.0]) and change.count_nonzero() == 4
    randomized(model)
    expected = outputs_of(model, inputs)
    copy = merge_updates(consolidated_copy(model))
    assert not any("parametrizations" in k for k in copy.state_dict())
    torch.testing.assert_close(outputs_of(copy, inputs), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["distilbert", "deberta-v2", "modernbert", "roberta"])
def test_each_family_has_default_query_and_value_targets(family):
    model = tiny_model(family, "sequence_classification")
    names = add_updates(model, DseeConfig(rank=2, sparse_entries=4))
    assert len(names) == (2 if family == "modernbert" else 4)  # ModernBERT's fused Wqkv: one per layer
