#!/usr/bin/env bash
# Bounded fuzzing of every target, then a replay of the inputs that once crashed.
# Usage: fuzz/run.sh [seconds per target, default 60]. Needs cargo-fuzz; on a stable
# toolchain RUSTC_BOOTSTRAP=1 unlocks the nightly features it uses.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
fuzz() { RUSTC_BOOTSTRAP=1 cargo fuzz run -O -a --codegen-units 16 "$@"; }
for t in tokens config_json frame label_csv; do
  mkdir -p "corpus/$t"
  dict=()
  [ -f "$t.dict" ] && dict=("-dict=$t.dict")
  echo "== $t: ${secs} s"
  fuzz "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" "${dict[@]}"
  if [ -d "regressions/$t" ]; then
    echo "== $t: regressions"
    fuzz "$t" regressions/"$t"/*
  fi
done
