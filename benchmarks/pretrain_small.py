"""The pretraining claim, reproduced small: the same 4-layer BERT pretrained from scratch on ../shared/data/corpus
three ways (full, EarlyBERT, a random ticket at the same ratios; same step budget), MLM loss against measured
training time, then each pretrained model fine-tuned on ../shared/data/bbc-topic (dev accuracy over seeds).

    python -m benchmarks.pretrain_small [--steps 400 --ft-seeds 1 2 3 --out benchmarks/results/pretrain_small.json]

The runs see under one epoch of the corpus, so the training loss of the last steps is measured on blocks
no model has seen before: it is a held-out loss.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import print_table, refuse, write_json

SHARED = Path(__file__).resolve().parents[2] / "shared/data"
CONFIG = "configs/pretrain/small.yaml"


def pretrain(out: Path, steps: int, extra: list[str]) -> dict:
    corpus = ",".join(str(SHARED / "corpus" / f) for f in ("sotu.txt.gz", "brown.txt.gz", "mobydick.txt.gz"))
    cmd = [sys.executable, "-m", "earlybert", "pretrain", "--config", CONFIG, f"data.train_files=[{corpus}]",
           f"output_dir={out}", f"train.max_steps={steps}", "log.progress_bar=false", *extra]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"summary": summary, "rows": rows, "time_s": sum(summary["time_s"].values()),
            "final_loss": statistics.mean(r["loss"] for r in rows[-20:]),
            "final_accuracy": statistics.mean(r["accuracy"] for r in rows[-20:])}


def random_ticket_file(path: Path) -> None:
    """A random ticket at the config's ratios for the config's model shape."""
    from transformers import BertConfig, BertForMaskedLM

    from earlybert.config import load_config
    from earlybert.recipes.pretrain import PretrainConfig
    from earlybert.ticket.masks import random_ticket

    cfg = load_config(PretrainConfig, CONFIG)
    m = cfg.model
    model = BertForMaskedLM(BertConfig(vocab_size=m.vocab_size, hidden_size=m.hidden_size,
                                       num_hidden_layers=m.num_layers, num_attention_heads=m.num_heads,
                                       intermediate_size=m.intermediate_size))
    random_ticket(model, cfg.search.spec(), seed=cfg.seed).save(path)


def finetune(model: Path, out: Path, mode: str, seed: int) -> float:
    cmd = [sys.executable, "-m", "earlybert", "finetune", "glue", "--config", "configs/finetune/bbc-topic.yaml",
           f"model={model}", f"data_dir={SHARED / 'bbc-topic'}", f"mode={mode}", f"output_dir={out}",
           f"seed={seed}", "train.lr=5e-4", "epochs=3", "log.progress_bar=false"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads((out / "eval_results.json").read_text())["accuracy"]


def main() -> None:
    from earlybert.report.html import plot_loss_against_time

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--ft-seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--out", default="benchmarks/results/pretrain_small.json")
    args = p.parse_args()
    if not SHARED.is_dir():
        refuse(f"{SHARED} is missing: this benchmark needs ../shared/data (corpus and bbc-topic)")
    results, rows = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        random_ticket_file(tmp / "random-ticket.json")
        ways = {"full": ["search.enabled=false"], "earlybert": [],
                "random": [f"search.ticket={tmp / 'random-ticket.json'}"]}
        for way, extra in ways.items():
            run = pretrain(tmp / way, args.steps, extra)
            accs = [finetune(tmp / way / "model", tmp / f"ft-{way}-{s}", "full" if way == "full" else "slim", s)
                    for s in args.ft_seeds]
            results[way] = {"pretrain_time_s": run["time_s"], "final_mlm_loss": run["final_loss"],
                            "final_mlm_accuracy": run["final_accuracy"], "ticket_step": run["summary"]["ticket_step"],
                            "fired": run["summary"]["fired"], "params": run["summary"]["slim"]["params"],
                            "bbc_accuracy": accs, "bbc_mean": statistics.mean(accs),
                            "bbc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "rows": run["rows"]}
        plot_loss_against_time({k: v["rows"] for k, v in results.items()}, Path(args.out).with_suffix(".png"))
    full = results["full"]
    for way, r in results.items():
        r["time_saved"] = 1 - r["pretrain_time_s"] / full["pretrain_time_s"]
        r["loss_gap"] = r["final_mlm_loss"] - full["final_mlm_loss"]
        rows.append([way, f"{r['pretrain_time_s']:.1f}", f"{100 * r['time_saved']:.1f}%",
                     f"{r['final_mlm_loss']:.3f}", f"{r['loss_gap']:+.3f}", str(r["ticket_step"]),
                     f"{100 * r['bbc_mean']:.2f} ± {100 * r['bbc_std']:.2f}"])
    print_table(["way", "pretrain s", "saved", "MLM loss (last 20)", "vs full", "ticket step", "bbc-topic dev acc %"],
                rows)
    for r in results.values():
        r.pop("rows")
    write_json(args.out, {"steps": args.steps, "config": CONFIG, "ft_seeds": args.ft_seeds, **results})


if __name__ == "__main__":
    main()
