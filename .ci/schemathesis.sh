#!/usr/bin/env bash
# Checks both servers against docs/openapi.json with schemathesis (every
# check: invalid input, unsupported methods, status codes, content types,
# headers and response schemas), each against the document it serves at
# /openapi.json:
#   - a satellite without api_token,
#   - a satellite with api_token,
#   - central, with HQ's admin token and with an instance token.
# A few records are created first so that reads and writes of existing
# records are exercised too (.ci/schemathesis_hooks.py hands their ids and
# ETags to some of the generated requests).
#
# Usage: .ci/schemathesis.sh BIN   (BIN: the chartsync binary)
# SCHEMATHESIS_EXAMPLES=N sets the test cases per operation (default in the
# configuration files: 25; more for a deeper run by hand).
# Installs schemathesis with pip if it is missing. Fails on any failure.
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5
bin=${1:?usage: .ci/schemathesis.sh path/to/chartsync}
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
cd "$(dirname "$0")/.."
root=$(pwd)

if ! command -v schemathesis >/dev/null 2>&1 ||
    [ "$(schemathesis --version 2>/dev/null | grep -o '[0-9.]*$')" != "$SCHEMATHESIS_VERSION" ]; then
    python3 -m pip install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits for /healthz; shows the server's log if it never answers.
wait_healthy() {
    local url=$1 log=$2
    for _ in $(seq 1 100); do
        if curl -fsS "$url/healthz" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "no answer from $url; its log:" >&2
    cat "$log" >&2
    exit 1
}

# POSTs a record and prints its id.
create() {
    local url=$1 token=$2 name=$3
    local auth=()
    [ -n "$token" ] && auth=(-H "Authorization: Bearer $token")
    curl -fsS "${auth[@]}" -H 'Content-Type: application/json' \
        -d "{\"files\": {\"patient.yaml\": \"name: $name\\ncatchment: north\\n\", \"notes.txt\": \"seen\\n\"}}" \
        "$url/v1/patients" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])'
}

admin=schemathesis-admin-token-0123456789abcdef
central_port=$(free_port)
central_url=http://127.0.0.1:$central_port
mkdir -p "$work/central"
cat >"$work/central/central.toml" <<EOF
listen = "127.0.0.1:$central_port"
data_dir = "$work/central/data"
admin_token = "$admin"
EOF
instance=$("$bin" central instance add --config "$work/central/central.toml" --name north --catchment north)
instance_id=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["id"])' "$instance")
instance_token=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["token"])' "$instance")
"$bin" central serve --config "$work/central/central.toml" >"$work/central.log" 2>&1 &
pids+=($!)

# Satellites: $1 name, $2 api_token ("" for none). Sets $sat_url (not
# printed: a command substitution's subshell would keep the pid to itself).
start_satellite() {
    local name=$1 token=$2 port
    port=$(free_port)
    mkdir -p "$work/$name"
    {
        echo "listen = \"127.0.0.1:$port\""
        echo "data_dir = \"$work/$name/data\""
        [ -n "$token" ] && echo "api_token = \"$token\""
        echo "[central]"
        echo "url = \"$central_url\""
        echo "instance_id = $instance_id"
        echo "token = \"$instance_token\""
        echo "timeout_secs = 5"
    } >"$work/$name/satellite.toml"
    "$bin" satellite run --config "$work/$name/satellite.toml" >"$work/$name.log" 2>&1 &
    pids+=($!)
    sat_url=http://127.0.0.1:$port
}
start_satellite open ""
open_url=$sat_url
sat_token=schemathesis-satellite-api-token-0123456789
start_satellite closed "$sat_token"
closed_url=$sat_url

wait_healthy "$central_url" "$work/central.log"
wait_healthy "$open_url" "$work/open.log"
wait_healthy "$closed_url" "$work/closed.log"

# Seed records, and hand their ids to the hooks.
seed() {
    local url=$1 token=$2 ids=()
    for n in 1 2 3; do
        ids+=("$(create "$url" "$token" "Seed $n")")
    done
    (IFS=,; echo "${ids[*]}")
}

failed=0
# $1 label, $2 config, $3 base URL, $4 token ("" for none), $5 seeded ids
run() {
    local label=$1 config=$2 url=$3 token=$4 ids=$5
    local args=()
    [ -n "$token" ] && args=(-H "Authorization: Bearer $token")
    [ -n "${SCHEMATHESIS_EXAMPLES:-}" ] && args+=(--max-examples "$SCHEMATHESIS_EXAMPLES")
    echo "== schemathesis: $label ($url)"
    # From the temporary folder, where schemathesis leaves its cache.
    if ! (cd "$work" && SCHEMATHESIS_HOOKS=$root/.ci/schemathesis_hooks.py \
        CHARTSYNC_SEED_IDS=$ids CHARTSYNC_SEED_URL=$url CHARTSYNC_SEED_TOKEN=$token \
        schemathesis --config-file "$config" run "${args[@]}" \
        --url "$url" --checks all --no-color "$url/openapi.json"); then
        echo "!! schemathesis found failures: $label" >&2
        failed=1
    fi
}

sat_config=$root/.ci/schemathesis-satellite.toml
central_config=$root/.ci/schemathesis-central.toml
run "satellite without api_token" "$sat_config" "$open_url" "" "$(seed "$open_url" "")"
run "satellite with api_token" "$sat_config" "$closed_url" "$sat_token" "$(seed "$closed_url" "$sat_token")"
central_ids=$(seed "$central_url" "$admin")
run "central, HQ admin token" "$central_config" "$central_url" "$admin" "$central_ids"
run "central, instance token" "$central_config" "$central_url" "$instance_token" "$central_ids"

if [ "$failed" -ne 0 ]; then
    echo "schemathesis: failures above" >&2
    exit 1
fi
echo "schemathesis: every check passed against both servers"
