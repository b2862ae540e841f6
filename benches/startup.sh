#!/usr/bin/env bash
# Start-up latency of `corral run --profile restricted -- true` against bwrap (which does less:
# no Landlock, no seccomp, no cgroups, no id-mapped workspace) and plain `true`, in one
# hyperfine run each, as root and as an unprivileged user. Usage: benches/startup.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-300}
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine
command -v bwrap >/dev/null || apt-get install -y -qq bubblewrap
cargo build --release -p corral --locked -q
corral=$PWD/target/release/corral
chmod o+rx target target/release
ws=$(mktemp -d) && chmod 755 "$ws" && chown 4242:4242 "$ws"
cd "$ws"
bwrap_cmd="bwrap --unshare-all --ro-bind / / --dev /dev --proc /proc true"
echo "## as root (back to back)"
hyperfine -N --warmup 10 --runs "$runs" --export-markdown /dev/stdout \
  "$corral run --profile restricted -- true" "$bwrap_cmd" "true"
echo "## as root, runs 50 ms apart (no warm kernel state between runs)"
hyperfine -N --warmup 3 --runs $((runs / 5)) --prepare "sleep 0.05" --export-markdown /dev/stdout \
  "$corral run --profile restricted -- true" "$bwrap_cmd" "true"
echo "## as uid 4242 (back to back)"
drop="setpriv --reuid 4242 --regid 4242 --clear-groups"
hyperfine -N --warmup 10 --runs "$runs" --export-markdown /dev/stdout \
  "$drop $corral run --profile restricted -- true" "$drop $bwrap_cmd" "$drop true"
rm -rf "$ws"
