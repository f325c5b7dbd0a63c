#!/usr/bin/env bash
# The evaluator's generation check on one GPU (H100/H200 with torch + transformers; trl/omegaconf/datasets/vllm not
# needed). From the repository root:
#     OUT=/tmp/gpu_check bash benchmarks/gpu_check.sh          # GPU: tests/test_generate.py (CUDA test included),
#                                                              # then the Llama-3.2-1B-shape benchmark (~3-5 min)
#     OUT=/tmp/gpu_check bash benchmarks/gpu_check.sh --tiny   # CPU smoke run of the same script (tiny benchmark)
# Writes under $OUT: versions.txt, nvidia-smi.txt, test_generate.log, generate_throughput.log and
# generate_throughput.json (new tokens/s per backend and the ratio to the faster Hugging Face generate: plain or
# static cache, compiled by transformers on CUDA).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
TINY=()
[ "${1:-}" = "--tiny" ] && TINY=(--tiny)

{ python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__,
'cuda', torch.cuda.is_available())"; (cc --version 2>&1 || echo "no C compiler (Triton needs one)") | head -1; } \
    > "$OUT/versions.txt" 2>&1
(nvidia-smi 2>&1 || echo "no nvidia-smi") > "$OUT/nvidia-smi.txt"

timeout 240 python -m pytest -q -p no:cacheprovider tests/test_generate.py > "$OUT/test_generate.log" 2>&1
echo "tests exit $?: $(tail -n 1 "$OUT/test_generate.log")"
timeout 330 python benchmarks/generate_throughput.py "${TINY[@]}" --out "$OUT/generate_throughput.json" \
    > "$OUT/generate_throughput.log" 2>&1
echo "benchmark exit $?"
cat "$OUT/versions.txt" "$OUT/generate_throughput.json" 2>/dev/null || tail -n 30 "$OUT/generate_throughput.log"
