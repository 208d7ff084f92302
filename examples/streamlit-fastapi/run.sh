#!/usr/bin/env bash
# Run the example: FastAPI (uvicorn) and Streamlit on loopback, a demo OpenID provider
# on 127.0.0.1:9400 for the login (idp/idp.mjs, Node.js), then the gateway in front of
# them at http://127.0.0.1:8080. Ctrl-C stops them all.
#
# Environment:
#   FLUXLIT_BIN                    a fluxlit binary to use (default: cargo build --release here)
#   FLUXLIT_EXAMPLE_VENV           the venv to create or reuse (default: .venv beside this file)
#   FLUXLIT_EXAMPLE_DEMO_IDP       0: do not start the demo identity provider (you pointed
#                                  fluxlit.toml at a real one; see README.md). Default 1
#   FLUXLIT_INTERNAL_API_BASE      where Streamlit calls FastAPI (default: http://127.0.0.1:8000/api)
# FastAPI and Streamlit get FLUXLIT_GATEWAY_URL (http://127.0.0.1:8080: where the
# package fluxlit-gateway fetches the gateway's keys and, for Streamlit, calls
# /auth/exchange and /api/me) and FLUXLIT_UPSTREAM_NAME (api, ui: the audience of the
# identity assertions each receives); Streamlit also gets FLUXLIT_EXCHANGE_SECRET_FILE
# (.secrets/exchange-secret), the secret it sends to /auth/exchange.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=${FLUXLIT_EXAMPLE_VENV:-$here/.venv}
demo_idp=${FLUXLIT_EXAMPLE_DEMO_IDP:-1}

"$here/venv.sh" "$venv"
if [[ $demo_idp != 0 ]] && ! command -v node >/dev/null; then
  echo "run.sh: Node.js is missing, so the demo identity provider is not started and" \
    "\"Log in\" will answer 503 (install Node.js 20+, or see README.md for a real IdP)" >&2
  demo_idp=0
fi
if [[ $demo_idp != 0 ]]; then
  "$here/idp/setup.sh"
fi

# The secrets fluxlit.toml names (git-ignored): the key that signs the access tokens
# after a login, the OIDC client secret, shared with the demo identity provider, and
# the exchange secret, shared with Streamlit's server. Created once, random; with a
# real IdP, put the secret it gave you in the second.
mkdir -p -m 700 "$here/.secrets"
for secret in jwt-hs256 oidc-client-secret exchange-secret; do
  if [[ ! -s $here/.secrets/$secret ]]; then
    (umask 077 && "$venv/bin/python" -c 'import secrets; print(secrets.token_urlsafe(32))' \
      >"$here/.secrets/$secret")
  fi
done

if [[ -n ${FLUXLIT_BIN:-} ]]; then
  fluxlit=$(realpath "$FLUXLIT_BIN")
else
  echo "run.sh: building the gateway (cargo build --release)" >&2
  (cd "$repo" && cargo build --release --locked --quiet)
  fluxlit=${CARGO_TARGET_DIR:-$repo/target}/release/fluxlit
fi
"$fluxlit" validate --config "$here/fluxlit.toml"

pids=()
stop() {
  trap - EXIT INT TERM
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "run.sh: stopped" >&2
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The readiness checks below talk to loopback; keep any configured HTTP proxy out.
export no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"

ready() { # URL: does it answer 2xx within a second?
  "$venv/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
    "$1" 2>/dev/null
}
wait_for() { # NAME PID URL: until URL answers; give up when PID exits or after 60 s
  for _ in $(seq 120); do
    ready "$3" && return 0
    if ! kill -0 "$2" 2>/dev/null; then
      echo "run.sh: $1 exited (is its port taken?)" >&2
      return 1
    fi
    sleep 0.5
  done
  echo "run.sh: $1 did not answer at $3 within 60 s" >&2
  return 1
}

# Streamlit reads .streamlit/config.toml from its working directory.
cd "$here"

if [[ $demo_idp != 0 ]]; then
  # One client (fluxlit.toml's client_id and secret, redirect URI
  # http://127.0.0.1:8080/auth/callback) and one user, "ada", logged in without a form.
  IDP_PORT=9400 IDP_CLIENT_ID=fluxlit-example \
    IDP_CLIENT_SECRET_FILE="$here/.secrets/oidc-client-secret" \
    IDP_PUBLIC_BASE=http://127.0.0.1:8080 node "$here/idp/idp.mjs" &
  idp_pid=$!
  pids+=("$idp_pid")
  wait_for "the demo identity provider" "$idp_pid" \
    http://127.0.0.1:9400/.well-known/openid-configuration
fi

# --proxy-headers: uvicorn takes the client address and scheme from the gateway's
# X-Forwarded-For/-Proto, and only when the peer is the gateway (127.0.0.1).
FLUXLIT_GATEWAY_URL=http://127.0.0.1:8080 FLUXLIT_UPSTREAM_NAME=api \
  "$venv/bin/uvicorn" app:app --host 127.0.0.1 --port 8000 \
  --proxy-headers --forwarded-allow-ips 127.0.0.1 &
uvicorn_pid=$!
pids+=("$uvicorn_pid")
FLUXLIT_GATEWAY_URL=http://127.0.0.1:8080 FLUXLIT_UPSTREAM_NAME=ui \
  FLUXLIT_EXCHANGE_SECRET_FILE="$here/.secrets/exchange-secret" \
  "$venv/bin/streamlit" run ui.py --server.address 127.0.0.1 --server.port 8501 &
streamlit_pid=$!
pids+=("$streamlit_pid")
wait_for FastAPI "$uvicorn_pid" http://127.0.0.1:8000/api/health
wait_for Streamlit "$streamlit_pid" http://127.0.0.1:8501/_stcore/health

"$fluxlit" serve --config "$here/fluxlit.toml" &
fluxlit_pid=$!
pids+=("$fluxlit_pid")
wait_for fluxlit "$fluxlit_pid" http://127.0.0.1:9901/readyz
echo "run.sh: ${idp_pid:+demo IdP pid $idp_pid, }uvicorn pid $uvicorn_pid, streamlit pid $streamlit_pid, fluxlit pid $fluxlit_pid" >&2
echo "run.sh: open http://127.0.0.1:8080/ (the API's docs: http://127.0.0.1:8080/api/docs); Ctrl-C stops them all" >&2
if [[ $demo_idp != 0 ]]; then
  echo "run.sh: the page sends you to the demo identity provider, where \"Sign in\" logs you in as \"ada\"" >&2
fi

# Stop everything as soon as one of them exits, or on Ctrl-C.
wait -n

