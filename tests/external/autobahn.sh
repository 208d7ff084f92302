#!/usr/bin/env bash
# WebSocket conformance through the gateway: the Autobahn|Testsuite fuzzing client runs
# the same cases against an echo server directly and through `fluxlit serve`, and the two
# results (case -> behaviour) must be identical. By hand, not in CI:
#
#   tests/external/autobahn.sh                  # cases 1-7, 9.1, 10, 12.1, 13.1
#   CASES='1.*,2.*,10.*' tests/external/autobahn.sh
#
# Needs Python 2.7 (pyenv's 2.7.18 if present, else python2.7 on PATH), node and npm.
# Installs wstest into target/external/venv and `ws` into target/external/node (both
# reused on the next run). Reports go to tests/external/reports/ (git-ignored).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
source "$here/common.sh"
reports="$here/reports"
echo_port="${ECHO_PORT:-9001}"
gateway_port="${GATEWAY_PORT:-9002}"
cases="${CASES:-1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.1.*,10.*,12.1.*,13.1.*}"
mkdir -p "$work" "$reports"

# --- wstest under Python 2.7 ------------------------------------------------------------
python2="${PYTHON2:-}"
if [[ -z "$python2" ]]; then
  if command -v pyenv >/dev/null && [[ -x "$(pyenv root)/versions/2.7.18/bin/python2.7" ]]; then
    python2="$(pyenv root)/versions/2.7.18/bin/python2.7"
  else
    python2="$(command -v python2.7)"
  fi
fi
if [[ ! -x "$work/venv/bin/wstest" ]]; then
  # virtualenv 20.21 is the last that creates Python 2.7 environments; it is installed
  # into a directory of its own rather than into the interpreter.
  "$python2" -m pip install -q --target "$work/virtualenv" 'virtualenv<20.22'
  PYTHONPATH="$work/virtualenv" "$python2" -m virtualenv -q "$work/venv"
  # The last releases that still support Python 2.7, pinned: left free, pip picks
  # versions that no longer import there.
  "$work/venv/bin/pip" install -q \
    'autobahntestsuite==25.10.1' 'autobahn==0.10.9' 'Twisted==19.10.0' 'txaio==2.1.0' \
    'pyOpenSSL==19.1.0' 'cryptography==3.3.2' 'service-identity==18.1.0' \
    'klein==17.10.0' 'Werkzeug==1.0.1' 'Jinja2==2.11.3' 'MarkupSafe==1.1.1' \
    'zope.interface==4.6.0' 'attrs==21.4.0' 'Automat==22.10.0' 'hyperlink==21.0.0' \
    'pyasn1==0.5.1' 'pyasn1-modules==0.3.0' 'unittest2==1.1.0' 'wsaccel==0.6.6' \
    'ujson==2.0.3' 'idna==2.10' 'six==1.16.0'
fi

# --- the echo server (npm ws) -------------------------------------------------------------
if [[ ! -d "$work/node/node_modules/ws" ]]; then
  mkdir -p "$work/node"
  (cd "$work/node" && npm init -y >/dev/null && npm install --silent ws@8)
fi

# --- fluxlit ------------------------------------------------------------------------------
find_fluxlit
cat > "$work/autobahn.toml" <<TOML
[server]
listen = "127.0.0.1:$gateway_port"
security_headers = false

[upstreams.echo]
url = "http://127.0.0.1:$echo_port"
timeout = "60s"

[[routes]]
name = "echo"
path_prefix = "/"
upstream = "echo"
TOML

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

NODE_PATH="$work/node/node_modules" node "$here/ws-echo.js" "$echo_port" >"$work/ws-echo.log" 2>&1 &
pids+=($!)
RUST_LOG=warn "$fluxlit" serve --config "$work/autobahn.toml" >"$work/fluxlit.log" 2>&1 &
pids+=($!)
for port in "$echo_port" "$gateway_port"; do
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
done

# --- the fuzzing client, both agents in one run -------------------------------------------
cases_json="$(printf '%s' "$cases" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().split(",")))')"
cat > "$work/fuzzingclient.json" <<JSON
{
  "outdir": "$reports",
  "servers": [
    {"agent": "direct", "url": "ws://127.0.0.1:$echo_port"},
    {"agent": "fluxlit", "url": "ws://127.0.0.1:$gateway_port"}
  ],
  "cases": $cases_json,
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
JSON
(cd "$work" && "$work/venv/bin/wstest" -m fuzzingclient -s "$work/fuzzingclient.json" >"$work/wstest.log" 2>&1)

# --- compare --------------------------------------------------------------------------------
python3 - "$reports/index.json" <<'PY'
import collections, json, sys
index = json.load(open(sys.argv[1]))
direct, proxied = index["direct"], index["fluxlit"]
def tally(results):
    return dict(collections.Counter(r["behavior"] for r in results.values()))
print("cases:", len(direct))
print("direct: ", tally(direct))
print("fluxlit:", tally(proxied))
differ = [
    case for case in sorted(direct, key=lambda c: [int(p) for p in c.split(".")])
    if (direct[case]["behavior"], direct[case]["behaviorClose"])
    != (proxied.get(case, {}).get("behavior"), proxied.get(case, {}).get("behaviorClose"))
]
for case in differ:
    print("differs: %s direct=%s/%s fluxlit=%s/%s" % (
        case, direct[case]["behavior"], direct[case]["behaviorClose"],
        proxied.get(case, {}).get("behavior"), proxied.get(case, {}).get("behaviorClose")))
print("identical" if not differ else "%d case(s) differ" % len(differ))
sys.exit(1 if differ else 0)
PY
