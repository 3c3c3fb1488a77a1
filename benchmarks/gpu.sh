#!/usr/bin/env bash
# One prepared GPU check (under 5 minutes on one H100/H200): BERT-base MLM, seq 128, batch 128, bf16, ZeRO-1.
# Our full, slim and search steps and HF's MLM recipe take turns (2 warm-up calls, 7 rounds of 10 steps):
# tokens/s, model FLOP utilisation, peak memory, and paired ratios with their 95% intervals.
#   bash benchmarks/gpu.sh            (after `make gpu`: the CUDA build of torch, then this project)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "benchmarks/gpu.sh: no CUDA device visible to $PY: run it on a GPU machine after \`make gpu\`" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
PEAK=989  # dense bf16 TFLOP/s of an H100 SXM; the H200 has the same compute
$PY -m benchmarks.gpu_mlm --peak-tflops "$PEAK" "$@"
