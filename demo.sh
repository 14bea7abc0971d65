#!/usr/bin/env bash
# Newcomer demo: installs the system packages, builds, renders a slow motion clip of the
# figure world (skp-world), encodes it with GStreamer, and runs the elements (inference, pose,
# publish, overlay) with the committed figure model, its learned tokens and pose file in a
# real gst-launch-1.0 pipeline that writes an annotated MP4 and a JSON lines file; then
# scores the pose against the clip's true joints.
# Usage: ./demo.sh     (outputs in out/)
set -euo pipefail
cd "$(dirname "$0")"
scripts/install-deps.sh

echo "== building (cargo, debug profile shared with ./test.sh)"
cargo build -p stablekeypoints-cli -p gst-plugin-stablekeypoints -p skp-world
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')

mkdir -p out/plugin
# A folder with only our plugin: GStreamer scans GST_PLUGIN_PATH recursively.
ln -sf "$target/debug/libgststablekeypoints.so" out/plugin/libgststablekeypoints.so
export GST_PLUGIN_PATH="$PWD/out/plugin"

model=models/figure
echo "== motion clip of the figure world (10 s, 256x256, seed 5) -> out/input.mp4"
rm -rf out/clip  # the demo's own folder
"$target/debug/skp-world" clip --out out/clip --frames 150 --fps 15 --size 256 --seed 5
gst-launch-1.0 -q multifilesrc location=out/clip/frames/%05d.png index=0 \
    caps=image/png,framerate=15/1 ! pngdec ! videoconvert ! video/x-raw,format=I420 \
  ! x264enc ! mp4mux ! filesink location=out/input.mp4

# One literal pipeline, run with the teacher (the diffusion model and its tokens) and with
# the student distilled from it; each prints its frames per second and its score.
run() { # NAME MODEL_PROPS
  echo "== $1: the element with $2"
  local start end
  start=$(date +%s.%N)
  set -x
  gst-launch-1.0 -q filesrc location=out/input.mp4 ! decodebin \
    ! stablekeypoints $2 \
    ! stablekeypointspose pose=$model/pose.json \
    ! stablekeypointspublish location=out/$1.jsonl \
    ! stablekeypointsoverlay draw-ids=true \
    ! videoconvert ! x264enc ! mp4mux ! filesink location=out/$1.mp4
  { set +x; } 2>/dev/null
  end=$(date +%s.%N)
  awk -v n="$(wc -l < out/$1.jsonl)" -v s="$start" -v e="$end" -v name="$1" \
    'BEGIN { printf "%s: %d frames in %.1f s, %.1f frames/s (decoding and encoding included)\n", name, n, e - s, n / (e - s) }'
  "$target/debug/skp-world" score --labels out/clip/labels.csv --jsonl out/$1.jsonl
}
run demo "model=$model tokens=$model/tokens.safetensors"
run student "model=$model/student.safetensors"
cp out/demo.jsonl out/keypoints.jsonl

# Top-down: two figures crossing a wide frame, their boxes from a file (as a detector's
# would come), each figure's keypoints and skeleton on its own box.
echo "== two figures (4 s, 512x256, seed 1) -> out/people.mp4, boxes in out/people/boxes.jsonl"
rm -rf out/people
"$target/debug/skp-world" people --out out/people --frames 60 --fps 15 --figures 2 --seed 1
gst-launch-1.0 -q multifilesrc location=out/people/frames/%05d.png index=0 \
    caps=image/png,framerate=15/1 ! pngdec ! videoconvert ! video/x-raw,format=I420 \
  ! x264enc ! mp4mux ! filesink location=out/people.mp4
set -x
gst-launch-1.0 -q filesrc location=out/people.mp4 ! decodebin \
  ! stablekeypointsboxes location=out/people/boxes.jsonl \
  ! stablekeypoints model=$model tokens=$model/tokens.safetensors inference-region=roi-list object-margin=0.05 \
  ! stablekeypointspose pose=$model/pose.json \
  ! stablekeypointspublish location=out/people.jsonl \
  ! stablekeypointsoverlay draw-ids=true \
  ! videoconvert ! x264enc ! mp4mux ! filesink location=out/people-demo.mp4
{ set +x; } 2>/dev/null
"$target/debug/skp-world" score-people --people out/people/people.jsonl --jsonl out/people.jsonl
echo

echo "annotated video: $PWD/out/demo.mp4 (student: $PWD/out/student.mp4; two figures: $PWD/out/people-demo.mp4)"
echo "keypoints:       $PWD/out/keypoints.jsonl ($(wc -l < out/keypoints.jsonl) frames)"
echo "first record:    $(head -c 300 out/keypoints.jsonl)..."
echo "try it on your own video (the figure model knows only the figure world; learn tokens for"
echo "your footage with 'stablekeypoints train', see the README):"
echo "  GST_PLUGIN_PATH=$GST_PLUGIN_PATH gst-launch-1.0 filesrc location=YOUR.mp4 ! decodebin \\"
echo "    ! stablekeypoints model=$model tokens=$model/tokens.safetensors draw=true ! videoconvert ! autovideosink"
