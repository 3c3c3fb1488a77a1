"""Configuration of the shared trainer: optimisation, ticket search, checkpoints and logging."""

from __future__ import annotations

from dataclasses import dataclass, field

from earlybert.errors import EarlyBertError


@dataclass
class TrainConfig:
    """Optimisation."""

    max_steps: int = 1000
    """Optimizer steps in all: search and slim training together."""
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
    deepspeed_config: str = "configs/deepspeed/cpu.json"
    """DeepSpeed JSON; its 'auto' batch, accumulation and clipping values come from this section."""

    def __post_init__(self):
        if self.schedule not in ("linear", "polynomial", "constant"):
            raise EarlyBertError(f"train.schedule={self.schedule!r} is unknown: use linear, polynomial or constant")
        for name in ("max_steps", "micro_batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise EarlyBertError(f"train.{name}={getattr(self, name)} must be >= 1")

    def lr_at(self, step: int) -> float:
        """Learning rate for optimizer step `step` (0-based)."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return self.lr
        progress = (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps)
        remaining = max(0.0, 1.0 - progress)
        return self.lr * (remaining if self.schedule == "linear" else remaining**self.poly_power)


@dataclass
class SearchConfig:
    """Early-bird ticket search: coefficients, L1 penalty, detector, shrink."""

    enabled: bool = True
    """Search for a ticket; false trains the model as it is (the full baseline)."""
    lambda_heads: float = 1e-4
    """L1 weight on head coefficients (sum, not mean)."""
    lambda_ffn: float = 1e-4
    """L1 weight on FFN coefficients (sum, not mean)."""
    check_every: int = 10
    """Steps between detector checks."""
    window: int = 5
    """Masks the detector compares (the newest against the others)."""
    threshold: float = 0.1
    """Largest normalized Hamming distance at which the ticket is drawn."""
    heads_ratio: float = 0.3333333333333333
    """Fraction of heads pruned in each layer."""
    ffn_ratio: float = 0.4
    """Fraction of FFN neurons pruned."""
    ffn_scope: str = "global"
    """Rank FFN neurons across all layers (global) or within each layer (layer)."""
    min_heads_per_layer: int = 1
    """Never keep fewer heads than this in a layer."""
    ffn_round_to: int = 1
    """Round each layer's kept FFN width to a multiple of this (8 or 64 suit tensor cores)."""
    max_search_steps: int = 500
    """Draw the ticket here if the detector has not fired (logged as not fired)."""
    weights: str = "continue"
    """After the draw: continue from the searched weights, or rewind to the initial ones."""
    fold_coefficients: bool = True
    """When continuing, fold the learned coefficients into the following linears (same function)."""
    ticket: str = ""
    """Skip the search and apply this ticket.json at step 0 (e.g. a random ticket)."""

    def __post_init__(self):
        from earlybert.ticket.masks import MaskSpec

        MaskSpec(self.heads_ratio, self.ffn_ratio, self.ffn_scope, self.min_heads_per_layer, self.ffn_round_to)
        if self.weights not in ("continue", "rewind"):
            raise EarlyBertError(f"search.weights={self.weights!r} is unknown: use continue or rewind")
        if self.check_every < 1:
            raise EarlyBertError(f"search.check_every={self.check_every} must be >= 1")


@dataclass
class CheckpointConfig:
    """Run checkpoints."""

    every: int = 100
    """Steps between checkpoints (also written right after the shrink and at the end)."""
    keep_last: int = 2
    """Complete checkpoints kept; older ones are deleted."""


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
