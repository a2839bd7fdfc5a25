#!/usr/bin/env bash
# Replays every corpus under fuzz/corpus/ through every fuzz target, each
# input once (no fuzzing): the short mode for CI. A crash, a timeout (5 s)
# or more than 512 MB fails the run.
#
#   fuzz/replay.sh             every target
#   fuzz/replay.sh paths ...   only these targets
#
# cargo-fuzz asks rustc for sanitizer flags that need nightly;
# RUSTC_BOOTSTRAP=1 lets a stable toolchain take them.
set -uo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked || exit 1
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build --sanitizer address || exit 1

passed=0
failed=0
for target in "${targets[@]}"; do
    for corpus in corpus/*/; do
        corpus=${corpus%/}
        if out=$(cargo fuzz run --sanitizer address "$target" "$corpus" -- \
            -runs=0 -timeout=5 -rss_limit_mb=512 2>&1); then
            passed=$((passed + 1))
            echo "ok   $target < $corpus: $(grep -o 'Done [0-9]* runs' <<<"$out")"
        else
            failed=$((failed + 1))
            echo "FAIL $target < $corpus"
            tail -n 40 <<<"$out"
        fi
    done
done
echo "fuzz-replay: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
