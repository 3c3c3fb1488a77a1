"""BERT-base's linear layers with and without MKL's Intel kernels (`earlybert.mkl_dispatch`), on this CPU.

Each round runs both variants, each in a freshly spawned process (which kernels MKL uses is fixed when torch
loads): one with `EARLYBERT_MKL_INTEL_PATH=1`, one with it 0, taking turns which goes first, after a dropped
warm-up round. A process times forward + backward of a linear layer at 1024 rows (batch 8 x 128) for each
of the three shapes of a BERT-base layer (768->768 for q, k, v and the attention output, 768->3072, 3072->768):
three matmuls each, the median of 15 calls after 3; then, with `--step-layers N`, our MLM training step
(`benchmarks.step_speed.step_fn`: masked-position objective, fused AdamW, dropout 0.1 as the trainer draws it) on
a BERT-base-shaped model of N layers at batch 8 x 128, the median of 5 steps after 2. Reported: GFLOP/s per shape
and variant, and per round the speed-ups of the three shapes' summed time and of the step, with the medians' 95%
intervals.

    python -m benchmarks.mkl_gemm [--rounds 8] [--step-layers 0] [--out benchmarks/results/mkl_gemm.json]
"""

from __future__ import annotations

import argparse
import statistics
import time

from benchmarks.common import in_fresh_process, median_range, print_table, range_text, ratio_summary, write_json
from earlybert import mkl_dispatch

SHAPES = [(768, 768), (768, 3072), (3072, 768)]  # (in, out) of a BERT-base layer's linears
ROWS = 1024


def measure(step_layers: int, calls: int = 15, warmup: int = 3) -> tuple[dict[str, float], str]:
    """Median seconds of forward + backward of each shape's linear layer (and of our MLM step with
    `step_layers` layers, where > 0), and what MKL ran in this process."""
    import torch

    gen = torch.Generator().manual_seed(0)
    seconds = {}
    for d_in, d_out in SHAPES:
        x = torch.randn(ROWS, d_in, generator=gen, requires_grad=True)
        w = torch.randn(d_out, d_in, generator=gen, requires_grad=True)
        times = []
        for i in range(warmup + calls):
            started = time.perf_counter()
            torch.nn.functional.linear(x, w).sum().backward()
            if i >= warmup:
                times.append(time.perf_counter() - started)
        seconds[f"{d_in}x{d_out}"] = statistics.median(times)
    if step_layers:
        seconds["step"] = mlm_step_seconds(step_layers)
    return seconds, mkl_dispatch.status()


def mlm_step_seconds(layers: int, steps: int = 5, warmup: int = 2) -> float:
    """Median seconds of our MLM training step on a BERT-base-shaped model of `layers` layers, batch 8 x 128."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from benchmarks.step_speed import make_batch, step_fn
    from earlybert.models.fast_dropout import use_fast_dropout
    from earlybert.train.host_memory import keep_freed_host_memory
    from earlybert.train.objectives import MaskedLMObjective

    keep_freed_host_memory()  # as the trainer does
    torch.manual_seed(0)
    model = use_fast_dropout(BertForMaskedLM(BertConfig(num_hidden_layers=layers))).train()
    step = step_fn(MaskedLMObjective(model), make_batch(model.config.vocab_size, 8, 128))
    times = []
    for i in range(warmup + steps):
        started = time.perf_counter()
        step()
        if i >= warmup:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--step-layers", type=int, default=0, help="also time our MLM step with this many layers")
    p.add_argument("--out", default="benchmarks/results/mkl_gemm.json")
    args = p.parse_args()
    variants = {"MKL's Intel kernels": "1", "MKL's default dispatch": "0"}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    status = {}
    for round_ in range(args.rounds + 1):  # round 0 is a warm-up
        for name in list(variants)[:: 1 if round_ % 2 else -1]:
            seconds, status[name] = in_fresh_process(measure, args.step_layers, env={mkl_dispatch.ENV: variants[name]})
            if round_:
                runs[name].append(seconds)
    on, off = variants
    shapes = [f"{d_in}x{d_out}" for d_in, d_out in SHAPES]
    pairs = list(zip(runs[on], runs[off], strict=True))
    speed = ratio_summary([sum(b[s] for s in shapes) / sum(a[s] for s in shapes) for a, b in pairs])
    rates = {name: {shape: median_range([3 * 2 * ROWS * int(shape.split("x")[0]) * int(shape.split("x")[1])
                                         / r[shape] / 1e9 for r in rounds]) for shape in shapes}
             for name, rounds in runs.items()}
    print_table(["variant", "status", *[f"{s} GFLOP/s" for s in rates[on]]],
                [[name, status[name], *[range_text(r, 1) for r in rates[name].values()]] for name in rates])
    print(f"speed-up of the three shapes with MKL's Intel kernels, per round: {range_text(speed)}")
    result = {"rows": ROWS, "rounds": args.rounds, "mkl_intel_path": status, "gflops": rates, "seconds": runs,
              "speedup_rounds": speed}
    if args.step_layers:
        result["step_layers"] = args.step_layers
        result["step_s"] = {name: median_range([r["step"] for r in rounds]) for name, rounds in runs.items()}
        result["step_speedup_rounds"] = ratio_summary([b["step"] / a["step"] for a, b in pairs])
        print_table(["variant", f"MLM step s, {args.step_layers} layers"],
                    [[name, range_text(r)] for name, r in result["step_s"].items()])
        print(f"step speed-up with MKL's Intel kernels, per round: {range_text(result['step_speedup_rounds'])}")
    write_json(args.out, result)


if __name__ == "__main__":
    main()
