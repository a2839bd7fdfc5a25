#!/usr/bin/env bash
# The test command: every test of the workspace. The browser tests drive
# Debian's headless Chromium through chromedriver; when either is missing it
# is installed first (apt-get, with sudo unless run as root). Arguments are
# passed to `cargo test --workspace` (say `-- poison` to run one area).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
    echo "== installing chromium and chromium-driver (for the browser tests)"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends chromium chromium-driver
fi
exec cargo test --workspace "$@"
