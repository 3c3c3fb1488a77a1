"""Pretraining data at scale: tokenizing throughput with 1 and N processes, and a tiny run's peak memory and
start time on a 40 MB and a 400 MB corpus (real text from ../shared/data/corpus, repeated), on one rank and two.

    python -m benchmarks.prepare_scale [--sizes 40 400] [--throughput-mb 40 --repeats 5] [--work DIR]
        [--out benchmarks/results/prepare_scale.json]

Peak memory is the largest resident set of any one process of the run (the launcher's children included),
read from the kernel's accounting of the finished process tree, plus each rank's own peak from summary.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import print_table, refuse, write_json

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "corpus"
TINY = ["--config", str(ROOT / "configs/pretrain/tiny.yaml"), "data.max_documents=0", "data.tokenizer_sample_mb=10",
        "log.progress_bar=false"]
# Runs a command and prints the peak resident set (KB) of the largest process in its tree, then its exit code.
MEASURE = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
           "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc, flush=True)")


def write_corpus(path: Path, megabytes: int) -> Path:
    """Real English prose repeated to at least `megabytes` MB (documents separated by blank lines)."""
    if path.is_file() and path.stat().st_size >= megabytes * 1e6:
        return path
    text = "".join(gzip.open(f, "rt", encoding="utf-8").read().strip() + "\n\n" for f in sorted(SHARED.glob("*.gz")))
    with open(path, "w", encoding="utf-8") as out:
        for _ in range(int(megabytes * 1e6 // len(text.encode())) + 1):
            out.write(text)
    return path


def measured(cmd: list[str], env: dict) -> tuple[float, float, str, float | None]:
    """(wall seconds, peak RSS MB of the largest process, stdout, seconds until the trainer's first step or None)
    of one command; fails loudly."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", MEASURE, *cmd], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines, first_step = [], None
    for line in proc.stdout:
        if first_step is None and line.startswith("training from step"):
            first_step = time.perf_counter() - started
        lines.append(line)
    stderr = proc.stderr.read()
    proc.wait()
    wall, stdout = time.perf_counter() - started, "".join(lines)
    peak = [x for x in stdout.splitlines() if x.startswith("PEAK_KB")][-1].split()
    if peak[2] != "0":
        sys.exit(f"failed: {' '.join(cmd)}\n{stderr[-3000:]}")
    return wall, int(peak[1]) / 1024, stdout, first_step


def prepare_throughput(corpus: Path, tokenizer: Path, work: Path, cores: int, repeats: int, env) -> dict:
    """MB/s of `earlybert prepare` (fresh cache each time), the variants alternating: one process on one
    thread, one process with the tokenizers library's own threads, one process per core."""
    variants = {"1 process, 1 thread": (1, {"TOKENIZERS_PARALLELISM": "false"}),
                "1 process, tokenizers threads": (1, {"TOKENIZERS_PARALLELISM": "true"}),
                f"{cores} processes": (cores, {})}
    speeds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats + 1):  # the first round warms the page cache and is dropped
        for name, (n, extra) in variants.items():
            cache = work / "tp-cache"
            shutil.rmtree(cache, ignore_errors=True)
            measured([sys.executable, "-m", "earlybert", "prepare", *TINY, f"data.train_files={corpus}",
                      f"data.tokenizer={tokenizer}", f"data.cache_dir={cache}", f"data.num_proc={n}"], {**env, **extra})
            speeds[name].append(json.loads(next(cache.glob("prepared-*/meta.json")).read_text())["mb_per_s"])
    return {name: {"mb_per_s_median": statistics.median(v[1:]), "min": min(v[1:]), "max": max(v[1:]),
                   "runs": v[1:]} for name, v in speeds.items()}


def pretrain_runs(corpus: Path, work: Path, size: int, env) -> dict:
    """Fresh cache (prepares inside the run), second start (finds it), then two ranks on the same cache."""
    cache, out = work / f"cache-{size}", work / f"runs-{size}"
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    args = [*TINY, f"data.train_files={corpus}", f"data.cache_dir={cache}", "train.max_steps=2",
            "search.enabled=false", "checkpoint.every=100"]
    result = {}
    for name in ("fresh_cache", "second_start"):
        wall, peak, stdout, first = measured([sys.executable, "-m", "earlybert", "pretrain", *args,
                                              f"output_dir={out / name}"], env)
        summary = json.loads((out / name / "summary.json").read_text())
        result[name] = {"wall_s": round(wall, 1), "first_step_s": round(first, 1),
                        "peak_rss_mb_largest_process": round(peak, 1),
                        "peak_rss_mb_rank": summary["peak_rss_mb"],
                        "tokenized": "data: prepared" in stdout, "data_line": next(
                            (x for x in stdout.splitlines() if x.startswith("data: ")), "")}
    torchrun = str(Path(sys.executable).parent / "torchrun")
    wall, peak, stdout, first = measured([torchrun, "--standalone", "--nproc_per_node", "2", "pretrain/run_pretrain.py",
                                   *args, "train.micro_batch_size=4", f"output_dir={out / 'two_ranks'}"], env)
    summary = json.loads((out / "two_ranks" / "summary.json").read_text())
    result["two_ranks"] = {"wall_s": round(wall, 1), "first_step_s": round(first, 1),
                           "peak_rss_mb_largest_process": round(peak, 1),
                           "peak_rss_mb_rank": summary["peak_rss_mb"], "tokenized": "data: prepared" in stdout}
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[40, 400], help="corpus sizes in MB")
    p.add_argument("--throughput-mb", type=int, default=40, help="corpus size for the 1 vs N process comparison")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--work", default="/tmp/earlybert-prepare-scale")
    p.add_argument("--out", default="benchmarks/results/prepare_scale.json")
    p.add_argument("--runs-only", action="store_true", help="redo the pretraining runs, keep --out's throughput")
    args = p.parse_args()
    if not SHARED.is_dir():
        refuse(f"{SHARED} is missing: this benchmark reads the shared corpus")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline",
           "DS_ACCELERATOR": "cpu", "PYTHONUNBUFFERED": "1"}
    # A fixed tokenizer for the throughput comparison (trained once, on the corpus's first 10 MB).
    small = write_corpus(work / "corpus-10.txt", 10)
    tok_cache = work / "tok-cache"
    measured([sys.executable, "-m", "earlybert", "prepare", *TINY, f"data.train_files={small}",
              f"data.cache_dir={tok_cache}"], env)
    tokenizer = next(tok_cache.glob("tokenizer-*"))
    cores = os.cpu_count() or 1
    if args.runs_only:
        throughput = json.loads(Path(args.out).read_text())["prepare_mb_per_s"]
    else:
        throughput = prepare_throughput(write_corpus(work / f"corpus-{args.throughput_mb}.txt", args.throughput_mb),
                                        tokenizer, work, cores, args.repeats, env)
    runs = {str(size): pretrain_runs(write_corpus(work / f"corpus-{size}.txt", size), work, size, env)
            for size in args.sizes}
    speedup = (throughput[f"{cores} processes"]["mb_per_s_median"]
               / throughput["1 process, 1 thread"]["mb_per_s_median"])
    write_json(args.out, {"throughput_corpus_mb": args.throughput_mb, "repeats": args.repeats,
                          "prepare_mb_per_s": throughput, "speedup_all_cores_vs_one": round(speedup, 3),
                          "pretrain": runs})
    print_table(["tokenizing", "MB/s median", "min", "max"],
                [[n, v["mb_per_s_median"], v["min"], v["max"]] for n, v in throughput.items()])
    print(f"{cores} processes vs 1 process on 1 thread: {speedup:.2f}x")
    rows = [[size, name, r["first_step_s"], r["wall_s"], r["peak_rss_mb_largest_process"], r["peak_rss_mb_rank"],
             r["tokenized"]] for size, by in runs.items() for name, r in by.items()]
    print_table(["MB", "run", "first step s", "wall s", "peak MB (largest process)", "peak MB per rank",
                 "tokenized"], rows)


if __name__ == "__main__":
    main()
