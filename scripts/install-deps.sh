#!/usr/bin/env bash
# System packages for building and running stablekeypoints (Debian 12 / Ubuntu).
# Idempotent: installs only what is missing. Needs root (or sudo).
set -euo pipefail
# plugins-bad: x265enc and h265parse, for the element's HEVC 10-bit pipeline test.
# python3-gi + the GStreamer typelibs: the Python metadata consumer test (tests/elements/dlstreamer.rs).
pkgs=(pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-tools
      gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly
      gstreamer1.0-plugins-bad gstreamer1.0-libav meson ninja-build
      python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0
      protobuf-compiler  # protoc: candle-onnx (dev-dependency of the ONNX export test) builds its protos
      mosquitto)  # MQTT broker of the publish element's tests (started by the tests themselves)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
