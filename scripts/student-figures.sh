#!/usr/bin/env bash
# The figures of docs/student.md: accuracy of the committed student and its teacher on the
# figure world's held-out renders, temporal jitter on the demo clip, speed of both (bench and
# the element at 1080p). Run ./demo.sh first (it writes out/demo.jsonl and out/student.jsonl).
# Usage: scripts/student-figures.sh [PROFILE]   (PROFILE: release (default) or debug)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-release}
flag=$([ "$profile" = release ] && echo --release || true)
cargo build $flag -p stablekeypoints-cli -p gst-plugin-stablekeypoints -p skp-world
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
B=$target/$profile/stablekeypoints
W=$target/$profile/skp-world
M=models/figure
mkdir -p out/figures out/plugin-$profile
ln -sf "$target/$profile/libgststablekeypoints.so" out/plugin-$profile/
export GST_PLUGIN_PATH=$PWD/out/plugin-$profile

echo "== cpu: $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(nproc) threads"
[ -d out/world/fit ] || $W labelled --out out/world/fit --count 300 --seed 3
[ -d out/world/test ] || $W labelled --out out/world/test --count 200 --seed 4
names=(--names out/world/fit/joints.txt)
ev() { $B eval --train out/world/fit/labels.csv --test out/world/test/labels.csv --metric taichi "$@"; }
echo "== accuracy (taichi, and mean L2 per joint in px at 128)"
if [ "${SKP_TEACHER10:-1}" = 1 ]; then # 15 minutes on 2 cores; SKP_TEACHER10=0 skips it
  echo "-- teacher, 10 augmentations (eval's default), regressor fitted"
  ev --model $M "${names[@]}"
fi
echo "-- teacher, 1 augmentation, regressor fitted"
ev --model $M --augmentations 1 "${names[@]}"
echo "-- student, the teacher's pose.json as it is"
$B eval --model $M/student.safetensors --pose $M/pose.json --test out/world/test/labels.csv --metric taichi "${names[@]}"
echo "-- student, regressor refitted on its keypoints"
ev --model $M/student.safetensors "${names[@]}"

echo "== jitter on the demo clip (out/demo.jsonl: teacher, out/student.jsonl: student)"
python3 - out/demo.jsonl out/student.jsonl <<'EOF'
import json, sys
for path in sys.argv[1:]:
    recs = [json.loads(l) for l in open(path)]
    kp = [[(k["x"], k["y"]) for k in r["keypoints"]] for r in recs]
    first = second = n1 = n2 = 0.0
    for t in range(1, len(kp)):
        for a, b in zip(kp[t - 1], kp[t]):
            first += ((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) ** 0.5; n1 += 1
    for t in range(1, len(kp) - 1):
        for a, b, c in zip(kp[t - 1], kp[t], kp[t + 1]):
            dx, dy = b[0] - (a[0] + c[0]) / 2, b[1] - (a[1] + c[1]) / 2
            second += (dx * dx + dy * dy) ** 0.5; n2 += 1
    print(f"{path}: {len(kp)} frames; mean frame-to-frame move {first / n1:.2f} px, "
          f"mean distance from the midpoint of its neighbours {second / n2:.2f} px")
EOF

echo "== bench (batch 1, then 8)"
$B bench --model $M --tokens $M/tokens.safetensors --runs 5
$B bench --model $M/student.safetensors --runs 50
$B bench --model $M/student.safetensors --runs 20 --batch 8

echo "== the element at 1080p I420, every frame inferred"
el() { # MODEL_PROPS FRAMES BATCH
  local s e
  s=$(date +%s.%N)
  gst-launch-1.0 -q videotestsrc num-buffers=$2 ! video/x-raw,width=1920,height=1080,format=I420 \
    ! queue ! stablekeypoints $1 inference-interval=1 qos=false batch-size=$3 ! fakesink sync=false
  e=$(date +%s.%N)
  awk -v n="$2" -v s="$s" -v e="$e" -v m="$1 batch-size=$3" \
    'BEGIN { printf "%s: %d frames in %.2f s, %.1f frames/s\n", m, n, e - s, n / (e - s) }'
}
el "model=$M tokens=$M/tokens.safetensors" 30 1
el "model=$M/student.safetensors" 600 1
el "model=$M/student.safetensors" 600 4
