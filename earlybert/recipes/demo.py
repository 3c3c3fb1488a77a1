"""`make demo`: pretrain with ticket search on pydoc text, shrink, train on, fine-tune the slim model, report."""

from __future__ import annotations

import json
import re
import shutil
import statistics
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


def summary_table(pre: dict, ft: dict, rows: list[dict]) -> tuple[list[str], dict]:
    """The console table and the numbers behind it (also merged into summary.json)."""
    full, slim = pre["full"], pre["slim"]
    t, n = pre["time_s"], pre["steps_in"]
    full_step = pre["step_time_s"]["search"]  # the full model (plus coefficients), measured in the search
    train_time = t.get("search", 0) + t.get("shrink", 0) + t.get("slim", 0)
    full_time = full_step * pre["steps"]
    tail = rows[-20:]
    numbers = {
        "fired_at": pre["ticket_step"], "fired": pre["fired"],
        "mlm_loss_last20": statistics.mean(r["loss"] for r in tail),
        "mlm_accuracy_last20": statistics.mean(r["accuracy"] for r in tail),
        "downstream_accuracy": ft["eval"]["accuracy"],
        "pretrain_time_s": train_time, "full_model_time_estimate_s": full_time,
        "time_saved_vs_full": 1 - train_time / full_time,
    }
    lines = [
        "",
        "EarlyBERT demo summary",
        f"{'':34}{'full':>14}{'slim':>14}",
        f"{'parameters':34}{full['params']:>14,}{slim['params']:>14,}",
        f"{'training FLOPs per token':34}{full['train_flops_per_token']:>14,}{slim['train_flops_per_token']:>14,}",
        f"{'attention heads':34}{sum(full['layer_heads']):>14}{sum(slim['layer_heads']):>14}",
        f"{'FFN neurons':34}{sum(full['layer_ffn']):>14}{sum(slim['layer_ffn']):>14}",
        f"{'seconds per training step':34}{full_step:>14.3f}{pre['step_time_s']['slim']:>14.3f}",
        "",
        f"{'stage':34}{'steps':>14}{'seconds':>14}",
        f"{'search (full model + coefficients)':34}{n.get('search', 0):>14}{t.get('search', 0):>14.1f}",
        f"{'shrink':34}{'':>14}{t.get('shrink', 0):>14.2f}",
        f"{'slim pretraining':34}{n.get('slim', 0):>14}{t.get('slim', 0):>14.1f}",
        f"{'slim fine-tuning':34}{ft['steps']:>14}{ft['train_time_s']:>14.1f}",
        "",
        f"ticket drawn at step {pre['ticket_step']} ({'early bird fired' if pre['fired'] else 'search limit'})",
        f"MLM loss / accuracy, last 20 steps: {numbers['mlm_loss_last20']:.3f} / {numbers['mlm_accuracy_last20']:.3f}",
        f"downstream dev accuracy (pydoc topic groups, 3 classes): {numbers['downstream_accuracy']:.3f}",
        f"pretraining time {train_time:.1f}s vs {full_time:.1f}s for the full model over the same "
        f"{pre['steps']} steps (measured step time): {100 * numbers['time_saved_vs_full']:.0f}% saved",
    ]
    return lines, numbers


def run_demo(output: str = "runs/demo", overwrite: bool = False, pretrain_overrides: list[str] = (),
             finetune_overrides: list[str] = ()) -> dict:
    """Run the whole pipeline into `output` and write its report; return the merged summary."""
    from earlybert.recipes import finetune, pretrain
    from earlybert.report.html import write_report

    out = Path(output)
    check_output_dir(out, overwrite)
    if out.exists():
        shutil.rmtree(out)
    corpus, task = write_demo_data(out.parent / f".{out.name}-data")
    repo = Path(__file__).resolve().parents[2]
    pre_cfg = load_config(pretrain.PretrainConfig, repo / "configs/pretrain/demo.yaml",
                          [f"output_dir={out}", f"data.train_files={corpus}", f"data.cache_dir={out.parent / '.cache'}",
                           f"train.deepspeed_config={repo / 'configs/deepspeed/cpu.json'}", *pretrain_overrides])
    pre = pretrain.run(pre_cfg)
    ft_cfg = load_config(finetune.FinetuneConfig, repo / "configs/finetune/demo.yaml",
                         [f"model={out / 'model'}", f"data_dir={task}", f"output_dir={out / 'finetune'}",
                          f"train.deepspeed_config={repo / 'configs/deepspeed/cpu.json'}", *finetune_overrides])
    ft = finetune.run(ft_cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    lines, numbers = summary_table(pre, ft, rows)
    summary = {**pre, "demo": numbers, "eval": ft["eval"]}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    report = write_report(out)
    print("\n".join(lines))
    print(f"\nreport: {report} (PNGs beside it); fine-tuning run in {out / 'finetune'}")
    return summary
