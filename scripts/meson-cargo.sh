#!/usr/bin/env bash
# Called by meson.build: builds the plugin with cargo and copies the shared object to the
# path meson expects. Usage: meson-cargo.sh SOURCE_ROOT OUTPUT release|debug [FEATURES]
set -euo pipefail
src=$1 out=$2 profile=$3 features=${4:-}
args=(build --manifest-path "$src/Cargo.toml" -p gst-plugin-stablekeypoints --lib)
[ "$profile" = release ] && args+=(--release)
[ -n "$features" ] && args+=(--features "$features")
cargo "${args[@]}"
# Wherever cargo puts its output (CARGO_TARGET_DIR, .cargo/config.toml, or ./target).
target=$(cargo metadata --manifest-path "$src/Cargo.toml" --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
dir=$target/$([ "$profile" = release ] && echo release || echo debug)
cp "$dir/libgststablekeypoints.so" "$out"
