#!/usr/bin/env bash
# Start-up latency of `corral run --profile restricted -- true` against bwrap (which does less:
# no Landlock, no seccomp, no cgroups, no id-mapped workspace) and plain `true`, each set in one
# hyperfine run: as root back to back, as root with runs 50 ms apart, and as uid 4242.
# Prints a markdown table (median, mean, ratio of medians to bwrap). Usage: benches/startup.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-300}
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine
command -v bwrap >/dev/null || apt-get install -y -qq bubblewrap
corral=${CORRAL_BIN:-}
if [ -z "$corral" ]; then
  cargo build --release -p corral --locked -q
  corral=$PWD/target/release/corral
  chmod o+rx target target/release
fi
out=$(mktemp -d)
ws=$(mktemp -d) && chmod 755 "$ws" && chown 4242:4242 "$ws"
cd "$ws"
bwrap_cmd="bwrap --unshare-all --ro-bind / / --dev /dev --proc /proc true"
drop="setpriv --reuid 4242 --regid 4242 --clear-groups"
bench() { # name, runs, prepare command, command prefix
  hyperfine -N --style none --warmup 5 --runs "$2" --prepare "$3" --export-json "$out/$1.json" \
    "$4$corral run --profile restricted -- true" "$4$bwrap_cmd" "$4true" >/dev/null 2>&1
}
bench root-back-to-back "$runs" "true" ""
bench root-spaced "$((runs / 5))" "sleep 0.05" ""
bench unprivileged-back-to-back "$runs" "true" "$drop "
python3 - "$out" <<'PY'
import json, sys, os
print("| setting | command | median ms | mean ± σ ms | median vs bwrap |")
print("|---|---|---:|---:|---:|")
for name in ["root-back-to-back", "root-spaced", "unprivileged-back-to-back"]:
    results = json.load(open(os.path.join(sys.argv[1], name + ".json")))["results"]
    bwrap = next(r for r in results if "bwrap" in r["command"])["median"]
    for r in results:
        label = "corral run" if "corral" in r["command"] else ("bwrap" if "bwrap" in r["command"] else "true")
        print(f"| {name} | {label} | {r['median']*1e3:.2f} | {r['mean']*1e3:.2f} ± {r['stddev']*1e3:.2f} | {r['median']/bwrap:.2f}× |")
PY
rm -rf "$ws" "$out"
