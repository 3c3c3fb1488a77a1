"""Cross-entropy over vocabulary-sized logits with fewer passes over them than log_softmax + nll_loss + argmax."""

from __future__ import annotations

import torch


def cross_entropy_and_argmax(logits: torch.Tensor, targets: torch.Tensor,
                             overwrite_logits: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy of float `logits` (rows x classes) against `targets`, and each row's argmax.

    `overwrite_logits=True` reuses the logits' memory for the softmax numerators and then the gradient: for a
    caller that has no further use for the logits (their producer saved no copy of them for its backward).
    """
    if logits.dtype != torch.float32:
        raise TypeError(f"cross_entropy_and_argmax takes float32 logits, got {logits.dtype}: pass logits.float()")
    if overwrite_logits:
        loss, best, _ = _CrossEntropyAndArgmaxInPlace.apply(logits, targets)
        return loss, best
    return _CrossEntropyAndArgmax.apply(logits, targets)


class _CrossEntropyAndArgmax(torch.autograd.Function):
    """loss = sum over rows of log(sum(exp(z))) - z[target], z = logits - row max; gradient softmax - one-hot.

    MLM logits are the largest activation of a step (152 masked rows x 30,522 for BERT-base at 8 x 128). Torch's
    path reads them about ten times: log_softmax (max, exp-sum, write), a separate argmax for accuracy, a zero-filled
    one-hot gradient from nll_loss, and log_softmax's backward, which computes exp again. Here one max pass gives
    the argmax too, exp is computed once into a buffer, and backward scales that buffer in place into the gradient.
    """

    @staticmethod
    def forward(ctx, logits, targets):
        return _forward(ctx, logits, targets, in_place=False)

    @staticmethod
    def backward(ctx, grad_loss, _grad_best):
        return _backward(ctx, grad_loss), None


class _CrossEntropyAndArgmaxInPlace(torch.autograd.Function):
    """The same, with the logits themselves as the buffer: no fresh logits-sized tensor is written.

    A fresh buffer's first writes cost a step up to twice what a pass over memory already in use does (profiled
    in `benchmarks/step_breakdown.py`). The modified logits are marked dirty and returned, so autograd raises,
    rather than compute a wrong gradient, if anything saved them for its backward.
    """

    @staticmethod
    def forward(ctx, logits, targets):
        ctx.set_materialize_grads(False)  # the returned logits get no gradient: none to fill with zeros
        ctx.mark_dirty(logits)
        loss, best = _forward(ctx, logits, targets, in_place=True)
        return loss, best, logits

    @staticmethod
    def backward(ctx, grad_loss, _grad_best, _grad_logits):
        return _backward(ctx, grad_loss), None


def _forward(ctx, logits, targets, in_place: bool):
    """Loss and argmax, leaving exp(logits - row max) in a new buffer or, `in_place`, in the logits."""
    top, best = logits.max(-1)
    shifted = logits.sub_(top.unsqueeze(-1)) if in_place else logits - top.unsqueeze(-1)
    picked = shifted.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    exps = shifted.exp_()  # the buffer becomes the softmax numerators, later the gradient
    sums = exps.sum(-1)
    ctx.save_for_backward(exps, sums, targets)  # a second backward finds exps modified and raises
    ctx.mark_non_differentiable(best)
    return (sums.log() - picked).sum(), best


def _backward(ctx, grad_loss):
    """softmax - one-hot, scaled by the loss's gradient, written over the saved numerators."""
    exps, sums, targets = ctx.saved_tensors
    grad = exps.mul_((grad_loss / sums).unsqueeze(-1))
    grad.scatter_add_(-1, targets.unsqueeze(-1), (-grad_loss).expand(targets.shape).unsqueeze(-1))
    return grad
