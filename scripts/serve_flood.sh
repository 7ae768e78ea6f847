#!/usr/bin/env bash
# Goodput of `serve` under clients that ignore Retry-After: 2xx answers in DURATION seconds with 64 clients, then
# with 700 that each ask again the moment they are answered (wrk's closed loop), a fresh server for each.
# Needs wrk (Debian: apt-get install wrk). Usage: bash scripts/serve_flood.sh MODEL_DIR [DURATION=10] [PORT=18080]
set -euo pipefail
model_dir=${1:?usage: bash scripts/serve_flood.sh MODEL_DIR [DURATION] [PORT]}
duration=${2:-10}
port=${3:-18080}
script=$(mktemp --suffix=.lua)
trap 'rm -f "$script"' EXIT
cat > "$script" <<'LUA'
wrk.method = "POST"
wrk.body = '{"inputs": "the film is a joy to watch ."}'
wrk.headers["Content-Type"] = "application/json"
LUA
for clients in 64 700; do
    python3 -m albert_pytorch serve --model_dir "$model_dir" --backend torch --port "$port" >/dev/null 2>&1 &
    server=$!
    for _ in $(seq 600); do curl -sf "127.0.0.1:$port/health" >/dev/null && break; sleep 0.2; done
    out=$(wrk -t2 -c"$clients" -d"${duration}s" -s "$script" "http://127.0.0.1:$port/predict" 2>&1)
    total=$(echo "$out" | grep -oE "^ +[0-9]+ requests" | grep -oE "[0-9]+")
    refused=$(echo "$out" | grep -oE "Non-2xx or 3xx responses: [0-9]+" | grep -oE "[0-9]+$" || true)
    echo "clients=$clients answers=$total refused=${refused:-0} goodput=$((total - ${refused:-0}))"
    kill "$server"
    wait "$server" 2>/dev/null || true
done
