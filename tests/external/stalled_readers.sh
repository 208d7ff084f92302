#!/usr/bin/env bash
# Issue 20's stalled-reader attacks, the long versions, against a release build of
# `fluxlit serve` with `send_timeout = "10s"`. By hand, not in CI:
#
#   tests/external/stalled_readers.sh
#
# Builds the release binary unless FLUXLIT_BIN names one, then runs the ignored
# measurements (debug test builds that start that binary):
# - `measure_300_stalled_http1_readers` (tests/resilience.rs): 300 HTTP/1.1 clients with
#   a 4 KiB receive buffer ask for a 100 MiB response and read nothing;
# - `measure_one_stalled_http2_connection` (tests/tls.rs): one HTTP/2 connection with the
#   largest windows asks for it on 1,000 streams and reads nothing;
# - `measure_one_http2_connection_with_stalled_streams` (tests/tls.rs): the same, but the
#   client reads its socket and opens no stream's window, so only the per-stream send
#   timeout can end the streams.
# Each prints the gateway's RSS growth, the upstream connections held and when the last
# was closed, against the issue's targets (RSS growth < 64 MiB and < 32 MiB; every
# upstream connection closed within send_timeout + 5 s), and fails if one is missed.
# The output also goes to tests/external/reports/stalled_readers.txt (git-ignored).
# About 2 minutes once built.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
source "$here/common.sh"
mkdir -p "$here/reports"
cd "$repo"
if [[ -z "${FLUXLIT_BIN:-}" ]]; then
  cargo build -q --release --bin fluxlit
  export FLUXLIT_BIN="$repo/target/release/fluxlit"
fi
cargo test --no-fail-fast --test resilience --test tls measure_ -- --ignored --nocapture \
  --test-threads 1 \
  2>&1 | tee "$here/reports/stalled_readers.txt"
