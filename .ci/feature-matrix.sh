#!/usr/bin/env bash
# Every feature combination compiles: the library and the binaries natively with `cli` and `gpu` each on and
# off, and the library for wasm32 with and without `gpu` (`cli` is native only: clap, ureq, pollster). `check`
# only: no codegen, so the whole matrix costs a few minutes; the tests build the default combination fully.
set -euo pipefail
cd "$(dirname "$0")/.."

failed=()
run() {
  local what="$1"; shift
  echo "-- $what"
  if ! cargo check --quiet "$@"; then failed+=("$what"); fi
}

for features in "" "cli" "gpu" "cli,gpu"; do
  run "native lib + bins, features [${features}]" --lib --bins --no-default-features ${features:+--features "$features"}
done
for features in "" "gpu"; do
  run "wasm32 lib, features [${features}]" --target wasm32-unknown-unknown --lib --no-default-features ${features:+--features "$features"}
done

if ((${#failed[@]})); then
  printf 'feature combinations that do not compile:\n' >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "== all 6 feature combinations compile"
