"""Our trainer (DeepSpeed engine, logging, FLOP accounting) vs a minimal hand-written loop; goal >= 0.97x.

Same model, batches, objective and AdamW; blocks of steps alternate (trainer, loop, trainer, loop).
    python -m benchmarks.trainer_overhead [--layers 2 --steps 15 --out benchmarks/results/trainer_overhead.json]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import BertConfig, BertForMaskedLM

import earlybert  # noqa: F401
from benchmarks.common import print_table, write_json
from benchmarks.step_speed import make_batch
from earlybert.train.distributed import setup_distributed
from earlybert.train.objectives import MaskedLMObjective
from earlybert.train.trainer import Trainer
from earlybert.train.trainer_config import CheckpointConfig, LogConfig, SearchConfig, TrainConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/trainer_overhead.json")
    args = p.parse_args()
    dist = setup_distributed()
    config = BertConfig(num_hidden_layers=args.layers, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    batches = [make_batch(config.vocab_size, args.batch, 128, seed=s) for s in range(args.steps)]
    train = TrainConfig(max_steps=args.steps, micro_batch_size=args.batch, warmup_steps=0, lr=1e-5,
                        deepspeed_config="configs/deepspeed/cpu.json")
    trainer_s, loop_s = [], []
    for _ in range(args.rounds):
        torch.manual_seed(0)
        model = BertForMaskedLM(config)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(model=model, objective_cls=MaskedLMObjective, batches=lambda s: [batches[s]],
                              train=train, search=SearchConfig(enabled=False), search_steps=None,
                              checkpoint=CheckpointConfig(every=10**9),
                              log=LogConfig(progress_bar=False, every=10**9), run_dir=Path(tmp), dist=dist, seq_len=128)
            summary = trainer.fit()
        trainer_s.append(summary["time_s"]["full"] / args.steps)

        torch.manual_seed(0)
        objective = MaskedLMObjective(BertForMaskedLM(config))
        opt = torch.optim.AdamW(objective.parameters(), lr=1e-5)
        start = time.perf_counter()
        for s in range(args.steps):
            opt.zero_grad(set_to_none=True)
            loss, _ = objective(**batches[s])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(objective.parameters(), 1.0)
            opt.step()
        loop_s.append((time.perf_counter() - start) / args.steps)
    t, h = statistics.median(trainer_s), statistics.median(loop_s)
    print_table(["trainer s/step", "hand loop s/step", "trainer throughput / loop"], [[f"{t:.3f}", f"{h:.3f}",
                                                                                        f"{h / t:.3f}"]])
    write_json(args.out, {"trainer_s": t, "loop_s": h, "throughput_ratio": h / t, "layers": args.layers,
                          "batch": args.batch, "steps": args.steps})


if __name__ == "__main__":
    main()
