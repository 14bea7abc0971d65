#!/usr/bin/env bash
# Newcomer demo: installs the system packages, builds, generates the tiny random demo model
# and tokens, encodes a synthetic clip, and runs the elements (inference, publish, overlay)
# in a real gst-launch-1.0 pipeline that writes an annotated MP4 and a JSON lines file.
# Usage: ./demo.sh     (outputs in out/)
set -euo pipefail
cd "$(dirname "$0")"
scripts/install-deps.sh

echo "== building (cargo, debug profile shared with ./test.sh)"
cargo build -p stablekeypoints-cli -p gst-plugin-stablekeypoints
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')

mkdir -p out/plugin
# A folder with only our plugin: GStreamer scans GST_PLUGIN_PATH recursively.
ln -sf "$target/debug/libgststablekeypoints.so" out/plugin/libgststablekeypoints.so
export GST_PLUGIN_PATH="$PWD/out/plugin"

echo "== tiny demo model (random weights) -> out/model"
"$target/debug/stablekeypoints" init-model --out out/model --force  # the demo's own folder

echo "== synthetic clip -> out/input.mp4"
gst-launch-1.0 -q videotestsrc num-buffers=60 pattern=ball \
  ! video/x-raw,format=I420,width=320,height=240,framerate=15/1 \
  ! x264enc ! mp4mux ! filesink location=out/input.mp4

echo "== running the element"
set -x
time gst-launch-1.0 filesrc location=out/input.mp4 ! decodebin \
  ! stablekeypoints model=out/model tokens=out/model/tokens.safetensors \
  ! stablekeypointspublish location=out/keypoints.jsonl \
  ! stablekeypointsoverlay draw-ids=true \
  ! videoconvert ! x264enc ! mp4mux ! filesink location=out/demo.mp4
set +x

echo
echo "annotated video: $PWD/out/demo.mp4"
echo "keypoints:       $PWD/out/keypoints.jsonl ($(wc -l < out/keypoints.jsonl) frames)"
echo "first record:    $(head -c 300 out/keypoints.jsonl)..."
echo "try it on your own video:"
echo "  GST_PLUGIN_PATH=$GST_PLUGIN_PATH gst-launch-1.0 filesrc location=YOUR.mp4 ! decodebin \\"
echo "    ! stablekeypoints model=out/model draw=true ! videoconvert ! autovideosink"
