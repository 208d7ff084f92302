#!/usr/bin/env python3
"""A FastAPI endpoint behind fluxlit over TCP and over a Unix socket, against uvicorn alone.

    bench/api_uvicorn.py --fluxlit-bin target/release/fluxlit --python /path/to/venv/bin/python

The venv needs fastapi and uvicorn (with uvloop and httptools, as `uvicorn[standard]`
installs). Two uvicorn processes (one worker each) serve the same app, one on a TCP
port and one on a Unix socket (`--uds`); fluxlit (`serve --workers 1`) routes `/tcp`
to the first and `/uds` to the second. wrk measures GET on each path, and on uvicorn
directly. uvicorn and the gateway share CPU 1, wrk runs on CPU 0 (the app is the
bottleneck: what the gateway's hop costs it shows as lost throughput). Not part of CI;
see BENCHMARKS.md, "A FastAPI endpoint: TCP or a Unix socket".
"""

import argparse
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APP = '''
from fastapi import FastAPI
app = FastAPI()

@app.get("/{prefix}/items")
async def items(prefix: str):
    return {"items": [{"id": i, "name": f"item {i}"} for i in range(10)]}
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what: str, timeout: float = 15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.1)
    sys.exit(f"{what} did not come up")


def tcp_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def wrk(url: str, seconds: int, connections: int) -> dict:
    out = subprocess.run(
        ["taskset", "-c", "0", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return {"rps": rps, "p99_ms": float(p99.group(1)) * scale}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fluxlit-bin", type=Path, required=True)
    parser.add_argument("--python", type=Path, required=True)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="api-uvicorn-"))
    (work / "app.py").write_text(APP)
    sock = work / "api.sock"
    tcp_port, gateway_port = free_port(), free_port()
    uvicorn = [str(args.python), "-m", "uvicorn", "app:app", "--workers", "1", "--no-access-log", "--log-level", "warning"]
    procs = [
        subprocess.Popen(["taskset", "-c", "1", *uvicorn, "--port", str(tcp_port)], cwd=work),
        subprocess.Popen(["taskset", "-c", "1", *uvicorn, "--uds", str(sock)], cwd=work),
    ]
    config = work / "fluxlit.toml"
    config.write_text(f'''
[server]
listen = "127.0.0.1:{gateway_port}"
[log]
access_log = false
[upstreams.tcp]
url = "http://127.0.0.1:{tcp_port}"
[upstreams.uds]
url = "unix:{sock}"
[[routes]]
name = "tcp"
path_prefix = "/tcp"
upstream = "tcp"
[[routes]]
name = "uds"
path_prefix = "/uds"
upstream = "uds"
''')
    try:
        wait_for(lambda: tcp_open(tcp_port) and sock.exists(), "uvicorn")
        procs.append(subprocess.Popen(
            ["taskset", "-c", "1", str(args.fluxlit_bin), "serve", "--config", str(config), "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(lambda: tcp_open(gateway_port), "fluxlit")
        targets = {
            "uvicorn alone (TCP)": f"http://127.0.0.1:{tcp_port}/direct/items",
            "fluxlit -> uvicorn over TCP": f"http://127.0.0.1:{gateway_port}/tcp/items",
            "fluxlit -> uvicorn over a Unix socket": f"http://127.0.0.1:{gateway_port}/uds/items",
        }
        results = {name: [] for name in targets}
        for run in range(args.runs):
            for name, url in targets.items():
                wrk(url, 2, args.connections)  # warm-up
                results[name].append(wrk(url, args.seconds, args.connections))
        alone = sorted(r["rps"] for r in results["uvicorn alone (TCP)"])[len(results["uvicorn alone (TCP)"]) // 2]
        print("| | rps (median, min–max) | × uvicorn alone | p99 (median) |")
        print("|---|---|---|---|")
        for name, runs in results.items():
            rps = sorted(r["rps"] for r in runs)
            p99 = sorted(r["p99_ms"] for r in runs)
            median = rps[len(rps) // 2]
            print(f"| {name} | {median:,.0f} ({rps[0]:,.0f}–{rps[-1]:,.0f}) | {median / alone:.2f} | {p99[len(p99) // 2]:.2f} ms |")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()


if __name__ == "__main__":
    main()
