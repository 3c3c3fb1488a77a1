"""Training-step benchmarks on BERT-base-shaped layers (hidden 768, 12 heads, FFN 3072, vocab 30522, seq 128).

1. shrink: slim/full step time against the FLOP ratio (paper ratios and a harsher ticket); goal <= 1.05x.
2. search: step time with coefficients attached / without; goal <= 1.02.
3. mlm: our masked-position MLM step vs BertForMaskedLM's full-logit loss, plain PyTorch loop; goal >= 1.5x.
4. rows: our MLM step with the last layer at the masked rows only vs at every row, against the FLOP ratio.
5. kept: our MLM step with the tied decoder's gradient written into a buffer kept across steps vs a new one.
6. loss: the MLM loss alone (forward, argmax, backward) on the masked rows' logits, ours vs torch's.

    python -m benchmarks.step_speed [--layers 4 --batch 8 --rounds 10 --sections shrink search mlm rows kept loss
        --default-host-memory --out benchmarks/results/step_speed.json]

The process keeps freed host memory as the trainer does (`train.keep_host_memory`, glibc only), for every variant
alike; `--default-host-memory` leaves glibc's malloc thresholds as they are.
"""

from __future__ import annotations

import argparse
import resource

import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForMaskedLM

import earlybert  # noqa: F401
from benchmarks.common import alternate, paired, print_table, range_text, write_json
from earlybert.models.flops import ModelShape, accounting, training_flops_per_token
from earlybert.models.last_layer_rows import disable_last_layer_rows
from earlybert.ticket.coefficients import attach_coefficients
from earlybert.ticket.masks import MaskSpec, random_ticket
from earlybert.ticket.shrink import shrink_model
from earlybert.train.engine import adamw
from earlybert.train.host_memory import keep_freed_host_memory
from earlybert.train.losses import cross_entropy_and_argmax
from earlybert.train.objectives import MaskedLMObjective
from earlybert.train.trainer_config import TrainConfig


def make_batch(vocab: int, batch: int, seq: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (batch, seq), generator=gen)
    labels = torch.where(torch.rand(ids.shape, generator=gen) < 0.15, ids, -100)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def step_fn(objective: torch.nn.Module, batch: dict, full_logits: bool = False):
    """One forward + backward + AdamW step (the trainer's AdamW: fused where torch has it; our objectives with
    the trainer's in-place lookup gradient for tied embeddings, as under fp32 ZeRO-0)."""
    if not full_logits:
        objective.tied_gradient_in_place()
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
    p.add_argument("--sections", nargs="+", choices=["shrink", "search", "mlm", "rows", "kept", "loss"],
                   default=["shrink", "search", "mlm", "rows", "kept", "loss"])
    p.add_argument("--default-host-memory", action="store_true",
                   help="leave glibc's malloc thresholds at their defaults (the trainer raises them)")
    p.add_argument("--out", default="benchmarks/results/step_speed.json")
    args = p.parse_args()
    host_memory_kept = False if args.default_host_memory else keep_freed_host_memory()
    torch.manual_seed(0)
    config = BertConfig(num_hidden_layers=args.layers, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    batch = make_batch(config.vocab_size, args.batch, args.seq)
    full = BertForMaskedLM(config)
    results = {"layers": args.layers, "batch": args.batch, "seq": args.seq, "host_memory_kept": host_memory_kept}

    if "shrink" in args.sections:
        shrink_vs_flops(full, batch, args.seq, args.rounds, results)
    if "search" in args.sections:
        search_overhead(full, config, batch, args.rounds, results)
    if "mlm" in args.sections:
        mlm_vs_hf(full, config, batch, args.rounds, results)
    if "rows" in args.sections:
        last_layer_at_rows(full, config, batch, args.seq, args.rounds, results)
    if "kept" in args.sections:
        kept_decoder_gradient(full, config, batch, args.rounds, results)
    if "loss" in args.sections:
        masked_lm_loss(config, batch, args.rounds, results)
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


def last_layer_at_rows(full: BertForMaskedLM, config: BertConfig, batch: dict, seq: int, rounds: int,
                       results: dict) -> None:
    """4. The same MLM step with the last layer at the masked rows (as we train) and at every row."""
    every = BertForMaskedLM(config)
    every.load_state_dict(full.state_dict())
    whole = MaskedLMObjective(every)
    disable_last_layer_rows(every)
    spread = alternate({"masked rows": step_fn(MaskedLMObjective(full), batch), "every row": step_fn(whole, batch)},
                       rounds)
    t = {k: v["median"] for k, v in spread.items()}
    fraction = float((batch["labels"] != -100).float().mean())
    shape = ModelShape.of(full)
    flop_ratio = (training_flops_per_token(shape, seq, fraction, fraction)
                  / training_flops_per_token(shape, seq, fraction))
    results["last_layer_rows"] = {"masked_rows_s": t["masked rows"], "every_row_s": t["every row"],
                                  "speed": t["every row"] / t["masked rows"], "flop_ratio": flop_ratio,
                                  "spread_s": spread}
    print("\n4. last layer at the masked rows vs at every row (our MLM step)")
    print_table(["every row s", "masked rows s", "speed x", "FLOP ratio (rows / every)"],
                [[f"{t['every row']:.3f}", f"{t['masked rows']:.3f}", f"{t['every row'] / t['masked rows']:.3f}",
                  f"{flop_ratio:.3f}"]])


def kept_decoder_gradient(full: BertForMaskedLM, config: BertConfig, batch: dict, rounds: int, results: dict) -> None:
    """5. The same MLM step with the tied decoder's weight gradient in a kept buffer (as we train) and new each
    step (autograd's), with the minor page faults of one step of each."""
    other = BertForMaskedLM(config)
    other.load_state_dict(full.state_dict())
    steps = {"kept": step_fn(MaskedLMObjective(full), batch), "new each step": step_fn(MaskedLMObjective(other), batch)}
    other.get_output_embeddings().__class__ = torch.nn.Linear  # autograd's gradient: a fresh tensor every step
    spread = alternate(steps, rounds)
    faults = {}
    for name, step in steps.items():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        step()
        faults[name] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    t = {k: v["median"] for k, v in spread.items()}
    rounds_speed = paired(spread, "new each step", "kept")
    results["kept_decoder_gradient"] = {"kept_s": t["kept"], "new_each_step_s": t["new each step"],
                                        "speed": t["new each step"] / t["kept"], "speed_paired_rounds": rounds_speed,
                                        "minor_page_faults": faults, "spread_s": spread}
    print("\n5. tied decoder gradient in a kept buffer vs a new tensor each step (our MLM step)")
    print_table(["new each step s", "kept s", "speed x", "paired rounds speed x", "page faults new / kept"],
                [[f"{t['new each step']:.3f}", f"{t['kept']:.3f}", f"{t['new each step'] / t['kept']:.3f}",
                  range_text(rounds_speed),
                  f"{faults['new each step']} / {faults['kept']}"]])


def masked_lm_loss(config: BertConfig, batch: dict, rounds: int, results: dict) -> None:
    """6. The loss on the masked rows' logits alone: forward, argmax for accuracy, backward; ours vs torch's
    log_softmax + nll_loss + argmax. Ten calls a timing (one call is a few milliseconds)."""
    rows = int((batch["labels"] != -100).sum())
    logits = torch.randn(rows, config.vocab_size, generator=torch.Generator().manual_seed(0)) * 4
    targets = batch["labels"][batch["labels"] != -100]

    def torchs() -> torch.Tensor:
        x = logits.clone().requires_grad_()
        F.cross_entropy(x, targets, reduction="sum").backward()
        return x.argmax(-1)

    def ours() -> torch.Tensor:
        x = logits.clone().requires_grad_()
        loss, predicted = cross_entropy_and_argmax(x, targets)
        loss.backward()
        return predicted

    spread = alternate({"torch": lambda: [torchs() for _ in range(10)], "ours": lambda: [ours() for _ in range(10)]},
                       rounds)
    t = {k: v["median"] / 10 for k, v in spread.items()}
    rounds_speed = paired(spread, "torch", "ours")
    results["masked_lm_loss"] = {"rows": rows, "torch_ms": t["torch"] * 1e3, "ours_ms": t["ours"] * 1e3,
                                 "speed": t["torch"] / t["ours"], "speed_paired_rounds": rounds_speed,
                                 "spread_s_per_10_calls": spread}
    print(f"\n6. MLM loss alone on {rows} masked rows x {config.vocab_size} (forward, argmax, backward)")
    print_table(["torch ms", "ours ms", "speed x", "paired rounds speed x"],
                [[f"{t['torch'] * 1e3:.2f}", f"{t['ours'] * 1e3:.2f}", f"{t['torch'] / t['ours']:.3f}",
                  range_text(rounds_speed)]])


if __name__ == "__main__":
    main()
