"""DSEE against full fine-tuning for the same epochs, per task over seeds (MiniLM-L6 on bbc-topic and spam-subjects).

    python -m benchmarks.dsee --model MINILM_DIR [--out runs/dsee] [--seeds 1 2 3] [--tasks bbc-topic spam-subjects] \
        [--shared ../shared/data] [KEY=VALUE ...]

Full runs use configs/finetune/glue.yaml, DSEE runs configs/finetune/dsee.yaml (plus any KEY=VALUE overrides), both
3 epochs on the tasks cut as in the payoff benchmark; finished runs are skipped. OUT/dsee.json and OUT/dsee.md hold
per task: dev accuracy (mean, std, worst seed) of both, the parameters that trained, the heads removed, and the final
model's parameters and forward FLOPs per token against the full model's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.common import offline_environment, refuse, write_json
from benchmarks.payoff_tasks import SHARED_TASKS, build_shared_tasks
from earlybert.report.machine import machine_info

CONFIGS = {"full": "configs/finetune/glue.yaml", "dsee": "configs/finetune/dsee.yaml"}
TASK_OVERRIDES = {"bbc-topic": ["max_seq_len=64"]}  # as the payoff benchmark: BBC articles cut at 64 tokens


def run_once(mode: str, task: str, data: Path, seed: int, args: argparse.Namespace) -> dict:
    """One fine-tuning run unless its summary.json exists; returns the summary."""
    out = Path(args.out) / task / mode / f"seed{seed}"
    if not (out / "summary.json").is_file():
        extra = args.overrides if mode == "dsee" else []
        command = [sys.executable, "-m", "earlybert", "finetune", "glue", "--config", CONFIGS[mode], "task=custom",
                   "text_columns=[sentence]", "label_column=label", f"data_dir={data}", f"model={args.model}",
                   f"seed={seed}", f"output_dir={out}", "overwrite=true", *TASK_OVERRIDES.get(task, []), *extra]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            refuse(f"{mode} on {task}, seed {seed} failed:\n{result.stderr[-2000:]}")
    return json.loads((out / "summary.json").read_text())


def task_row(task: str, runs: dict[str, list[dict]]) -> dict:
    """Accuracy of full and DSEE over seeds, and what DSEE trained and removed."""
    acc = {mode: [r["eval"]["accuracy"] for r in rs] for mode, rs in runs.items()}
    last = runs["dsee"][0]
    return {"task": task, "seeds": len(acc["dsee"]),
            **{mode: {"mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0,
                      "worst": min(v)} for mode, v in acc.items()},
            "vs_full": statistics.mean(acc["dsee"]) - statistics.mean(acc["full"]),
            "trainable_share": last["dsee"]["trainable_share"], "trainable_params": last["dsee"]["trainable_params"],
            "heads_removed": last["dsee"].get("heads_removed"), "heads": last["dsee"].get("heads"),
            "params_ratio": last["slim"]["params"] / last["full"]["params"],
            "flops_ratio": last["slim"]["forward_flops_per_token"] / last["full"]["forward_flops_per_token"]}


def markdown(rows: list[dict]) -> str:
    """The per-task table."""
    lines = ["| task | full | DSEE | vs full | worst DSEE seed | trained | heads removed | params | forward FLOPs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        removed = f"{r['heads_removed']} of {r['heads']}" if r["heads"] else "-"
        lines.append(f"| {r['task']} | {100 * r['full']['mean']:.2f} ± {100 * r['full']['std']:.2f} | "
                     f"{100 * r['dsee']['mean']:.2f} ± {100 * r['dsee']['std']:.2f} | {100 * r['vs_full']:+.2f} | "
                     f"{100 * r['dsee']['worst']:.2f} | {r['trainable_params']:,} "
                     f"({100 * r['trainable_share']:.2f}%) | "
                     f"{removed} | {100 * r['params_ratio']:.1f}% | {100 * r['flops_ratio']:.1f}% |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="pretrained encoder folder (e.g. MiniLM-L6)")
    parser.add_argument("--out", default="runs/dsee")
    parser.add_argument("--shared", default="../shared/data", help="folder holding bbc-topic and spam-subjects")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--tasks", nargs="+", choices=SHARED_TASKS, default=list(SHARED_TASKS))
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE overrides for the DSEE runs")
    args = parser.parse_args()
    if not (Path(args.model) / "config.json").is_file():
        refuse(f"--model {args.model} is not a model folder (no config.json)")
    offline_environment()
    data = build_shared_tasks(Path(args.out) / "tasks", Path(args.shared))
    rows = [task_row(task, {mode: [run_once(mode, task, data[task], s, args) for s in args.seeds]
                            for mode in CONFIGS}) for task in args.tasks]
    write_json(Path(args.out) / "dsee.json", {"machine": machine_info(), "seeds": args.seeds,
                                              "overrides": args.overrides, "rows": rows})
    (Path(args.out) / "dsee.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
