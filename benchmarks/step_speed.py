"""Training-step benchmarks on BERT-base-shaped layers (hidden 768, 12 heads, FFN 3072, vocab 30522, seq 128).

1. shrink: slim/full step time against the FLOP ratio (paper ratios and a harsher ticket); goal <= 1.05x.
2. search: step time with coefficients attached / without; goal <= 1.02.
3. mlm: our masked-position MLM step vs BertForMaskedLM's full-logit loss, plain PyTorch loop.

    python -m benchmarks.step_speed [--layers 4 --batch 8 --rounds 10 --sections shrink search mlm
        --out benchmarks/results/step_speed.json]
"""

from __future__ import annotations

import argparse

import torch
from transformers import BertConfig, BertForMaskedLM

import earlybert  # noqa: F401
from benchmarks.common import alternate, paired, print_table, range_text, write_json
from earlybert.models.flops import accounting
from earlybert.ticket.coefficients import attach_coefficients
from earlybert.ticket.masks import MaskSpec, random_ticket
from earlybert.ticket.shrink import shrink_model
from earlybert.train.engine import adamw
from earlybert.train.objectives import MaskedLMObjective
from earlybert.train.trainer_config import TrainConfig


def make_batch(vocab: int, batch: int, seq: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (batch, seq), generator=gen)
    labels = torch.where(torch.rand(ids.shape, generator=gen) < 0.15, ids, -100)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def step_fn(objective: torch.nn.Module, batch: dict, full_logits: bool = False):
    """One forward + backward + AdamW step (the trainer's AdamW: fused where torch has it)."""
    opt = adamw([{"params": list(objective.parameters()), "weight_decay": 0.0}], TrainConfig(lr=1e-5))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = objective(**batch).loss if full_logits else objective(**batch)[0]
        loss.backward()
        opt.step()

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--sections", nargs="+", choices=["shrink", "search", "mlm"], default=["shrink", "search", "mlm"])
    p.add_argument("--out", default="benchmarks/results/step_speed.json")
    args = p.parse_args()
    torch.manual_seed(0)
    config = BertConfig(num_hidden_layers=args.layers, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    batch = make_batch(config.vocab_size, args.batch, args.seq)
    full = BertForMaskedLM(config)
    results = {"layers": args.layers, "batch": args.batch, "seq": args.seq}

    if "shrink" in args.sections:
        shrink_vs_flops(full, batch, args.seq, args.rounds, results)
    if "search" in args.sections:
        search_overhead(full, config, batch, args.rounds, results)
    if "mlm" in args.sections:
        mlm_vs_hf(full, config, batch, args.rounds, results)
    write_json(args.out, results)
    print(f"\nwrote {args.out}")


def shrink_vs_flops(full: BertForMaskedLM, batch: dict, seq: int, rounds: int, results: dict) -> None:
    """1. Slim vs full step time against the FLOP ratio (MLM head at masked positions, as we train)."""
    rows = []
    for name, spec in (("paper (heads 1/3, ffn 0.4)", MaskSpec(1 / 3, 0.4)),
                       ("harsh (heads 1/2, ffn 0.6)", MaskSpec(0.5, 0.6))):
        slim = shrink_model(full, random_ticket(full, spec, seed=0))
        spread = alternate({"full": step_fn(MaskedLMObjective(full), batch),
                            "slim": step_fn(MaskedLMObjective(slim), batch)}, rounds)
        t = {k: v["median"] for k, v in spread.items()}
        flop_ratio = (accounting(slim, seq, 0.15)["train_flops_per_token"]
                      / accounting(full, seq, 0.15)["train_flops_per_token"])
        time_ratio = t["slim"] / t["full"]
        rounds_ratio = paired(spread, "slim", "full", 1 / flop_ratio)
        rows.append([name, f"{t['full']:.3f}", f"{t['slim']:.3f}", f"{time_ratio:.3f}", f"{flop_ratio:.3f}",
                     f"{time_ratio / flop_ratio:.3f}",
                     range_text(rounds_ratio)])
        results[f"shrink {name}"] = {"full_s": t["full"], "slim_s": t["slim"], "time_ratio": time_ratio,
                                     "flop_ratio": flop_ratio, "time_over_flop": time_ratio / flop_ratio,
                                     "time_over_flop_paired_rounds": rounds_ratio, "spread_s": spread}
    print("\n1. slim vs full training step (goal: time ratio <= 1.05 x FLOP ratio)")
    print_table(["ticket", "full s", "slim s", "time ratio", "FLOP ratio", "time/FLOP", "paired rounds time/FLOP"],
                rows)


def search_overhead(full: BertForMaskedLM, config: BertConfig, batch: dict, rounds: int, results: dict) -> None:
    """2. The same model's step with and without coefficients attached."""
    searched = BertForMaskedLM(config)
    searched.load_state_dict(full.state_dict())
    attach_coefficients(searched)
    spread = alternate({"plain": step_fn(MaskedLMObjective(full), batch),
                        "coefficients": step_fn(MaskedLMObjective(searched, 1e-4, 1e-4), batch)}, rounds)
    t = {k: v["median"] for k, v in spread.items()}
    rounds_ratio = paired(spread, "coefficients", "plain")
    results["search_overhead"] = {"plain_s": t["plain"], "coefficients_s": t["coefficients"],
                                  "ratio": t["coefficients"] / t["plain"], "ratio_paired_rounds": rounds_ratio,
                                  "spread_s": spread}
    print("\n2. search overhead (goal: <= 1.02)")
    print_table(["plain s", "with coefficients s", "ratio", "paired rounds ratio"],
                [[f"{t['plain']:.3f}", f"{t['coefficients']:.3f}", f"{t['coefficients'] / t['plain']:.3f}",
                  range_text(rounds_ratio)]])


def mlm_vs_hf(full: BertForMaskedLM, config: BertConfig, batch: dict, rounds: int, results: dict) -> None:
    """3. Our masked-position MLM step against Hugging Face's full-logit loss."""
    stock = BertForMaskedLM(config)  # HF's model as it comes (dense lookup gradient), the same weights
    stock.load_state_dict(full.state_dict())
    spread = alternate({"hf": step_fn(stock, batch, full_logits=True), "ours": step_fn(MaskedLMObjective(full), batch)},
                       rounds)
    t = {k: v["median"] for k, v in spread.items()}
    speedup = t["hf"] / t["ours"]
    results["mlm_vs_hf"] = {"hf_s": t["hf"], "ours_s": t["ours"], "throughput_ratio": speedup, "spread_s": spread}
    print("\n3. MLM training step vs BertForMaskedLM (goal: >= 1.5x throughput)")
    print_table(["HF s", "ours s", "throughput x"], [[f"{t['hf']:.3f}", f"{t['ours']:.3f}", f"{speedup:.2f}"]])


if __name__ == "__main__":
    main()
