"""`make demo`: pretrain with ticket search on pydoc text, shrink, train on, fine-tune the slim model, report."""

from __future__ import annotations

import json
import re
import shutil
import statistics
from importlib.resources import files
from pathlib import Path

from earlybert.config import load_config
from earlybert.models.checkpoint import check_output_dir

STATEMENTS = {"assert", "assignment", "async", "augassign", "break", "class", "compound", "continue", "del", "else",
              "for", "function", "global", "if", "import", "nonlocal", "pass", "raise", "return", "try", "while",
              "with", "yield"}
EXPRESSIONS = {"atom-identifiers", "atom-literals", "attribute-references", "await", "binary", "bitwise", "booleans",
               "calls", "comparisons", "conversions", "exprlists", "formatstrings", "in", "lambda", "operator-summary",
               "power", "shifting", "slicings", "subscriptions", "unary"}
TYPES = {"attribute-access", "bltin-code-objects", "bltin-ellipsis-object", "bltin-null-object", "bltin-type-objects",
         "callable-types", "context-managers", "customization", "dict", "floating", "imaginary", "integers", "lists",
         "numbers", "numeric-types", "objects", "sequence-types", "specialattrs", "specialnames", "string-methods",
         "strings", "truth", "types", "typesfunctions", "typesmapping", "typesmethods", "typesmodules", "typesseq",
         "typesseq-mutable"}
LABELS = ("statements", "expressions", "types and objects")


def write_demo_data(folder: Path) -> tuple[Path, Path]:
    """The pydoc topics as a corpus (one document per topic) and as a 3-class paragraph task (TSV)."""
    from pydoc_data.topics import topics

    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "pydoc.txt"
    corpus.write_text("\n\n".join(re.sub(r"\n\s*\n", "\n", text.strip()) for _, text in sorted(topics.items())),
                      encoding="utf-8")
    task = folder / "pydoc-topics"
    task.mkdir(exist_ok=True)
    rows = {"train": [], "dev": []}
    for name in sorted(topics):
        group = next((i for i, g in enumerate((STATEMENTS, EXPRESSIONS, TYPES)) if name in g), None)
        if group is None:
            continue
        for k, para in enumerate(p for p in re.split(r"\n\s*\n", topics[name]) if len(p.split()) >= 8):
            text = " ".join(para.split())[:400].replace("\t", " ")
            rows["dev" if k % 5 == 4 else "train"].append(f"{text}\t{group}")
    for split, lines in rows.items():
        (task / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(lines) + "\n", encoding="utf-8")
    (task / "labels.txt").write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    return corpus, task


def summary_table(pre: dict, base: dict, ft: dict, rows: list[dict], base_rows: list[dict]) -> tuple[list[str], dict]:
    """The console table and the numbers behind it (written to demo.json); every time is measured."""
    full, slim = pre["full"], pre["slim"]
    t, n = pre["time_s"], pre["steps_in"]
    train_time = t.get("search", 0) + t.get("shrink", 0) + t.get("slim", 0)
    full_time = base["time_s"]["full"]
    numbers = {
        "fired_at": pre["ticket_step"], "fired": pre["fired"],
        "mlm_loss_last20": statistics.mean(r["loss"] for r in rows[-20:]),
        "mlm_accuracy_last20": statistics.mean(r["accuracy"] for r in rows[-20:]),
        "full_mlm_loss_last20": statistics.mean(r["loss"] for r in base_rows[-20:]),
        "full_mlm_accuracy_last20": statistics.mean(r["accuracy"] for r in base_rows[-20:]),
        "downstream_accuracy": ft["eval"]["accuracy"],
        "pretrain_time_s": train_time, "full_pretrain_time_s": full_time,
        "time_saved_vs_full": 1 - train_time / full_time,
        "flops_saved_vs_full": 1 - sum(r["flops_per_step"] for r in rows) / sum(r["flops_per_step"] for r in base_rows),
    }
    lines = [
        "",
        "EarlyBERT demo summary (every time measured in this run: the full model was trained too)",
        f"{'':34}{'full':>14}{'EarlyBERT':>14}",
        f"{'parameters (final)':34}{full['params']:>14,}{slim['params']:>14,}",
        f"{'training FLOPs per token (final)':34}{full['train_flops_per_token']:>14,}"
        f"{slim['train_flops_per_token']:>14,}",
        f"{'attention heads':34}{sum(full['layer_heads']):>14}{sum(slim['layer_heads']):>14}",
        f"{'FFN neurons':34}{sum(full['layer_ffn']):>14}{sum(slim['layer_ffn']):>14}",
        f"{'pretraining steps':34}{base['steps']:>14}{pre['steps']:>14}",
        f"{'pretraining seconds':34}{full_time:>14.1f}{train_time:>14.1f}",
        f"{'MLM loss, last 20 steps':34}{numbers['full_mlm_loss_last20']:>14.3f}{numbers['mlm_loss_last20']:>14.3f}",
        f"{'MLM accuracy, last 20 steps':34}{numbers['full_mlm_accuracy_last20']:>14.3f}"
        f"{numbers['mlm_accuracy_last20']:>14.3f}",
        "",
        f"EarlyBERT stages: search {n.get('search', 0)} steps {t.get('search', 0):.1f}s (full model + coefficients), "
        f"shrink {t.get('shrink', 0):.2f}s, slim {n.get('slim', 0)} steps {t.get('slim', 0):.1f}s",
        f"ticket drawn at step {pre['ticket_step']} ({'early bird fired' if pre['fired'] else 'search limit'})",
        f"slim fine-tuning: {ft['steps']} steps in {ft['train_time_s']:.1f}s; dev accuracy (pydoc topic groups, "
        f"3 classes): {numbers['downstream_accuracy']:.3f}",
        f"pretraining time saved against the full model (one run each, this machine, after an untimed warm-up): "
        f"{100 * numbers['time_saved_vs_full']:.0f}%; training FLOPs saved (counted): "
        f"{100 * numbers['flops_saved_vs_full']:.0f}%",
    ]
    return lines, numbers


def run_demo(output: str = "runs/demo", overwrite: bool = False, pretrain_overrides: list[str] = (),
             finetune_overrides: list[str] = ()) -> dict:
    """Run the whole pipeline into `output` (the full baseline in output/full-baseline) and write its report."""
    from transformers.utils import logging as hf_logging

    from earlybert.recipes import finetune, pretrain
    from earlybert.report.html import BASELINE_DIR, write_report

    out = Path(output)
    check_output_dir(out, overwrite)
    if out.exists():
        shutil.rmtree(out)
    hf_logging.set_verbosity_error()  # the task head is meant to be new: no load reports in the demo's console
    corpus, task = write_demo_data(out.parent / f".{out.name}-data")
    configs = files("earlybert") / "configs"
    common = [f"data.train_files={corpus}", f"data.cache_dir={out.parent / '.cache'}", *pretrain_overrides]

    def pretraining(folder: Path, *extra: str) -> dict:
        return pretrain.run(load_config(pretrain.PretrainConfig, configs / "pretrain/demo.yaml",
                                        [f"output_dir={folder}", *common, *extra]))

    # An untimed warm-up (tokenizer, corpus, kernels), so that neither timed run is the process's first.
    pretraining(out / "warmup", "search.enabled=false", "train.max_steps=10", "train.warmup_steps=1")
    shutil.rmtree(out / "warmup")
    pre = pretraining(out)
    base = pretraining(out / BASELINE_DIR, "search.enabled=false")
    ft = finetune.run(load_config(finetune.FinetuneConfig, configs / "finetune/demo.yaml",
                                  [f"model={out / 'model'}", f"data_dir={task}", f"output_dir={out / 'finetune'}",
                                   *finetune_overrides]))
    rows, base_rows = (read_rows(folder / "metrics.jsonl") for folder in (out, out / BASELINE_DIR))
    lines, numbers = summary_table(pre, base, ft, rows, base_rows)
    (out / "demo.json").write_text(json.dumps({"demo": numbers, "pretrain": pre, "full_pretrain": base,
                                               "finetune_eval": ft["eval"]}, indent=1))
    report = write_report(out)
    print("\n".join(lines))
    print(f"\nreport: {report} (PNGs beside it); fine-tuning run in {out / 'finetune'}")
    return numbers


def read_rows(path: Path) -> list[dict]:
    """The rows of a metrics.jsonl."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
