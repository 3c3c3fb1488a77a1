"""Configuration of the shared trainer: optimisation, ticket search, checkpoints and logging."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from earlybert.config import Choice, PathKind, Range, check_config
from earlybert.errors import EarlyBertError
from earlybert.ticket.search import SearchConfig  # noqa: F401  (re-exported: configs import it from here)
from earlybert.train.logger import BACKENDS


@dataclass
class TrainConfig:
    """Optimisation."""

    max_steps: Annotated[int, Range(1)] = 1000
    """Optimizer steps of the run: search and slim training together with search.weights=continue; after a
    rewind the slim stage gets its own schedule of search.rewind_length x max_steps after the search."""
    micro_batch_size: Annotated[int, Range(1)] = 8
    """Sequences per rank per forward pass."""
    grad_accum: Annotated[int, Range(1)] = 1
    """Micro-batches accumulated per optimizer step (global batch = micro x accum x ranks)."""
    lr: Annotated[float, Range(0, open_low=True)] = 1e-4
    """Peak learning rate."""
    warmup_steps: Annotated[int, Range(0)] = 100
    """Linear warm-up steps."""
    schedule: Annotated[str, Choice(("linear", "polynomial", "constant"))] = "linear"
    """Decay after warm-up: linear, polynomial or constant."""
    poly_power: Annotated[float, Range(0, open_low=True)] = 1.0
    """Power of the polynomial decay."""
    weight_decay: Annotated[float, Range(0)] = 0.01
    """AdamW weight decay (never applied to biases, LayerNorm or slimming coefficients)."""
    betas: Annotated[list[float], Range(0, 1, open_high=True)] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    eps: Annotated[float, Range(0, open_low=True)] = 1e-6
    """AdamW epsilon."""
    max_grad_norm: Annotated[float, Range(0)] = 1.0
    """Gradient clipping norm (0: off)."""
    deepspeed_config: Annotated[str, PathKind("file", special=("auto",))] = "auto"
    """DeepSpeed JSON, or auto: bf16 on a CUDA GPU that has it (else fp16 with dynamic loss scaling), ZeRO-1 with
    more than one rank (else ZeRO-0), fp32 on a CPU. The JSON's 'auto' batch, accumulation and clipping values
    come from this section; the resolved JSON is written to the run folder as deepspeed.json."""

    def __post_init__(self):
        check_config(self, paths=False)  # built in Python, not read by `from_dict`: the declared domains too

    def lr_at(self, step: int, total: int | None = None) -> float:
        """Learning rate for optimizer step `step` (0-based) of a schedule `total` steps long (default max_steps)."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return self.lr
        progress = (step - self.warmup_steps) / max(1, (total or self.max_steps) - self.warmup_steps)
        remaining = max(0.0, 1.0 - progress)
        return self.lr * (remaining if self.schedule == "linear" else remaining**self.poly_power)


@dataclass
class DistillConfig:
    """Distillation while the slim model trains: the dense model at the draw is a frozen teacher."""

    alpha: Annotated[float, Range(0, 1)] = 0.0
    """Weight of the teacher term: loss = (1 - alpha) x task loss + alpha x T^2 x KL(teacher || student) on the
    logits; 0: off. Needs a search (the teacher is the searched model at the draw)."""
    temperature: Annotated[float, Range(0, open_low=True)] = 2.0
    """Softmax temperature T of both distributions in the teacher term."""


def check_distill(distill: DistillConfig, searching: bool, what: str) -> None:
    """Refuse a teacher term in a run without a search: the teacher is the searched model at the draw."""
    if distill.alpha and not searching:
        raise EarlyBertError(f"distill.alpha={distill.alpha:g} needs a ticket search (the dense model at the draw is "
                             f"the teacher), and {what} has none: set distill.alpha=0 or search for a ticket")


@dataclass
class CheckpointConfig:
    """Run checkpoints."""

    every: Annotated[int, Range(1)] = 100
    """Steps between checkpoints (also written right after the shrink and at the end); a large value, e.g. 100000,
    checkpoints only there."""
    keep_last: Annotated[int, Range(1)] = 2
    """Complete checkpoints kept; older ones are deleted."""


@dataclass
class LogConfig:
    """Logging (main rank only)."""

    report_to: Annotated[str, Choice(BACKENDS)] = "none"
    """none, wandb (offline when no API key is set) or tensorboard; metrics.jsonl is always written."""
    every: Annotated[int, Range(1)] = 10
    """Steps between console lines."""
    project: str = "earlybert"
    """wandb project."""
    progress_bar: bool = True
    """Show a progress bar on an interactive terminal."""
