"""Training objectives as modules (what DeepSpeed wraps): MLM with logits only at masked positions."""

from __future__ import annotations

from enum import IntEnum
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from earlybert.models.adapters import get_adapter, model_inputs
from earlybert.models.last_layer_rows import (
    enable_last_layer_rows,
    first_position,
    last_layer_rows,
    reads_first_position_only,
)
from earlybert.ticket.coefficients import has_coefficients, l1_penalty
from earlybert.train.losses import cross_entropy_and_argmax


class Stat(IntEnum):
    """Positions in the stats vector an objective returns (the trainer appends the token count)."""

    LOSS_SUM = 0
    CORRECT = 1
    COUNT = 2
    L1 = 3
    TOKENS = 4


class Objective(nn.Module):
    """Wraps a model; forward returns (loss, stats) where stats = [summed task loss, correct, count, l1].

    `loss_denominator` makes the loss a sum over this micro-batch divided by a share of the global
    count, so after DeepSpeed averages over accumulation steps and ranks the gradient is that of the
    mean over the whole global batch: 1 rank x 8 sequences and 2 ranks x 4 train identically.
    """

    def __init__(self, model: nn.Module, lambda_heads: float = 0.0, lambda_ffn: float = 0.0):
        super().__init__()
        self.model = model
        self.lambda_heads = lambda_heads
        self.lambda_ffn = lambda_ffn

    @staticmethod
    def count(batch: dict[str, torch.Tensor]) -> int:
        """Loss terms in a micro-batch (masked tokens for MLM)."""
        return int((batch["labels"] != -100).sum())

    def model_inputs(self, input_ids, attention_mask, token_type_ids) -> dict[str, torch.Tensor]:
        """The model's keyword inputs (token types only where given and taken)."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        return model_inputs(self.model, inputs)

    def penalty(self, like: torch.Tensor) -> torch.Tensor:
        """The L1 term while coefficients are attached, else 0."""
        if has_coefficients(self.model) and (self.lambda_heads or self.lambda_ffn):
            return l1_penalty(self.model, self.lambda_heads, self.lambda_ffn)
        return like.new_zeros(())


class RowGradientEmbedding(nn.Embedding):
    """A word-embedding lookup whose backward adds its rows into the weight's gradient in place.

    Autograd would sum a lookup gradient into a tied decoder's dense vocabulary-sized gradient out of place
    (dense: zero-fill, scatter, add; sparse: a copy, since the decoder's gradient lands first). Here the
    lookup reads a detached weight, so the weight's gradient is the decoder's alone, landed early in backward;
    a hook on the looked-up vectors then adds them, row by row, where it lies. Only for trainers that leave
    gradients on the parameters until the step (not ZeRO 1-3 or the bf16 wrappers, which take them as they
    land).
    """

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and self.weight.requires_grad):
            return super().forward(input_ids)
        # A leaf that requires grad: backward reaches it, and its hook sees the vectors' gradient.
        vectors = F.embedding(input_ids, self.weight.detach(), self.padding_idx).requires_grad_()
        vectors.register_hook(partial(_add_rows, self.weight, input_ids, self.padding_idx))
        return vectors


@torch.no_grad()
def _add_rows(weight: nn.Parameter, input_ids: torch.Tensor, padding_idx: int | None, grad: torch.Tensor) -> None:
    ids, rows = input_ids.reshape(-1), grad.reshape(-1, grad.shape[-1])
    if padding_idx is not None:  # as nn.Embedding: the padding row gets no gradient
        keep = ids != padding_idx
        ids, rows = ids[keep], rows[keep]
    if weight.grad is None:  # no decoder gradient landed (an untied use): start from zeros
        weight.grad = torch.zeros_like(weight)
    weight.grad.index_add_(0, ids, rows.to(weight.grad.dtype))


class KeptGradientDecoder(nn.Linear):
    """A tied vocabulary decoder whose weight gradient is computed into one buffer kept across steps.

    The tied weight's gradient is the largest tensor of a step (vocabulary x hidden: 94 MB for BERT-base),
    above glibc's 32 MB mmap limit: a fresh one each step is new pages the kernel must fault in and zero.
    When the weight has no gradient yet (after `zero_grad(set_to_none=True)`, as DeepSpeed's fp32 ZeRO-0
    does), backward writes it into the buffer of the previous step and hands autograd a view of it, which
    becomes `.grad` without a copy; hooks on the weight still run, on the decoder's part (the lookup's rows are
    added after them). A second micro-batch's gradient is a new tensor that autograd adds on. As with DDP's
    gradient bucket views, a reference to last step's gradient kept past `zero_grad` sees it overwritten. Only
    where gradients wait on the parameters until the step (see `RowGradientEmbedding`).
    """

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and self.weight.requires_grad) or torch.is_autocast_enabled(hidden.device.type):
            return super().forward(hidden)
        return _DecoderKeepingGradient.apply(hidden, self.weight, self.bias, self)


class _DecoderKeepingGradient(torch.autograd.Function):
    """hidden @ weight.T + bias, whose weight gradient is computed into the module's kept buffer when it can."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, module):
        ctx.save_for_backward(hidden, weight)
        ctx.module = module
        return F.linear(hidden, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight = ctx.saved_tensors
        rows_out, rows_in = grad_out.reshape(-1, grad_out.shape[-1]), hidden.reshape(-1, hidden.shape[-1])
        grad_weight = None
        if ctx.needs_input_grad[1]:
            if ctx.module.weight.grad is None:
                kept = getattr(ctx.module, "_kept_gradient", None)
                if kept is None or kept.shape != weight.shape or kept.dtype != weight.dtype:
                    kept = ctx.module._kept_gradient = torch.empty_like(weight)
                # A new tensor object on the kept storage: autograd, holding its only reference, adopts it as .grad.
                grad_weight = torch.mm(rows_out.t(), rows_in, out=kept).detach()
            else:  # accumulating: .grad may be the kept buffer itself, so this one must be new
                grad_weight = rows_out.t() @ rows_in
        grad_bias = rows_out.sum(0) if ctx.needs_input_grad[2] else None
        grad_hidden = grad_out @ weight if ctx.needs_input_grad[0] else None
        return grad_hidden, grad_weight, grad_bias, None


class MaskedLMObjective(Objective):
    """MLM loss computed from the hidden states of masked positions only.

    The vocabulary projection over every position is most of a small model's FLOPs; gathering the
    ~15% masked positions first gives the same loss at a fraction of the cost. Where the family allows
    (`supports_last_layer_rows`), the last encoder layer likewise runs only at the masked positions.
    """

    def __init__(self, model: nn.Module, lambda_heads: float = 0.0, lambda_ffn: float = 0.0):
        super().__init__(model, lambda_heads, lambda_ffn)
        enable_last_layer_rows(model)

    def tied_gradient_in_place(self) -> bool:
        """Make tied word embeddings a `RowGradientEmbedding` and their decoder a `KeptGradientDecoder`: the
        decoder computes the weight's gradient into a buffer kept across steps, the lookup adds its rows there.
        Same gradient, same parameters and state dict. Returns whether on."""
        embeddings, decoder = self.model.get_input_embeddings(), self.model.get_output_embeddings()
        if type(embeddings) not in (nn.Embedding, RowGradientEmbedding) or decoder is None \
                or decoder.weight is not embeddings.weight or embeddings.max_norm or embeddings.scale_grad_by_freq:
            return False
        embeddings.__class__ = RowGradientEmbedding  # the modules stay, only their forwards change
        if type(decoder) in (nn.Linear, KeptGradientDecoder):
            decoder.__class__ = KeptGradientDecoder
        return True

    def forward(self, input_ids, attention_mask, labels, token_type_ids=None, loss_denominator=None):
        selected = labels != -100
        with last_layer_rows(self.model, selected):  # a no-op where the family is not supported
            inputs = self.model_inputs(input_ids, attention_mask, token_type_ids)
            hidden = self.model.base_model(**inputs).last_hidden_state
        logits = get_adapter(self.model).mlm_logits(self.model, hidden[selected])
        targets = labels[selected]
        # The head's backward needs its inputs, not its logits: the loss may write over them.
        summed, predicted = cross_entropy_and_argmax(logits.float(), targets, overwrite_logits=True)
        denominator = targets.numel() if loss_denominator is None else loss_denominator
        l1 = self.penalty(summed)
        with torch.no_grad():
            correct = (predicted == targets).sum().float()
            stats = torch.stack([summed.detach(), correct, summed.new_tensor(float(targets.numel())), l1.detach()])
        return summed / denominator + l1, stats


class PretrainingObjective(MaskedLMObjective):
    """BERT's original objective: masked-position MLM plus next-sentence prediction (mean over sequences)."""

    def forward(self, input_ids, attention_mask, labels, next_sentence_label, token_type_ids=None,
                loss_denominator=None):
        out = self.model.base_model(**self.model_inputs(input_ids, attention_mask, token_type_ids))
        selected = labels != -100
        logits = get_adapter(self.model).mlm_logits(self.model, out.last_hidden_state[selected])
        targets = labels[selected]
        # The head's backward needs its inputs, not its logits: the loss may write over them.
        summed, predicted = cross_entropy_and_argmax(logits.float(), targets, overwrite_logits=True)
        nsp = F.cross_entropy(self.model.cls.seq_relationship(out.pooler_output).float(), next_sentence_label)
        denominator = targets.numel() if loss_denominator is None else loss_denominator
        l1 = self.penalty(summed)
        with torch.no_grad():
            correct = (predicted == targets).sum().float()
            stats = torch.stack([summed.detach(), correct, summed.new_tensor(float(targets.numel())), l1.detach()])
        return summed / denominator + nsp + l1, stats


class ClassificationObjective(Objective):
    """Cross-entropy (or MSE when the model has one output: regression) summed over examples.

    Where the family's head reads only the first position (`reads_first_position_only`: BERT, RoBERTa, XLM-R,
    ELECTRA), the last encoder layer runs its query side at that position alone: same logits and gradients.
    """

    def __init__(self, model: nn.Module, lambda_heads: float = 0.0, lambda_ffn: float = 0.0):
        super().__init__(model, lambda_heads, lambda_ffn)
        self.first_position_only = reads_first_position_only(model) and enable_last_layer_rows(model)

    @staticmethod
    def count(batch: dict[str, torch.Tensor]) -> int:
        return int(batch["labels"].numel())

    def forward(self, input_ids, attention_mask, labels, token_type_ids=None, loss_denominator=None):
        rows = first_position(input_ids) if self.first_position_only else None
        with last_layer_rows(self.model, rows):  # rows None: every row, the family's own forward
            logits = self.model(**self.model_inputs(input_ids, attention_mask, token_type_ids)).logits
        if logits.shape[-1] == 1:
            summed = F.mse_loss(logits.squeeze(-1).float(), labels.float(), reduction="sum")
            correct = torch.zeros((), device=logits.device)
        else:
            summed = F.cross_entropy(logits.float(), labels, reduction="sum")
            correct = (logits.argmax(-1) == labels).sum().float().detach()
        l1 = self.penalty(summed)
        denominator = labels.numel() if loss_denominator is None else loss_denominator
        stats = torch.stack([summed.detach(), correct, summed.new_tensor(float(labels.numel())), l1.detach()])
        return summed / denominator + l1, stats


class QuestionAnsweringObjective(Objective):
    """Mean of start and end cross-entropies, summed over windows."""

    @staticmethod
    def count(batch: dict[str, torch.Tensor]) -> int:
        return int(batch["start_positions"].numel())

    def forward(self, input_ids, attention_mask, start_positions, end_positions, token_type_ids=None,
                loss_denominator=None):
        out = self.model(**self.model_inputs(input_ids, attention_mask, token_type_ids))
        summed = (F.cross_entropy(out.start_logits.float(), start_positions, reduction="sum")
                  + F.cross_entropy(out.end_logits.float(), end_positions, reduction="sum")) / 2
        with torch.no_grad():
            correct = ((out.start_logits.argmax(-1) == start_positions)
                       & (out.end_logits.argmax(-1) == end_positions)).sum().float()
        l1 = self.penalty(summed)
        denominator = start_positions.numel() if loss_denominator is None else loss_denominator
        stats = torch.stack([summed.detach(), correct, summed.new_tensor(float(start_positions.numel())), l1.detach()])
        return summed / denominator + l1, stats
