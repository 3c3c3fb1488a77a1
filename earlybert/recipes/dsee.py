"""`earlybert finetune ... mode=dsee`: DSEE fine-tuning, a pruning step, a short DSEE fine-tuning again.

1. Each target linear gets dW = (alpha / r) B A + S on its fixed support; only the updates and the task head train
   (in run_dir/dense: its checkpoints, metrics, merged model and summary.json once finished).
2. dsee.prune: `structured` removes the lowest-scoring heads of every layer with this library's shrink (ticket.json);
   `unstructured` zeroes the smallest merged weights of the targets and keeps them zero from then on; `none` stops
   after step 1.
3. Fresh updates train for dsee.retrain_epochs; run_dir/model is the merged model, a plain one needing no adapter.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

from earlybert.config import check_config
from earlybert.errors import EarlyBertError


def prune(cfg, merged, pretrained, targets: list[str], run_dir: Path, is_main: bool):
    """The pruning step: (the model to train again, masks that keep pruned weights zero or None, what was removed)."""
    from earlybert.dsee.prune import apply_masks, magnitude_masks, structured_ticket
    from earlybert.models.adapters import layer_sizes
    from earlybert.ticket.shrink import shrink_model

    if cfg.dsee.prune == "structured":
        ticket = structured_ticket(merged, pretrained, targets, cfg.dsee.heads_ratio, cfg.dsee.head_score,
                                   cfg.dsee.kv_groups)
        if is_main:
            ticket.save(run_dir / "ticket.json")
        before = sum(layer_sizes(merged)[0])
        return shrink_model(merged, ticket), None, {"heads_removed": before - sum(ticket.layer_heads()),
                                                     "heads": before}
    masks = magnitude_masks(merged, targets, cfg.dsee.sparsity)
    apply_masks(merged, masks)
    return merged, masks, {"weights_zeroed": sum(int((m == 0).sum()) for m in masks.values()),
                           "weights_in_targets": sum(m.numel() for m in masks.values())}


def check_dsee_run(cfg, model) -> None:
    """Refuse what the DSEE stages could not finish with, before any folder: a resume other than auto, a head ratio
    the KV groups cannot share."""
    from earlybert.dsee.prune import check_head_groups

    if cfg.resume not in ("", "auto"):
        raise EarlyBertError(f"mode=dsee resumes its own stages: use resume=auto, not resume={cfg.resume}")
    check_head_groups(model, cfg.dsee)


def retrain_steps(cfg) -> int:
    """Steps of the fine-tuning after the pruning step (dsee.retrain_epochs of the run's epochs)."""
    per_epoch = cfg.train.max_steps / cfg.epochs if cfg.epochs > 0 else cfg.train.max_steps
    return max(1, math.ceil(cfg.dsee.retrain_epochs * per_epoch))


def run_dsee(cfg) -> dict:
    """Fine-tune with DSEE, prune, fine-tune again; evaluate on dev; returns the summary."""
    from earlybert.dsee.config import add_updates
    from earlybert.dsee.update import trainable_parameters
    from earlybert.models.checkpoint import load_model, write_dir_atomically
    from earlybert.models.flops import accounting
    from earlybert.recipes.finetune import fit, load_inputs
    from earlybert.tasks.evaluation import evaluate_run
    from earlybert.train.distributed import SharedFailures, barrier, setup_distributed
    from earlybert.train.engine import deepspeed_config
    from earlybert.train.run_checkpoint import check_run_dir, resolve_resume, start_run_dir, write_summary

    check_config(cfg)
    staged = cfg.dsee.prune != "none"
    run_dir = Path(cfg.output_dir)
    first_dir = run_dir / "dense" if staged else run_dir
    check_run_dir(run_dir, cfg.resume, cfg.overwrite)
    tokenizer, kind, data, features, model, objective, _ = load_inputs(cfg)
    check_dsee_run(cfg, model)
    full = accounting(model, cfg.max_seq_len)
    pretrained = copy.deepcopy(model)
    targets = add_updates(model, cfg.dsee, cfg.seed)
    trained = trainable_parameters(model)
    record = {"targets": len(targets), "trainable_params": trained, "trainable_share": trained / full["params"]}
    deepspeed_config(cfg.train, int(os.environ.get("WORLD_SIZE", "1")))
    dist = setup_distributed()
    with SharedFailures("earlybert finetune"):
        start_run_dir(run_dir, cfg, cfg.overwrite, resolve_resume(cfg.resume, run_dir), dist.is_main)
        if staged and (first_dir / "summary.json").is_file():  # resumed after the first stage had finished
            summary = json.loads((first_dir / "summary.json").read_text())
        else:
            summary = fit(cfg, model, objective, features, None, first_dir, resolve_resume(cfg.resume, first_dir),
                          dist, tokenizer)
            if staged and dist.is_main:
                write_summary(first_dir, summary)
        times = {"dsee": sum(summary["time_s"].values())}
        if staged:
            slim, masks, removed = prune(cfg, load_model(first_dir / "model"), pretrained, targets, run_dir,
                                         dist.is_main)
            record.update(removed)
            if cfg.dsee.retrain_epochs > 0:
                add_updates(slim, cfg.dsee, cfg.seed, masks)
                summary = fit(cfg, slim, objective, features, None, run_dir, resolve_resume(cfg.resume, run_dir),
                              dist, tokenizer, max_steps=retrain_steps(cfg))
                times["retrain"] = sum(summary["time_s"].values())
            elif dist.is_main:
                def write(tmp: Path) -> None:
                    slim.save_pretrained(tmp)
                    tokenizer.save_pretrained(str(tmp))

                write_dir_atomically(run_dir / "model", write, overwrite=True)
                summary = {**summary, "slim": accounting(slim, cfg.max_seq_len)}
        summary.update(time_s=times, dsee=record, full=full)
        if dist.is_main:
            summary = evaluate_run(cfg, kind, data, tokenizer, run_dir, summary)
            write_summary(run_dir, summary)
        barrier()
        return summary
