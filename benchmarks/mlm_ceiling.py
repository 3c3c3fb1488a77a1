"""The FLOP ceiling on MLM pretraining speed against `BertForMaskedLM` at 12 layers: this CPU's best fp32
matmul rate on the shapes of a BERT-base step, the rate each step achieves, and the fastest our step could be
if every FLOP it does ran at that best rate (optimizer, layer norms, softmax and dropout free), or if its
matmuls took what a profile of one step measures and every other kernel were free.

    python -m benchmarks.mlm_ceiling [--layers 12] [--batch 8] [--rounds 7] [--out benchmarks/results/mlm_ceiling.json]

Both steps train with BERT's dropout 0.1 as the trainers do (ours with integer dropout masks, HF's stock
`nn.Dropout`), forward + backward + fused AdamW; they alternate after a warm-up, as do the matmul shapes.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForMaskedLM

from benchmarks.common import alternate, print_table, write_json
from benchmarks.step_speed import make_batch, step_fn
from earlybert.models.fast_dropout import use_fast_dropout
from earlybert.models.flops import ModelShape, accounting, training_flops_per_token
from earlybert.train.objectives import MaskedLMObjective


def matmul_shapes(tokens: int, masked: int) -> dict[str, tuple[int, int, int]]:
    """(rows, inner, columns) of the matmuls in a BERT-base step: forward tokens x in -> out, and the weight
    gradients' out x tokens -> in (the input gradients have the forward shapes, transposed weights)."""
    return {"q/k/v/output 768->768": (tokens, 768, 768), "FFN in 768->3072": (tokens, 768, 3072),
            "FFN out 3072->768": (tokens, 3072, 768), "decoder, all positions": (tokens, 768, 30522),
            "decoder, masked positions": (masked, 768, 30522), "weight gradient 768x768": (768, tokens, 768),
            "weight gradient 3072x768": (3072, tokens, 768)}


def linear_call(rows: int, inner: int, columns: int, repeats: int):
    """A callable running `repeats` `F.linear` calls of this shape (as `nn.Linear` does, bias included)."""
    x, w, b = torch.randn(rows, inner), torch.randn(columns, inner), torch.randn(columns)

    def call():
        for _ in range(repeats):
            F.linear(x, w, b)

    return call


def matmul_share(step) -> float:
    """Share of one profiled call of `step` (self CPU time) spent in matmul kernels: mm, addmm, bmm."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = prof.key_averages()
    matmul = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm"))
    return matmul / sum(e.self_cpu_time_total for e in events)


def matmul_rates(tokens: int, masked: int, rounds: int, results: dict) -> float:
    """1. GFLOP/s of each matmul shape (each call repeated to about 2e11 FLOPs); returns the best."""
    shapes = matmul_shapes(tokens, masked)
    repeats = {k: max(1, round(2e11 / (2 * m * n * c))) for k, (m, n, c) in shapes.items()}
    spread = alternate({k: linear_call(*s, repeats[k]) for k, s in shapes.items()}, rounds)
    gflops = {k: 2 * m * n * c * repeats[k] / spread[k]["median"] / 1e9 for k, (m, n, c) in shapes.items()}
    print("\n1. fp32 matmul rate (F.linear, bias included)")
    print_table(["shape", "rows x in -> out", "GFLOP/s (median)"],
                [[k, f"{m} x {n} -> {c}", f"{gflops[k]:.1f}"] for k, (m, n, c) in shapes.items()])
    results.update(matmul_gflops=gflops, matmul_spread_s=spread, matmul_repeats=repeats,
                   best_matmul_gflops=max(gflops.values()))
    return max(gflops.values())


def step_rates(layers: int, batch: dict, rounds: int, peak: float, results: dict) -> None:
    """2. Both MLM steps: seconds, FLOP rate, matmul share, and the ceilings on ours / HF they imply."""
    config = BertConfig(num_hidden_layers=layers)
    hf = BertForMaskedLM(config)
    ours = BertForMaskedLM(config)
    ours.load_state_dict(hf.state_dict())
    use_fast_dropout(ours)
    step = {"hf": step_fn(hf, batch, full_logits=True), "ours": step_fn(MaskedLMObjective(ours), batch)}
    steps = alternate(step, rounds)
    share = {k: matmul_share(fn) for k, fn in step.items()}
    seq, tokens, masked = batch["labels"].shape[1], batch["labels"].numel(), int((batch["labels"] != -100).sum())
    flops = {"hf": training_flops_per_token(ModelShape.of(hf), seq, 1.0) * tokens,
             "ours": accounting(ours, seq, masked / tokens)["train_flops_per_token"] * tokens}
    median = {k: v["median"] for k, v in steps.items()}
    rate = {k: flops[k] / median[k] / 1e9 for k in steps}
    other_s = {k: (1 - share[k]) * median[k] for k in steps}
    results.update(step_spread_s=steps, step_flops=flops, step_gflops=rate, matmul_share=share, non_matmul_s=other_s,
                   ours_vs_hf_speed=median["hf"] / median["ours"], flop_ratio=flops["hf"] / flops["ours"],
                   # against HF as measured: ours with every FLOP at the best matmul rate and nothing else timed,
                   ceiling_speed=median["hf"] / (flops["ours"] / (peak * 1e9)),
                   # ours' matmuls as measured and every other kernel free,
                   matmul_only_speed=median["hf"] / (share["ours"] * median["ours"]),
                   # and the non-matmul seconds ours could keep at 1.5x
                   non_matmul_s_allowed_for_1_5x=median["hf"] / 1.5 - share["ours"] * median["ours"])
    print(f"\n2. {layers}-layer MLM training step, batch {tokens // seq} x {seq}, {masked} masked positions")
    print_table(["step", "median s", "min-max s", "GFLOP", "GFLOP/s", "of best matmul rate", "matmul share",
                 "non-matmul s"],
                [[k, f"{s['median']:.3f}", f"{s['min']:.3f}-{s['max']:.3f}", f"{flops[k] / 1e9:.0f}",
                  f"{rate[k]:.1f}", f"{rate[k] / peak:.2f}", f"{share[k]:.2f}", f"{other_s[k]:.3f}"]
                 for k, s in steps.items()])
    r = results
    print(f"ours / HF speed {r['ours_vs_hf_speed']:.3f}x; FLOP ratio {r['flop_ratio']:.3f}x; ceilings against HF as "
          f"measured: ours at the best matmul rate, all else free {r['ceiling_speed']:.3f}x; ours' matmuls as "
          f"measured, all else free {r['matmul_only_speed']:.3f}x. For 1.5x ours' non-matmul time must fall from "
          f"{other_s['ours']:.3f} s to {r['non_matmul_s_allowed_for_1_5x']:.3f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--out", default="benchmarks/results/mlm_ceiling.json")
    args = p.parse_args()
    torch.manual_seed(0)
    batch = make_batch(30522, args.batch, args.seq)
    results = {"layers": args.layers, "batch": args.batch, "seq": args.seq,
               "masked": int((batch["labels"] != -100).sum())}
    peak = matmul_rates(args.batch * args.seq, results["masked"], args.rounds, results)
    step_rates(args.layers, batch, args.rounds, peak, results)
    write_json(args.out, results)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
