#!/usr/bin/env bash
# Issue 12's host-path measurements on the GPU machine, in one call (see bench/RESULTS.md):
# the base shape under 64 clients with py-spy (on-CPU and GIL holder), A/B of the tokenizer
# settings, then the large shape alone (one client) and at 70 % of its peak (open loop).
#   bash bench/inference/h200_host_path.sh OUT_DIR [base-configs] [large-configs]
set -euo pipefail
out=${1:?out dir}
base_configs=${2:-"default=;tokpar-off=TOKENIZERS_PARALLELISM=false;workers16=--tokenization-workers 16"}
large_configs=${3:-"default="}
spy=${SPY:-py-spy}
mkdir -p "$out"
{ nproc; cat /sys/fs/cgroup/cpu.max 2>/dev/null || true; lscpu | grep -E "Model name|^CPU\(s\)"; \
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.limit --format=csv; \
  git log -1 --format=%h 2>/dev/null || true; } | tee "$out/machine.txt"
common=(--mean-tokens 288 --tokenizer-dir .bench-assets/tokenizer --duration 10 --warmup 2
  --client-processes 4 --naive-requests 0 --spy "$spy")
if [ -n "$base_configs" ]; then
  python3 -m bench.inference.bench_rerank --shapes base "${common[@]}" --concurrency 64 \
    --open-loop-duration 0 --spy-seconds 6 --configs "$base_configs" --out "$out/base"
fi
if [ -n "$large_configs" ]; then
  python3 -m bench.inference.bench_rerank --shapes large "${common[@]}" --concurrency 1,64 \
    --open-loop-duration 15 --spy-seconds 6 --configs "$large_configs" --out "$out/large"
fi
