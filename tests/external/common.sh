# What the scripts here share. Sourced once `here` (this directory) is set: sets `repo`
# and `work` (target/external, where installs and logs go), and defines find_fluxlit.

repo="$(cd "$here/../.." && pwd)"
work="$repo/target/external"

# Sets `fluxlit`: the binary FLUXLIT_BIN names, or else the debug build, built now.
find_fluxlit() {
  fluxlit="${FLUXLIT_BIN:-}"
  if [[ -z "$fluxlit" ]]; then
    (cd "$repo" && cargo build -q --bin fluxlit)
    fluxlit="$repo/target/debug/fluxlit"
  fi
}
