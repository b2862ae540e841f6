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
# Usage: benches/ingress.sh   (INGRESS_BENCH_SECONDS, _CONNECTIONS, _THREADS, _RESUMES, _ROUNDS)
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
ROUNDS=${INGRESS_BENCH_ROUNDS:-3}
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
GATEWAY_PID=$!
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

NGINX_WORKERS=$(pgrep -f "nginx: worker" -P "$(cat "$WORK/nginx.pid")" | tr '\n' ' ')
# CPU seconds (user + system, in clock ticks) the given processes have used so far.
cpu_ticks() {
  local total=0 pid
  for pid in "$@"; do
    [ -n "$pid" ] || continue
    read -r -a stat < "/proc/$pid/stat"
    total=$((total + stat[13] + stat[14]))
  done
  echo "$total"
}
# wrk URL PROXY_PIDS [headers...] → "requests/s p50 p99 non-2xx proxy-CPU-µs-per-request"
# (latencies in ms; the proxy's CPU time over the run divided by the requests it carried)
measure() {
  local url=$1 proxy=$2; shift 2
  local out before after
  # shellcheck disable=SC2086 # a list of pids
  before=$(cpu_ticks $proxy)
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url")
  # shellcheck disable=SC2086
  after=$(cpu_ticks $proxy)
  python3 - "$out" "$((after - before))" "$(getconf CLK_TCK)" <<'PY'
import re, sys
out = sys.argv[1]
cpu_seconds = int(sys.argv[2]) / int(sys.argv[3])
def ms(label):
    m = re.search(r"^\s*%s\s+([\d.]+)(us|ms|s)\s*$" % label, out, re.M)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
requests = int(re.search(r"(\d+) requests in", out).group(1))
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
print(rps, ms("50%"), ms("99%"), errors.group(1) if errors else 0, cpu_seconds * 1e6 / requests)
PY
}
# Warm-up, not measured: each path once for 2 s with the same load (the gateway opens its
# kept upstream connections and its blocking threads, nginx its upstream keep-alives).
wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "http://127.0.0.1:$DIRECT_PORT/" >/dev/null
wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "http://127.0.0.1:$NGINX_PORT/" >/dev/null
wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -H "Host: $HOST" -H "Authorization: Bearer $TOKEN" \
  "http://127.0.0.1:$CORRAL_PORT/" >/dev/null
# ROUNDS rounds, each measuring the three paths one after the other, so that load from
# anything else on the machine falls on all three alike; the table shows each path's median
# round and the ratios are taken within each round.
direct=() nginx=() corral=()
for _ in $(seq "$ROUNDS"); do
  direct+=("$(measure "http://127.0.0.1:$DIRECT_PORT/" "")")
  nginx+=("$(measure "http://127.0.0.1:$NGINX_PORT/" "$NGINX_WORKERS")")
  corral+=("$(measure "http://127.0.0.1:$CORRAL_PORT/" "$GATEWAY_PID" -H "Host: $HOST" -H "Authorization: Bearer $TOKEN")")
done

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

python3 - "$(IFS=';'; echo "${direct[*]}")" "$(IFS=';'; echo "${nginx[*]}")" "$(IFS=';'; echo "${corral[*]}")" \
  "${resumes[*]}" "$THREADS" "$CONNECTIONS" "$DURATION" "${node_starts[*]}" <<'PY'
import statistics, sys
names = ["direct", "nginx", "corral ingress"]
# rounds[name][i] = [rps, p50, p99, non-2xx, proxy CPU µs per request] of round i
rounds = {name: [[float(x) for x in r.split()] for r in arg.split(";")]
          for name, arg in zip(names, sys.argv[1:4])}
count = len(rounds["nginx"])
print(f"wrk -t{sys.argv[5]} -c{sys.argv[6]} -d{sys.argv[7]}s, {count} rounds of the three paths in turn; "
      "each value the median over the rounds:\n")
print("| path | requests/s | p50 ms | p99 ms | non-2xx | req/s vs nginx | p99 vs nginx | proxy CPU µs/request |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
median = statistics.median
for name in names:
    runs, base = rounds[name], rounds["nginx"]
    rps_ratio = median(r[0] / b[0] for r, b in zip(runs, base))
    p99_ratio = median(r[2] / b[2] for r, b in zip(runs, base))
    cpu = "—" if name == "direct" else f"{median(r[4] for r in runs):.1f}"
    print(f"| {name} | {median(r[0] for r in runs):.0f} | {median(r[1] for r in runs):.2f} | "
          f"{median(r[2] for r in runs):.2f} | {sum(r[3] for r in runs):.0f} | {rps_ratio:.2f}× | {p99_ratio:.2f}× | {cpu} |")
print("\nPer round, corral vs nginx: " + ", ".join(
    f"{c[0] / n[0]:.2f}× req/s, {c[2] / n[2]:.2f}× p99" for c, n in zip(rounds["corral ingress"], rounds["nginx"])))
resumes = sorted(float(t) * 1000 for t in sys.argv[4].split())
print(f"\nResume (stopped → first byte, {len(resumes)} rounds): median {statistics.median(resumes):.0f} ms, "
      f"min {resumes[0]:.0f} ms, max {resumes[-1]:.0f} ms")
starts = sorted(float(t) * 1000 for t in sys.argv[8].split())
print(f"node alone on the host (spawn → listening, {len(starts)} rounds): median "
      f"{statistics.median(starts):.0f} ms, min {starts[0]:.0f} ms, max {starts[-1]:.0f} ms; "
      f"corral's share of the median resume: {statistics.median(resumes) - statistics.median(starts):.0f} ms")
PY
