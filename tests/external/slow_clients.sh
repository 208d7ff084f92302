#!/usr/bin/env bash
# Slow clients against `fluxlit serve` with slowhttptest (Debian package), while a normal
# client keeps asking: slowloris (-H), slow body (-B), slow read (-X). By hand, not in CI:
#
#   tests/external/slow_clients.sh            # 200 connections per attack, 30 s each
#
# Prints, per attack, how many of the normal client's requests were answered, and the
# last line of slowhttptest's CSV (its last column, "service available", is 0 while the
# service is down). CSVs and HTML go to tests/external/reports/slow/ (git-ignored).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
source "$here/common.sh"
out="$here/reports/slow"
port="${GATEWAY_PORT:-9003}"
mkdir -p "$work" "$out"
command -v slowhttptest >/dev/null || { echo "slowhttptest is missing: apt-get install slowhttptest" >&2; exit 1; }

find_fluxlit
cat > "$work/slow.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
header_read_timeout = "10s"

[upstreams.echo]
builtin = "echo"

[[routes]]
name = "echo"
path_prefix = "/"
upstream = "echo"
TOML
RUST_LOG=warn "$fluxlit" serve --config "$work/slow.toml" >"$work/slow-fluxlit.log" 2>&1 &
gateway=$!
trap 'kill $gateway 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

common=(-c 200 -r 50 -l 30 -p 3 -u "http://127.0.0.1:$port/" -g)
run() {
  local name="$1"; shift
  local ok=0 total=0
  slowhttptest "$@" "${common[@]}" -o "$out/$name" >"$out/$name.log" 2>&1 &
  local attack=$!
  sleep 2
  while kill -0 "$attack" 2>/dev/null; do
    total=$((total + 1))
    if curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$port/probe"; then ok=$((ok + 1)); fi
    sleep 0.5
  done
  echo "$name: normal client answered $ok/$total; CSV last line: $(tail -n 1 "$out/$name.csv")"
}
run slowloris -H -i 5 -x 24
run slowbody -B -i 5 -s 8192 -x 10
run slowread -X -k 3 -w 512 -y 1024 -n 5 -z 32
kill -0 "$gateway" && echo "fluxlit still running: yes"
