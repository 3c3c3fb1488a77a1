import copy

import pytest
import torch

from earlybert.dsee.prune import apply_masks, head_scores, magnitude_masks, structured_ticket
from earlybert.errors import EarlyBertError
from tests.conftest import tiny_model

TARGETS = [f"bert.encoder.layer.{i}.attention.self.{p}" for i in (0, 1) for p in ("query", "value")]


def moved(model, changes: dict[tuple[int, int], float]):
    """A copy of `model` whose query rows of head h in layer l moved by `changes[(l, h)]` (heads are 8 wide)."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        for (layer, head), by in changes.items():
            out.bert.encoder.layer[layer].attention.self.query.weight[8 * head:8 * head + 8] += by
    return out


def test_heads_are_scored_by_their_update_and_the_least_updated_are_removed_per_layer():
    pretrained = tiny_model("bert", "sequence_classification")
    tuned = moved(pretrained, {(0, 0): 0.3, (0, 1): 0.1, (0, 2): 0.2, (0, 3): 0.4, (1, 0): 0.2, (1, 1): 0.3,
                               (1, 2): 0.4, (1, 3): 0.01})
    scores = head_scores(tuned, pretrained, TARGETS)
    assert scores[0].tolist() == pytest.approx([0.3 * 8 * 32, 0.1 * 8 * 32, 0.2 * 8 * 32, 0.4 * 8 * 32], rel=1e-4)
    ticket = structured_ticket(tuned, pretrained, TARGETS, heads_ratio=0.25)
    assert ticket.heads == [[1, 0, 1, 1], [1, 1, 1, 0]]
    assert ticket.layer_ffn() == [48, 48] and ticket.metadata["head_score"] == "update"


def test_merged_scores_rank_heads_by_their_weights_not_their_change():
    pretrained = tiny_model("bert", "sequence_classification")
    scores = head_scores(pretrained, pretrained, TARGETS, "merged")
    weight = pretrained.bert.encoder.layer[1].attention.self.query.weight.detach().abs()
    value = pretrained.bert.encoder.layer[1].attention.self.value.weight.detach().abs()
    assert scores[1][2].item() == pytest.approx((weight[16:24].sum() + value[16:24].sum()).item(), rel=1e-5)
    with pytest.raises(EarlyBertError, match="include a query, key or value projection"):
        head_scores(pretrained, pretrained, ["bert.encoder.layer.0.output.dense"])


def test_unstructured_masks_zero_the_smallest_share_of_each_target():
    model = tiny_model("bert", "sequence_classification")
    weight = model.get_submodule(TARGETS[0]).weight.detach().clone()
    masks = magnitude_masks(model, TARGETS, sparsity=0.75)
    apply_masks(model, masks)
    pruned = model.get_submodule(TARGETS[0]).weight
    assert int((pruned == 0).sum()) == 768
    assert pruned.abs().max() == weight.abs().max()
    assert weight.abs()[pruned == 0].max() <= weight.abs()[pruned != 0].min()
    with pytest.raises(EarlyBertError, match=r"dsee.sparsity=1.0 is not in \(0, 1\)"):
        magnitude_masks(model, TARGETS, 1.0)
