"""Where a training step's time goes, full vs slim: forward+backward and the AdamW update timed apart.

    python -m benchmarks.step_breakdown   (4 BERT-base layers, vocab 30522, batch 8 x 128)
"""

from __future__ import annotations

import statistics
import time

import torch
from transformers import BertConfig, BertForMaskedLM

import earlybert  # noqa: F401
from benchmarks.common import print_table
from benchmarks.step_speed import make_batch
from earlybert.ticket.masks import MaskSpec, random_ticket
from earlybert.ticket.shrink import shrink_model
from earlybert.train.objectives import MaskedLMObjective


def main() -> None:
    torch.manual_seed(0)
    config = BertConfig(num_hidden_layers=4, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    full = BertForMaskedLM(config)
    slim = shrink_model(full, random_ticket(full, MaskSpec(1 / 3, 0.4), seed=0))
    batch = make_batch(config.vocab_size, 8, 128)
    rows = []
    for name, model in (("full", full), ("slim", slim)):
        objective = MaskedLMObjective(model)
        opt = torch.optim.AdamW(objective.parameters(), lr=1e-5)
        compute, update = [], []
        for i in range(6):
            opt.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            objective(**batch)[0].backward()
            t1 = time.perf_counter()
            opt.step()
            if i >= 2:  # warm-up
                compute.append(t1 - t0)
                update.append(time.perf_counter() - t1)
        embedding = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
        rows.append([name, f"{statistics.median(compute):.3f}", f"{statistics.median(update):.3f}",
                     f"{sum(p.numel() for p in model.parameters()):,}", f"{embedding:,}"])
    print_table(["model", "fwd+bwd s", "AdamW s", "params", "embedding params"], rows)


if __name__ == "__main__":
    main()
