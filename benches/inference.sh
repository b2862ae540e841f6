#!/usr/bin/env bash
# Inference router latency and throughput (issue 8's benchmark): a streaming completion's time
# to first token and per-chunk lag, and small completions per second, calling the fake
# provider (crates/corral-testkit/src/fake_provider.rs) directly from the host and through
# corral from inside a gateway sandbox (sandbox → 127.0.0.1:3128 bridge → `corral run`'s
# egress proxy → the gateway's inference socket → policy, budget, key swap → provider).
# The same Python client (http.client, one connection per request) runs in both places.
# Prints markdown tables. Usage: benches/inference.sh [STREAMS [SECONDS]]
set -euo pipefail
cd "$(dirname "$0")/.."
streams=${1:-50}
seconds=${2:-10}
chunks=20
delay_ms=20
cargo build --release -p corral --locked -q
cargo build --release -p corral-testkit --example fake-provider --locked -q
corral=$PWD/target/release/corral
work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() {
  # The sandbox first: it outlives the gateway, which must still be there to stop it.
  if [ -n "${sandbox:-}" ]; then "$corral" sandbox delete "$sandbox" >/dev/null 2>&1 || true; fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
port=$((20000 + RANDOM % 20000))
"$PWD/target/release/examples/fake-provider" "127.0.0.1:$port" "$chunks" "$delay_ms" &
pids+=($!)
export CORRAL_URL="http://127.0.0.1:$((port + 1))"
export CORRAL_TOKEN=bench-admin-token-bench-admin-token-0001
CORRAL_ADMIN_TOKEN=$CORRAL_TOKEN HOME=$work "$corral" up --listen "127.0.0.1:$((port + 1))" \
  --data-dir "$work/data" >"$work/gateway.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "$CORRAL_URL/api/v1/openapi.json" >/dev/null && break; sleep 0.1; done
BENCH_KEY=sk-bench "$corral" provider add anthropic --kind anthropic \
  --base-url "http://127.0.0.1:$port" --key-env BENCH_KEY --allow-private >/dev/null
sandbox=$("$corral" sandbox create bench --profile moderate --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
"$corral" sandbox start "$sandbox" >/dev/null
cp benches/inference_client.py "$work/data/sandboxes/$sandbox/workspace/client.py"
run_inside() {
  "$corral" sandbox exec "$sandbox" -- sh -c \
    "python3 /workspace/client.py 127.0.0.1:3128 /inference/anthropic/v1/messages \"\$ANTHROPIC_API_KEY\" $*"
}
direct() { python3 benches/inference_client.py "127.0.0.1:$port" /v1/messages sk-bench "$@"; }
echo "fake provider: $chunks chunks, ${delay_ms} ms apart; $streams streams; ${seconds} s per throughput run"
echo
echo "| path | TTFT p50 ms | TTFT p90 ms | chunk lag p50 ms | chunk lag p90 ms |"
echo "|---|---:|---:|---:|---:|"
echo "| direct | $(direct stream "$streams" "$delay_ms") |"
echo "| through corral | $(run_inside stream "$streams" "$delay_ms") |"
echo
echo "| path | clients | completions/s | p50 ms | p90 ms |"
echo "|---|---:|---:|---:|---:|"
for clients in 1 8; do
  echo "| direct | $clients | $(direct rate "$seconds" "$clients") |"
  echo "| through corral | $clients | $(run_inside rate "$seconds" "$clients") |"
done
