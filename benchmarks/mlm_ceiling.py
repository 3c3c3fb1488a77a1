"""The FLOP ceiling on MLM pretraining speed against `BertForMaskedLM` at 12 layers: this CPU's best fp32
matmul rate on the shapes of a BERT-base step, the rate each step achieves, and the fastest our step could be
if every FLOP it does ran at that best rate (optimizer, layer norms, softmax and dropout free).

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
from earlybert.models.flops import ModelShape, training_flops_per_token
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--out", default="benchmarks/results/mlm_ceiling.json")
    args = p.parse_args()
    torch.manual_seed(0)
    tokens = args.batch * args.seq
    batch = make_batch(30522, args.batch, args.seq)
    masked = int((batch["labels"] != -100).sum())

    # 1. the best matmul rate: each shape repeated to about 2e11 FLOPs a call
    shapes = matmul_shapes(tokens, masked)
    repeats = {k: max(1, round(2e11 / (2 * m * n * c))) for k, (m, n, c) in shapes.items()}
    spread = alternate({k: linear_call(*s, repeats[k]) for k, s in shapes.items()}, args.rounds)
    gflops = {k: 2 * m * n * c * repeats[k] / spread[k]["median"] / 1e9 for k, (m, n, c) in shapes.items()}
    peak = max(gflops.values())
    print("\n1. fp32 matmul rate (F.linear, bias included)")
    print_table(["shape", "rows x in -> out", "GFLOP/s (median)"],
                [[k, f"{m} x {n} -> {c}", f"{gflops[k]:.1f}"] for k, (m, n, c) in shapes.items()])

    # 2. the two steps, and the rate each achieves
    config = BertConfig(num_hidden_layers=args.layers)
    hf = BertForMaskedLM(config)
    ours = BertForMaskedLM(config)
    ours.load_state_dict(hf.state_dict())
    use_fast_dropout(ours)
    steps = alternate({"hf": step_fn(hf, batch, full_logits=True), "ours": step_fn(MaskedLMObjective(ours), batch)},
                      args.rounds)
    flops = {"hf": training_flops_per_token(ModelShape.of(hf), args.seq, 1.0) * tokens,
             "ours": training_flops_per_token(ModelShape.of(ours), args.seq, masked / tokens) * tokens}
    rate = {k: flops[k] / steps[k]["median"] / 1e9 for k in steps}
    speed = steps["hf"]["median"] / steps["ours"]["median"]
    ceiling = steps["hf"]["median"] / (flops["ours"] / (peak * 1e9))
    print(f"\n2. {args.layers}-layer MLM training step, batch {args.batch} x {args.seq}, {masked} masked positions")
    print_table(["step", "median s", "min-max s", "GFLOP", "GFLOP/s", "share of best matmul rate"],
                [[k, f"{s['median']:.3f}", f"{s['min']:.3f}-{s['max']:.3f}", f"{flops[k] / 1e9:.0f}",
                  f"{rate[k]:.1f}", f"{rate[k] / peak:.2f}"] for k, s in steps.items()])
    print(f"ours / HF speed {speed:.3f}x; FLOP ratio {flops['hf'] / flops['ours']:.3f}x; ceiling (ours at the best "
          f"matmul rate, all else free, against HF as measured) {ceiling:.3f}x")
    write_json(args.out, {"layers": args.layers, "batch": args.batch, "seq": args.seq, "masked": masked,
                          "matmul_gflops": gflops, "matmul_spread_s": spread, "matmul_repeats": repeats,
                          "best_matmul_gflops": peak, "step_spread_s": steps, "step_flops": flops,
                          "step_gflops": rate, "ours_vs_hf_speed": speed,
                          "flop_ratio": flops["hf"] / flops["ours"], "ceiling_speed": ceiling})
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
