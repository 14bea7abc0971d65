#!/usr/bin/env bash
# Makes models/figure from scratch, as it was made (models/figure/README.md has the times):
# renders of the figure world, the VAE, the latents, the UNet, three fine-tunes of it on
# renders with many parts left out (f32, under out/world), the f16 pack into models/figure,
# the checks of the packed model, then keypoint tokens learned with our own `train` on
# unlabelled renders, the pose fitted by `eval`, and the baselines. Training stages resume
# from their checkpoints when run again. Needs a Python virtual environment with torch and
# diffusers outside the repository (PY=/path/to/venv/bin/python).
# Usage: PY=/work/pyenv/bin/python scripts/world/make-model.sh [STAGE...]
#        stages: data vae latents unet finetune pack check diagnose tokens baselines
#        (default: all, in that order)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python3}
W=out/world          # renders, checkpoints, curves, the f32 models (not committed)
M=models/figure
stages=("$@")
((${#stages[@]})) || stages=(data vae latents unet finetune pack check diagnose tokens baselines)

cargo build --release -p skp-world -p stablekeypoints-cli
world() { target/release/skp-world "$@" --force; }  # data is a pure function of its seeds
skp=target/release/stablekeypoints
# --resume where a run left a checkpoint (train refuses --resume without one).
resume() { [[ -e $1/tokens.ckpt.safetensors ]] && echo --resume || true; }
py() { nice -n 19 "$PY" scripts/world/train.py "$@" --work $W/work; }
# The method's settings scaled to the 128-pixel model (README: "A model that knows something").
TRAIN_FLAGS=(--steps 500 --batch-size 4 --num-tokens 100 --map-res 32 --num-indices 100)
EVAL_FLAGS=(--train $W/fit/labels.csv --test $W/test/labels.csv --metric taichi --augmentations 10)

for s in "${stages[@]}"; do
  case $s in
    data)
      world dataset --out $W/train.safetensors --count 16000 --seed 1
      world dataset --out $W/train-drop.safetensors --count 6000 --seed 7 \
          --drop-fraction 0.8 --drop-rate 0.5
      world dataset --out $W/train-drop2.safetensors --count 6000 --seed 8 \
          --drop-fraction 0.8 --drop-rate 0.5
      world dataset --out $W/train-drop3.safetensors --count 6000 --seed 9 \
          --drop-fraction 0.8 --drop-rate 0.5
      world dataset --out $W/heldout.safetensors --count 512 --seed 2 --drop-fraction 0
      world labelled --out $W/fit --count 300 --seed 3
      world labelled --out $W/test --count 200 --seed 4
      world labelled --out $W/unlabelled --count 500 --seed 6 ;;
    vae) py vae --data $W/train.safetensors --out $W/model \
           --steps 1200 --batch 16 --crop 32 --lr 1e-3 --seed 0 --resume ;;
    latents)
      py latents --data $W/train.safetensors --out $W/model
      py latents --data $W/train-drop.safetensors --out $W/model --latents $W/work/latents-drop.npy
      py latents --data $W/train-drop2.safetensors --out $W/model --latents $W/work/latents-drop2.npy
      py latents --data $W/train-drop3.safetensors --out $W/model --latents $W/work/latents-drop3.npy ;;
    unet) py unet --data $W/train.safetensors --out $W/model \
            --steps 1500 --batch 32 --lr 1e-3 --warmup 100 --seed 0 --resume ;;
    finetune)
      # A part left out of half the scenes makes its token's presence worth reading where
      # the part would be: the binding the keypoints need (the first UNet barely used it).
      for d in model-ft model-ft2 model-ft3; do mkdir -p $W/$d && cp -rT $W/model/vae $W/$d/vae; done
      py unet --data $W/train-drop.safetensors --latents $W/work/latents-drop.npy \
          --init $W/work/unet.ckpt.pt --name unet-ft --out $W/model-ft \
          --steps 600 --batch 32 --lr 5e-4 --warmup 50 --seed 1 --resume
      py unet --data $W/train-drop2.safetensors --latents $W/work/latents-drop2.npy \
          --init $W/work/unet-ft.ckpt.pt --name unet-ft2 --out $W/model-ft2 \
          --steps 800 --batch 32 --lr 5e-4 --warmup 50 --seed 2 --resume
      py unet --data $W/train-drop3.safetensors --latents $W/work/latents-drop3.npy \
          --init $W/work/unet-ft2.ckpt.pt --name unet-ft3 --out $W/model-ft3 \
          --steps 800 --batch 32 --lr 5e-4 --warmup 50 --seed 3 --resume ;;
    pack) py pack --out $W/model-ft3 --dest $M \
            --curves unet-ft-curve.csv unet-ft2-curve.csv unet-ft3-curve.csv ;;
    check) py check --data $W/heldout.safetensors --out $M ;;
    diagnose) py diagnose --data $W/heldout.safetensors --out $M --count 256 ;;
    tokens)
      # Our method, unsupervised, on unlabelled renders (its checkpoint stays under out/).
      mkdir -p $W/tokens
      $skp train --model $M --input $W/unlabelled/images --out $W/tokens/tokens.safetensors \
          "${TRAIN_FLAGS[@]}" $(resume $W/tokens)
      cp $W/tokens/tokens.safetensors $M/tokens.safetensors
      # The regressor on labelled training renders, the error on held-out renders.
      $skp eval --model $M --tokens $M/tokens.safetensors "${EVAL_FLAGS[@]}" \
          --save-regressor $M/pose.json --names $W/fit/joints.txt --skeleton $W/fit/skeleton.txt ;;
    baselines)
      # The model's own part tokens (the ideal tokens), the same pipeline on the random-weight
      # tiny-sd1 model, and the training split's mean pose.
      $skp eval --model $M --tokens $M/part-tokens.safetensors "${EVAL_FLAGS[@]}"
      $skp init-model --out $W/tiny-sd1 --force
      mkdir -p $W/baseline-tiny
      $skp train --model $W/tiny-sd1 --size 128 --input $W/unlabelled/images \
          --out $W/baseline-tiny/tokens.safetensors "${TRAIN_FLAGS[@]}" $(resume $W/baseline-tiny)
      $skp eval --model $W/tiny-sd1 --size 128 --tokens $W/baseline-tiny/tokens.safetensors \
          "${EVAL_FLAGS[@]}"
      target/release/skp-world mean-pose --train $W/fit/labels.csv --test $W/test/labels.csv ;;
    *) echo "unknown stage $s" >&2; exit 1 ;;
  esac
done
