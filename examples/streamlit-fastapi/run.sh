#!/usr/bin/env bash
# Run the example: FastAPI (uvicorn) and Streamlit on loopback, then the gateway in
# front of both at http://127.0.0.1:8080. Ctrl-C stops all three.
#
# Environment:
#   FLUXLIT_BIN                a fluxlit binary to use (default: cargo build --release here)
#   FLUXLIT_EXAMPLE_VENV       the venv to create or reuse (default: .venv beside this file)
#   FLUXLIT_INTERNAL_API_BASE  where Streamlit calls FastAPI (default: http://127.0.0.1:8000/api)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=${FLUXLIT_EXAMPLE_VENV:-$here/.venv}

"$here/venv.sh" "$venv"

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

# --proxy-headers: uvicorn takes the client address and scheme from the gateway's
# X-Forwarded-For/-Proto, and only when the peer is the gateway (127.0.0.1).
"$venv/bin/uvicorn" app:app --host 127.0.0.1 --port 8000 \
  --proxy-headers --forwarded-allow-ips 127.0.0.1 &
pids+=($!)
"$venv/bin/streamlit" run ui.py --server.address 127.0.0.1 --server.port 8501 &
pids+=($!)
wait_for FastAPI "${pids[0]}" http://127.0.0.1:8000/api/health
wait_for Streamlit "${pids[1]}" http://127.0.0.1:8501/_stcore/health

"$fluxlit" serve --config "$here/fluxlit.toml" &
pids+=($!)
wait_for fluxlit "${pids[2]}" http://127.0.0.1:9901/readyz
echo "run.sh: uvicorn pid ${pids[0]}, streamlit pid ${pids[1]}, fluxlit pid ${pids[2]}" >&2
echo "run.sh: open http://127.0.0.1:8080/ (the API's docs: http://127.0.0.1:8080/api/docs); Ctrl-C stops all three" >&2

# Stop everything as soon as one of the three exits, or on Ctrl-C.
wait -n
