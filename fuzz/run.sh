#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer's coverage instrumentation on stable Rust, and runs one of them.
#
#   bash fuzz/run.sh build                     build every target (fuzz/target/<host>/release/<target>)
#   bash fuzz/run.sh TARGET [SECONDS] [FLAGS]  fuzz TARGET for SECONDS (default 600), extra libFuzzer FLAGS
#   bash fuzz/run.sh TARGET -- FILE...         replay FILEs (a crasher) through TARGET
#
# New inputs go to fuzz/work/TARGET (git-ignored), crashes to fuzz/artifacts/TARGET/. The committed seeds in
# fuzz/corpus/TARGET are read, never written. See fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")"

TARGETS=(safetensors_header configs tokenizer_folder image_png image_jpeg image_webp image_gif image_bmp)
HOST=$(rustc -vV | sed -n 's/^host: //p')
BIN=target/$HOST/release

# What `cargo fuzz build --sanitizer none` passes, all stable flags: SanitizerCoverage's inline 8-bit counters
# and PC table (libFuzzer's coverage feedback) and comparison tracing (libFuzzer learns magic numbers and
# field names from it). `--target` keeps the flags off build scripts and proc macros. `--cfg fuzzing` is the
# ecosystem's convention (the png crate, for one, then skips CRC checks so mutations reach the decoder).
build() {
  if ! command -v c++ >/dev/null; then
    echo "fuzz: libfuzzer-sys compiles libFuzzer (C++): install g++" >&2
    exit 1
  fi
  RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks" \
    cargo build --quiet --release --target "$HOST" --bins
}

case "${1:-}" in
  build) build; exit 0 ;;
  ""|-h|--help) sed -n '2,9p' "$0"; echo "targets: ${TARGETS[*]}"; exit 0 ;;
esac

target=$1
shift
[[ " ${TARGETS[*]} " == *" $target "* ]] || { echo "fuzz: unknown target $target (${TARGETS[*]})" >&2; exit 2; }
build
if [ "${1:-}" = "--" ]; then
  shift
  exec "$BIN/$target" -timeout=10 "$@"
fi
seconds=${1:-600}
shift || true
mkdir -p "work/$target" "artifacts/$target"
dict=()
[ -f "dict/$target.dict" ] && dict=(-dict="dict/$target.dict")
# -timeout: an input running 10 s is a hang. -rss_limit_mb: libFuzzer's own RSS watchdog, above the
# allocator's 512 MiB budget (src/lib.rs). -max_len: room for mutations to grow a seed 4×.
exec "$BIN/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1536 -print_final_stats=1 \
  -max_len="${FUZZ_MAX_LEN:-65536}" -artifact_prefix="artifacts/$target/" "${dict[@]}" "$@" "work/$target" "corpus/$target"
