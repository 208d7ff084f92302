#!/usr/bin/env bash
# Install the demo identity provider's dependencies (npm ci from package-lock.json),
# only when node_modules is missing or was installed from another lock file.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

lock_sum=$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)
stamp=$here/node_modules/.fluxlit-lock-sha256
if [[ ! -f $stamp || "$(<"$stamp")" != "$lock_sum" ]]; then
  echo "setup.sh: npm ci in $here" >&2
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
  printf '%s\n' "$lock_sum" >"$stamp"
fi
