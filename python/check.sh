#!/usr/bin/env bash
# Lint, type-check and test the fluxlit_gateway package, the way .ci/run does:
# `pip install` of this folder into a venv (python/.venv, recreated only when
# requirements-dev.txt or the Python changes), then ruff, mypy --strict and pytest
# against the real gateway binary ($FLUXLIT_BIN, else the repository's debug build).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv=${FLUXLIT_PYTHON_VENV:-$here/.venv}
python=${PYTHON:-python3}
# The tests run from this folder: a relative FLUXLIT_BIN (as .ci/run passes) is made
# absolute first.
if [[ -n ${FLUXLIT_BIN:-} ]]; then
  FLUXLIT_BIN=$(realpath "$FLUXLIT_BIN")
  export FLUXLIT_BIN
fi

want="$("$python" -c 'import sys; print(sys.version)' | head -n1) $(cat "$here/requirements-dev.txt" "$here/../examples/streamlit-fastapi/requirements.txt" | sha256sum | cut -d' ' -f1)"
stamp=$venv/.fluxlit-requirements
if [[ ! -x $venv/bin/python || ! -f $stamp || "$(<"$stamp")" != "$want" ]]; then
  echo "check.sh: installing requirements-dev.txt into $venv" >&2
  "$python" -m venv --clear "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -r "$here/requirements-dev.txt"
  printf '%s\n' "$want" >"$stamp"
fi
# The package as a user installs it (not editable): a missing file in the wheel fails here.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
  --no-deps --force-reinstall "$here"

cd "$here"
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
"$venv/bin/mypy"
# The tests import the installed package, not src/: run them from outside it.
"$venv/bin/python" -m pytest -p no:cacheprovider "$@"
