"""One ticket, many tasks: draw a ticket once, shrink, fine-tune the slim model per task, merge, evaluate.

    python -m benchmarks.merge --model MINILM_DIR [--out runs/merge] [--seeds 1 2 3] [--shared ../shared/data]

The tasks are bbc-topic and spam-subjects from ../shared/data, cut to at most 2,000 train / 500 dev examples as in
the payoff benchmark. The ticket comes from an `earlybert finetune mode=earlybert` run on the first task (seed 1,
configs/finetune/glue.yaml); `earlybert shrink` applies it to the pretrained model; each task fine-tunes that slim
model (mode=slim, every seed); per seed, `earlybert merge` merges the tasks' models with each method and
`finetune ... eval_only=true` scores each merged model on its own task with its own head. Finished steps are
skipped. OUT/merge.json and OUT/merge.md hold the table (dev accuracy per task and their mean, mean and std over
seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.common import offline_environment, refuse, write_json
from benchmarks.payoff_tasks import build_shared_tasks
from earlybert.report.machine import machine_info

TASKS = ("bbc-topic", "spam-subjects")
METHODS = ("average", "task_arithmetic", "rankmean")
TASK_OVERRIDES = {"bbc-topic": ["max_seq_len=64"]}  # as the payoff benchmark: BBC articles cut at 64 tokens


def earlybert(*args: str) -> None:
    """Run one `earlybert` command; stop the benchmark with its last lines if it fails."""
    result = subprocess.run([sys.executable, "-m", "earlybert", *args], capture_output=True, text=True)
    if result.returncode != 0:
        refuse(f"`earlybert {' '.join(args[:2])} ...` failed:\n{result.stderr[-2000:]}")


def finetune(task: str, data: Path, model: Path, out: Path, *extra: str) -> dict:
    """A fine-tuning (or evaluation) run of `task` unless its summary.json exists; returns its summary."""
    if not (out / "summary.json").is_file():
        earlybert("finetune", "glue", "--config", "configs/finetune/glue.yaml", "task=custom",
                  "text_columns=[sentence]", "label_column=label", f"data_dir={data}", f"model={model}",
                  f"output_dir={out}", "overwrite=true", *TASK_OVERRIDES.get(task, []), *extra)
    return json.loads((out / "summary.json").read_text())


def slim_base(args: argparse.Namespace, data: dict[str, Path]) -> Path:
    """The pretrained model shrunk by a ticket drawn on the first task."""
    out = Path(args.out)
    finetune(TASKS[0], data[TASKS[0]], Path(args.model), out / "search", "mode=earlybert", "seed=1")
    if not (out / "slim" / "config.json").is_file():
        earlybert("shrink", "--model", args.model, "--ticket", str(out / "search" / "ticket.json"), "--output",
                  str(out / "slim"), "--overwrite")
    return out / "slim"


def run(args: argparse.Namespace) -> dict:
    """Every run of the workflow; returns dev accuracy per method, seed and task."""
    out = Path(args.out)
    data = build_shared_tasks(out / "tasks", Path(args.shared))
    slim = slim_base(args, data)
    scores: dict[str, dict[str, dict[str, float]]] = {"single": {}, **{m: {} for m in METHODS}}
    for seed in args.seeds:
        models = []
        for task in TASKS:
            summary = finetune(task, data[task], slim, out / "finetuned" / task / f"seed{seed}", "mode=slim",
                               f"seed={seed}")
            scores["single"].setdefault(f"seed{seed}", {})[task] = summary["eval"]["accuracy"]
            models.append(str(out / "finetuned" / task / f"seed{seed}" / "model"))
        for method in METHODS:
            merged = out / "merged" / method / f"seed{seed}"
            if not (merged / "merge.json").is_file():
                earlybert("merge", "--method", method, "--base", str(slim), *models, "--output", str(merged),
                          "--overwrite")
            for i, task in enumerate(TASKS, start=1):
                summary = finetune(task, data[task], merged / str(i), out / "eval" / method / f"seed{seed}" / task,
                                   "mode=slim", "eval_only=true")
                scores[method].setdefault(f"seed{seed}", {})[task] = summary["eval"]["accuracy"]
    return scores


def table(scores: dict) -> list[dict]:
    """Per method: each task's and the tasks' mean accuracy, mean and std over seeds."""
    rows = []
    for method, seeds in scores.items():
        per_seed = {**{t: [s[t] for s in seeds.values()] for t in TASKS},
                    "mean": [statistics.mean(s[t] for t in TASKS) for s in seeds.values()]}
        rows.append({"method": method, "seeds": len(seeds),
                     **{k: {"mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0}
                        for k, v in per_seed.items()}})
    return rows


def markdown(rows: list[dict]) -> str:
    """The table as markdown (accuracy in percent, mean +- std over seeds)."""
    lines = [f"| model | {' | '.join(TASKS)} | mean over tasks |", "|---|" + "---|" * (len(TASKS) + 1)]
    for r in rows:
        name = "each task's own slim model" if r["method"] == "single" else f"merged: {r['method']}"
        cells = [f"{100 * r[k]['mean']:.2f} ± {100 * r[k]['std']:.2f}" for k in (*TASKS, "mean")]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="pretrained encoder folder (e.g. MiniLM-L6)")
    parser.add_argument("--out", default="runs/merge")
    parser.add_argument("--shared", default="../shared/data", help="folder holding bbc-topic and spam-subjects")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    args = parser.parse_args()
    if not (Path(args.model) / "config.json").is_file():
        refuse(f"--model {args.model} is not a model folder (no config.json)")
    offline_environment()
    rows = table(run(args))
    write_json(Path(args.out) / "merge.json", {"machine": machine_info(), "seeds": args.seeds, "tasks": list(TASKS),
                                               "rows": rows})
    (Path(args.out) / "merge.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
