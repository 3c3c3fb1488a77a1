import pytest

from earlybert.models.flops import ModelShape, accounting, count_parameters, forward_flops_per_token
from earlybert.ticket.shrink import shrink_model
from earlybert.ticket.ticket import Ticket
from tests.conftest import tiny_model


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
