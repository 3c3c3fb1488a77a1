"""Integer-mask dropout: the drop rate, scale and gradient of torch's dropout, and models that keep their outputs."""

import json

import pytest
import torch
from conftest import FAMILIES, outputs_of, random_inputs, tiny_model
from torch import nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from earlybert.models.fast_dropout import (
    ATTENTION,
    LEVELS,
    FastDropout,
    _uniform_15_bit,
    fast_dropout,
    fast_sdpa_attention,
    keep_mask,
    use_fast_dropout,
)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_drop_rate_scale_and_gradient(p):
    torch.manual_seed(0)
    x = torch.ones(400_000, requires_grad=True)
    out = fast_dropout(x, p)
    dropped = (out == 0).double().mean().item()
    threshold = round(p * LEVELS)
    assert abs(dropped - p) < 5 * (p * (1 - p) / x.numel()) ** 0.5
    assert torch.all(out[out != 0] == LEVELS / (LEVELS - threshold))  # the inverse of the exact keep probability
    out.backward(torch.full_like(out, 2.0))
    assert torch.equal(x.grad, 2.0 * out)  # the gradient passes where the forward kept, with the same scale


def test_every_lane_of_the_64_bit_draws_is_uniform():
    # Each int64 draw gives four 15-bit numbers; a lane that kept its sign bit or missed bits would show here.
    torch.manual_seed(1)
    lanes = _uniform_15_bit(4 * 200_000, torch.device("cpu")).view(-1, 4).long()
    assert lanes.min() >= 0 and lanes.max() < LEVELS
    for lane in lanes.T:
        assert abs(lane.double().mean().item() / (LEVELS - 1) - 0.5) < 0.005
        assert abs((lane < round(0.1 * LEVELS)).double().mean().item() - 0.1) < 0.004
    assert _uniform_15_bit(7, torch.device("cpu")).shape == (7,)  # not a multiple of four


@pytest.mark.parametrize("p", [0.1, 0.5, 1 / LEVELS])
def test_keep_mask_keeps_exactly_the_lanes_at_or_above_the_threshold(p, monkeypatch):
    # The float mask is built by arithmetic, not by a comparison: feed it every 15-bit value once.
    lanes = torch.arange(LEVELS, dtype=torch.int16)
    monkeypatch.setattr("earlybert.models.fast_dropout._uniform_15_bit", lambda n, device: lanes[:n])
    keep, scale = keep_mask(torch.Size([LEVELS]), p, torch.device("cpu"))
    threshold = round(p * LEVELS)
    assert keep.dtype == torch.float32
    assert torch.equal(keep, (lanes >= threshold).float())
    assert scale == LEVELS / (LEVELS - threshold)


def test_same_draws_give_the_bool_mask_result_bit_for_bit():
    # The multiply by a float mask must give what masking and then scaling gives, in every dtype.
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        x = torch.randn(4, 33, 17).to(dtype)
        torch.manual_seed(7)
        out = fast_dropout(x, 0.1)
        torch.manual_seed(7)
        threshold = round(0.1 * LEVELS)
        drop = _uniform_15_bit(x.numel(), x.device).view(x.shape) < threshold
        assert out.dtype == dtype
        assert torch.equal(out, x.masked_fill(drop, 0.0) * (LEVELS / (LEVELS - threshold)))


def test_identity_in_eval_at_zero_and_dtype_kept():
    x = torch.randn(3, 5)
    assert torch.equal(fast_dropout(x, 0.1, training=False), x)
    assert torch.equal(fast_dropout(x, 0.0), x)
    assert torch.equal(fast_dropout(x, 1.0), torch.zeros_like(x))
    assert fast_dropout(x.bfloat16(), 0.1).dtype == torch.bfloat16
    module = FastDropout(0.1).eval()
    assert torch.equal(module(x), x)


def test_attention_math_path_equals_sdpa():
    # A drop probability below 2^-16 rounds to keeping everything, so the math path must equal SDPA exactly
    # (padding mask as transformers builds it: True = attend).
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 9, 8) for _ in range(3))
    mask = torch.ones(2, 1, 9, 9, dtype=torch.bool)
    mask[1, :, :, 6:] = False
    module = nn.Module()
    module.is_causal = False
    mine, _ = fast_sdpa_attention(module, q, k, v, mask, dropout=1e-9)
    reference, _ = sdpa_attention_forward(module, q, k, v, mask, dropout=0.0)
    assert mine.shape == reference.shape == (2, 9, 4, 8)
    assert torch.allclose(mine, reference, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_models_keep_their_outputs_and_state(family, tmp_path):
    model = tiny_model(family, hidden_dropout=0.1, attention_dropout=0.1)
    inputs = random_inputs(model)
    before = outputs_of(model, inputs)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    sdpa = model.config._attn_implementation == "sdpa"
    use_fast_dropout(model)
    assert model.config._attn_implementation == (ATTENTION if sdpa else "eager")  # DeBERTa: its own attention
    assert not any(type(m) is nn.Dropout for m in model.modules())
    assert any(isinstance(m, FastDropout) for m in model.modules())
    assert torch.allclose(outputs_of(model.eval(), inputs), before, atol=1e-6)
    assert state.keys() == model.state_dict().keys()
    model.train()
    assert not torch.allclose(outputs_of(model, inputs), outputs_of(model, inputs))  # dropout is on
    model.save_pretrained(tmp_path)
    assert ATTENTION not in json.dumps(json.loads((tmp_path / "config.json").read_text()))
