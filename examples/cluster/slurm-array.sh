#!/bin/bash
# A corpus as a Slurm job array: task i (SLURM_ARRAY_TASK_ID) processes shard i of
# SKP_SHARD_COUNT, i.e. the videos j of the sorted list with j mod 8 == i, into a shared file
# system. A task that fails or is requeued reruns: it skips every video that has a done.json
# and redoes only the unfinished one. See README.md next to this file.
#
#   mkdir -p logs && sbatch examples/cluster/slurm-array.sh
#   stablekeypoints corpus-status /shared/out/taichi
#   sbatch --array=3,5 examples/cluster/slurm-array.sh     # rerun two shards only
#
#SBATCH --job-name=stablekeypoints-taichi
#SBATCH --array=0-7%4
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --output=logs/%x-%A_%a.log
set -euo pipefail

# The shard count, fixed here (not SLURM_ARRAY_TASK_COUNT) so that a rerun of some of the
# tasks (--array=3,5) keeps each task's share. Keep it equal to the --array range above.
export SKP_SHARD_COUNT="${SKP_SHARD_COUNT:-8}"
: "${MODEL:=/shared/models/sd15}"
: "${TOKENS:=/shared/tokens/taichi.safetensors}"
: "${CORPUS_LIST:=/shared/corpus/taichi/videos.txt}"
: "${OUT_DIR:=/shared/out/taichi}"
: "${DEVICE:=cuda:0}"

exec stablekeypoints process --model "$MODEL" --tokens "$TOKENS" --inputs "$CORPUS_LIST" \
    --out-dir "$OUT_DIR" --device "$DEVICE" --workers 2 --max-attempts 3 --no-annotated --coco
