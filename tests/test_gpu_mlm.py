"""The prepared GPU benchmark (benchmarks/gpu.sh -> benchmarks.gpu_mlm) runs end to end: a CPU smoke run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # integration runs: `make test` runs them, `make test-fast` does not

REPO = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_runs_every_variant_and_writes_paired_ratios(tmp_path):
    # No GPU here: one BERT-base layer at batch 2, fp32 ZeRO-0, two rounds; the GPU run differs only in sizes.
    out = tmp_path / "gpu.json"
    run = subprocess.run([sys.executable, "-m", "benchmarks.gpu_mlm", "--layers", "1", "--batch", "2", "--steps",
                          "1", "--rounds", "2", "--deepspeed-config", "configs/deepspeed/cpu.json", "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result["variants"]) == {"ours, full", "ours, slim", "ours, search", "HF recipe"}
    for variant in result["variants"].values():
        assert variant["tokens_per_s"] > 0 and variant["mfu"] > 0
        assert len(variant["call_s"]["runs"]) == 2 and variant["peak_mem_gib"] is None  # memory: CUDA only
    # One layer of the paper's ticket: 8 of 12 heads, 1856 of 3072 neurons (rounded to 64); decoder and embeddings
    # stay, so the FLOP ratio lies between the layer's and 1.
    assert 0.62 < result["flop_ratio"] < 0.95
    for ratio in ("slim_time_over_flop_ratio", "search_over_full", "ours_vs_hf_speed"):
        low, high = result[ratio]["median_ci95"]
        assert result[ratio]["min"] <= low <= result[ratio]["median"] <= high <= result[ratio]["max"]
    assert result["machine"]["torch"] and result["card"] == "cpu (smoke run)"


def test_gpu_benchmark_refuses_a_missing_deepspeed_config_before_any_work(tmp_path):
    out = tmp_path / "gpu.json"
    run = subprocess.run([sys.executable, "-m", "benchmarks.gpu_mlm", "--deepspeed-config", "configs/none.json",
                          "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "--deepspeed-config configs/none.json: no such file" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and not out.exists()
