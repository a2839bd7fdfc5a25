#!/usr/bin/env bash
# The test command: every test of the workspace. The browser tests drive
# Debian's headless Chromium through chromedriver, and the tests of several
# centrals on PostgreSQL run them behind HAProxy; what is missing of these
# is installed first (apt-get, with sudo unless run as root). Arguments are
# passed to `cargo test --workspace` (say `-- poison` to run one area).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]} (for the browser tests and the tests behind HAProxy)"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
exec cargo test --workspace "$@"
