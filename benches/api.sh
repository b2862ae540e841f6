#!/usr/bin/env bash
# Gateway API latency and scale (not part of the tests). Starts a release `corral up` on a
# fresh data directory and measures, over real HTTP (one keep-alive connection per client):
#   1. create, start, exec (`true`), stop and delete latency, one at a time; exec through the
#      API against the same command run by a direct local `corral run --profile restricted`,
#      as a ratio of medians;
#   2. SANDBOXES (default 200) shell sandboxes running at once: memory per idle sandbox (PSS
#      of its processes, and the drop in MemAvailable), then gateway p50/p99 for list and exec
#      while they all run, one client and CLIENTS (default 4) at once.
# Prints markdown tables. Usage: benches/api.sh [SANDBOXES] [CLIENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
sandboxes=${1:-200}
clients=${2:-4}
corral=${CORRAL_BIN:-}
if [ -z "$corral" ]; then
  cargo build --release -p corral --locked -q
  corral=$PWD/target/release/corral
fi
work=$(mktemp -d)
token=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
gateway=
cleanup() {
  if [ -n "$gateway" ]; then kill "$gateway" 2>/dev/null || true; fi
  # Sandboxes outlive the gateway on purpose: end the ones this run started, found by their
  # command line naming this run's data directory.
  for cmdline in /proc/[0-9]*/cmdline; do
    if tr '\0' ' ' 2>/dev/null < "$cmdline" | grep -q -- "run .*$work/data/sandboxes/"; then
      pid=${cmdline#/proc/}; pid=${pid%/cmdline}
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$work"
}
trap cleanup EXIT
CORRAL_ADMIN_TOKEN=$token "$corral" up --listen 127.0.0.1:0 --data-dir "$work/data" \
  > "$work/gateway.out" 2> "$work/gateway.err" &
gateway=$!
url=
for _ in $(seq 300); do
  url=$(sed -n 's/^corral gateway: //p' "$work/gateway.out")
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "the gateway printed no URL" >&2; exit 1; }

python3 - "$url" "$token" "$corral" "$work" "$gateway" "$sandboxes" "$clients" <<'PY'
import http.client, json, os, statistics, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

url, token, corral, work, gateway_pid, count, clients = sys.argv[1:8]
count, clients = int(count), int(clients)
host = urlparse(url)
data = os.path.join(work, "data")

class Client:
    """One keep-alive HTTP connection to the gateway."""
    def __init__(self):
        self.conn = http.client.HTTPConnection(host.hostname, host.port, timeout=300)
    def call(self, method, path, body=None):
        headers = {"Authorization": f"Bearer {token}"}
        payload = None
        if body is not None:
            payload = json.dumps(body)
            headers["Content-Type"] = "application/json"
        start = time.perf_counter()
        self.conn.request(method, "/api/v1" + path, payload, headers)
        response = self.conn.getresponse()
        text = response.read()
        elapsed = time.perf_counter() - start
        if response.status >= 300:
            raise SystemExit(f"{method} {path}: {response.status} {text[:300]!r}")
        return elapsed, (json.loads(text) if text else None)

def ms(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] * 1e3

def row(name, values):
    print(f"| {name} | {len(values)} | {ms(values, .5):.2f} | {ms(values, .99):.2f} | "
          f"{statistics.mean(values)*1e3:.2f} |")

c = Client()
header = "| operation | n | p50 ms | p99 ms | mean ms |\n|---|---:|---:|---:|---:|"

# 1. One at a time.
n = 50
times = {k: [] for k in ["create", "start", "exec true", "stop", "delete"]}
ids = []
for i in range(n):
    t, body = c.call("POST", "/sandboxes", {"name": f"lat-{i}"})
    times["create"].append(t)
    ids.append(body["id"])
runner = ids[0]
t, _ = c.call("POST", f"/sandboxes/{runner}/start")
for i in range(20):  # warm-up
    c.call("POST", f"/sandboxes/{runner}/exec", {"argv": ["true"]})
for i in range(200):
    t, body = c.call("POST", f"/sandboxes/{runner}/exec", {"argv": ["true"]})
    assert body["exit_code"] == 0, body
    times["exec true"].append(t)
c.call("POST", f"/sandboxes/{runner}/stop")
for sid in ids[1:21]:
    t, _ = c.call("POST", f"/sandboxes/{sid}/start")
    times["start"].append(t)
    t, _ = c.call("POST", f"/sandboxes/{sid}/stop")
    times["stop"].append(t)
for sid in ids:
    t, _ = c.call("DELETE", f"/sandboxes/{sid}?purge=true")
    times["delete"].append(t)
direct = []
workspace = os.path.join(work, "direct")
os.makedirs(workspace)
for i in range(55):
    start = time.perf_counter()
    subprocess.run([corral, "run", "--profile", "restricted", "--workspace", workspace, "--", "true"],
                   check=True, cwd=workspace, stdin=subprocess.DEVNULL)
    if i >= 5:
        direct.append(time.perf_counter() - start)
print("### One request at a time (no other sandbox running)\n")
print(header)
for name, values in times.items():
    row(name, values)
row("direct `corral run --profile restricted -- true` (process)", direct)
ratio = ms(times["exec true"], .5) / ms(direct, .5)
print(f"\nexec through the API / direct corral run (medians): {ratio:.2f}×\n")

# 2. Many sandboxes at once.
def mem_available():
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
before = mem_available()
def create_and_start(i):
    client = Client()
    _, body = client.call("POST", "/sandboxes", {"name": f"idle-{i}"})
    t, started = client.call("POST", f"/sandboxes/{body['id']}/start")
    assert started["state"] == "running", started
    return body["id"], t
began = time.perf_counter()
with ThreadPoolExecutor(clients) as pool:
    running = list(pool.map(create_and_start, range(count)))
start_wall = time.perf_counter() - began
running_ids = [r[0] for r in running]
time.sleep(5)  # let them settle into idling
after = mem_available()

def children_map():
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children
def pss(pid):
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
children = children_map()
# The `corral run` launchers are the gateway's own children; each sandbox is one launcher
# and everything below it.
launchers = children.get(int(gateway_pid), [])
totals = []
for launcher in launchers:
    stack, total = [launcher], 0
    while stack:
        pid = stack.pop()
        total += pss(pid)
        stack.extend(children.get(pid, []))
    totals.append(total)
gateway_pss = pss(int(gateway_pid))
print(f"### {count} shell sandboxes running at once\n")
print(f"- started {count} (create + start, {clients} clients) in {start_wall:.1f} s")
print(f"- PSS per idle sandbox (launcher, supervisor, agent; {len(totals)} measured): "
      f"median {statistics.median(totals)/2**20:.1f} MiB, mean {statistics.mean(totals)/2**20:.1f} MiB")
print(f"- MemAvailable drop per sandbox: {(before - after)/count/2**20:.1f} MiB")
print(f"- gateway PSS with {count} running: {gateway_pss/2**20:.1f} MiB\n")

def timed_series(fn, n):
    client = Client()
    return [fn(client, i) for i in range(n)]
def do_list(client, i):
    t, body = client.call("GET", "/sandboxes")
    assert len(body) >= count, len(body)
    return t
def do_exec(client, i):
    t, body = client.call("POST", f"/sandboxes/{running_ids[i % count]}/exec", {"argv": ["true"]})
    assert body["exit_code"] == 0, body
    return t
print(header)
row(f"list ({count} sandboxes), 1 client", timed_series(do_list, 300))
row("exec true, 1 client", timed_series(do_exec, 300))
with ThreadPoolExecutor(clients) as pool:
    lists = sum(pool.map(lambda _: timed_series(do_list, 150), range(clients)), [])
with ThreadPoolExecutor(clients) as pool:
    execs = sum(pool.map(lambda _: timed_series(do_exec, 150), range(clients)), [])
row(f"list, {clients} clients at once", lists)
row(f"exec true, {clients} clients at once", execs)

def stop_and_delete(sid):
    client = Client()
    client.call("DELETE", f"/sandboxes/{sid}?purge=true")
with ThreadPoolExecutor(clients) as pool:
    list(pool.map(stop_and_delete, running_ids))
PY
