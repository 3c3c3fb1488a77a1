"""Training objectives as modules (what DeepSpeed wraps): MLM with logits only at masked positions, causal LM,
classification and question answering."""

from __future__ import annotations

from enum import IntEnum

import torch
import torch.nn.functional as F
from torch import nn

from earlybert.models.adapters import get_adapter, model_inputs
from earlybert.ticket.coefficients import has_coefficients, l1_penalty


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
        # Kept outside the module tree, so that DeepSpeed neither trains, partitions nor checkpoints it.
        self.__dict__["teacher"] = None
        self.distill_alpha, self.distill_temperature = 0.0, 1.0

    def set_teacher(self, teacher: nn.Module, alpha: float, temperature: float) -> None:
        """Mix a frozen teacher's logits into the loss from now on (see `distilled`)."""
        self.__dict__["teacher"] = teacher.eval().requires_grad_(False)
        self.distill_alpha, self.distill_temperature = alpha, temperature

    def distilled(self, summed: torch.Tensor, logits: torch.Tensor, teacher_logits, share: float = 1.0) -> torch.Tensor:
        """(1 - alpha) x the summed task loss + alpha x share x the summed T^2 x KL(teacher || student) over the
        same rows (squared error for a single regression output); `teacher_logits(model)` gives the teacher's."""
        if self.teacher is None or not self.distill_alpha:
            return summed
        with torch.no_grad():
            target = teacher_logits(self.teacher).float()
        student, t = logits.float(), self.distill_temperature
        if student.shape[-1] == 1:
            teacher_term = F.mse_loss(student, target, reduction="sum")
        else:
            teacher_term = t * t * F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(target / t, dim=-1),
                                            reduction="sum", log_target=True)
        return (1 - self.distill_alpha) * summed + self.distill_alpha * share * teacher_term

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


class MaskedLMObjective(Objective):
    """MLM loss computed from the hidden states of masked positions only.

    The vocabulary projection over every position is most of a small model's FLOPs; gathering the
    ~15% masked positions first gives the same loss at a fraction of the cost, on every device.
    """

    def masked_lm_loss(self, hidden: torch.Tensor, labels: torch.Tensor, loss_denominator, inputs=None) -> tuple:
        """(summed loss / denominator + L1, stats) from the encoder's hidden states at the masked positions
        (`inputs`: the model inputs, for a teacher)."""
        selected = labels != -100
        logits = get_adapter(self.model).mlm_logits(self.model, hidden[selected])
        targets = labels[selected]
        summed = F.cross_entropy(logits.float(), targets, reduction="sum")
        loss = self.distilled(summed, logits, lambda m: get_adapter(m).mlm_logits(
            m, m.base_model(**inputs).last_hidden_state[selected]))
        denominator = targets.numel() if loss_denominator is None else loss_denominator
        l1 = self.penalty(summed)
        with torch.no_grad():
            correct = (logits.argmax(-1) == targets).sum().float()
            stats = torch.stack([summed.detach(), correct, summed.new_tensor(float(targets.numel())), l1.detach()])
        return loss / denominator + l1, stats

    def forward(self, input_ids, attention_mask, labels, token_type_ids=None, loss_denominator=None):
        inputs = self.model_inputs(input_ids, attention_mask, token_type_ids)
        out = self.model.base_model(**inputs)
        return self.masked_lm_loss(out.last_hidden_state, labels, loss_denominator, inputs)


class PretrainingObjective(MaskedLMObjective):
    """BERT's original objective: masked-position MLM plus next-sentence prediction (mean over sequences)."""

    def forward(self, input_ids, attention_mask, labels, next_sentence_label, token_type_ids=None,
                loss_denominator=None):
        inputs = self.model_inputs(input_ids, attention_mask, token_type_ids)
        out = self.model.base_model(**inputs)
        loss, stats = self.masked_lm_loss(out.last_hidden_state, labels, loss_denominator, inputs)
        nsp = F.cross_entropy(self.model.cls.seq_relationship(out.pooler_output).float(), next_sentence_label)
        return loss + nsp, stats


class CausalLMObjective(Objective):
    """Next-token cross-entropy at every position but the last (decoders; labels are the inputs, -100 ignored)."""

    @staticmethod
    def count(batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"][:, 1:] != -100).sum())

    def forward(self, input_ids, attention_mask, labels, token_type_ids=None, loss_denominator=None):
        inputs = self.model_inputs(input_ids, attention_mask, token_type_ids)
        targets = labels[:, 1:]
        selected = targets != -100
        logits = self.model(**inputs).logits[:, :-1][selected]
        summed = F.cross_entropy(logits.float(), targets[selected], reduction="sum")
        loss = self.distilled(summed, logits, lambda m: m(**inputs).logits[:, :-1][selected])
        l1 = self.penalty(summed)
        denominator = selected.sum() if loss_denominator is None else loss_denominator
        with torch.no_grad():
            correct = (logits.argmax(-1) == targets[selected]).sum().float()
            stats = torch.stack([summed.detach(), correct, selected.sum().float(), l1.detach()])
        return loss / denominator + l1, stats


class ClassificationObjective(Objective):
    """Cross-entropy (or MSE when the model has one output: regression) summed over examples."""

    @staticmethod
    def count(batch: dict[str, torch.Tensor]) -> int:
        return int(batch["labels"].numel())

    def forward(self, input_ids, attention_mask, labels, token_type_ids=None, loss_denominator=None):
        inputs = self.model_inputs(input_ids, attention_mask, token_type_ids)
        logits = self.model(**inputs).logits
        if logits.shape[-1] == 1:
            summed = F.mse_loss(logits.squeeze(-1).float(), labels.float(), reduction="sum")
            correct = torch.zeros((), device=logits.device)
        else:
            summed = F.cross_entropy(logits.float(), labels, reduction="sum")
            correct = (logits.argmax(-1) == labels).sum().float().detach()
        loss = self.distilled(summed, logits, lambda m: m(**inputs).logits)
        l1 = self.penalty(summed)
        denominator = labels.numel() if loss_denominator is None else loss_denominator
        stats = torch.stack([summed.detach(), correct, summed.new_tensor(float(labels.numel())), l1.detach()])
        return loss / denominator + l1, stats


class QuestionAnsweringObjective(Objective):
    """Mean of start and end cross-entropies, summed over windows."""

    @staticmethod
    def count(batch: dict[str, torch.Tensor]) -> int:
        return int(batch["start_positions"].numel())

    def forward(self, input_ids, attention_mask, start_positions, end_positions, token_type_ids=None,
                loss_denominator=None):
        inputs = self.model_inputs(input_ids, attention_mask, token_type_ids)
        out = self.model(**inputs)
        summed = (F.cross_entropy(out.start_logits.float(), start_positions, reduction="sum")
                  + F.cross_entropy(out.end_logits.float(), end_positions, reduction="sum")) / 2

        def spans(found):  # start and end distributions as rows; their term is halved as the task loss is
            return torch.cat([found.start_logits, found.end_logits])

        loss = summed if self.teacher is None else self.distilled(summed, spans(out), lambda m: spans(m(**inputs)),
                                                                 share=0.5)
        with torch.no_grad():
            correct = ((out.start_logits.argmax(-1) == start_positions)
                       & (out.end_logits.argmax(-1) == end_positions)).sum().float()
        l1 = self.penalty(summed)
        denominator = start_positions.numel() if loss_denominator is None else loss_denominator
        stats = torch.stack([summed.detach(), correct, summed.new_tensor(float(start_positions.numel())), l1.detach()])
        return loss / denominator + l1, stats
