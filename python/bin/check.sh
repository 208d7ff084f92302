#!/usr/bin/env bash
# Build the gateway's wheel (maturin, a debug build unless MATURIN_ARGS says
# otherwise) and check it the way a Python user gets it: installed into a fresh venv,
# `fluxlit --version`, and `fluxlit validate` on the repository's fluxlit.toml.
# Needs python/check.sh's venv (for maturin) or MATURIN pointing at one.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
maturin=${MATURIN:-$here/../.venv/bin/maturin}
python=${PYTHON:-python3}
out=$target/wheels
venv=$target/wheel-venv

rm -rf "$out" "$venv"
(cd "$here" && "$maturin" build --locked ${MATURIN_ARGS:-} -o "$out")
wheel=$(ls "$out"/fluxlit_gateway_bin-*.whl)
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "$wheel"
"$venv/bin/fluxlit" --version
"$venv/bin/fluxlit" validate --config "$repo/fluxlit.toml"
echo "bin/check.sh: $(basename "$wheel") installs and runs" >&2
