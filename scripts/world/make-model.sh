#!/usr/bin/env bash
# Makes models/figure from scratch, as it was made (see models/figure/README.md for the times):
# renders of the figure world, the VAE, the latents, the UNet, the VAE check, then keypoint
# tokens learned with our own `train` on unlabelled renders and the pose fitted by `eval`.
# Every stage resumes from its checkpoint when run again. Needs a Python virtual environment
# with torch and diffusers outside the repository (PY=/path/to/venv/bin/python).
# Usage: PY=/work/pyenv/bin/python scripts/world/make-model.sh [STAGE...]
#        stages: data vae latents unet check diagnose tokens (default: all, in that order)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python3}
W=out/world          # renders, checkpoints, curves (not committed)
M=models/figure
stages=("$@")
((${#stages[@]})) || stages=(data vae latents unet check diagnose tokens)

cargo build --release -p skp-world --bin skp-world
cargo build --release -p stablekeypoints-cli --bin stablekeypoints
world=target/release/skp-world
skp=target/release/stablekeypoints
train() { nice -n 19 "$PY" scripts/world/train.py "$@" --data $W/train.safetensors --work $W/work --out $M; }

for s in "${stages[@]}"; do
  case $s in
    data)
      $world dataset --out $W/train.safetensors --count 16000 --seed 1
      $world dataset --out $W/heldout.safetensors --count 512 --seed 2 --drop-fraction 0
      $world labelled --out $W/fit --count 300 --seed 3
      $world labelled --out $W/test --count 200 --seed 4
      $world labelled --out $W/unlabelled --count 500 --seed 6 ;;
    vae) train vae --steps 1200 --batch 16 --crop 32 --lr 1e-3 --seed 0 --resume ;;
    latents) train latents ;;
    unet) train unet --steps 1500 --batch 32 --lr 1e-3 --warmup 100 --seed 0 --resume ;;
    check)
      nice -n 19 "$PY" scripts/world/train.py check --data $W/heldout.safetensors --work $W/work --out $M
      cp $W/work/vae-curve.csv $W/work/unet-curve.csv $M/ ;;
    diagnose) nice -n 19 "$PY" scripts/world/train.py diagnose --data $W/heldout.safetensors --out $M ;;
    tokens)
      # Our method, unsupervised, on unlabelled renders (settings scaled to the small model).
      $skp train --model $M --input $W/unlabelled/images --out $M/tokens.safetensors \
          --steps 300 --batch-size 4 --num-tokens 100 --map-res 64 --num-indices 100 --resume
      # The regressor on labelled training renders, the error on held-out renders.
      $skp eval --model $M --tokens $M/tokens.safetensors --train $W/fit/labels.csv \
          --test $W/test/labels.csv --metric taichi --save-regressor $M/pose.json \
          --names $W/fit/joints.txt --skeleton $W/fit/skeleton.txt ;;
    *) echo "unknown stage $s" >&2; exit 1 ;;
  esac
done
