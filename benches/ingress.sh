#!/usr/bin/env bash
# Ingress throughput and latency (issue 6's benchmark), in one run: wrk against one small
# HTTP server program (node, answering "hello" with keep-alive)
#   direct  — the program on the host's loopback, no proxy;
#   nginx   — nginx (Debian package) as a reverse proxy to that same program, with upstream
#             keep-alive;
#   corral  — corral's ingress (session host + Bearer token) to the same program running in a
#             sandbox (profile full), reached through the sandbox's ingress socket.
# Then resume latency: a stopped sandbox, one request, time to the first byte of the answer
# (includes starting the sandbox and node starting to listen).
# Installs wrk and nginx when missing; builds the release binary.
# Usage: benches/ingress.sh   (INGRESS_BENCH_SECONDS, _CONNECTIONS, _THREADS, _RESUMES)
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk nginx; do
  if ! command -v "$tool" >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light
  fi
done
cargo build --release -p corral --locked
BIN=$PWD/target/release/corral
DURATION=${INGRESS_BENCH_SECONDS:-10}
CONNECTIONS=${INGRESS_BENCH_CONNECTIONS:-32}
THREADS=${INGRESS_BENCH_THREADS:-2}
RESUMES=${INGRESS_BENCH_RESUMES:-10}
SERVER='require("http").createServer((q,s)=>s.end("hello\n")).listen(+process.argv[1],"127.0.0.1")'
DIRECT_PORT=18180 NGINX_PORT=18181 CORRAL_PORT=18182

WORK=$(mktemp -d)
pids=()
cleanup() {
  nginx -p "$WORK" -c "$WORK/nginx.conf" -s quit 2>/dev/null || true
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # Sandboxes outlive the gateway by design: stop them (their process groups).
  for pid in $(pgrep -f "corral run .*$WORK" || true); do kill -KILL -- "-$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

node -e "$SERVER" "$DIRECT_PORT" & pids+=($!)

mkdir -p "$WORK/logs"
cat > "$WORK/nginx.conf" <<NGINX
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/logs/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/body;
  proxy_temp_path $WORK/proxy;
  upstream app { server 127.0.0.1:$DIRECT_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }
}
NGINX
nginx -p "$WORK" -c "$WORK/nginx.conf"

CORRAL_ADMIN_TOKEN=bench-token-0123456789abcdef0123456789abcdef \
  "$BIN" up --listen "127.0.0.1:$CORRAL_PORT" --data-dir "$WORK/data" >"$WORK/up.out" 2>"$WORK/up.err" &
pids+=($!)
TOKEN=bench-token-0123456789abcdef0123456789abcdef
API="http://127.0.0.1:$CORRAL_PORT/api/v1"
for _ in $(seq 100); do curl -sf "$API/openapi.json" >/dev/null && break; sleep 0.1; done
create() {
  curl -sf -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    --data "{\"profile\":\"full\",\"command\":[\"node\",\"-e\",$(printf '%s' "$SERVER" | python3 -c 'import json,sys;print(json.dumps(sys.stdin.read()))'),\"8000\"],\"ports\":[8000]}" \
    "$API/sandboxes" | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])'
}
ID=$(create)
HOST="$ID.localhost:$CORRAL_PORT"
curl -sf -H "Host: $HOST" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$CORRAL_PORT/" >/dev/null

# wrk URL [headers...] → "requests/s p50 p99" (latencies in ms)
measure() {
  local url=$1; shift
  local out
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url")
  python3 - "$out" <<'PY'
import re, sys
out = sys.argv[1]
def ms(label):
    m = re.search(r"^\s*%s\s+([\d.]+)(us|ms|s)\s*$" % label, out, re.M)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
print(rps, ms("50%"), ms("99%"), errors.group(1) if errors else 0)
PY
}
read -r d_rps d_p50 d_p99 d_err < <(measure "http://127.0.0.1:$DIRECT_PORT/")
read -r n_rps n_p50 n_p99 n_err < <(measure "http://127.0.0.1:$NGINX_PORT/")
read -r c_rps c_p50 c_p99 c_err < <(measure "http://127.0.0.1:$CORRAL_PORT/" \
  -H "Host: $HOST" -H "Authorization: Bearer $TOKEN")

# Resume: stop, then time one request (curl's time to first byte), RESUMES times.
RESUME_ID=$(create)
resumes=()
for _ in $(seq "$RESUMES"); do
  curl -sf -X POST -H "Authorization: Bearer $TOKEN" "$API/sandboxes/$RESUME_ID/stop" >/dev/null
  t=$(curl -sf -o /dev/null -w '%{time_starttransfer}' -H "Host: $RESUME_ID.localhost:$CORRAL_PORT" \
    -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$CORRAL_PORT/")
  resumes+=("$t")
done

# The same program's own start on the host, spawn → listening, RESUMES times: the part of a
# resume that is node's, not corral's.
STARTED='require("http").createServer((q,s)=>s.end("hello\n")).listen(0,"127.0.0.1",()=>process.exit())'
node_starts=()
for _ in $(seq "$RESUMES"); do
  t0=$(date +%s%N)
  node -e "$STARTED"
  node_starts+=("$(( ($(date +%s%N) - t0) / 1000 ))e-6")
done

python3 - "$d_rps $d_p50 $d_p99 $d_err" "$n_rps $n_p50 $n_p99 $n_err" "$c_rps $c_p50 $c_p99 $c_err" \
  "${resumes[*]}" "$THREADS" "$CONNECTIONS" "$DURATION" "${node_starts[*]}" <<'PY'
import statistics, sys
rows = [("direct", sys.argv[1]), ("nginx", sys.argv[2]), ("corral ingress", sys.argv[3])]
parsed = {name: [float(x) for x in v.split()] for name, v in rows}
nginx_rps, nginx_p99 = parsed["nginx"][0], parsed["nginx"][2]
print(f"wrk -t{sys.argv[5]} -c{sys.argv[6]} -d{sys.argv[7]}s, one run:\n")
print("| path | requests/s | p50 ms | p99 ms | non-2xx | req/s vs nginx | p99 vs nginx |")
print("|---|---:|---:|---:|---:|---:|---:|")
for name, (rps, p50, p99, err) in parsed.items():
    print(f"| {name} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {err:.0f} | {rps / nginx_rps:.2f}× | {p99 / nginx_p99:.2f}× |")
resumes = sorted(float(t) * 1000 for t in sys.argv[4].split())
print(f"\nResume (stopped → first byte, {len(resumes)} rounds): median {statistics.median(resumes):.0f} ms, "
      f"min {resumes[0]:.0f} ms, max {resumes[-1]:.0f} ms")
starts = sorted(float(t) * 1000 for t in sys.argv[8].split())
print(f"node alone on the host (spawn → listening, {len(starts)} rounds): median "
      f"{statistics.median(starts):.0f} ms, min {starts[0]:.0f} ms, max {starts[-1]:.0f} ms; "
      f"corral's share of the median resume: {statistics.median(resumes) - statistics.median(starts):.0f} ms")
PY
