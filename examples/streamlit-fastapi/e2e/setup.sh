#!/usr/bin/env bash
# Install what the e2e test needs besides Chromium: the example's venv (pip),
# playwright-core (npm ci here) and the demo identity provider's oidc-provider
# (../idp/setup.sh, npm ci there). Idempotent: each step runs only when its input
# changed. Chromium itself is Debian's package (`apt-get install chromium`, see
# .ci/run); playwright-core never downloads a browser.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

"$here/../venv.sh"
"$here/../idp/setup.sh"

lock_sum=$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)
stamp=$here/node_modules/.fluxlit-lock-sha256
if [[ ! -f $stamp || "$(<"$stamp")" != "$lock_sum" ]]; then
  echo "setup.sh: npm ci in $here" >&2
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
  printf '%s\n' "$lock_sum" >"$stamp"
fi
