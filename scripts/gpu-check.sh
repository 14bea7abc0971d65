#!/usr/bin/env bash
# One-shot GPU check for a lent CUDA machine (see README, "GPU"): builds with --features cuda,
# runs the tests, and benchmarks the SD 1.5 architecture (random weights) at 512x512 in f16,
# batch 1 and batch 8, printing the per-stage split. Usage: scripts/gpu-check.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp/skp-gpu}}
mkdir -p "$out"
exec > >(tee "$out/gpu-check.log") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
export CARGO_TERM_COLOR=never
cargo build --release --features cuda -p stablekeypoints
B=target/release/stablekeypoints
cargo test --release --features cuda -p stablekeypoints 2>&1 | grep -E "^test result|FAILED|panicked" || true
[ -d "$out/sd15" ] || $B init-model --arch sd15 --out "$out/sd15"
for batch in 1 8; do
  $B bench --model "$out/sd15" --device cuda:0 --batch "$batch" --runs 5
done
$B bench --model "$out/sd15" --device cpu --runs 1
