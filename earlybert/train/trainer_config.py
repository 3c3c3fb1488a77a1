"""Configuration of the shared trainer: optimisation, ticket search, checkpoints and logging."""

from __future__ import annotations

from dataclasses import dataclass, field

from earlybert.errors import EarlyBertError
from earlybert.ticket.search import SearchConfig  # noqa: F401  (re-exported: configs import it from here)


@dataclass
class TrainConfig:
    """Optimisation."""

    max_steps: int = 1000
    """Optimizer steps of the run: search and slim training together with search.weights=continue; after a
    rewind the slim stage gets its own schedule of search.rewind_length x max_steps after the search."""
    micro_batch_size: int = 8
    """Sequences per rank per forward pass."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step (global batch = micro x accum x ranks)."""
    lr: float = 1e-4
    """Peak learning rate."""
    warmup_steps: int = 100
    """Linear warm-up steps."""
    schedule: str = "linear"
    """Decay after warm-up: linear, polynomial or constant."""
    poly_power: float = 1.0
    """Power of the polynomial decay."""
    weight_decay: float = 0.01
    """AdamW weight decay (never applied to biases, LayerNorm or slimming coefficients)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    eps: float = 1e-6
    """AdamW epsilon."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0: off)."""
    deepspeed_config: str = "auto"
    """DeepSpeed JSON, or auto: bf16 on a CUDA GPU that has it (else fp16 with dynamic loss scaling), ZeRO-1 with
    more than one rank (else ZeRO-0), fp32 on a CPU. The JSON's 'auto' batch, accumulation and clipping values
    come from this section; the resolved JSON is written to the run folder as deepspeed.json."""

    def __post_init__(self):
        if self.schedule not in ("linear", "polynomial", "constant"):
            raise EarlyBertError(f"train.schedule={self.schedule!r} is unknown: use linear, polynomial or constant")
        for name in ("max_steps", "micro_batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise EarlyBertError(f"train.{name}={getattr(self, name)} must be >= 1")

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
class CheckpointConfig:
    """Run checkpoints."""

    every: int = 100
    """Steps between checkpoints (also written right after the shrink and at the end)."""
    keep_last: int = 2
    """Complete checkpoints kept; older ones are deleted."""

    def __post_init__(self):
        for name in ("every", "keep_last"):
            if getattr(self, name) < 1:
                raise EarlyBertError(f"checkpoint.{name}={getattr(self, name)} must be >= 1 (a large every, e.g. "
                                     "100000, checkpoints only after the shrink and at the end)")


@dataclass
class LogConfig:
    """Logging (main rank only)."""

    report_to: str = "none"
    """none, wandb (offline when no API key is set) or tensorboard; metrics.jsonl is always written."""
    every: int = 10
    """Steps between console lines."""
    project: str = "earlybert"
    """wandb project."""
    progress_bar: bool = True
    """Show a progress bar on an interactive terminal."""

    def __post_init__(self):
        from earlybert.train.logger import BACKENDS

        if self.report_to not in BACKENDS:
            raise EarlyBertError(f"log.report_to={self.report_to!r} is unknown: use one of {', '.join(BACKENDS)}")
        if self.every < 1:
            raise EarlyBertError(f"log.every={self.every} must be >= 1")
