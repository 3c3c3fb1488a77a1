"""Our trainer (DeepSpeed engine, checks, logging, FLOP accounting, checkpoint) vs a minimal hand-written loop
doing the same work; goal >= 0.97x.

Same model, batches, objective and fused AdamW with clipping. Both are timed by wall clock around the whole
loop (set-up, steps, logging, saving), starting from a model built before the clock starts: random
initialisation is no training step and was the noisiest part of a run. The hand loop also writes a JSON line
per step and, at the end, a checkpoint (model and optimizer state) and the model folder, as the trainer does.
The two alternate for --rounds rounds after a warm-up round, in one process.
With `--turns` the two run at once instead, each in a freshly spawned process, taking turns step by step
(`benchmarks.common.in_turns`): a turn is one step with its JSON line
(and the trainer's checks, accounting and any checkpoint), timed seconds from the other side's, so this VM's slow
swings hit both alike; turns 3 to N-1 are kept (warm-up first; the last holds the final checkpoint), and each round
gives the loop's median turn over the trainer's. Set-up and the final save are then left out of the figure.
    python -m benchmarks.trainer_overhead [--layers 2 --steps 15 --rounds 5] [--turns]
        [--out benchmarks/results/trainer_overhead.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import BertConfig, BertForMaskedLM

import earlybert  # noqa: F401
from benchmarks.common import (
    Turns,
    alternate_runs,
    in_turns,
    kept_turns,
    print_table,
    range_text,
    ratio_summary,
    refuse,
    round_speedups,
    trainer_steps_in_turns,
    write_json,
)
from benchmarks.step_speed import make_batch
from earlybert.train.distributed import setup_distributed
from earlybert.train.objectives import MaskedLMObjective
from earlybert.train.trainer import Trainer
from earlybert.train.trainer_config import CheckpointConfig, LogConfig, SearchConfig, TrainConfig


def workload(layers: int, batch: int, steps: int):
    """The model config, the batches of every step and the trainer's TrainConfig, the same for both sides."""
    config = BertConfig(num_hidden_layers=layers, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    batches = [make_batch(config.vocab_size, batch, 128, seed=s) for s in range(steps)]
    train = TrainConfig(max_steps=steps, micro_batch_size=batch, warmup_steps=0, lr=1e-5,
                        deepspeed_config="configs/deepspeed/cpu.json")
    return config, batches, train


def new_model(config: BertConfig) -> BertForMaskedLM:
    torch.manual_seed(0)
    return BertForMaskedLM(config)


def trainer(layers: int, batch: int, steps: int, folder: Path, turns: Turns | None = None) -> float:
    """Seconds of our Trainer's whole run (set-up, steps, logging, checkpoint, model folder)."""
    config, batches, train = workload(layers, batch, steps)
    model = new_model(config)
    if turns is not None:
        trainer_steps_in_turns(turns)
    dist = setup_distributed()  # once per process; cheap when the group exists
    started = time.perf_counter()
    Trainer(model=model, objective_cls=MaskedLMObjective, batches=lambda s: [batches[s]],
            train=train, search=SearchConfig(enabled=False), search_steps=None,
            checkpoint=CheckpointConfig(every=10**9), log=LogConfig(progress_bar=False, every=10**9),
            run_dir=folder, dist=dist, seq_len=128).fit()
    return time.perf_counter() - started


def hand_loop(layers: int, batch: int, steps: int, folder: Path, turns: Turns | None = None) -> float:
    """Seconds of the same work in a minimal loop: AdamW, clipping, a JSON line per step, checkpoint, model."""
    config, batches, _ = workload(layers, batch, steps)
    model = new_model(config)
    started = time.perf_counter()
    objective = MaskedLMObjective(model)
    opt = torch.optim.AdamW(objective.parameters(), lr=1e-5, fused=True)
    folder.mkdir(parents=True)
    with open(folder / "metrics.jsonl", "w") as log:
        for s in range(steps):
            if turns is not None:
                turns.take()
            opt.zero_grad(set_to_none=True)
            loss, _ = objective(**batches[s])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(objective.parameters(), 1.0)
            opt.step()
            log.write(json.dumps({"step": s + 1, "loss": loss.item()}) + "\n")
            if turns is not None and s < steps - 1:
                turns.hand_over()
    torch.save({"model": objective.state_dict(), "optimizer": opt.state_dict()}, folder / "checkpoint.pt")
    if turns is not None:  # the last turn holds the checkpoint, as the trainer's does
        turns.hand_over()
    objective.model.save_pretrained(folder / "model")
    return time.perf_counter() - started


def in_turns_side(side, layers: int, batch: int, steps: int, folder: Path, turns: Turns) -> list[float]:
    """One side of a `--turns` round in its spawned process: its turns' seconds."""
    side(layers, batch, steps, folder, turns)
    return turns.seconds


def turns_rounds(args, folder: Path) -> dict:
    """`--turns`: per round, the loop's median kept turn over the trainer's."""
    ratios, turns_s = [], {"trainer": [], "hand loop": []}
    for index in range(args.rounds):
        sides = {name: functools.partial(in_turns_side, fn, args.layers, args.batch, args.steps,
                                         folder / f"{name.replace(' ', '-')}-{index}")
                 for name, fn in (("trainer", trainer), ("hand loop", hand_loop))}
        result = in_turns(sides, first=("trainer", "hand loop")[index % 2])
        for name in turns_s:
            turns_s[name].append(result[name])
        ratios.append(statistics.median(kept_turns(result["hand loop"])) /
                      statistics.median(kept_turns(result["trainer"])))
        print(f"round {index + 1}/{args.rounds}: trainer throughput / loop {ratios[-1]:.3f}", flush=True)
    summary = ratio_summary(ratios)
    print(f"per round: {range_text(summary)}")
    return {"turns_s": turns_s, "throughput_ratio_rounds": summary | {"rounds": ratios},
            "kept_turns": f"3-{args.steps - 1}"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--turns", action="store_true", help="both at once, taking turns step by step (see above)")
    p.add_argument("--out", default="benchmarks/results/trainer_overhead.json")
    args = p.parse_args()
    if args.turns and args.steps < 4:
        refuse("--turns needs --steps 4 or more: two warm-up turns, one kept, the last left out")
    setting = {"layers": args.layers, "batch": args.batch, "steps": args.steps, "rounds": args.rounds}
    if args.turns:
        with tempfile.TemporaryDirectory() as tmp:
            write_json(args.out, {"mode": "turns", **turns_rounds(args, Path(tmp)), **setting})
        return
    setup_distributed()
    runs = {"trainer": functools.partial(trainer, args.layers, args.batch, args.steps),
            "hand loop": functools.partial(hand_loop, args.layers, args.batch, args.steps)}
    with tempfile.TemporaryDirectory() as tmp:
        times = alternate_runs(runs, args.rounds, Path(tmp))
    t, h = statistics.median(times["trainer"]), statistics.median(times["hand loop"])
    ratio_range = [min(times["hand loop"]) / max(times["trainer"]), max(times["hand loop"]) / min(times["trainer"])]
    rounds = round_speedups(times, "hand loop", "trainer")  # the trainer's throughput over the loop's, per round
    print_table(["trainer s", "hand loop s", "trainer throughput / loop", "range", "per round"],
                [[f"{t:.2f}", f"{h:.2f}", f"{h / t:.3f}", f"{ratio_range[0]:.3f}-{ratio_range[1]:.3f}",
                  range_text(rounds)]])
    write_json(args.out, {"trainer_s": times["trainer"], "loop_s": times["hand loop"], "trainer_median_s": t,
                          "loop_median_s": h, "throughput_ratio": h / t, "ratio_range": ratio_range,
                          "throughput_ratio_rounds": rounds,
                          "mode": "whole runs", **setting})


if __name__ == "__main__":
    main()
