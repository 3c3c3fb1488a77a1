"""Cross-entropy over vocabulary-sized logits with fewer passes over them than log_softmax + nll_loss + argmax."""

from __future__ import annotations

import torch


def cross_entropy_and_argmax(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy of float `logits` (rows x classes) against `targets`, and each row's argmax."""
    if logits.dtype != torch.float32:
        raise TypeError(f"cross_entropy_and_argmax takes float32 logits, got {logits.dtype}: pass logits.float()")
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
        top, best = logits.max(-1)
        shifted = logits - top.unsqueeze(-1)
        picked = shifted.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        exps = shifted.exp_()  # the buffer becomes the softmax numerators, later the gradient
        sums = exps.sum(-1)
        ctx.save_for_backward(exps, sums, targets)  # a second backward finds exps modified and raises
        ctx.mark_non_differentiable(best)
        return (sums.log() - picked).sum(), best

    @staticmethod
    def backward(ctx, grad_loss, _grad_best):
        exps, sums, targets = ctx.saved_tensors
        grad = exps.mul_((grad_loss / sums).unsqueeze(-1))
        grad.scatter_add_(-1, targets.unsqueeze(-1), (-grad_loss).expand(targets.shape).unsqueeze(-1))
        return grad, None
