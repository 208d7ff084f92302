#!/usr/bin/env bash
# Side-by-side benchmark of fluxlit against nginx, HAProxy and Caddy on loopback.
#
#   bench/compare.sh                       # everything, 3 runs (about 30 minutes on 2 cores)
#   bench/compare.sh --runs 1 --scenarios keepalive,ws
#   bench/compare.sh --baseline-bin /path/to/old/fluxlit   # before/after in one run
#   bench/compare.sh --access-log on       # every proxy with its access log (default: off)
#
# Installs what is missing (nginx, haproxy, caddy, wrk from apt; oha with cargo install),
# builds fluxlit and the load tool (benches/loadgen.rs) in release mode, then runs
# bench/compare.py with the arguments given (`--help` lists them). Results, configs and
# logs go to target/bench/<timestamp>/. Not part of CI. See BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="$HOME/.cargo/bin:$PATH"

need_apt=()
for tool in nginx haproxy wrk; do
    command -v "$tool" >/dev/null || need_apt+=("$tool")
done
if ! command -v caddy >/dev/null && apt-cache show caddy >/dev/null 2>&1; then
    need_apt+=(caddy)
fi
if ((${#need_apt[@]})); then
    echo "installing from apt: ${need_apt[*]}" >&2
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}" >/dev/null
fi
command -v caddy >/dev/null || echo "caddy is not available from apt here: it is skipped" >&2
# The Debian packages start system services where systemd runs; the benchmark starts
# its own instances on free ports and never touches those.
if ! command -v oha >/dev/null; then
    echo "installing oha with cargo install (about 6 minutes on 2 cores)" >&2
    cargo install --locked oha
fi
for tool in taskset python3; do
    command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done

cargo build --release --locked --bin fluxlit >&2
loadgen=$(cargo bench --locked --bench loadgen --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "loadgen" and m.get("executable"):
        print(m["executable"])')
[[ -x "$loadgen" ]] || { echo "could not build benches/loadgen.rs" >&2; exit 1; }

exec python3 bench/compare.py --loadgen "$loadgen" "$@"
