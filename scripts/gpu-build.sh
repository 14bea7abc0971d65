#!/usr/bin/env bash
# Builds the CUDA binaries for a lent GPU machine, which has the NVIDIA driver and CUDA 13
# libraries (PyTorch's) but no Rust and no network: the CLI and the CUDA tests, built with
# `--features cuda` for sm_90 (H100/H200), packed into .gpu/ (ignored by git), which
# scripts/gpu-check.sh runs there. Needs root (apt) and pip access on this machine. A CUDA 13
# compiler and headers come as NVIDIA's pip wheels into $CUDA13_DIR (outside the repository);
# linking needs the driver library, Debian's non-free `libcuda1`.
# Usage: scripts/gpu-build.sh   (then carry .gpu to the GPU machine)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${CUDA13_DIR:-/opt/stablekeypoints-cuda13}
cuda=$dir/site/nvidia/cu13
if [ ! -x "$cuda/bin/nvcc" ]; then
  python3 -m venv "$dir/venv"
  "$dir/venv/bin/pip" download -q --no-deps --only-binary=:all: -d "$dir/wheels" \
    "nvidia-cuda-nvcc>=13.0,<13.1" "nvidia-nvvm>=13.0,<13.1" "nvidia-cuda-crt>=13.0,<13.1" \
    "nvidia-cuda-runtime>=13.0,<13.1" "nvidia-cuda-cccl>=13.0,<13.1" \
    "nvidia-cuda-nvrtc>=13.0,<13.1" "nvidia-cublas>=13.0,<14" "nvidia-curand>=10.4,<10.5"
  for w in "$dir"/wheels/*.whl; do python3 -m zipfile -e "$w" "$dir/site"; done
  chmod +x "$cuda"/bin/* "$cuda"/nvvm/bin/*
  # The linker wants the unversioned names.
  (cd "$cuda/lib" && for l in cublas cublasLt cudart nvrtc; do ln -sf "lib$l.so.13" "lib$l.so"; done &&
    ln -sf libcurand.so.10 libcurand.so)
fi
if ! ldconfig -p | grep -q 'libcuda.so '; then
  grep -rqs non-free /etc/apt/sources.list /etc/apt/sources.list.d ||
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      >/etc/apt/sources.list.d/stablekeypoints-non-free.sources
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libcuda1
fi
export CUDA_HOME=$cuda PATH=$cuda/bin:$PATH CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
args=(--release --features cuda --target-dir target/cuda)
# Without the `video` feature the CLI links no GStreamer (the GPU machine has none).
cargo build "${args[@]}" -p stablekeypoints-cli --no-default-features --bin stablekeypoints
tests=$(cargo test "${args[@]}" -p stablekeypoints --test cuda --no-run 2>&1 | tee /dev/stderr |
  sed -n 's/.*Executable tests\/cuda.rs (\(.*\))/\1/p')
# Compressed: the two binaries are ~90 MB, more than a device call carries (64 MiB).
rm -rf .gpu && mkdir -p .gpu/bin
cp target/cuda/release/stablekeypoints .gpu/bin/stablekeypoints
cp "$tests" .gpu/bin/cuda-tests
strip .gpu/bin/*
tar -C .gpu -cJf .gpu/bin.tar.xz bin && rm -r .gpu/bin
ls -l .gpu
