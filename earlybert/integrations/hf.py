"""EarlyBERT in a Hugging Face `Trainer` script: `EarlyBertTrainer` is a drop-in `transformers.Trainer`.

    trainer = EarlyBertTrainer(model=model, args=training_args, train_dataset=train, eval_dataset=dev,
                               search=SearchConfig(), ...)
    trainer.train()          # search -> ticket.json -> shrink -> slim training
    trainer.save_model()     # the slim model: loads with the Auto classes after `import earlybert`

Stages are separate `train()` loops: the search runs in this Trainer (coefficients attached before its
optimizer is built, the L1 term added once per optimizer step, masks observed after each step) and stops at
the draw; the slim model then trains in a fresh inner Trainer (output in `output_dir/slim`), after which
`trainer.model` is the slim model, so `evaluate`, `predict` and `save_model` work as usual. Under
`TrainingArguments(deepspeed=...)` each stage builds its own engine; coefficients are scored from DeepSpeed's
fp32 masters where it keeps them. Every rank decides the same masks from the same coefficients.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import get_last_checkpoint

from earlybert.ticket.coefficients import detach_coefficients, ffn_coefficients, has_coefficients, head_coefficients
from earlybert.ticket.search import SearchConfig, SearchSteps, TicketSearch
from earlybert.ticket.shrink import shrink_model
from earlybert.ticket.ticket import Ticket

SLIM_DIR = "slim"
INIT_WEIGHTS = "init_weights.safetensors"


class TicketSearchCallback(TrainerCallback, ExportableState):
    """Observes the masks after every optimizer step and stops the search stage at the draw.

    Its detector state travels in the Trainer's checkpoints (`stateful_callbacks`), so a search resumes exactly.
    """

    def __init__(self, config: dict, steps: dict, detector: dict | None = None):
        self.config, self.steps, self.detector = config, steps, detector
        self.search = TicketSearch(SearchConfig(**config), SearchSteps(**steps))
        if detector:
            self.search.load_state_dict(detector)
        self.ticket: Ticket | None = None
        self.scores = None  # set by the trainer: fp32 coefficient values under DeepSpeed

    def state(self) -> dict:
        return {"args": {"config": self.config, "steps": self.steps},
                "attributes": {"detector": self.search.state_dict()}}

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "detector" and value and hasattr(self, "search"):  # restored from a checkpoint
            self.search.load_state_dict(value)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.ticket is not None or not self.search.due(state.global_step):
            return
        heads, ffn = self.scores() if self.scores else (head_coefficients(model), ffn_coefficients(model))
        heads_m, ffn_m, tied = self.search.masks(heads, ffn)
        why = self.search.decide(state.global_step, heads_m, ffn_m, tied)
        if why is not None:
            self.ticket = self.search.ticket(model.config.model_type, heads_m, ffn_m, {"heads": heads, "ffn": ffn},
                                             state.global_step, why)
            control.should_training_stop = True
            control.should_save = True  # the search's last state, for the record


def _constant(step: int) -> float:
    return 1.0


class _SlimTrainer(Trainer):
    """The slim stage: a plain Trainer whose schedule can start part-way through the run's (continue)."""

    def __init__(self, *args, schedule_offset: int = 0, schedule_total: int = 0, rewarmup: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.schedule_offset, self.schedule_total, self.rewarmup = schedule_offset, schedule_total, rewarmup

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if not self.schedule_offset:
            return super().create_scheduler(num_training_steps, optimizer)
        scheduler = super().create_scheduler(self.schedule_total, optimizer)
        if self.rewarmup:  # search.rewarmup: ramp the continued schedule's rate from 0 over its first steps
            offset, ramp = self.schedule_offset, self.rewarmup
            scheduler.lr_lambdas = [lambda step, f=f: f(step) * min(1.0, max(0, step - offset + 1) / ramp)
                                    for f in scheduler.lr_lambdas]
        with warnings.catch_warnings():  # advancing before any optimizer step is the point here
            warnings.simplefilter("ignore")
            for _ in range(self.schedule_offset):
                scheduler.step()
        return scheduler


class EarlyBertTrainer(Trainer):
    """`transformers.Trainer` plus `search=SearchConfig(...)`: ticket search, draw, shrink, slim training."""

    def __init__(self, *args, search: SearchConfig | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.search = search or SearchConfig()
        self.ticket: Ticket | None = None

    # ---- the L1 term ---------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        callback = self._search_callback()
        if callback is None or callback.ticket is not None or not model.training:
            return out
        loss, outputs = out if return_outputs else (out, None)
        penalty = callback.search.penalty(self.accelerator.unwrap_model(model))
        # training_step divides the loss by the accumulation steps unless it counts the loss as already
        # normalised for them; either way the L1 term must add up to one penalty per optimizer step.
        scaled = self.loss_is_scaled_for_ga if self.loss_is_scaled_for_ga is not None else (
            (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or self.compute_loss_func is not None)
        if scaled:
            penalty = penalty / self.current_gradient_accumulation_steps
        loss = loss + penalty
        return (loss, outputs) if return_outputs else loss

    def create_optimizer(self, model=None):
        """The Trainer's optimizer, with the coefficients in a group of their own at `search.coefficient_lr`, no
        weight decay."""
        fresh = self.optimizer is None
        optimizer = super().create_optimizer(model)
        if fresh and self._search_callback() is not None:
            coefs = head_coefficients(self.model) + ffn_coefficients(self.model)
            ids = {id(p) for p in coefs}
            for group in optimizer.param_groups:
                group["params"] = [p for p in group["params"] if id(p) not in ids]
            optimizer.add_param_group({"params": coefs, "weight_decay": 0.0, "coefficients": True,
                                       "lr": self.search.coefficient_lr or self.args.learning_rate})
        return optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """The Trainer's schedule for the model's weights; the coefficients keep `search.coefficient_lr` constant
        (0: they follow the schedule)."""
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        if self.search.coefficient_lr > 0 and isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
            for i, group in enumerate(scheduler.optimizer.param_groups):
                if group.get("coefficients"):
                    scheduler.lr_lambdas[i] = _constant
                    group["lr"] = scheduler.base_lrs[i]
        return scheduler

    def _load_callback_state(self) -> None:
        super()._load_callback_state()
        self._bind_scores()  # a restored callback is a new object

    # ---- the stages ----------------------------------------------------------------------------
    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, **kwargs):
        """Search until the draw, shrink, then train the slim model; returns the slim stage's TrainOutput."""
        if self.is_deepspeed_enabled and self.accelerator.state.deepspeed_plugin.zero_stage == 3:
            raise ValueError("ZeRO stage 3 partitions the coefficients the search ranks: use ZeRO stage 0-2 for "
                             "the search (the slim model can train under stage 3 afterwards)")
        output_dir = Path(self.args.output_dir)
        run_steps, epoch_steps = self._run_length()
        steps = self.search.resolve(run_steps, epoch_steps, "rewind")
        schedule = str(getattr(self.args.lr_scheduler_type, "value", self.args.lr_scheduler_type))
        if steps.rewarmup and schedule in ("reduce_lr_on_plateau", "greedy"):  # HF's two that are no LambdaLR
            raise ValueError(f"search.rewarmup ramps a step schedule; {schedule} has none: use another "
                             "lr_scheduler_type, or search.rewarmup=0")
        slim_dir = output_dir / SLIM_DIR
        if resume_from_checkpoint and (output_dir / "ticket.json").is_file():
            # The search already ended: rebuild the slim model and resume its stage.
            self.ticket = Ticket.load(output_dir / "ticket.json")
            return self._train_slim(self._slim_model_again(steps), steps, run_steps, resume=slim_dir)
        initial = self._initial_weights(output_dir / INIT_WEIGHTS, resume=bool(resume_from_checkpoint))
        callback = TicketSearchCallback(dataclasses.asdict(self.search), dataclasses.asdict(steps),
                                        self._saved_detector(resume_from_checkpoint))
        self.add_callback(callback)
        callback.search.attach(self.model)
        self._bind_scores()
        super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)
        callback = self._search_callback()
        if callback.ticket is None:
            raise RuntimeError(f"the search stopped at step {self.state.global_step} before drawing a ticket "
                               "(a callback ended training early?): rerun, or resume from its checkpoint")
        self.ticket = callback.ticket
        if self.args.should_save:
            self.ticket.save(output_dir / "ticket.json")
        slim = self._slim_model(initial, steps)
        self.remove_callback(TicketSearchCallback)
        return self._train_slim(slim, steps, run_steps, resume=None)

    def _slim_model_again(self, steps: SearchSteps) -> torch.nn.Module:
        """The slim model of a search that already drew: from the initial weights (rewind) or from the search's
        last checkpoint, written at the draw (continue); a slim-stage checkpoint then overrides the weights."""
        output_dir = Path(self.args.output_dir)
        if steps.weights == "rewind" and (output_dir / INIT_WEIGHTS).is_file():
            return self._slim_model(load_file(str(output_dir / INIT_WEIGHTS)), steps)
        searched = get_last_checkpoint(str(output_dir))
        if steps.weights == "continue" and searched is not None:
            model = self.accelerator.unwrap_model(self.model)
            TicketSearch(self.search, steps).attach(model)
            model.load_state_dict(load_file(str(Path(searched) / "model.safetensors")), strict=False)
            return self._slim_model({}, steps)
        return self._slim_model(None, steps)

    def _initial_weights(self, path: Path, resume: bool) -> dict[str, torch.Tensor]:
        """The weights the search starts from (the rewind target): saved with the run, read back on resume."""
        if resume and path.is_file():
            return load_file(str(path))
        initial = {k: v.detach().cpu().contiguous().clone() for k, v in self.model.state_dict().items()}
        if self.args.should_save:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file(initial, str(path))
        return initial

    def _saved_detector(self, resume_from_checkpoint: str | bool | None) -> dict | None:
        """The detector state in the checkpoint being resumed (restored whatever
        `restore_callback_states_from_checkpoint` says: the search cannot resume without it)."""
        if not resume_from_checkpoint:
            return None
        folder = (get_last_checkpoint(self.args.output_dir) if resume_from_checkpoint is True
                  else str(resume_from_checkpoint))
        path = Path(folder or "") / "trainer_state.json"
        if not folder or not path.is_file():
            return None
        saved = json.loads(path.read_text()).get("stateful_callbacks", {}).get(TicketSearchCallback.__name__)
        saved = saved[0] if isinstance(saved, list) else saved
        return (saved or {}).get("attributes", {}).get("detector")

    def _run_length(self) -> tuple[int, int]:
        """(optimizer steps of the whole run, steps per epoch), as this Trainer's own loop would count them."""
        per_epoch = max(1, len(self.get_train_dataloader()) // self.args.gradient_accumulation_steps)
        if self.args.max_steps > 0:
            return self.args.max_steps, per_epoch
        return max(1, math.ceil(self.args.num_train_epochs * per_epoch)), per_epoch

    def _search_callback(self) -> TicketSearchCallback | None:
        return next((c for c in self.callback_handler.callbacks if isinstance(c, TicketSearchCallback)), None)

    def _bind_scores(self) -> None:
        if not self.is_deepspeed_enabled:
            return
        from earlybert.train.engine import fp32_values

        def scores():
            return fp32_values(head_coefficients(self.model)), fp32_values(ffn_coefficients(self.model))

        self._search_callback().scores = scores

    def _slim_model(self, initial: dict | None, steps: SearchSteps) -> torch.nn.Module:
        model = self.accelerator.unwrap_model(self.model)
        if steps.weights == "continue" and initial is not None:
            return shrink_model(model, self.ticket, fold_coefficients=self.search.fold_coefficients)
        base = copy.deepcopy(model)
        if has_coefficients(base):
            detach_coefficients(base)
        if initial is not None:  # rewind: the weights (and task head) the search started from
            base.load_state_dict(initial)
        return shrink_model(base, self.ticket)

    def _train_slim(self, slim: torch.nn.Module, steps: SearchSteps, run_steps: int, resume: Path | None):
        rewind = steps.weights == "rewind"
        drawn = int(self.ticket.metadata["step"])
        length = steps.slim_steps if rewind else run_steps - drawn
        args = dataclasses.replace(self.args, output_dir=str(Path(self.args.output_dir) / SLIM_DIR),
                                   max_steps=length)
        inner = _SlimTrainer(model=slim, args=args, data_collator=self.data_collator,
                             train_dataset=self.train_dataset, eval_dataset=self.eval_dataset,
                             processing_class=self.processing_class, compute_metrics=self.compute_metrics,
                             callbacks=[c for c in self.callback_handler.callbacks
                                        if type(c).__module__.split(".")[0] not in ("transformers", "earlybert")],
                             schedule_offset=0 if rewind else drawn, schedule_total=run_steps,
                             rewarmup=steps.rewarmup)
        checkpoint = get_last_checkpoint(str(resume)) if resume is not None and resume.is_dir() else None
        result = inner.train(resume_from_checkpoint=checkpoint)
        # From here on this Trainer is the slim model's: evaluate, predict and save_model use it.
        self.model, self.model_wrapped = inner.model, inner.model_wrapped
        self.optimizer, self.lr_scheduler, self.state = inner.optimizer, inner.lr_scheduler, inner.state
        if getattr(inner, "deepspeed", None) is not None:
            self.deepspeed = inner.deepspeed
        if self.args.should_save:
            summary = {"ticket_step": drawn, "drawn_by": self.ticket.metadata.get("drawn_by"),
                       "weights": steps.weights, "run_steps": run_steps, "slim_steps": length}
            (Path(self.args.output_dir) / "earlybert.json").write_text(json.dumps(summary, indent=1))
        return result

