#!/usr/bin/env bash
# How long the admin status page (GET / on the admin listener) takes with many routes.
#
#   bench/status_page.sh                                  # target/release/fluxlit, 1,000 routes
#   bench/status_page.sh --routes 1000 --views 20 BIN [BIN...]   # several binaries, interleaved
#
# For each binary: a config of N routes to the built-in echo upstream, each route
# requested once (so each has series in /metrics), then a wait past two ticks of the
# status page's traffic sampler (every 5 s), then VIEWS timed `GET /` with curl, the
# binaries taking turns view by view so that a busy machine weighs on each alike.
# Prints the page size and the median, min and max time to the whole page per binary.
# Not part of CI. See BENCHMARKS.md, "The admin status page with 1,000 routes".
set -euo pipefail
cd "$(dirname "$0")/.."

routes=1000
views=20
bins=()
while (($#)); do
    case "$1" in
        --routes) routes="$2"; shift 2 ;;
        --views) views="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) bins+=("$1"); shift ;;
    esac
done
((${#bins[@]})) || bins=(target/release/fluxlit)
for tool in curl python3; do
    command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

admins=()
for index in "${!bins[@]}"; do
    listen="$(free_port)"
    admin="$(free_port)"
    config="$work/fluxlit-$index.toml"
    {
        printf '[server]\nlisten = "127.0.0.1:%s"\n\n[admin]\nlisten = "127.0.0.1:%s"\n\n' "$listen" "$admin"
        printf '[log]\naccess_log = false\n\n[upstreams.echo]\nbuiltin = "echo"\n\n'
        for ((i = 0; i < routes; i++)); do
            printf '[[routes]]\nname = "r%04d"\npath_prefix = "/r%04d"\nupstream = "echo"\n\n' "$i" "$i"
        done
    } >"$config"
    "${bins[$index]}" serve --config "$config" >"$work/log-$index" 2>&1 &
    pids+=("$!")
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$admin/healthz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    for ((i = 0; i < routes; i++)); do
        printf 'url = "http://127.0.0.1:%s/r%04d/x"\noutput = /dev/null\n' "$listen" "$i"
    done | curl -s --no-progress-meter --parallel --parallel-max 8 -K - || true
    admins+=("$admin")
done

# Two ticks of the sampler: its window has a first and a last sample.
sleep 11

for index in "${!bins[@]}"; do
    bytes="$(curl -fs "http://127.0.0.1:${admins[$index]}/" | wc -c)"
    echo "${bins[$index]}: page of $bytes bytes" >&2
done
for ((view = 0; view < views; view++)); do
    for index in "${!bins[@]}"; do
        seconds="$(curl -fs -o /dev/null -w '%{time_total}' "http://127.0.0.1:${admins[$index]}/")"
        echo "$index $seconds" >>"$work/times"
    done
done

python3 - "$work/times" "${bins[@]}" <<'EOF'
import statistics, sys
times, bins = sys.argv[1], sys.argv[2:]
by_bin = {}
for line in open(times):
    index, seconds = line.split()
    by_bin.setdefault(int(index), []).append(float(seconds) * 1000)
medians = {}
for index, name in enumerate(bins):
    ms = by_bin.get(index, [])
    medians[index] = statistics.median(ms)
    print(f"{name}: median {medians[index]:.2f} ms (min {min(ms):.2f}, max {max(ms):.2f}) over {len(ms)} views")
for index in range(1, len(bins)):
    print(f"{bins[index]} / {bins[0]}: {medians[index] / medians[0]:.2f}")
EOF
