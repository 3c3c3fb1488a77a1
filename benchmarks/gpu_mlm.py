"""GPU benchmark: BERT-base MLM at seq 128, bf16: our full, slim and search steps and HF's MLM recipe, side by side.

Four training steps take turns for --rounds rounds after two warm-up calls (`benchmarks.common.alternate`), each
call --steps steps and a device sync:
- ours, full model: DeepSpeed engine (ZeRO-1 bf16 by default), MLM logits at the masked positions only;
- ours, slim: the paper's ticket (1/3 of the heads, 40% of the FFN neurons; widths rounded to 64), shrunk;
- ours, search: the full model with slimming coefficients attached and their L1 penalty;
- HF's recipe: `BertForMaskedLM` with its full-sequence logits, as `transformers.Trainer` runs it with
  `bf16=True` (autocast over fp32 weights) where the DeepSpeed file is bf16 (fp32 otherwise, as a CPU smoke run),
  fused AdamW and gradient clipping at 1.0.
Reports tokens/s, TFLOP/s and model FLOP utilisation (against --peak-tflops) per variant, each variant's peak
memory (its resident state after one step plus the most its calls allocate above that), and paired per-round
ratios with the median's 95% interval: slim/full time over the FLOP ratio, search/full, ours/HF speed.
Run by benchmarks/gpu.sh; without CUDA it runs on the CPU (a smoke run: give a small --layers and --batch).
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
from transformers import BertConfig, BertForMaskedLM

import earlybert  # noqa: F401
from benchmarks.common import alternate, paired, print_table, range_text, refuse, write_json
from benchmarks.step_speed import make_batch
from earlybert.models.flops import accounting
from earlybert.ticket.coefficients import attach_coefficients
from earlybert.ticket.masks import MaskSpec, random_ticket
from earlybert.ticket.shrink import shrink_model
from earlybert.train.distributed import setup_distributed
from earlybert.train.engine import build_engine
from earlybert.train.objectives import MaskedLMObjective
from earlybert.train.trainer_config import TrainConfig

FULL, SLIM, SEARCH, HF = "ours, full", "ours, slim", "ours, search", "HF recipe"


def ours(objective: torch.nn.Module, batch: dict, train: TrainConfig, dist):
    """One step of our DeepSpeed engine around `objective`."""
    engine = build_engine(objective, train, dist)
    batch = {k: v.to(engine.device) for k, v in batch.items()}

    def step():
        loss, _ = engine(**batch)
        engine.backward(loss)
        engine.step()

    return step


def hugging_face(model: BertForMaskedLM, batch: dict, device: torch.device, bf16: bool):
    """One step of HF's MLM recipe as its Trainer runs it (with bf16=True: autocast, as our DeepSpeed file's bf16),
    fused AdamW, clipping 1.0."""
    model.to(device).train()
    batch = {k: v.to(device) for k, v in batch.items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def uses_bf16(deepspeed_config: str) -> bool:
    """Whether the DeepSpeed file trains in bf16 (then HF's recipe runs under bf16 autocast, else in fp32)."""
    return bool(json.loads(Path(deepspeed_config).read_text()).get("bf16", {}).get("enabled"))


class Memory:
    """Per-variant peak device memory while several variants stay resident (CUDA only; None elsewhere)."""

    def __init__(self, cuda: bool):
        self.cuda, self.resident, self.transient = cuda, {}, {}

    def build(self, name: str, make):
        """`make()`'s step function, after one step: what it then holds is the variant's resident memory."""
        before = torch.cuda.memory_allocated() if self.cuda else 0
        step = make()
        step()
        if self.cuda:
            torch.cuda.synchronize()
            self.resident[name] = torch.cuda.memory_allocated() - before
        return step

    def timed(self, name: str, step, steps: int):
        """A call of `steps` steps and a device sync, recording the most it allocates above what it holds."""
        def call():
            if self.cuda:
                torch.cuda.reset_peak_memory_stats()
                start = torch.cuda.memory_allocated()
            for _ in range(steps):
                step()
            if self.cuda:
                torch.cuda.synchronize()
                above = torch.cuda.max_memory_allocated() - start
                self.transient[name] = max(self.transient.get(name, 0), above)
        return call

    def peak_gib(self, name: str) -> float | None:
        """The variant's resident memory plus the most its timed calls allocated above it, in GiB."""
        return (self.resident[name] + self.transient[name]) / 2**30 if self.cuda else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="steps per timed call")
    p.add_argument("--rounds", type=int, default=7, help="timed calls per variant, taking turns (5+ for a result)")
    p.add_argument("--deepspeed-config", default="configs/deepspeed/zero1_bf16.json")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the card (H100 SXM: 989)")
    p.add_argument("--out", default="benchmarks/results/gpu.json")
    args = p.parse_args()
    if min(args.layers, args.batch, args.steps, args.rounds) < 1:
        refuse("--layers, --batch, --steps and --rounds must be at least 1")
    if not Path(args.deepspeed_config).is_file():
        refuse(f"--deepspeed-config {args.deepspeed_config}: no such file; give one of configs/deepspeed/*.json")
    dist = setup_distributed()
    cuda = torch.cuda.is_available()
    train = TrainConfig(micro_batch_size=args.batch, deepspeed_config=args.deepspeed_config, lr=1e-4,
                        warmup_steps=0)
    torch.manual_seed(0)
    config = BertConfig(num_hidden_layers=args.layers)  # dropout 0.1, as BERT pretrains
    batch = make_batch(config.vocab_size, args.batch, 128)
    full = BertForMaskedLM(config)
    slim = shrink_model(full, random_ticket(full, MaskSpec(1 / 3, 0.4, ffn_round_to=64), seed=0))
    searched = copy.deepcopy(full)
    attach_coefficients(searched)
    makers = {FULL: lambda: ours(MaskedLMObjective(copy.deepcopy(full)), batch, train, dist),
              SLIM: lambda: ours(MaskedLMObjective(slim), batch, train, dist),
              SEARCH: lambda: ours(MaskedLMObjective(searched, 1e-4, 1e-4), batch, train, dist),
              HF: lambda: hugging_face(copy.deepcopy(full), batch, dist.device, uses_bf16(args.deepspeed_config))}
    memory = Memory(cuda)
    calls = {name: memory.timed(name, memory.build(name, make), args.steps) for name, make in makers.items()}
    spread = alternate(calls, args.rounds)
    report(args, spread, memory, {FULL: full, SLIM: slim, SEARCH: full, HF: full})


def report(args, spread: dict, memory: Memory, models: dict) -> None:
    """Per-variant throughput, FLOP utilisation and memory; paired per-round ratios; the JSON."""
    tokens = args.batch * 128 * args.steps
    flops = {name: accounting(m, 128, 1.0 if name == HF else 0.15)["train_flops_per_token"]
             for name, m in models.items()}  # HF's recipe computes logits at every position
    results = {"card": torch.cuda.get_device_name() if memory.cuda else "cpu (smoke run)", "layers": args.layers,
               "batch": args.batch, "seq": 128, "steps_per_call": args.steps, "rounds": args.rounds,
               "deepspeed_config": args.deepspeed_config, "variants": {}}
    rows = []
    for name, s in spread.items():
        seconds = s["median"]
        r = {"step_s": seconds / args.steps, "tokens_per_s": tokens / seconds,
             "tflops": flops[name] * tokens / seconds / 1e12, "peak_mem_gib": memory.peak_gib(name),
             "call_s": s}
        r["mfu"] = r["tflops"] / args.peak_tflops
        results["variants"][name] = r
        peak = "n/a" if r["peak_mem_gib"] is None else f"{r['peak_mem_gib']:.1f}"
        rows.append([name, f"{r['tokens_per_s']:,.0f}", f"{r['tflops']:.1f}", f"{100 * r['mfu']:.1f}%", peak])
    flop_ratio = flops[SLIM] / flops[FULL]
    results["flop_ratio"] = flop_ratio
    results["slim_time_over_flop_ratio"] = paired(spread, SLIM, FULL, 1 / flop_ratio)
    results["search_over_full"] = paired(spread, SEARCH, FULL)
    results["ours_vs_hf_speed"] = paired(spread, HF, FULL)
    print_table(["variant", "tokens/s", "TFLOP/s", "MFU", "peak GiB"], rows)
    print(f"slim/full time over the FLOP ratio ({flop_ratio:.3f}): {range_text(results['slim_time_over_flop_ratio'])}")
    print(f"search/full time: {range_text(results['search_over_full'])}")
    print(f"ours/HF speed (full model): {range_text(results['ours_vs_hf_speed'])}")
    write_json(args.out, results)


if __name__ == "__main__":
    main()
