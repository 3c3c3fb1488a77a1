"""GPU benchmark: BERT-base MLM at seq 128, bf16, DeepSpeed ZeRO-1, full vs slim (paper ticket).

Reports tokens/s, model FLOP utilisation (against --peak-tflops) and peak memory. Run by benchmarks/gpu.sh.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import BertConfig, BertForMaskedLM

import earlybert  # noqa: F401
from benchmarks.common import print_table, write_json
from benchmarks.step_speed import make_batch
from earlybert.models.flops import accounting
from earlybert.ticket.masks import MaskSpec, random_ticket
from earlybert.ticket.shrink import shrink_model
from earlybert.train.distributed import setup_distributed
from earlybert.train.engine import build_engine
from earlybert.train.objectives import MaskedLMObjective
from earlybert.train.trainer_config import TrainConfig


def measure(model, batch, train: TrainConfig, dist, steps: int) -> dict[str, float]:
    engine = build_engine(MaskedLMObjective(model), train, dist)
    batch = {k: v.to(engine.device) for k, v in batch.items()}
    torch.cuda.reset_peak_memory_stats()
    for i in range(steps + 5):  # 5 warm-up steps
        if i == 5:
            torch.cuda.synchronize()
            start = time.perf_counter()
        loss, _ = engine(**batch)
        engine.backward(loss)
        engine.step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    tokens = batch["input_ids"].numel() / seconds
    flops = accounting(model, batch["input_ids"].shape[1], 0.15)["train_flops_per_token"] * tokens
    out = {"step_s": seconds, "tokens_per_s": tokens, "tflops": flops / 1e12,
           "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30}
    engine.destroy()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the card (H100 SXM: 989)")
    p.add_argument("--out", default="benchmarks/results/gpu.json")
    args = p.parse_args()
    dist = setup_distributed()
    train = TrainConfig(micro_batch_size=args.batch, deepspeed_config="configs/deepspeed/zero1_bf16.json",
                        lr=1e-4, warmup_steps=0)
    torch.manual_seed(0)
    config = BertConfig(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    batch = make_batch(config.vocab_size, args.batch, 128)
    full = BertForMaskedLM(config)
    slim = shrink_model(full, random_ticket(full, MaskSpec(1 / 3, 0.4, ffn_round_to=64), seed=0))
    results = {"card": torch.cuda.get_device_name(), "batch": args.batch}
    rows = []
    for name, model in (("full", full), ("slim", slim)):
        r = measure(model, batch, train, dist, args.steps)
        r["mfu"] = r["tflops"] / args.peak_tflops
        results[name] = r
        rows.append([name, f"{r['tokens_per_s']:,.0f}", f"{r['tflops']:.1f}", f"{100 * r['mfu']:.1f}%",
                     f"{r['peak_mem_gib']:.1f}"])
    results["speedup"] = results["slim"]["tokens_per_s"] / results["full"]["tokens_per_s"]
    print_table(["model", "tokens/s", "TFLOP/s", "MFU", "peak GiB"], rows)
    print(f"slim/full throughput: {results['speedup']:.2f}x on {results['card']}")
    write_json(args.out, results)


if __name__ == "__main__":
    main()
