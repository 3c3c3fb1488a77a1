import pytest

from earlybert.models.flops import (
    ModelShape,
    accounting,
    count_parameters,
    forward_flops_per_token,
    slim_parameter_count,
)
from earlybert.ticket.shrink import shrink_model
from earlybert.ticket.ticket import Ticket
from tests.conftest import FAMILY_TASKS, tiny_model


def test_forward_flops_by_hand():
    shape = ModelShape(hidden=4, head_size=2, vocab=10, layer_heads=[2, 1], layer_ffn=[8, 3], task="masked_lm")
    # layer 0: qkv 2*4*3*4=96, attention 2*2*T*4=80 (T=5), out 2*4*4=32, ffn 2*2*4*8=128 -> 336
    # layer 1: qkv 48, attention 40, out 16, ffn 48 -> 152; MLM head 2*4*4 + 2*4*10 = 112
    assert forward_flops_per_token(shape, seq_len=5) == 336 + 152 + 112
    assert forward_flops_per_token(shape, seq_len=5, mlm_fraction=0.5) == 336 + 152 + 56


def test_slim_accounting_matches_the_real_slim_model():
    model = tiny_model("bert")
    ticket = Ticket("bert", heads=[[1, 0, 0, 1], [1, 1, 1, 0]], ffn=[[1] * 10 + [0] * 38, [1] * 48])
    slim = shrink_model(model, ticket)
    full, small = accounting(model), accounting(slim)
    removed = (2 * 3 * (32 * 8 + 8) + 1 * 3 * (32 * 8 + 8))  # q/k/v rows of 3 pruned heads
    removed += 3 * 32 * 8  # output-projection columns
    removed += 38 * (32 + 1) + 38 * 32  # FFN rows with bias, second-linear columns
    assert full["params"] - small["params"] == removed
    assert small["params"] == count_parameters(slim)
    assert small["layer_heads"] == [2, 3] and small["layer_ffn"] == [10, 48]
    assert small["forward_flops_per_token"] < full["forward_flops_per_token"]
    assert small["train_flops_per_token"] == pytest.approx(3 * small["forward_flops_per_token"])


def test_modernbert_local_layers_count_their_window():
    model = tiny_model("modernbert")  # layer 0 global, layer 1 local: 2 * 2 + 1 = 5 keys
    shape = ModelShape.of(model)
    assert shape.layer_window == [None, 5] and shape.ffn_groups == 2
    # layer: qkv 2*32*96, scores+mixing 2*2*keys*32, output 2*32*32, GLU FFN 2*32*96 + 2*48*32; MLM head
    layer = 2 * 32 * 96 + 2 * 32 * 32 + 2 * 32 * 96 + 2 * 48 * 32
    head = 2 * 32 * 32 + 2 * 32 * 120
    assert forward_flops_per_token(shape, seq_len=40) == 2 * layer + 4 * 32 * (40 + 5) + head
    assert forward_flops_per_token(shape, seq_len=3) == 2 * layer + 4 * 32 * (3 + 3) + head  # window > sequence


def test_deberta_counts_its_relative_position_terms():
    model = tiny_model("deberta-v2", "question_answering")  # 8 buckets: 16 relative positions, c2p and p2c
    shape = ModelShape.of(model)
    assert (shape.relative_span, shape.relative_terms, shape.relative_projections) == (16, 2, 2)
    plain = ModelShape(**{**vars(shape), "relative_span": 0, "relative_terms": 0, "relative_projections": 0})
    extra = forward_flops_per_token(shape, 16) - forward_flops_per_token(plain, 16)
    # per layer: 2 terms x 2 x 16 positions x 32 wide + 2 projections x 2 x 16 x 32 x 32 / 16 tokens
    assert extra == 2 * (2 * 2 * 16 * 32 + 2 * 2 * 16 * 32 * 32 // 16)


@pytest.mark.parametrize(("family", "task"), FAMILY_TASKS)
def test_slim_parameter_count_from_the_ticket_equals_the_slim_model(family, task):
    from tests.test_shrink import masked_model, uneven_ticket

    ticket = uneven_ticket(family)
    model = masked_model(family, task, ticket)  # coefficients attached: not counted
    predicted = slim_parameter_count(model, ticket)
    assert predicted == count_parameters(shrink_model(model, ticket))
    assert predicted < count_parameters(tiny_model(family, task))
