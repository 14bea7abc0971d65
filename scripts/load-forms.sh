#!/usr/bin/env bash
# Time to first keypoints and peak RSS of `detect` on SD 1.5-architecture random weights in
# each form a user may hold them (a diffusers folder, one original-layout .safetensors, a
# .ckpt, diffusers .bin files, a hub cache entry): farm-bench, median of 3 runs after one
# warm-up (files in the page cache). Needs about 15 GB in WORK. Usage: scripts/load-forms.sh [WORK]
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d)}
cargo build -q -p stablekeypoints-cli
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
B=$target/debug/stablekeypoints
save=cli/tests/python/torch_save.py
rm -rf "$work/sd15" "$work/sd15.safetensors" "$work/sd15.ckpt" "$work/bin" "$work/hub"
"$B" init-model --arch sd15 --out "$work/sd15" --single-file "$work/sd15.safetensors"
python3 "$save" --ckpt "$work/sd15.safetensors" "$work/sd15.ckpt"
snap="$work/hub/models--org--sd15/snapshots/0123abcd"
mkdir -p "$work/hub/models--org--sd15/refs"
printf 0123abcd > "$work/hub/models--org--sd15/refs/main"
for p in unet vae; do
  mkdir -p "$work/bin/$p" "$snap/$p"
  cp "$work/sd15/$p/config.json" "$work/bin/$p/"
  python3 "$save" "$work/sd15/$p/diffusion_pytorch_model.safetensors" "$work/bin/$p/diffusion_pytorch_model.bin"
  for f in config.json diffusion_pytorch_model.safetensors; do ln -sf "$work/sd15/$p/$f" "$snap/$p/$f"; done
done
grep -m1 "model name" /proc/cpuinfo
for form in "folder $work/sd15" "single-file $work/sd15.safetensors" "ckpt $work/sd15.ckpt" \
            "bin $work/bin" "hub-id org/sd15"; do
  set -- $form
  echo "== $1 ($2)"
  HF_HUB_CACHE="$work/hub" farm-bench -n 3 --timeout 600 -- "$B" detect --model "$2" \
    --tokens "$work/sd15/tokens.safetensors" tests/data/tiny-sd1/image.png --json 2>&1 \
    | grep -E "^A (wall|peak)|exit"
done
