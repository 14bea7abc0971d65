#!/usr/bin/env bash
# One-shot GPU check on a lent CUDA machine (docs/performance.md, "GPU"): the CUDA tests, then the
# SD 1.5 architecture (random weights) at 512x512 in f16, batch 1 and 8, with the per-stage
# split. Runs the binaries scripts/gpu-build.sh put in .gpu/ (that machine has no Rust and
# no network); builds them first where .gpu/ is missing. Usage: scripts/gpu-check.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp/skp-gpu}}
mkdir -p "$out"
exec > >(tee "$out/gpu-check.log") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
[ -f .gpu/bin.tar.xz ] || scripts/gpu-build.sh
tar -C .gpu -xJf .gpu/bin.tar.xz
# CUDA 13 libraries: the system's, else those that came with the machine's PyTorch.
if ! ldconfig -p | grep -q libcublas.so.13; then
  libs=$(find /opt /usr/local /usr/lib -name 'libcublas.so.13' -o -name 'libnvrtc.so.13' \
    -o -name 'libcurand.so.10' 2>/dev/null | xargs -r -n1 dirname | sort -u | paste -sd:)
  export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
B=.gpu/bin/stablekeypoints
ldd $B | grep -E 'cu|nvrtc' || true
# Each test prints its error figures (--nocapture).
.gpu/bin/cuda-tests --test-threads 1 --nocapture || echo "CUDA TESTS FAILED"
model=${SD15_DIR:-/tmp/sd15-random}
[ -d "$model/unet" ] || $B init-model --arch sd15 --out "$model"
for batch in 1 8; do
  $B bench --model "$model" --device cuda:0 --batch "$batch" --runs 5 || echo "BENCH BATCH $batch FAILED"
done
