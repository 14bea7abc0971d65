#!/usr/bin/env bash
# Runs every test: formatting, lints, unit/integration tests of the core, the CLI and the
# GStreamer plugin (all offline, on the CPU, with tiny models). Usage: ./test.sh
set -euo pipefail
cd "$(dirname "$0")"
scripts/install-deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
# Bounded soak of the element (every frame inferred, RSS must stay flat); 10,000 by hand.
SKP_SOAK_FRAMES="${SKP_SOAK_FRAMES:-2000}" \
  cargo test -p gst-plugin-stablekeypoints --test reliability -- --ignored soak
