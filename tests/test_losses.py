import pytest
import torch
import torch.nn.functional as F

from earlybert.train.losses import cross_entropy_and_argmax


def _logits(rows: int, classes: int, scale: float, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, classes, generator=gen) * scale


@pytest.mark.parametrize("scale", [1.0, 40.0])  # 40: logits past exp's float range (~88) stay finite
def test_loss_gradient_and_argmax_equal_torchs(scale):
    logits = _logits(37, 1000, scale)
    targets = torch.randint(0, 1000, (37,), generator=torch.Generator().manual_seed(1))
    ours_in, ref_in = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    loss, predicted = cross_entropy_and_argmax(ours_in, targets)
    reference = F.cross_entropy(ref_in, targets, reduction="sum")
    (2.5 * loss).backward()  # an upstream gradient other than 1 must scale both parts of the gradient
    (2.5 * reference).backward()
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, reference, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-5, atol=1e-6)
    assert torch.equal(predicted, logits.argmax(-1))
    assert not predicted.requires_grad


def test_a_target_that_is_the_argmax_is_counted_and_its_gradient_is_below_zero():
    logits = torch.tensor([[0.0, 5.0, 1.0], [2.0, 0.0, 0.0]], requires_grad=True)
    loss, predicted = cross_entropy_and_argmax(logits, torch.tensor([1, 2]))
    loss.backward()
    assert predicted.tolist() == [1, 0]
    assert logits.grad[0, 1] < 0 and logits.grad[1, 2] < 0
    torch.testing.assert_close(logits.grad.sum(-1), torch.zeros(2), atol=1e-6, rtol=0)  # softmax - one-hot


def test_no_rows_give_a_zero_loss_and_an_empty_gradient():
    logits = torch.zeros(0, 50, requires_grad=True)
    loss, predicted = cross_entropy_and_argmax(logits, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and predicted.shape == (0,) and logits.grad.shape == (0, 50)


def test_bf16_logits_through_float_get_torchs_gradient():
    logits = _logits(8, 300, 3.0).bfloat16()
    targets = torch.arange(8) * 30
    ours_in, ref_in = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    cross_entropy_and_argmax(ours_in.float(), targets)[0].backward()
    F.cross_entropy(ref_in.float(), targets, reduction="sum").backward()
    assert ours_in.grad.dtype == torch.bfloat16
    torch.testing.assert_close(ours_in.grad, ref_in.grad)


def test_low_precision_logits_are_refused_and_a_second_backward_raises():
    with pytest.raises(TypeError, match="logits.float()"):
        cross_entropy_and_argmax(torch.zeros(2, 3, dtype=torch.bfloat16), torch.zeros(2, dtype=torch.long))
    logits = _logits(4, 10, 1.0).requires_grad_()
    loss, _ = cross_entropy_and_argmax(logits, torch.zeros(4, dtype=torch.long))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_overwriting_the_logits_gives_the_same_loss_gradient_and_argmax():
    logits = _logits(37, 1000, 5.0)
    targets = torch.randint(0, 1000, (37,), generator=torch.Generator().manual_seed(2))
    leaf_copy, leaf_in_place = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    loss, predicted = cross_entropy_and_argmax(leaf_copy * 1.0, targets)
    produced = leaf_in_place * 1.0  # a non-leaf, as a decoder's output is
    loss_in_place, predicted_in_place = cross_entropy_and_argmax(produced, targets, overwrite_logits=True)
    (2.5 * loss).backward()
    (2.5 * loss_in_place).backward()
    assert torch.equal(loss, loss_in_place) and torch.equal(predicted, predicted_in_place)
    assert torch.equal(leaf_copy.grad, leaf_in_place.grad)
    assert not torch.equal(produced, logits)  # the logits' memory held the numerators, then the gradient


def test_overwriting_logits_that_another_op_saved_raises_instead_of_a_wrong_gradient():
    source = _logits(4, 10, 1.0).requires_grad_()
    logits = source.exp()  # exp's backward needs its output: these logits must not be overwritten
    loss, _ = cross_entropy_and_argmax(logits, torch.zeros(4, dtype=torch.long), overwrite_logits=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        cross_entropy_and_argmax(_logits(4, 10, 1.0).requires_grad_(), torch.zeros(4, dtype=torch.long),
                                 overwrite_logits=True)
