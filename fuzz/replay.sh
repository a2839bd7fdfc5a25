#!/usr/bin/env bash
# Replays every corpus under corpus/ through every fuzz target, each input
# once (-runs=0): a regression check for CI, a few seconds once built. A
# crash, timeout or leak of memory past the limit fails the script.
#
# The targets are built with cargo-fuzz when it is installed (sanitizer
# instrumentation, like a fuzzing run; no nightly needed, RUSTC_BOOTSTRAP
# is set), else with plain cargo on the stable toolchain (libFuzzer without
# coverage instrumentation replays inputs just the same; set
# FUZZ_REPLAY_PLAIN=1 to build that way even where cargo-fuzz is installed).
#   ./replay.sh              all targets
#   ./replay.sh pack_parse   some of them
set -euo pipefail
cd "$(dirname "$0")"

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(awk '/^\[\[bin\]\]/ { bin = 1; next }
        bin && /^name *=/ { gsub(/^name *= *"|"$/, ""); print; bin = 0 }' Cargo.toml)
fi
corpora=()
for dir in corpus/*/; do
    [ -d "$dir" ] && corpora+=("$dir")
done
[ "${#corpora[@]}" -gt 0 ] || { echo "replay: no corpus under corpus/" >&2; exit 1; }

if [ -z "${FUZZ_REPLAY_PLAIN:-}" ] && cargo fuzz --version >/dev/null 2>&1; then
    echo "== replay: building ${targets[*]} with cargo-fuzz"
    for t in "${targets[@]}"; do
        RUSTC_BOOTSTRAP=1 cargo fuzz build -O "$t"
    done
    bin_dir="target/$(rustc -vV | sed -n 's/^host: //p')/release"
else
    echo "== replay: building ${targets[*]} with cargo (no cargo-fuzz)"
    cargo build --release $(printf -- '--bin %s ' "${targets[@]}")
    bin_dir="target/release"
fi

inputs=$(find "${corpora[@]}" -type f | wc -l)
failed=0
for t in "${targets[@]}"; do
    log=$(mktemp)
    if "$bin_dir/$t" -runs=0 -rss_limit_mb=512 -timeout=5 "${corpora[@]}" >"$log" 2>&1; then
        echo "replay: $t: $inputs inputs, ok"
    else
        echo "replay: $t FAILED on one of $inputs inputs:" >&2
        tail -n 40 "$log" >&2
        failed=$((failed + 1))
    fi
    rm -f "$log"
done
total=${#targets[@]}
echo "$((total - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
