"""The ticket search as one object: settings, step resolution, mask checks, draw decisions. No DeepSpeed.

`TicketSearch` owns the mask spec and the early-bird detector. A training loop calls `attach(model)`
before building its optimizer, adds `penalty(model)` to the loss once per optimizer step, and calls
`observe(step, model)` after each step; a returned `Ticket` is the draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

import torch
from torch import nn

from earlybert.config import Choice, PathKind, Range, check_config
from earlybert.errors import EarlyBertError
from earlybert.ticket.coefficients import attach_coefficients, ffn_coefficients, head_coefficients, l1_penalty
from earlybert.ticket.detector import EarlyBirdDetector
from earlybert.ticket.masks import KV_GROUPS, MaskSpec, with_kv_heads
from earlybert.ticket.ticket import Ticket

WEIGHTS = ("auto", "rewind", "continue")


@dataclass
class SearchConfig:
    """Early-bird ticket search: coefficients, L1 penalty, draw policy, what happens after the draw."""

    enabled: bool = True
    """Search for a ticket; false trains the model as it is (the full baseline)."""
    lambda_heads: Annotated[float, Range(0)] = 1e-4
    """L1 weight on head coefficients (sum, not mean)."""
    lambda_ffn: Annotated[float, Range(0)] = 1e-4
    """L1 weight on FFN coefficients (sum, not mean)."""
    coefficient_lr: Annotated[float, Range(0)] = 1e-2
    """Learning rate of the coefficients (constant, no weight decay); 0: the model's schedule. Fine-tuning
    rates (2e-5) barely move them, so masks would be decided by noise."""
    check_every: Annotated[float, Range(0, open_low=True)] = 0.01
    """Steps between mask checks: a step count (>= 1) or a fraction of `fraction_of` (< 1)."""
    window: Annotated[int, Range(2)] = 5
    """Masks the detector compares (the newest against the others)."""
    threshold: Annotated[float, Range(0, 1)] = 0.1
    """Largest normalized Hamming distance at which the early bird fires."""
    draw_at: Annotated[float, Range(0)] = 0.0
    """Draw at this point instead of waiting for the detector: a step (>= 1) or a fraction (< 1); 0: off."""
    max_search_steps: Annotated[float, Range(0, open_low=True)] = 0.2
    """Draw here if nothing fired before (logged as not fired): a step (>= 1) or a fraction (< 1); it must
    end before the run does."""
    fraction_of: Annotated[str, Choice(("run", "epoch"))] = "run"
    """What fractional lengths refer to: run (train.max_steps) or epoch (one pass over the data)."""
    heads_ratio: Annotated[float, Range(0, 1, open_high=True)] = 0.3333333333333333
    """Fraction of heads pruned in each layer."""
    ffn_ratio: Annotated[float, Range(0, 1, open_high=True)] = 0.4
    """Fraction of FFN neurons pruned."""
    ffn_scope: Annotated[str, Choice(("global", "layer"))] = "global"
    """Rank FFN neurons across all layers (global) or within each layer (layer)."""
    min_heads_per_layer: Annotated[int, Range(1)] = 1
    """Never keep fewer heads than this in a layer."""
    ffn_round_to: Annotated[int, Range(1)] = 8
    """Round each layer's kept FFN width to a multiple of this: matmul kernels run widths off a multiple of 8 below
    their FLOP rate; 64 suits tensor cores best; 1 = off."""
    uniform: bool = False
    """Require the same head count and FFN width in every layer (a slim decoder then saves as its family's stock
    config): needs ffn_scope=layer, and a given search.ticket must be uniform."""
    kv_groups: Annotated[str, Choice(KV_GROUPS)] = "keep"
    """Grouped-query attention (Llama, Qwen): prune the same number of query heads in every KV group, so the KV
    heads stay (keep), or remove whole KV groups with their query heads (prune)."""
    weights: Annotated[str, Choice(WEIGHTS)] = "auto"
    """After the draw: rewind (initial weights, fresh optimizer and schedule for the slim stage), continue
    (searched weights, the run's schedule), or auto (fine-tuning: rewind; pretraining: continue)."""
    rewarmup: Annotated[float, Range(0)] = 0.0
    """After a continued draw, ramp the learning rate from 0 back to the schedule's over this many steps (>= 1) or
    fraction (< 1); 0: none (an optimizer restarted at the shrink re-warms over train.warmup_steps)."""
    rewind_length: Annotated[float, Range(0, 10, open_low=True)] = 1.0
    """After a rewind, the slim stage's steps as a fraction of train.max_steps (1.0: as long as the full run)."""
    collapse_window: Annotated[int, Range(1)] = 10
    """Steps of training loss averaged at each point the collapse check compares (see docs/finetuning.md)."""
    collapse_limit: Annotated[float, Range(0)] = 0.5
    """Warn (log, summary.json) when the slim model gives back more than this share of the training-loss progress
    the full model had made before the draw; 0: never warn (the numbers are still reported)."""
    fold_coefficients: bool = True
    """When continuing, fold the learned coefficients into the following linears (same function)."""
    ticket: Annotated[str, PathKind("file")] = ""
    """Skip the search and apply this ticket.json at step 0 (e.g. a random ticket)."""

    def __post_init__(self):
        check_config(self, paths=False)  # built in Python, not read by `from_dict`: the declared domains too
        if self.uniform and self.ffn_scope != "layer":
            raise EarlyBertError(f"search.uniform=true needs search.ffn_scope=layer (a {self.ffn_scope} ranking gives "
                                 "layers different widths)")
        for name in ("check_every", "draw_at", "max_search_steps", "rewarmup"):
            value = getattr(self, name)
            if value >= 1 and value != int(value):
                raise EarlyBertError(f"search.{name}={value} is neither a fraction (< 1) nor a whole step count")

    def check_given_ticket(self) -> None:
        """With search.uniform, refuse a given search.ticket whose layers differ (before any run folder)."""
        if self.uniform and self.ticket:
            Ticket.load(self.ticket).check_uniform(f"search.ticket={self.ticket}")

    def spec(self) -> MaskSpec:
        """The mask spec these settings describe."""
        return MaskSpec(self.heads_ratio, self.ffn_ratio, self.ffn_scope, self.min_heads_per_layer, self.ffn_round_to,
                        self.kv_groups)

    def resolve(self, run_steps: int, epoch_steps: int | None, default_weights: str) -> SearchSteps:
        """Search lengths in steps for a run of `run_steps` (epochs of `epoch_steps`); refuses a search that
        cannot end before the run does."""
        if self.fraction_of == "epoch" and not epoch_steps:
            raise EarlyBertError("search.fraction_of=epoch needs a known epoch length (not a streamed dataset): "
                                 "use fraction_of=run")
        unit = run_steps if self.fraction_of == "run" else epoch_steps

        def steps(value: float) -> int:
            return int(value) if value >= 1 else max(1, math.ceil(value * unit))

        limit = steps(self.draw_at) if self.draw_at else steps(self.max_search_steps)
        name = "draw_at" if self.draw_at else "max_search_steps"
        if limit >= run_steps:
            raise EarlyBertError(f"search.{name}={getattr(self, name):g} is step {limit}, not before the end of the "
                                 f"{run_steps}-step run: give a smaller step count or a fraction such as 0.1")
        weights = default_weights if self.weights == "auto" else self.weights
        if self.rewarmup and weights != "continue":
            raise EarlyBertError(f"search.rewarmup={self.rewarmup:g} ramps the rate after a continued draw, but this "
                                 "run rewinds (a fresh warm-up over train.warmup_steps): set search.weights=continue "
                                 "or search.rewarmup=0")
        return SearchSteps(check_every=steps(self.check_every), limit=limit, fixed=bool(self.draw_at),
                           weights=weights, slim_steps=max(1, round(self.rewind_length * run_steps)),
                           rewarmup=steps(self.rewarmup) if self.rewarmup else 0)


@dataclass(frozen=True)
class SearchSteps:
    """A search resolved to steps for one run."""

    check_every: int
    limit: int
    """The draw happens here at the latest (the fixed draw point when `fixed`)."""
    fixed: bool
    weights: str
    slim_steps: int
    """Length of the slim stage after a rewind."""
    rewarmup: int = 0
    """Steps of learning-rate ramp after a continued draw (0: none)."""


class TicketSearch:
    """Coefficients, L1 penalty, mask checks and the early-bird detector of one search."""

    def __init__(self, cfg: SearchConfig | None = None, steps: SearchSteps | None = None, *,
                 run_steps: int | None = None, epoch_steps: int | None = None):
        """`steps` as resolved by a recipe, or `run_steps` (and `epoch_steps`) to resolve `cfg` here."""
        cfg = cfg or SearchConfig()
        if steps is None:
            if run_steps is None:
                raise EarlyBertError("TicketSearch needs steps= or run_steps=: the search is sized by its run")
            steps = cfg.resolve(run_steps, epoch_steps, "continue")
        self.cfg, self.steps, self.spec = cfg, steps, cfg.spec()
        self.detector = EarlyBirdDetector(cfg.window, cfg.threshold)

    def attach(self, model: nn.Module) -> None:
        """Attach fp32 coefficients (before the optimizer is built, so it sees them)."""
        attach_coefficients(model)
        self.spec = with_kv_heads(self.spec, model)

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """The L1 term: add it once per optimizer step (divide by the accumulation steps per micro-batch)."""
        return l1_penalty(model, self.cfg.lambda_heads, self.cfg.lambda_ffn)

    def due(self, step: int) -> bool:
        """Whether masks are checked after optimizer step `step` (1-based)."""
        return step % self.steps.check_every == 0 or step >= self.steps.limit

    def masks(self, head_scores, ffn_scores) -> tuple[list[torch.Tensor], list[torch.Tensor], bool]:
        """(head masks, FFN masks, tied): `tied` when equal scores straddle a cut, so the masks are arbitrary."""
        heads, ffn = self.spec.masks(head_scores, ffn_scores)
        return heads, ffn, self.spec.tied(head_scores, ffn_scores)

    def decide(self, step: int, heads, ffn, tied: bool) -> str | None:
        """Feed the detector; 'fired', 'draw_at' or 'limit' when the ticket is to be drawn now, else None."""
        fired = self.detector.update(step, heads, ffn, tied=tied)
        if self.steps.fixed:
            return "draw_at" if step >= self.steps.limit else None
        if fired:
            return "fired"
        return "limit" if step >= self.steps.limit else None

    def ticket(self, model_type: str, heads, ffn, coefficients: dict, step: int, why: str) -> Ticket:
        """The ticket drawn at `step` for reason `why`, with its settings and distance history."""
        s = self.spec
        return Ticket.from_masks(
            model_type, heads, ffn, coefficients=coefficients, step=step, fired=why == "fired", drawn_by=why,
            distance_history=self.detector.history_dicts(), weights=self.steps.weights,
            heads_ratio=s.heads_ratio, ffn_ratio=s.ffn_ratio, ffn_scope=s.ffn_scope,
            min_heads_per_layer=s.min_heads_per_layer, ffn_round_to=s.ffn_round_to,
            **({"kv_groups": s.kv_groups} if s.kv_heads else {}))

    def observe(self, step: int, model: nn.Module) -> Ticket | None:
        """After optimizer step `step`: check the masks when due; the ticket when it is drawn, else None."""
        if not self.due(step):
            return None
        coefs = {"heads": head_coefficients(model), "ffn": ffn_coefficients(model)}
        heads, ffn, tied = self.masks(coefs["heads"], coefs["ffn"])
        why = self.decide(step, heads, ffn, tied)
        return None if why is None else self.ticket(model.config.model_type, heads, ffn, coefs, step, why)

    def state_dict(self) -> dict[str, Any]:
        """The detector's state (JSON-friendly); the settings come from the config."""
        return self.detector.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`."""
        self.detector.load_state_dict(state)
