"""Our trainer (DeepSpeed engine, checks, logging, FLOP accounting, checkpoint) vs a minimal hand-written loop
doing the same work; goal >= 0.97x.

Same model, batches, objective and fused AdamW with clipping. Both are timed by wall clock around the whole
loop (set-up, steps, logging, saving), starting from a model built before the clock starts: random
initialisation is no training step and was the noisiest part of a run. The hand loop also writes a JSON line
per step and, at the end, a checkpoint (model and optimizer state) and the model folder, as the trainer does.
The two alternate for --rounds rounds after a warm-up round, in one process: the glibc malloc thresholds the
trainer raises (`train.keep_host_memory`) then hold for the hand loop too, so what is measured is the
trainer's other overhead.
    python -m benchmarks.trainer_overhead [--layers 2 --steps 15 --rounds 5]
        [--out benchmarks/results/trainer_overhead.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import BertConfig, BertForMaskedLM

import earlybert  # noqa: F401
from benchmarks.common import alternate_runs, print_table, range_text, round_speedups, write_json
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
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/trainer_overhead.json")
    args = p.parse_args()
    dist = setup_distributed()
    config = BertConfig(num_hidden_layers=args.layers, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    batches = [make_batch(config.vocab_size, args.batch, 128, seed=s) for s in range(args.steps)]
    train = TrainConfig(max_steps=args.steps, micro_batch_size=args.batch, warmup_steps=0, lr=1e-5,
                        deepspeed_config="configs/deepspeed/cpu.json")

    def new_model() -> BertForMaskedLM:
        torch.manual_seed(0)
        return BertForMaskedLM(config)

    def trainer(folder: Path) -> float:
        model = new_model()
        started = time.perf_counter()
        Trainer(model=model, objective_cls=MaskedLMObjective, batches=lambda s: [batches[s]],
                train=train, search=SearchConfig(enabled=False), search_steps=None,
                checkpoint=CheckpointConfig(every=10**9), log=LogConfig(progress_bar=False, every=10**9),
                run_dir=folder, dist=dist, seq_len=128).fit()
        return time.perf_counter() - started

    def hand_loop(folder: Path) -> float:
        model = new_model()
        started = time.perf_counter()
        objective = MaskedLMObjective(model)
        objective.tied_gradient_in_place()  # as the trainer does under fp32 ZeRO-0: the same work
        opt = torch.optim.AdamW(objective.parameters(), lr=1e-5, fused=True)
        folder.mkdir(parents=True)
        with open(folder / "metrics.jsonl", "w") as log:
            for s in range(args.steps):
                opt.zero_grad(set_to_none=True)
                loss, _ = objective(**batches[s])
                loss.backward()
                torch.nn.utils.clip_grad_norm_(objective.parameters(), 1.0)
                opt.step()
                log.write(json.dumps({"step": s + 1, "loss": loss.item()}) + "\n")
        torch.save({"model": objective.state_dict(), "optimizer": opt.state_dict()}, folder / "checkpoint.pt")
        objective.model.save_pretrained(folder / "model")
        return time.perf_counter() - started

    with tempfile.TemporaryDirectory() as tmp:
        times = alternate_runs({"trainer": trainer, "hand loop": hand_loop}, args.rounds, Path(tmp))
    t, h = statistics.median(times["trainer"]), statistics.median(times["hand loop"])
    ratio_range = [min(times["hand loop"]) / max(times["trainer"]), max(times["hand loop"]) / min(times["trainer"])]
    rounds = round_speedups(times, "hand loop", "trainer")  # the trainer's throughput over the loop's, per round
    print_table(["trainer s", "hand loop s", "trainer throughput / loop", "range", "per round"],
                [[f"{t:.2f}", f"{h:.2f}", f"{h / t:.3f}", f"{ratio_range[0]:.3f}-{ratio_range[1]:.3f}",
                  range_text(rounds)]])
    write_json(args.out, {"trainer_s": times["trainer"], "loop_s": times["hand loop"], "trainer_median_s": t,
                          "loop_median_s": h, "throughput_ratio": h / t, "ratio_range": ratio_range,
                          "throughput_ratio_rounds": rounds,
                          "layers": args.layers, "batch": args.batch, "steps": args.steps, "rounds": args.rounds})


if __name__ == "__main__":
    main()
