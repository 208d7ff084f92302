#!/usr/bin/env bash
# Make the example's virtualenv and install requirements.txt into it, unless it is
# already in sync (same Python, same requirements.txt): quick on every later run. Then
# install the repository's python/ package (fluxlit-gateway), which app.py and ui.py
# use, as it is now.
#
#   ./venv.sh [DIR]    DIR defaults to $FLUXLIT_EXAMPLE_VENV, else .venv beside this file
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv=${1:-${FLUXLIT_EXAMPLE_VENV:-$here/.venv}}
python=${PYTHON:-python3}

want="$("$python" -c 'import sys; print(sys.version)' | head -n1) $(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
stamp=$venv/.fluxlit-requirements
if [[ ! -x $venv/bin/python || ! -f $stamp || "$(<"$stamp")" != "$want" ]]; then
  echo "venv.sh: installing requirements.txt into $venv" >&2
  # --clear: a changed requirements.txt or Python gets a fresh venv, not a mix.
  "$python" -m venv --clear "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -r "$here/requirements.txt"
  printf '%s\n' "$want" >"$stamp"
fi
# Its dependencies are pinned in requirements.txt; --force-reinstall picks up edits.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
  --no-deps --force-reinstall "$here/../../python"
