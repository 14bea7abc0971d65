#!/usr/bin/env bash
# Frames/s of the inference element top-down (inference-region=roi-list) with 1, 2 and 4
# people per 1080p I420 frame, their boxes from a file, for the committed teacher and
# student, batch-size 1 and 4; each timed by farm-bench (median of 3 runs of the whole
# gst-launch-1.0 process, start-up and model loading included: the frames/s printed are
# frames / median wall seconds). Usage: scripts/people-figures.sh [TEACHER_FRAMES STUDENT_FRAMES]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p gst-plugin-stablekeypoints
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/plugin"
ln -s "$target/debug/libgststablekeypoints.so" "$work/plugin/"
export GST_PLUGIN_PATH="$work/plugin"
teacher_frames=${1:-30}
student_frames=${2:-300}
model=models/figure
grep -m1 "model name" /proc/cpuinfo
for n in 1 2 4; do
  # n people of 300x800 side by side on every frame.
  for ((f = 0; f < student_frames; f++)); do
    printf '{"frame": %d, "objects": [' "$f"
    for ((p = 0; p < n; p++)); do
      [ "$p" -gt 0 ] && printf ', '
      printf '{"id": %d, "box": [%d, 140, 300, 800]}' "$p" $((100 + 450 * p))
    done
    printf ']}\n'
  done > "$work/boxes$n.jsonl"
done
run() { # NAME MODEL_PROPS FRAMES PEOPLE BATCH
  local wall
  wall=$(farm-bench -n "${RUNS:-3}" --warmup "${WARMUP:-1}" --timeout 900 -- gst-launch-1.0 -q videotestsrc num-buffers="$3" \
      ! video/x-raw,width=1920,height=1080,format=I420 \
      ! stablekeypointsboxes location="$work/boxes$4.jsonl" \
      ! stablekeypoints $2 inference-region=roi-list batch-size="$5" qos=false \
      ! fakesink sync=false 2>&1 | awk '/^A wall/ { print $5 }')
  awk -v name="$1" -v n="$4" -v b="$5" -v f="$3" -v w="$wall" \
    'BEGIN { printf "| %s | %d | %d | %.1f | %.1f |\n", name, n, b, f / w, f * n / w }'
}
echo "| estimator | people | batch-size | frames/s | people/s |"
echo "|---|---|---|---|---|"
for n in 1 2 4; do
  for b in 1 4; do
    run teacher "model=$model tokens=$model/tokens.safetensors" "$teacher_frames" "$n" "$b"
  done
done
for n in 1 2 4; do
  for b in 1 4; do
    run student "model=$model/student.safetensors" "$student_frames" "$n" "$b"
  done
done
