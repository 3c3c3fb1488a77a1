"""Where a training step's time goes, full vs slim: forward+backward and the AdamW update timed apart.

Full and slim take turns every round (2 warm-up rounds dropped), so drift hits both alike; each phase
is reported as median (min-max) seconds, with the ratios against the FLOP ratio. Profiled passes (3 steps
each, 4 passes taking turns) then split the step by kind of work: encoder matmuls and attention, which a
ticket shrinks, and the decoder's vocabulary matmuls, the MLM loss, AdamW and the rest, which it leaves as
they are or shrinks less. A forward + backward on one sequence of 8 tokens gives the part of a step that
does not scale with tokens.

    python -m benchmarks.step_breakdown [--layers 4 --rounds 7 --out benchmarks/results/step_breakdown.json]
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import BertConfig, BertForMaskedLM

import earlybert  # noqa: F401
from benchmarks.common import alternate, median_range, print_table, range_text, write_json
from benchmarks.step_speed import make_batch
from earlybert.models.flops import accounting
from earlybert.ticket.masks import MaskSpec, random_ticket
from earlybert.ticket.shrink import shrink_model
from earlybert.train.engine import adamw
from earlybert.train.objectives import MaskedLMObjective
from earlybert.train.trainer_config import TrainConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--out", default="benchmarks/results/step_breakdown.json")
    args = p.parse_args()
    torch.manual_seed(0)
    config = BertConfig(num_hidden_layers=args.layers, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    full = BertForMaskedLM(config)
    slim = shrink_model(full, random_ticket(full, MaskSpec(1 / 3, 0.4), seed=0))
    batch = make_batch(config.vocab_size, 8, 128)
    objectives = {"full": MaskedLMObjective(full), "slim": MaskedLMObjective(slim)}
    for objective in objectives.values():
        objective.tied_gradient_in_place()  # as the trainer does under fp32 ZeRO-0
    optimizers = {k: adamw([{"params": list(o.parameters()), "weight_decay": 0.0}], TrainConfig(lr=1e-5))
                  for k, o in objectives.items()}
    times = {k: {"compute": [], "update": []} for k in objectives}
    for round_ in range(args.rounds + 2):
        for name, objective in objectives.items():
            optimizers[name].zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            objective(**batch)[0].backward()
            t1 = time.perf_counter()
            optimizers[name].step()
            if round_ >= 2:
                times[name]["compute"].append(t1 - t0)
                times[name]["update"].append(time.perf_counter() - t1)
    floor = token_free_floor(objectives, config.vocab_size, args.rounds)
    shares = {name: dict.fromkeys(KINDS, 0.0) for name in objectives}
    for pass_ in range(PROFILED_PASSES):  # taking turns, as the timed rounds do
        for name in list(objectives)[:: 1 if pass_ % 2 == 0 else -1]:
            for kind, ms in profile_shares(objectives[name], optimizers[name], batch, config.vocab_size).items():
                shares[name][kind] += ms / PROFILED_PASSES
    flop_ratio = (accounting(slim, 128, 0.15)["train_flops_per_token"]
                  / accounting(full, 128, 0.15)["train_flops_per_token"])
    results = {"layers": args.layers, "batch": 8, "seq": 128, "rounds": args.rounds, "flop_ratio": flop_ratio,
               "optimizer": f"torch AdamW (fused={bool(optimizers['full'].defaults.get('fused'))})"}
    rows = []
    for name, model in (("full", full), ("slim", slim)):
        embedding = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
        results[name] = {phase: median_range(v) for phase, v in times[name].items()}
        results[name].update(params=sum(p.numel() for p in model.parameters()), embedding_params=embedding)
        c, u = results[name]["compute"], results[name]["update"]
        rows.append([name, range_text(c), range_text(u), f"{results[name]['params']:,}",
                     f"{embedding:,}"])
    for phase in ("compute", "update"):
        results[f"{phase}_ratio"] = results["slim"][phase]["median"] / results["full"][phase]["median"]
    print_table(["model", "fwd+bwd s", "AdamW s", "params", "embedding params"], rows)
    print(f"slim/full: fwd+bwd {results['compute_ratio']:.3f}, AdamW {results['update_ratio']:.3f}, "
          f"FLOP ratio {flop_ratio:.3f}")
    results["floor_fwd_bwd_s"] = floor
    print("\nforward + backward of one sequence of 8 tokens (the part of a step that does not scale with tokens)")
    print_table(["model", "s"], [[name, range_text(v)] for name, v in floor.items()])
    results["profiled_ms_per_step"] = shares
    print(f"\nprofiled (op self time, ms a step, {PROFILED_PASSES} passes of 3 steps each, taking turns)")
    print_table(["kind of work", "full ms", "slim ms", "slim/full"],
                [[k, f"{shares['full'][k]:.1f}", f"{shares['slim'][k]:.1f}",
                  f"{shares['slim'][k] / shares['full'][k]:.3f}" if shares["full"][k] else "-"]
                 for k in shares["full"]])
    write_json(args.out, results)


def token_free_floor(objectives: dict, vocab: int, rounds: int) -> dict[str, dict]:
    """Forward + backward seconds of each model on one sequence of 8 tokens, 2 of them masked, taking turns: what a
    step costs whatever its tokens (every parameter's gradient written, the dispatch of every op)."""
    tiny = make_batch(vocab, 1, 8, seed=1)
    tiny["labels"][0, :2] = tiny["input_ids"][0, :2]

    def fwd_bwd(objective):
        def run():
            objective.zero_grad(set_to_none=True)
            objective(**tiny)[0].backward()
        return run

    spread = alternate({name: fwd_bwd(o) for name, o in objectives.items()}, rounds)
    return {name: {k: v for k, v in r.items() if k != "runs"} for name, r in spread.items()}


PROFILED_PASSES = 4
KINDS = ("encoder matmuls", "attention", "decoder matmuls", "MLM loss", "AdamW", "other")


def kind_of(op: str, shapes: list, vocab: int) -> str:
    """Which part of the step a profiled op belongs to (the vocabulary size in a shape marks the decoder)."""
    on_vocab = any(vocab in shape for shape in shapes if isinstance(shape, list))
    if op in ("aten::mm", "aten::addmm"):
        return "decoder matmuls" if on_vocab else "encoder matmuls"
    if "scaled_dot_product" in op:
        return "attention"
    if "adamw" in op.lower():
        return "AdamW"
    return "MLM loss" if on_vocab else "other"


def profile_shares(objective, optimizer, batch: dict, vocab: int, steps: int = 3) -> dict[str, float]:
    """Milliseconds a step of each kind of work, from the profiler's self time of every op."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            objective(**batch)[0].backward()
            optimizer.step()
    ms = dict.fromkeys(KINDS, 0.0)
    for event in prof.key_averages(group_by_input_shape=True):
        ms[kind_of(event.key, event.input_shapes, vocab)] += event.self_cpu_time_total / 1e3 / steps
    return ms


if __name__ == "__main__":
    main()
