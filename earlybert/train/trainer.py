"""The shared trainer: DeepSpeed engine, ticket search with early-bird detection, shrink, slim training, resume.

Stages: `search` (coefficients + L1, detector checks) -> `slim` (after the shrink); `full` trains a
model as it is (baselines). The loop reads top to bottom in `fit`.
"""

from __future__ import annotations

import hashlib
import json
import resource
import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_file, save_model

from earlybert.dsee.update import merge_updates
from earlybert.errors import EarlyBertError
from earlybert.models.adapters import get_adapter, layer_sizes
from earlybert.models.checkpoint import write_dir_atomically
from earlybert.models.flops import accounting
from earlybert.ticket.coefficients import detach_coefficients, ffn_coefficients, head_coefficients
from earlybert.ticket.search import SearchSteps, TicketSearch
from earlybert.ticket.shrink import prune_plan, shrink_model
from earlybert.ticket.ticket import Ticket
from earlybert.train.distill import placed, restore_teacher, take_teacher
from earlybert.train.distributed import DistInfo, all_gather_object, all_reduce_sum, barrier, broadcast_object
from earlybert.train.draw_check import DrawCheck
from earlybert.train.engine import (
    build_engine,
    carry_optimizer_state,
    check_and_clip_gradients,
    consolidated_copy,
    deepspeed_config,
    fp32_values,
    optimizer_name,
    precision,
)
from earlybert.train.logger import RunLogger
from earlybert.train.objectives import Objective, Stat
from earlybert.train.run_checkpoint import RunCheckpointer, latest_checkpoint
from earlybert.train.trainer_config import CheckpointConfig, DistillConfig, LogConfig, SearchConfig, TrainConfig

Batches = Callable[[int], list[dict[str, torch.Tensor]]]


class Stage(str, Enum):
    """What the model is doing: searching (coefficients + L1), slim (after the shrink), full (as it is)."""

    SEARCH = "search"
    SLIM = "slim"
    FULL = "full"

    def __str__(self) -> str:
        return self.value


class Trainer:
    """Trains `model` through `objective_cls` on `batches(step)` (this rank's micro-batches of a step)."""

    def __init__(self, *, model: torch.nn.Module, objective_cls: type[Objective], batches: Batches,
                 train: TrainConfig, search: SearchConfig, checkpoint: CheckpointConfig, log: LogConfig,
                 search_steps: SearchSteps | None, run_dir: Path, dist: DistInfo, seq_len: int,
                 mlm_fraction: float = 1.0,
                 save_extras: Callable[[Path], None] | None = None, config_dict: dict | None = None,
                 resume_from: Path | None = None, distill: DistillConfig | None = None):
        self.train, self.search, self.ckpt_cfg = train, search, checkpoint
        self.distill, self.teacher = distill or DistillConfig(), None
        self.objective_cls, self.batches, self.run_dir, self.dist = objective_cls, batches, Path(run_dir), dist
        self.seq_len, self.mlm_fraction, self.save_extras = seq_len, mlm_fraction, save_extras
        # None when nothing is searched (full baseline, a given ticket).
        self.ticket_search = TicketSearch(search, search_steps) if search_steps is not None else None
        self.draw_check = DrawCheck(search.collapse_window, search.collapse_limit) if self.ticket_search else None
        # The run ends at end_step; a rewind moves it to the draw step plus the slim stage's own length.
        self.end_step, self.slim_start = train.max_steps, None
        self.checkpointer = RunCheckpointer(self.run_dir, dist, checkpoint.keep_last)
        self.full_accounting = accounting(model, seq_len, mlm_fraction)
        self.task = get_adapter(model).task_of(model)
        self.step, self.ticket, self.masks, self.tokens = 0, None, None, 0
        # At the shrink: "carried" (AdamW moments sliced), "restarted" (re-warmed up from restart_step), None.
        self.optimizer_state, self.restart_step = None, None
        self._flops_cache: dict[int, int] = {}
        self.times: dict[str, float] = {}
        self.steps_in: dict[str, int] = {}
        self.engine = None
        self.ds_config = deepspeed_config(train, dist.world_size)  # `auto` resolved for this device, once
        self.ds_config_file = self._write_ds_config()
        if resume_from is not None:
            self._resume(model, resume_from)
        else:
            self._start(model)
        self.logger = RunLogger(self.run_dir, dist.is_main, log.report_to, log.every, log.project, config_dict,
                                train.max_steps, log.progress_bar, self.step)

    # ---- set-up -------------------------------------------------------------------------------
    def _write_ds_config(self) -> Path:
        """The resolved DeepSpeed JSON, in the run folder (main rank)."""
        path = self.run_dir / "deepspeed.json"
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(self.ds_config, indent=1))
            tmp.replace(path)
        return path

    def _start(self, model: torch.nn.Module) -> None:
        if self.search.ticket:
            self.ticket = Ticket.load(self.search.ticket)
            model, self.stage = shrink_model(model, self.ticket), Stage.SLIM
        elif self.ticket_search is not None:
            if self.ticket_search.steps.weights == "rewind" and self.dist.is_main:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                save_model(model, str(self.run_dir / "init_weights.safetensors"))  # tied weights stored once
            self.ticket_search.attach(model)  # coefficients, and the masks told of any grouped-query heads
            self.stage = Stage.SEARCH
        else:
            self.stage = Stage.FULL
        self.engine = self._engine(model)

    def _engine(self, model: torch.nn.Module):
        searching = self.stage == Stage.SEARCH
        objective = self.objective_cls(model, self.search.lambda_heads if searching else 0.0,
                                       self.search.lambda_ffn if searching else 0.0)
        engine = build_engine(objective, self.train, self.dist, self.search.coefficient_lr if searching else 0.0,
                              clip_outside=True, config=self.ds_config)  # `_check_gradients` clips
        if self.teacher is not None and self.stage == Stage.SLIM:
            objective.set_teacher(placed(self.teacher, engine.module.model), self.distill.alpha,
                                  self.distill.temperature)
        engine.train()  # from_pretrained leaves models in eval mode: dropout must be on while training
        return engine

    def _resume(self, model: torch.nn.Module, folder: Path) -> None:
        state = self.checkpointer.read_state(folder)
        self.stage, self.step = Stage(state["stage"]), state["step"]
        self.times, self.steps_in, self.tokens = state["times"], state["steps_in"], state["tokens"]
        self.end_step, self.slim_start = state.get("end_step", self.train.max_steps), state.get("slim_start")
        self.optimizer_state, self.restart_step = state.get("optimizer_state"), state.get("restart_step")
        if self.ticket_search is not None:
            self.ticket_search.load_state_dict(state["detector"])
            if state.get("draw_check"):
                self.draw_check.load_state_dict(state["draw_check"])
        if (folder / "ticket.json").is_file():
            self.ticket = Ticket.from_dict(json.loads((folder / "ticket.json").read_text()))
        if self.stage == Stage.SLIM:
            if self.distill.alpha:
                self.teacher = restore_teacher(model, self.ticket_search.attach, self.run_dir)
            adapter = get_adapter(model)
            config = adapter.slim_config.from_dict(json.loads((folder / "slim_config.json").read_text()))
            model = adapter.slim_classes[self.task](config)
        elif self.stage == Stage.SEARCH:
            self.ticket_search.attach(model)
        self.engine = self._engine(model)
        self.checkpointer.load(self.engine, folder)

    @property
    def model(self) -> torch.nn.Module:
        """The Hugging Face model being trained (coefficients attached during search)."""
        return self.engine.module.model

    # ---- the loop -----------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to the end: search, draw and shrink when the early bird fires, then train the slim model."""
        self.logger.print(f"deepspeed_config {self.train.deepspeed_config} -> {precision(self.ds_config)} on "
                          f"{self.engine.device.type} ({self.ds_config_file})")
        self.logger.print(f"training from step {self.step} to {self.end_step} in stage {self.stage}")
        while self.step < self.end_step:
            stage = self.stage
            started = time.perf_counter()
            data_step = self.step - (self.slim_start or 0)
            metrics = self._train_step()
            self.step += 1
            if self.draw_check is not None and self.draw_check.record(stage == Stage.SEARCH, data_step,
                                                                      metrics["loss"]):
                self.logger.print(f"step {self.step}: {self.draw_check.message()}")
            if stage == Stage.SEARCH:
                metrics.update(self._search_check())
            # Stage time is compute plus detector checks; the shrink is timed on its own.
            elapsed = time.perf_counter() - started - metrics.pop("shrink_s", 0.0)
            self.times[stage.value] = self.times.get(stage.value, 0.0) + elapsed
            self.steps_in[stage.value] = self.steps_in.get(stage.value, 0) + 1
            metrics.update(tokens_per_s=metrics["tokens"] / elapsed, stage=stage.value)
            self.logger.log(self.step, metrics)
            shrunk_now = stage == Stage.SEARCH and self.stage == Stage.SLIM
            if shrunk_now or self.step % self.ckpt_cfg.every == 0 or self.step == self.end_step:
                self.save_checkpoint()
        summary = self._finish()
        self.logger.close()
        return summary

    def _lr(self) -> float:
        if self.slim_start is None:
            lr = self.train.lr_at(self.step)
            if self.restart_step is not None:  # search.rewarmup, or fresh AdamW moments: warm up again
                ramp = self.ticket_search.steps.rewarmup or self.train.warmup_steps
                lr *= min(1.0, (self.step - self.restart_step + 1) / max(1, ramp))
            return lr
        # After a rewind: a fresh schedule (warm-up, then decay) over the slim stage's own length.
        return self.train.lr_at(self.step - self.slim_start, self.end_step - self.slim_start)

    def _train_step(self) -> dict[str, Any]:
        lr = self._lr()
        for group in self.engine.optimizer.param_groups:
            group["lr"] = self.search.coefficient_lr if group.get("coefficients") else lr
        totals = torch.zeros(len(Stat))
        # After a rewind the slim stage is a fresh run: it reads the data from the start, as the full run does.
        micro_batches = self.batches(self.step - (self.slim_start or 0))
        global_count = all_reduce_sum(torch.tensor([float(sum(map(self.objective_cls.count, micro_batches)))]))
        # DeepSpeed divides by accumulation steps and averages ranks: scale so the result is the global mean.
        denominator = max(global_count.item(), 1.0) / (len(micro_batches) * self.dist.world_size)
        for i, batch in enumerate(micro_batches):
            batch = {k: v.to(self.engine.device) for k, v in batch.items()}
            loss, stats = self.engine(**batch, loss_denominator=denominator)
            # Every rank learns of a non-finite loss anywhere, and all stop before the update.
            if all_reduce_sum(torch.tensor([0.0 if torch.isfinite(loss) else 1.0])).item():
                self._stop_nonfinite("loss", loss.item())
            self.engine.backward(loss)
            if i == len(micro_batches) - 1:  # before the optimizer step at the accumulation boundary
                self._check_gradients()
            self.engine.step()
            if i == len(micro_batches) - 1:
                self._check_step_applied()
            totals[:Stat.TOKENS] += stats.detach().cpu().float()
            totals[Stat.TOKENS] += batch["input_ids"].numel()
        all_reduce_sum(totals)
        count = max(totals[Stat.COUNT].item(), 1.0)
        tokens = int(totals[Stat.TOKENS].item())
        self.tokens += tokens
        seq_len = micro_batches[0]["input_ids"].shape[1]
        metrics = {"loss": totals[Stat.LOSS_SUM].item() / count, "accuracy": totals[Stat.CORRECT].item() / count,
                   "lr": lr,
                   "tokens": tokens, "flops_per_step": self._flops_per_token(seq_len) * tokens}
        if self.stage == Stage.SEARCH:
            metrics["l1"] = totals[Stat.L1].item() / (len(micro_batches) * self.dist.world_size)
        return metrics

    def _check_gradients(self) -> None:
        """Where gradients sit on the parameters (fp32, ZeRO 0): stop on a non-finite norm, else clip them. Under
        fp16 the gradients are loss-scaled: an overflow is the loss scaler's to skip and lower, not an error."""
        if self.engine.fp16_enabled():
            return
        norm = check_and_clip_gradients(self.engine, self.train.max_grad_norm)
        if norm is not None and not torch.isfinite(norm):
            self._stop_nonfinite("gradient norm", norm.item())

    def _check_step_applied(self) -> None:
        """Stop where DeepSpeed skipped the update: ZeRO 1-3 and the bf16 wrappers find non-finite gradients
        from their partitions (the same verdict on every rank) and skip the step; fp16 skips are loss scaling."""
        if not self.engine.fp16_enabled() and not self.engine.was_step_applied():
            self._stop_nonfinite("gradient norm", self.engine.get_global_grad_norm())

    def _stop_nonfinite(self, what: str, value: float) -> None:
        last = latest_checkpoint(self.run_dir)
        raise EarlyBertError(f"non-finite {what} ({value}) at step {self.step + 1}: stopping before the update; "
                             f"the last good checkpoint is {last or '(none yet)'} - lower train.lr or check the data, "
                             "then resume=auto")

    def _flops_per_token(self, seq_len: int) -> int:
        if seq_len not in self._flops_cache:  # cleared at the shrink
            self._flops_cache[seq_len] = accounting(self.model, seq_len, self.mlm_fraction)["train_flops_per_token"]
        return self._flops_cache[seq_len]

    # ---- search -------------------------------------------------------------------------------
    def _search_check(self) -> dict[str, Any]:
        search = self.ticket_search
        if not search.due(self.step):
            return {}
        # Every rank gathers the scores (DeepSpeed's fp32 masters are assembled collectively under ZeRO 1-2);
        # rank 0 decides the masks and every rank applies the same ones.
        scores = self._coefficient_scores()
        payload = None
        if self.dist.is_main:
            heads, ffn, tied = search.masks(*scores)
            payload = ([m.tolist() for m in heads], [m.tolist() for m in ffn], tied)
            self._save_coefficients(scores)
        heads, ffn, tied = broadcast_object(payload)
        self.masks = ([torch.tensor(m, dtype=torch.int8) for m in heads],
                      [torch.tensor(m, dtype=torch.int8) for m in ffn])
        why = search.decide(self.step, *self.masks, tied)
        check = search.detector.history[-1]
        out = {"heads_distance": check.heads_distance, "ffn_distance": check.ffn_distance, "tied": tied,
               "heads_kept": sum(map(sum, heads)), "ffn_kept": sum(map(sum, ffn))}
        if why is not None:
            how = {"fired": "early bird fired", "draw_at": f"draw point search.draw_at={self.search.draw_at}",
                   "limit": f"no early bird by max_search_steps={self.search.max_search_steps}"}[why]
            self.logger.print(f"step {self.step}: {how}; drawing the ticket and shrinking")
            started = time.perf_counter()
            self._shrink(why, scores)
            out["shrink_s"] = time.perf_counter() - started
            self.times["shrink"] = self.times.get("shrink", 0.0) + out["shrink_s"]
        return out

    def _coefficient_scores(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The coefficients' fp32 values (DeepSpeed's masters under bf16/ZeRO)."""
        return fp32_values(head_coefficients(self.model)), fp32_values(ffn_coefficients(self.model))

    def _save_coefficients(self, scores: tuple[list[torch.Tensor], list[torch.Tensor]]) -> None:
        folder = self.run_dir / "search"
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for kind, coefs in zip(("heads", "ffn"), scores):
            tensors.update({f"{kind}.{i}": c.contiguous() for i, c in enumerate(coefs)})
        save_file(tensors, str(folder / f"coefficients_step_{self.step:08d}.safetensors"),
                  metadata={"step": str(self.step), "model_type": self.model.config.model_type})

    def _shrink(self, why: str, scores: tuple[list[torch.Tensor], list[torch.Tensor]]) -> None:
        model = self.model
        heads_c, ffn_c = scores
        self.ticket = self.ticket_search.ticket(model.config.model_type, *self.masks, {"heads": heads_c, "ffn": ffn_c},
                                                self.step, why)
        if self.dist.is_main:
            self.ticket.save(self.run_dir / "ticket.json")
        plan = prune_plan(model, self.ticket)
        # Full fp32 weights on every rank: DeepSpeed's masters, gathered from the partitions under ZeRO-3.
        full = consolidated_copy(model)
        rewind = self.ticket_search.steps.weights == "rewind"
        self.draw_check.drawn(self.step, rewind)
        if self.distill.alpha:
            self.teacher = take_teacher(full, self.run_dir, self.dist.is_main)
        if rewind:
            self.slim_start, self.end_step = self.step, self.step + self.ticket_search.steps.slim_steps
            self.logger.print(f"rewinding: the slim model trains {self.ticket_search.steps.slim_steps} steps from the "
                              "initial weights with a fresh optimizer and schedule")
            detach_coefficients(full)
            load_model(full, str(self.run_dir / "init_weights.safetensors"))  # weights and task head at step 0
            slim = shrink_model(full, self.ticket)
        else:
            slim = shrink_model(full, self.ticket, fold_coefficients=self.search.fold_coefficients)
        del full
        self._check_ranks_agree(slim)
        old = self.engine
        self.stage = Stage.SLIM
        self._flops_cache.clear()
        self.engine = self._engine(slim)
        self.optimizer_state = "restarted" if rewind else (
            "carried" if carry_optimizer_state(old, model, self.engine, self.model, plan) else "restarted")
        old.destroy()
        if not rewind and (self.optimizer_state == "restarted" or self.ticket_search.steps.rewarmup):
            self.restart_step = self.step
        self.logger.print(f"shrunk to heads {self.ticket.layer_heads()}, ffn {self.ticket.layer_ffn()}; "
                          f"optimizer state {self.optimizer_state}")

    def _check_ranks_agree(self, slim: torch.nn.Module) -> None:
        """Every rank built the same slim shapes from the same ticket (a mismatch would hang ZeRO's collectives)."""
        mine = hashlib.sha256(json.dumps([self.ticket.heads, self.ticket.ffn, layer_sizes(slim)]).encode()).hexdigest()
        everyone = all_gather_object(mine[:12])
        if len(set(everyone)) > 1:
            raise EarlyBertError(f"ranks drew different tickets (digests {everyone}): report this with the run's logs")
        if len(everyone) > 1:
            self.logger.print(f"ticket {mine[:12]} identical on all {len(everyone)} ranks")

    # ---- checkpoints and outputs --------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Checkpoint everything needed to continue exactly (collective)."""
        state = {"step": self.step, "stage": self.stage.value, "times": self.times, "steps_in": self.steps_in,
                 "tokens": self.tokens, "end_step": self.end_step, "slim_start": self.slim_start,
                 "optimizer_state": self.optimizer_state, "restart_step": self.restart_step,
                 "detector": self.ticket_search.state_dict() if self.ticket_search else None, "task": self.task,
                 "draw_check": self.draw_check.state_dict() if self.draw_check else None}
        files = {}
        if self.ticket is not None:
            files["ticket.json"] = self.ticket.to_dict()
        if self.stage == Stage.SLIM:
            files["slim_config.json"] = self.model.config.to_dict()
        self.checkpointer.save(self.engine, self.step, state, files)

    def _finish(self) -> dict[str, Any]:
        model = consolidated_copy(self.model)  # fp32 masters, whole under ZeRO-3 (collective)
        if self.stage == Stage.SEARCH:  # the budget ended before the draw: save the plain model
            detach_coefficients(model)
        merge_updates(model)  # DSEE's updates folded into plain weights: the saved model needs no adapter
        final = accounting(model, self.seq_len, self.mlm_fraction)
        decided = self.draw_check is not None and self.draw_check.verdict is None and self.draw_check.decide()
        if decided:  # the run ended before the compared steps were all in
            self.logger.print(f"step {self.step}: {self.draw_check.message()}")
        summary = {
            "stage": self.stage.value, "steps": self.step, "tokens": self.tokens,
            "time_s": dict(self.times), "steps_in": dict(self.steps_in),
            "step_time_s": {k: self.times[k] / n for k, n in self.steps_in.items() if n},
            "ticket_step": self.ticket.metadata.get("step") if self.ticket else None,
            "fired": bool(self.ticket and self.ticket.metadata.get("fired")),
            "drawn_by": self.ticket.metadata.get("drawn_by") if self.ticket else None,
            "weights": self.ticket_search.steps.weights if self.ticket_search else None,
            "optimizer_state_at_shrink": self.optimizer_state,
            "draw_check": self.draw_check.verdict if self.draw_check else None,
            "optimizer": optimizer_name(self.engine),
            "deepspeed": {"given": self.train.deepspeed_config, "precision": precision(self.ds_config),
                          "device": self.engine.device.type, "file": str(self.ds_config_file)},
            "full": self.full_accounting, "slim": final,
            # Each rank's peak resident memory (this process; forked tokenizing workers are not counted).
            "peak_rss_mb": all_gather_object(round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)),
        }
        if self.dist.is_main:
            def write(tmp: Path) -> None:
                model.save_pretrained(tmp)
                if self.save_extras is not None:
                    self.save_extras(tmp)

            write_dir_atomically(self.run_dir / "model", write, overwrite=True)
        barrier()
        return summary
