#!/usr/bin/env bash
# CI: every fuzz target replays its committed corpus (seeds and every crasher found so far, so a regression on
# a known crasher fails here) and then fuzzes for a short fixed budget from it: FUZZ_CI_SECONDS (default 5) per
# target, 8 targets, under 60 s in all once built. A fixed seed keeps the mutations the same from run to run.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${FUZZ_CI_SECONDS:-5}
HOST=$(rustc -vV | sed -n 's/^host: //p')
bash run.sh build
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
start=$SECONDS
for target in safetensors_header configs tokenizer_folder image_png image_jpeg image_webp image_gif image_bmp; do
  mkdir -p "$scratch/$target"
  dict=()
  [ -f "dict/$target.dict" ] && dict=(-dict="dict/$target.dict")
  # New inputs go to a scratch folder, never into the committed corpus; a crash leaves its input in
  # $scratch (printed by libFuzzer, with its base64 when small) and fails the step.
  if ! out=$("target/$HOST/release/$target" -seed=1 -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1536 -print_final_stats=1 \
      -max_len=65536 "${dict[@]}" -artifact_prefix="$scratch/" "$scratch/$target" "corpus/$target" 2>&1); then
    echo "$out" | tail -40
    echo "fuzz: $target FAILED (crasher above; replay with: bash fuzz/run.sh $target -- FILE)" >&2
    exit 1
  fi
  echo "$out" | grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' | tr '\n' ' ' | sed "s/^/fuzz: $target: /"
  echo
done
echo "fuzz: all targets clean in $((SECONDS - start)) s"
