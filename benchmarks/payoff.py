"""The fine-tuning payoff over several real tasks: `earlybert compare` per task, then one table.

    python -m benchmarks.payoff --model MINILM_DIR [--out runs/payoff] [--seeds 1 2 3] \
        [--ratios "[[0.16666666666666666,0.2]]"] [--weights "[continue]"] [--tasks bbc-topic ...] [KEY=VALUE ...]

Each task runs `earlybert compare --config configs/finetune/glue.yaml` (the shipped default) with its data, the
given seeds, ratios and weights, and any extra KEY=VALUE overrides (for every run of every task); finished runs
are skipped, so adding a setting re-runs only its own runs. The table (per task and overall: mean, std, worst
seed, time saved, collapse warnings) and every run's draw check go to OUT/payoff.json and OUT/payoff.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.common import offline_environment, refuse, write_json
from benchmarks.payoff_tasks import SHARED_TASKS, build_tasks
from earlybert.report.machine import machine_info

TASKS = (*SHARED_TASKS, "review-sentiment", "brown-genre")
# Inputs that belong to a task's data, not to the method: BBC articles are cut at 64 tokens (bbc-topic.yaml's
# length), which halves the cost of the slowest task.
TASK_OVERRIDES = {"bbc-topic": ["max_seq_len=64"]}


def compare_command(task: str, data: Path, args: argparse.Namespace) -> list[str]:
    """The `earlybert compare` command line of one task."""
    return [sys.executable, "-m", "earlybert", "compare", "--config", "configs/finetune/glue.yaml", "task=custom",
            "text_columns=[sentence]", "label_column=label", f"data_dir={data}", f"model={args.model}",
            *TASK_OVERRIDES.get(task, []), *args.overrides, f"compare.output_dir={Path(args.out) / task}",
            f"compare.seeds=[{','.join(map(str, args.seeds))}]", f"compare.ratios={args.ratios}",
            f"compare.weights={args.weights}"]


def task_rows(comparison: dict, draws: dict[str, dict | None] | None = None) -> list[dict]:
    """Per variant of one task: mean, std, worst seed, time saved, collapse warnings and checks not judged
    (each run's draw check from `draws`, keyed VARIANT/seedN, else from its summary)."""
    runs = comparison["runs"]
    full = statistics.mean(r["value"] for r in runs if r["mode"] == "full")
    rows = []
    for row in comparison["rows"]:
        group = [r for r in runs if r["variant"] == row["variant"]]
        found = [((draws or {}).get(f"{r['variant']}/seed{r['seed']}") or {}).get("draw_check", r.get("draw_check"))
                 for r in group]
        checks = [c for c in found if c]
        rows.append({"variant": row["variant"], "mode": row["mode"], "mean": row["mean"], "std": row["std"],
                     "worst": min(r["value"] for r in group), "vs_full": row["mean"] - full,
                     "time_saved": row["time_saved"], "runs": len(group),
                     "collapse_warnings": sum(bool(c.get("collapsed")) for c in checks),
                     "not_judged": sum(c.get("judged") is False for c in checks)})
    return rows


def draw_details(folder: Path) -> dict | None:
    """What a searched run looked like at its draw: steps passed, learning rate left, the coefficients' spread,
    the draw check's losses; None for a run without a search."""
    from safetensors.torch import load_file

    summary = json.loads((folder / "summary.json").read_text())
    step = summary.get("ticket_step")
    if not step or not (folder / "search").is_dir():
        return None
    metrics = {r["step"]: r for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())}
    coefficients = load_file(str(folder / "search" / f"coefficients_step_{step:08d}.safetensors"))
    spread = {}
    for kind in ("heads", "ffn"):
        values = [v for k, t in coefficients.items() if k.startswith(kind) for v in t.flatten().tolist()]
        spread[kind] = {"min": min(values), "mean": statistics.mean(values), "max": max(values),
                        "std": statistics.pstdev(values)}
    return {"step": step, "of_steps": summary["steps"], "lr_at_draw": metrics[step]["lr"],
            "coefficients": spread, "draw_check": summary.get("draw_check"),
            "accuracy": summary["eval"]["accuracy"]}


def overall(tables: dict[str, list[dict]]) -> list[dict]:
    """Per variant over tasks: mean gap to full, the worst task's gap, mean time saved, tasks where it holds."""
    rows = []
    for name in dict.fromkeys(r["variant"] for rows in tables.values() for r in rows):
        mine = {task: next((r for r in rows if r["variant"] == name), None) for task, rows in tables.items()}
        mine = {t: r for t, r in mine.items() if r is not None}
        full = {t: next(r for r in tables[t] if r["mode"] == "full") for t in mine}
        random = {t: next((r for r in tables[t] if r["mode"] == "random" and
                           r["variant"].split("-h")[-1] == name.split("-h")[-1]), None) for t in mine}
        holds = [t for t, r in mine.items() if r["vs_full"] >= -0.01 and r["worst"] >= full[t]["mean"] - 0.03
                 and (r["mode"] != "earlybert" or random[t] is None or r["mean"] > random[t]["mean"])]
        rows.append({"variant": name, "tasks": len(mine), "mean_vs_full": statistics.mean(r["vs_full"] for r in
                                                                                           mine.values()),
                     "worst_task_vs_full": min(r["vs_full"] for r in mine.values()),
                     "time_saved": statistics.mean(r["time_saved"] for r in mine.values()),
                     "holds_on": holds})
    return rows


def draw_table(draws: dict[str, dict]) -> list[str]:
    """One line per searched run: where it drew, the learning rate left, losses either side, the draw check."""
    lines = ["| task | run | draw step / steps | lr at draw | loss: first steps -> before the draw -> slim | "
             "progress given back | head coefficients min-max | accuracy |", "|---|---|---|---|---|---|---|---|"]
    for task, runs in draws.items():
        for name, d in runs.items():
            if d is None:
                continue
            check, heads = d["draw_check"], d["coefficients"]["heads"]
            if not check or "judged" not in check:  # none, or a run older than the check's present form
                losses, back = "-", "-"
            else:
                losses = f"{check['start_loss']:.3f} -> {check['before_loss']:.3f} -> {check['slim_loss']:.3f}"
                back = f"{check['given_back']:.0%}" if check["judged"] else "not judged"
            lines.append(f"| {task} | {name} | {d['step']} / {d['of_steps']} | {d['lr_at_draw']:.2e} | {losses} | "
                         f"{back} | {heads['min']:.3f}-{heads['max']:.3f} | {100 * d['accuracy']:.2f} |")
    return lines


def markdown(tables: dict[str, list[dict]], totals: list[dict], draws: dict[str, dict] | None = None) -> str:
    """The per-task tables, the overall one and, given `draws`, one line per searched run's draw."""
    lines = ["| task | variant | mean | std | worst seed | vs full | time saved | collapse warnings |",
             "|---|---|---|---|---|---|---|---|"]
    for task, rows in tables.items():
        for r in rows:
            saved = "-" if r["mode"] == "full" else f"{100 * r['time_saved']:.1f}%"
            warned = "-" if r["mode"] != "earlybert" else f"{r['collapse_warnings']}/{r['runs']}" + (
                f" ({r['not_judged']} not judged)" if r["not_judged"] else "")
            lines.append(f"| {task} | {r['variant']} | {100 * r['mean']:.2f} | {100 * r['std']:.2f} | "
                         f"{100 * r['worst']:.2f} | {100 * r['vs_full']:+.2f} | {saved} | {warned} |")
    lines += ["", "| variant | tasks | mean vs full | worst task vs full | mean time saved | holds on |",
              "|---|---|---|---|---|---|"]
    for r in totals:
        lines.append(f"| {r['variant']} | {r['tasks']} | {100 * r['mean_vs_full']:+.2f} | "
                     f"{100 * r['worst_task_vs_full']:+.2f} | {100 * r['time_saved']:.1f}% | "
                     f"{', '.join(r['holds_on']) or '-'} |")
    if draws:
        lines += ["", *draw_table(draws)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="pretrained encoder folder (e.g. MiniLM-L6)")
    parser.add_argument("--out", default="runs/payoff")
    parser.add_argument("--shared", default="../shared/data", help="folder holding bbc-topic and spam-subjects")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    # The defaults are glue.yaml's own setting, spelled out so the variants' names carry it.
    parser.add_argument("--ratios", default="[[0.16666666666666666,0.2]]", help="compare.ratios (default: glue.yaml's)")
    parser.add_argument("--weights", default="[continue]", help="compare.weights")
    parser.add_argument("--report-only", action="store_true", help="tabulate the finished comparisons, run nothing")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE fine-tuning overrides for every run")
    args = parser.parse_args()
    if not (Path(args.model) / "config.json").is_file():
        refuse(f"--model {args.model} is not a model folder (no config.json): give MiniLM-L6's folder")
    offline_environment()
    # Tabulating finished comparisons needs no task data (and no `npm pack`).
    folders = {} if args.report_only else build_tasks(Path(args.out) / "tasks", Path(args.shared))
    tables, draws = {}, {}
    for task in args.tasks:
        if not args.report_only:
            subprocess.run(compare_command(task, folders[task], args), check=True)
        comparison = Path(args.out) / task / "comparison.json"
        if comparison.is_file():
            data = json.loads(comparison.read_text())
            draws[task] = {f"{r['variant']}/seed{r['seed']}": draw_details(Path(args.out) / task / r["variant"] /
                                                                             f"seed{r['seed']}")
                           for r in data["runs"] if r["mode"] == "earlybert"}
            tables[task] = task_rows(data, draws[task])
    totals = overall(tables)
    write_json(Path(args.out) / "payoff.json", {"machine": machine_info(), "argv": sys.argv[1:],
                                                 "tasks": tables, "overall": totals, "draws": draws})
    text = markdown(tables, totals, draws)
    (Path(args.out) / "payoff.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
