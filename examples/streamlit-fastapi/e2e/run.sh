#!/usr/bin/env bash
# End-to-end test of the Streamlit + FastAPI example through the gateway.
#
# Starts the demo OpenID provider (idp/idp.mjs, npm oidc-provider, its tokens valid for
# 5 s so that sessions refresh them), uvicorn, Streamlit and fluxlit on free loopback
# ports (the example's fluxlit.toml with those ports, fresh random secrets, and trusting
# only 127.0.0.1 as a proxy), then runs
# e2e.test.mjs: headless Debian Chromium through the gateway (the page, and a login
# at the provider), and plain HTTP checks of what reaches FastAPI and of the login.
# Every process it starts is stopped on exit, pass or fail. Logs and screenshots
# land in target/e2e/streamlit-fastapi/.
#
# Environment: FLUXLIT_BIN (default: cargo build, the debug binary), CHROMIUM
# (default /usr/bin/chromium), FLUXLIT_EXAMPLE_VENV (default: the example's .venv).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
example=$(dirname "$here")
repo=$(cd "$example/../.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
out=$target/e2e/streamlit-fastapi
venv=${FLUXLIT_EXAMPLE_VENV:-$example/.venv}
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
started=$SECONDS

"$here/setup.sh"
if [[ ! -x $CHROMIUM ]]; then
  echo "run.sh: $CHROMIUM is missing: apt-get install chromium" >&2
  exit 1
fi
if [[ -n ${FLUXLIT_BIN:-} ]]; then
  fluxlit=$(realpath "$FLUXLIT_BIN")
  [[ -x $fluxlit ]] || { echo "run.sh: FLUXLIT_BIN=$FLUXLIT_BIN is not an executable" >&2; exit 1; }
else
  (cd "$repo" && cargo build --locked --quiet)
  fluxlit=$target/debug/fluxlit
fi

# Everything below talks to loopback only; keep any configured HTTP proxy out of it.
export no_proxy="127.0.0.1,localhost,.localhost${no_proxy:+,$no_proxy}" NO_PROXY="127.0.0.1,localhost,.localhost${NO_PROXY:+,$NO_PROXY}"

rm -rf "$out"
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/fluxlit-e2e.XXXXXX")
profile=$work/chromium-profile
mkdir -p "$profile"

pids=()
names=()
test_pid=
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [[ -n $test_pid ]]; then kill -TERM "$test_pid" 2>/dev/null || true; fi
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for pid in $test_pid "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for pid in $test_pid "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  # Playwright stops Chromium when the test process ends, unless that process was
  # killed outright: then stop whatever still runs on this run's own profile.
  local leftover
  leftover=$(pgrep -f -- "--user-data-dir=$profile" || true)
  if [[ -n $leftover ]]; then kill -KILL $leftover 2>/dev/null || true; fi
  wait 2>/dev/null || true
  if ((status != 0)); then
    local i
    for i in "${!names[@]}"; do
      echo "---- last lines of ${names[$i]}.log ----" >&2
      tail -n 25 "$out/${names[$i]}.log" >&2 || true
    done
  fi
  rm -rf "$work"
  echo "e2e: $( ((status == 0)) && echo passed || echo FAILED ) in $((SECONDS - started)) s; logs and screenshot in $out" >&2
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() { # NAME COMMAND...: run in the background, logging to $out/NAME.log
  local name=$1
  shift
  "$@" >"$out/$name.log" 2>&1 &
  pids+=($!)
  names+=("$name")
}

wait_for() { # NAME URL: until URL answers 2xx, or fail when NAME's process died or after 60 s
  local name=$1 url=$2 i pid=${pids[-1]}
  for i in "${!names[@]}"; do [[ ${names[$i]} == "$name" ]] && pid=${pids[$i]}; done
  for _ in $(seq 240); do
    "$venv/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
      "$url" 2>/dev/null && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "e2e: $name exited before it was ready" >&2
      return 1
    fi
    sleep 0.25
  done
  echo "e2e: $name not ready at $url after 60 s" >&2
  return 1
}

# Five free loopback ports, all held at once so they differ.
read -r gw_port admin_port api_port ui_port idp_port < <("$venv/bin/python" -c '
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
')

# The host name the browser uses for the gateway. Chromium resolves *.localhost to
# loopback by itself, and Streamlit does not take this name for localhost, so the
# page only renders if the browser.serverAddress setting below is what it needs
# to be behind a proxy.
public_host=fluxlit.localhost
public_base=http://$public_host:$gw_port

# The example's own config, on those ports, with the browser's address as
# public_base_url (the login's redirect URI is built from it), trusting 127.0.0.1 (and
# only it) as a proxy, so a request sent from 127.0.0.2 is an untrusted client. Its
# secret files (.secrets/, relative to the config) are this run's own, random.
config=$work/fluxlit.toml
sed -e "s/127\.0\.0\.1:8080/127.0.0.1:$gw_port/g" \
  -e "s/127\.0\.0\.1:9901/127.0.0.1:$admin_port/g" \
  -e "s/127\.0\.0\.1:8000/127.0.0.1:$api_port/g" \
  -e "s/127\.0\.0\.1:8501/127.0.0.1:$ui_port/g" \
  -e "s/127\.0\.0\.1:9400/127.0.0.1:$idp_port/g" \
  -e "s|^public_base_url = .*|public_base_url = \"$public_base\"|" \
  "$example/fluxlit.toml" >"$config"
printf '\n[trust]\nproxies = ["127.0.0.1/32"]\n' >>"$config"
cp "$config" "$out/fluxlit.toml"
mkdir -m 700 "$work/.secrets"
for secret in jwt-hs256 oidc-client-secret exchange-secret; do
  (umask 077 && "$venv/bin/python" -c 'import secrets; print(secrets.token_urlsafe(32))' >"$work/.secrets/$secret")
done
"$fluxlit" validate --config "$config" >/dev/null

# The one user of the demo identity provider: a fresh sub, so the page can only show
# it if it came from this login.
idp_sub=e2e-user-$("$venv/bin/python" -c 'import secrets; print(secrets.token_hex(4))')

cd "$example"
start idp env IDP_PORT="$idp_port" IDP_CLIENT_SECRET_FILE="$work/.secrets/oidc-client-secret" \
  IDP_PUBLIC_BASE="$public_base" IDP_USER_SUB="$idp_sub" IDP_USER_EMAIL="$idp_sub@example.com" \
  IDP_USER_NAME="E2E User" IDP_ACCESS_TOKEN_TTL=5 node "$example/idp/idp.mjs"
# Both apps fetch the gateway's keys at its loopback address, and check that the
# assertions were issued by the address the browser uses (public_base_url).
start api env FLUXLIT_GATEWAY_URL="http://127.0.0.1:$gw_port" FLUXLIT_GATEWAY_ISSUER="$public_base" \
  FLUXLIT_UPSTREAM_NAME=api \
  "$venv/bin/uvicorn" app:app --host 127.0.0.1 --port "$api_port" \
  --proxy-headers --forwarded-allow-ips 127.0.0.1
start ui env FLUXLIT_INTERNAL_API_BASE="http://127.0.0.1:$api_port/api" \
  FLUXLIT_GATEWAY_URL="http://127.0.0.1:$gw_port" FLUXLIT_GATEWAY_ISSUER="$public_base" \
  FLUXLIT_UPSTREAM_NAME=ui FLUXLIT_EXCHANGE_SECRET_FILE="$work/.secrets/exchange-secret" \
  "$venv/bin/streamlit" run ui.py --server.address 127.0.0.1 --server.port "$ui_port" \
  --server.fileWatcherType none --browser.serverAddress "$public_host" \
  --browser.serverPort "$gw_port"
wait_for idp "http://127.0.0.1:$idp_port/.well-known/openid-configuration"
# From the config's own directory, so the status page and its errors name "fluxlit.toml".
start gateway env -C "$work" "$fluxlit" serve --config fluxlit.toml

wait_for api "http://127.0.0.1:$api_port/api/health"
wait_for ui "http://127.0.0.1:$ui_port/_stcore/health"
wait_for gateway "http://127.0.0.1:$admin_port/readyz"
echo "e2e: servers up in $((SECONDS - started)) s (gateway :$gw_port, api :$api_port, ui :$ui_port, idp :$idp_port)" >&2

# TMPDIR: Playwright's and Chromium's own temporary files go into $work too, and
# are removed with it even when a process was killed before it could clean up.
# The API's process, which the status page test stops to see it reported down.
api_pid=
for i in "${!names[@]}"; do [[ ${names[$i]} == api ]] && api_pid=${pids[$i]}; done
TMPDIR=$work E2E_GATEWAY_PORT=$gw_port E2E_API_PORT=$api_port E2E_UI_PORT=$ui_port \
  E2E_ADMIN_PORT=$admin_port E2E_API_PID=$api_pid E2E_CONFIG=$config \
  E2E_IDP_PORT=$idp_port E2E_IDP_SUB=$idp_sub E2E_PUBLIC_HOST=$public_host E2E_PROFILE=$profile E2E_OUT=$out \
  E2E_EXCHANGE_SECRET_FILE=$work/.secrets/exchange-secret \
  node --test --test-reporter=spec "$here/e2e.test.mjs" &
test_pid=$!
wait "$test_pid"
