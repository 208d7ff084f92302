#!/usr/bin/env python3
"""Side-by-side benchmark of fluxlit against nginx, HAProxy and Caddy on loopback.

Run it through bench/compare.sh, which installs the tools and builds the binaries.
Everything it writes (configs, logs, raw results, the table) goes under
target/bench/<timestamp>/. See BENCHMARKS.md for what each scenario measures.

Pinning: the proxy under test runs alone on --proxy-cpu; the upstreams (nginx, the
WebSocket echo server) and the load generators share --load-cpu.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

PROXIES = ["nginx", "haproxy", "caddy", "fluxlit", "hyper-floor"]
# Proxies that do not tunnel WebSockets: left out of the ws scenario.
NO_WEBSOCKETS = {"hyper-floor"}
SCENARIOS = ["keepalive", "newconn", "stream1m", "upload10m", "ws", "routes10k", "reload", "memory"]

# Scenario: (path, wrk connections, extra wrk args, oha extra args)
HTTP_SCENARIOS = {
    "keepalive": dict(path="/", conns=64, wrk=[], oha=[]),
    "newconn": dict(path="/", conns=64, wrk=["-H", "Connection: close"], oha=["--disable-keepalive"]),
    "stream1m": dict(path="/1m", conns=16, wrk=[], oha=[]),
    "upload10m": dict(path="/upload/blob", conns=4, wrk=None, oha=None),  # filled in at run time
}


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


# ---------------------------------------------------------------- process accounting


def proc_children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            kids.append(int(entry))
    return kids


def proc_tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(proc_children(p))
    return out


def cpu_ticks(pids: list[int], which=(11, 12)) -> int:
    """utime + stime (or one of them) of the processes, in clock ticks."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(fields[i]) for i in which)
    return total


def wait_quiet(limit_s: float = 90.0, threshold: float = 0.25) -> float:
    """Waits until the machine is quiet (less than `threshold` cores busy over a second,
    between measurements, when only idle servers of ours run). Returns the seconds
    waited; gives up after `limit_s` (the run then shows the foreign CPU it had)."""
    started = time.time()
    while True:
        b0 = busy_ticks()[0]
        time.sleep(1.0)
        busy = (busy_ticks()[0] - b0) / CLK_TCK
        if busy < threshold or time.time() - started > limit_s:
            return time.time() - started - 1.0


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def busy_ticks() -> tuple[int, int]:
    """(user + system time of all processes, interrupt + softirq + steal time), all CPUs."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    # user nice system idle iowait irq softirq steal
    return f[0] + f[1] + f[2], f[5] + f[6] + f[7]


# ---------------------------------------------------------------- servers


class Server:
    def __init__(self, name, argv, cpu, port, workdir, env=None, ready_port=None, ready_timeout=10.0):
        self.name = name
        self.port = port
        self.log_path = workdir / f"{name}.log"
        self.log_file = open(self.log_path, "w")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(cpu), *argv],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            start_new_session=True,
        )
        try:
            wait_port(ready_port or port, ready_timeout)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"{name} did not start; see {self.log_path}")

    def pids(self):
        return proc_tree(self.proc.pid)

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log_file.close()


BODY_1K = "x" * 1023 + "\n"

SECURITY_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", "frame-ancestors 'self'"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
]


def start_upstream(work: Path, cpu: int, port: int) -> Server:
    d = work / "upstream"
    (d / "www").mkdir(parents=True, exist_ok=True)
    (d / "www" / "1m").write_bytes(b"y" * (1 << 20))
    # Uploads land on tmpfs when there is one: the disk would measure the disk.
    shm = Path("/dev/shm")
    put_root = Path(
        subprocess.check_output(["mktemp", "-d", "-p", str(shm if shm.is_dir() else d), "fluxlit-bench-put.XXXXXX"], text=True).strip()
    )
    (put_root / "tmp").mkdir()
    (put_root / "upload").mkdir()
    # nginx's worker runs as an unprivileged user when started as root.
    for path in (put_root, put_root / "tmp", put_root / "upload"):
        path.chmod(0o777)
    conf = f"""
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 10000; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path {put_root}/tmp;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
    sendfile on;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /1m {{ alias {d}/www/1m; default_type application/octet-stream; }}
        location /upload/ {{
            root {put_root};
            dav_methods PUT;
            create_full_put_path on;
            client_max_body_size 16m;
            client_body_buffer_size 1m;
        }}
        location / {{ default_type text/plain; return 200 "{BODY_1K}"; }}
    }}
}}
"""
    (d / "nginx.conf").write_text(conf)
    server = Server("upstream-nginx", ["nginx", "-p", str(d), "-c", str(d / "nginx.conf")], cpu, port, work)
    server.put_root = put_root
    return server


def nginx_proxy_conf(d: Path, port: int, up: int, ws: int, access_log: bool = False) -> str:
    sec = "\n".join(f'            add_header {k} "{v}" always;' for k, v in SECURITY_HEADERS)
    # Buffered as fluxlit's is: one write per 64 KiB or per second.
    log = f"access_log {d}/access.log combined buffer=64k flush=1s;" if access_log else "access_log off;"
    return f"""
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 10000; }}
http {{
    {log}
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path {d}/client_temp;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    upstream app {{ server 127.0.0.1:{up}; keepalive 64; keepalive_requests 1000000; }}
    upstream ws {{ server 127.0.0.1:{ws}; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        client_max_body_size 16m;
        proxy_buffering off;
        proxy_request_buffering off;
        proxy_http_version 1.1;
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-Host $host;
        proxy_set_header X-Request-Id $request_id;
        # Streamed as fluxlit does, through a 64 KiB buffer (the 4 KiB default makes
        # nginx slower than it need be on the 1 MiB response).
        proxy_buffer_size 64k;
        proxy_buffers 8 64k;
        proxy_busy_buffers_size 128k;
        add_header X-Request-Id $request_id always;
{sec}
        location /ws {{
            proxy_pass http://ws;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 1h;
        }}
        location / {{
            proxy_pass http://app;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def haproxy_conf(port: int, up: int, ws: int, access_log: bool = False) -> str:
    sec = "\n".join(f'    http-response set-header {k} "{v}"' for k, v in SECURITY_HEADERS)
    # To stdout (the server's log file): HAProxy has no buffered file log; a syslog
    # socket would need a reader on the load core.
    log_global = "    log stdout format raw local0\n" if access_log else ""
    log_defaults = "    log global\n    option httplog\n" if access_log else ""
    return f"""
global
    nbthread 1
    maxconn 9000
{log_global}defaults
    mode http
{log_defaults}    timeout connect 2s
    timeout client 120s
    timeout server 120s
    timeout tunnel 1h
    timeout http-keep-alive 120s
frontend fe
    bind 127.0.0.1:{port}
    unique-id-format %[uuid()]
    unique-id-header X-Request-Id
    http-request del-header X-Forwarded-For
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-response set-header X-Request-Id %[unique-id]
{sec}
    option forwardfor
    use_backend ws if {{ path_beg /ws }}
    default_backend app
backend app
    http-reuse always
    server up 127.0.0.1:{up}
backend ws
    server ws 127.0.0.1:{ws}
"""


def caddyfile(port: int, up: int, ws: int, access_log: bool = False, d: Path | None = None) -> str:
    sec = "\n".join(f'        {k} "{v}"' for k, v in SECURITY_HEADERS)
    log = f"    log {{\n        output file {d}/access.log\n    }}\n" if access_log else ""
    return f"""{{
    admin off
    auto_https off
}}
http://127.0.0.1:{port} {{
{log}    header {{
        X-Request-Id {{http.request.uuid}}
{sec}
    }}
    request_body {{
        max_size 16MB
    }}
    reverse_proxy /ws* 127.0.0.1:{ws} {{
        header_up X-Request-Id {{http.request.uuid}}
    }}
    reverse_proxy 127.0.0.1:{up} {{
        header_up X-Request-Id {{http.request.uuid}}
        flush_interval -1
    }}
}}
"""


def fluxlit_conf(port: int, up: int, ws: int, admin: int | None, extra_routes: int = 0) -> str:
    text = f"""[server]
listen = "127.0.0.1:{port}"
public_base_url = "http://127.0.0.1:{port}"
max_connections = 20000

"""
    if admin:
        text += f'[admin]\nlisten = "127.0.0.1:{admin}"\n\n'
    text += f"""[upstreams.app]
url = "http://127.0.0.1:{up}"

[upstreams.ws]
url = "http://127.0.0.1:{ws}"

[[routes]]
name = "ws"
path_prefix = "/ws"
upstream = "ws"
# The memory scenario holds --memory-connections WebSockets; the default cap is 1000.
max_websockets = 100000

[[routes]]
name = "app"
path_prefix = "/"
upstream = "app"
"""
    for i in range(1, extra_routes + 1):
        text += f'\n[[routes]]\nname = "r{i}"\npath_prefix = "/svc{i}/v1"\nupstream = "app"\n'
    return text


def fluxlit_log_env(args) -> dict:
    """--access-log off: no access log, like the nginx proxy (`access_log off`). A filter
    rather than `[log] access_log = false`: a --baseline-bin older than `[log]` reads the
    file. on: fluxlit's default (to stdout, the server's log file)."""
    return {} if args.access_log == "on" else {"RUST_LOG": "info,fluxlit::access=off"}


def start_proxy(kind: str, work: Path, cpu: int, up: int, ws: int, args, label=None, extra_routes=0, admin=False) -> Server:
    label = label or kind
    d = work / label
    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    if kind == "nginx":
        (d / "nginx.conf").write_text(nginx_proxy_conf(d, port, up, ws, args.access_log == "on"))
        s = Server(label, ["nginx", "-p", str(d), "-c", str(d / "nginx.conf")], cpu, port, work)
    elif kind == "haproxy":
        (d / "haproxy.cfg").write_text(haproxy_conf(port, up, ws, args.access_log == "on"))
        s = Server(label, ["haproxy", "-db", "-f", str(d / "haproxy.cfg")], cpu, port, work)
    elif kind == "caddy":
        (d / "Caddyfile").write_text(caddyfile(port, up, ws, args.access_log == "on", d))
        env = {"GOMAXPROCS": "1", "XDG_DATA_HOME": str(d / "data"), "XDG_CONFIG_HOME": str(d / "config"), "HOME": str(d)}
        s = Server(label, ["caddy", "run", "--config", str(d / "Caddyfile"), "--adapter", "caddyfile"], cpu, port, work, env=env)
    elif kind == "hyper-floor":
        # Not a product: the least a proxy built on hyper does (benches/loadgen.rs), to
        # tell hyper's own cost per request from fluxlit's.
        argv = [str(args.loadgen), "hyper-proxy", "--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{up}"]
        s = Server(label, argv, cpu, port, work)
    elif kind.startswith("fluxlit"):
        admin_port = free_port() if admin else None
        (d / "fluxlit.toml").write_text(fluxlit_conf(port, up, ws, admin_port, extra_routes))
        binary = args.baseline_bin if kind == "fluxlit-before" else args.fluxlit_bin
        s = Server(
            label,
            [str(binary), "serve", "--config", str(d / "fluxlit.toml"), "--workers", "1"],
            cpu,
            port,
            work,
            env=fluxlit_log_env(args),
        )
        s.config_path = d / "fluxlit.toml"
        s.admin_port = admin_port
        s.upstreams = (up, ws)
    else:
        raise ValueError(kind)
    return s


# ---------------------------------------------------------------- load tools


def run_load(argv, cpu, timeout):
    """Runs a load tool pinned to `cpu`; returns (stdout, cpu seconds it used)."""
    before = os.times()
    out = subprocess.run(["taskset", "-c", str(cpu), *argv], capture_output=True, text=True, timeout=timeout)
    after = os.times()
    used = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    if out.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    return out.stdout, used


def wrk(url, conns, seconds, extra, cpu):
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s", *extra, url]
    out, used = run_load(argv, cpu, seconds + 60)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return {
        "rps": rps,
        "requests": requests,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0,
        "tool_cpu_s": used,
        "raw": out,
    }


def oha(url, conns, seconds, rate, extra, cpu):
    argv = [
        "oha", "-z", f"{seconds}s", "-q", str(rate), "-c", str(conns),
        "--latency-correction", "--no-tui", "--output-format", "json", *extra, url,
    ]
    out, used = run_load(argv, cpu, seconds + 60)
    data = json.loads(out)
    pct = data.get("latencyPercentiles", {})
    codes = data.get("statusCodeDistribution", {})
    ok = sum(n for code, n in codes.items() if str(code).startswith("2"))
    bad = sum(n for code, n in codes.items() if not str(code).startswith("2"))
    # Requests still in flight when the time is up are cancelled by oha itself.
    errors = sum(n for e, n in data.get("errorDistribution", {}).items() if e != "aborted due to deadline")
    ms = lambda v: None if v is None else v * 1000.0  # noqa: E731
    return {
        "rate": rate,
        "ok": ok,
        "failed": bad + errors,
        "errors": data.get("errorDistribution", {}),
        "achieved_rps": data.get("summary", {}).get("requestsPerSec"),
        "p50_ms": ms(pct.get("p50")),
        "p99_ms": ms(pct.get("p99")),
        "p999_ms": ms(pct.get("p99.9")),
        "tool_cpu_s": used,
    }


def ws_load(args, url, seconds, cpu):
    out, used = run_load([str(args.loadgen), "ws-load", "--url", url, "--connections", "64", "--seconds", str(seconds)], cpu, seconds + 60)
    data = json.loads(out.strip().splitlines()[-1])
    data["tool_cpu_s"] = used
    return data


class Meter:
    """CPU used by the proxy under test, the upstreams and everything else meanwhile."""

    def __init__(self, proxy: Server | None, upstreams: list[Server]):
        self.proxy, self.upstreams = proxy, upstreams

    def __enter__(self):
        self.waited = wait_quiet()
        self.t0 = time.time()
        self.busy0 = busy_ticks()
        self.p0 = cpu_ticks(self.proxy.pids()) if self.proxy else 0
        self.pu0 = cpu_ticks(self.proxy.pids(), (11,)) if self.proxy else 0
        self.u0 = sum(cpu_ticks(u.pids()) for u in self.upstreams)
        return self

    def __exit__(self, *exc):
        wall = time.time() - self.t0
        self.proxy_cpu = ((cpu_ticks(self.proxy.pids()) - self.p0) / CLK_TCK / wall) if self.proxy else 0.0
        self.proxy_user = ((cpu_ticks(self.proxy.pids(), (11,)) - self.pu0) / CLK_TCK / wall) if self.proxy else 0.0
        self.upstream_cpu = (sum(cpu_ticks(u.pids()) for u in self.upstreams) - self.u0) / CLK_TCK / wall
        busy, irq = busy_ticks()
        self.busy = (busy - self.busy0[0]) / CLK_TCK / wall
        self.irq = (irq - self.busy0[1]) / CLK_TCK / wall
        self.wall = wall

    def result(self, tool_cpu_s: float) -> dict:
        tool = tool_cpu_s / self.wall
        return {
            "proxy_cpu": round(self.proxy_cpu, 3),
            "proxy_user_cpu": round(self.proxy_user, 3),
            "waited_for_quiet_s": round(self.waited, 1),
            "upstream_cpu": round(self.upstream_cpu, 3),
            "loadgen_cpu": round(tool, 3),
            # Busy CPU not explained by the benchmark's own processes: other work on the
            # machine (a compile, a test run) that makes this run noisy.
            "foreign_cpu": round(max(0.0, self.busy - self.proxy_cpu - self.upstream_cpu - tool), 3),
            # Kernel time outside any process (loopback softirqs mostly), all cores.
            "irq_cpu": round(self.irq, 3),
        }


# ---------------------------------------------------------------- scenarios


def upload_args(work: Path):
    body = work / "upload-10m.bin"
    if not body.exists():
        body.write_bytes(b"u" * (10 << 20))
    lua = work / "put.lua"
    lua.write_text(
        'local f = io.open("%s", "rb")\nwrk.method = "PUT"\nwrk.body = f:read("*a")\nf:close()\n'
        'wrk.headers["Content-Type"] = "application/octet-stream"\n' % body
    )
    return ["-s", str(lua)], ["-m", "PUT", "-D", str(body), "-T", "application/octet-stream"]


class Wakeups:
    """Counts, with `perf stat` when it works here, the context switches on the load CPU
    and the IPIs the proxy CPU sends: how often the proxy wakes its peers, which costs
    both cores (BENCHMARKS.md, "Scheduling on one core"). Counts, not times: they do not
    move with a busy host the way CPU seconds do."""

    EVENTS = "sched:sched_switch,ipi:ipi_send_cpu"

    def __init__(self, args, work: Path):
        self.args, self.out = args, work / "perf-wakeups.csv"
        self.counts = None

    def __enter__(self):
        self.proc = None
        self.out.unlink(missing_ok=True)
        if shutil.which("perf"):
            self.proc = subprocess.Popen(
                ["perf", "stat", "-a", "-A", "-x", ",", "-e", self.EVENTS, "-o", str(self.out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            # perf takes a moment to open its counters: what it misses would be missed
            # per request.
            time.sleep(0.3)
        return self

    def __exit__(self, *exc):
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return
        if not self.out.exists():
            return  # perf could not count here (no permission, no such events)
        counts = {}
        for line in self.out.read_text().splitlines():
            fields = line.split(",")
            if len(fields) > 3 and fields[0].startswith("CPU") and fields[1].isdigit():
                counts[(int(fields[0][3:]), fields[3])] = int(fields[1])
        self.counts = counts

    def per_request(self, requests: int) -> dict | None:
        if not self.counts or not requests:
            return None
        return {
            "load_cpu_switches": round(self.counts.get((self.args.load_cpu, "sched:sched_switch"), 0) / requests, 3),
            "proxy_cpu_ipis": round(self.counts.get((self.args.proxy_cpu, "ipi:ipi_send_cpu"), 0) / requests, 3),
        }


def measure_http(scn, target_url, meter_proxy, upstreams, args, rate):
    spec = HTTP_SCENARIOS[scn]
    url = target_url + spec["path"]
    # Warm up: pools, caches, the allocator.
    wrk(url, spec["conns"], args.warmup, spec["wrk"], args.load_cpu)
    time.sleep(0.5)
    with Wakeups(args, args.work) as wakeups, Meter(meter_proxy, upstreams) as m:
        w = wrk(url, spec["conns"], args.duration, spec["wrk"], args.load_cpu)
    result = {
        "wrk": {k: v for k, v in w.items() if k != "raw"},
        "wrk_cpu": m.result(w["tool_cpu_s"]),
        "wakeups_per_request": wakeups.per_request(w["requests"]),
    }
    return result


def measure_latency(scn, target_url, meter_proxy, upstreams, args, rate):
    spec = HTTP_SCENARIOS[scn]
    url = target_url + spec["path"]
    time.sleep(0.5)
    with Meter(meter_proxy, upstreams) as m:
        o = oha(url, spec["conns"], args.duration, rate, spec["oha"], args.load_cpu)
    o["cpu"] = m.result(o["tool_cpu_s"])
    return o


def pick_rate(rps_values, fraction):
    low = min(rps_values)
    rate = max(1, int(low * fraction))
    # Round to 2 significant digits so runs are comparable.
    digits = len(str(rate)) - 2
    return max(1, round(rate, -digits) if digits > 0 else rate)


def run_once(run_index: int, args, work: Path) -> dict:
    up_port, ws_port = free_port(), free_port()
    upstream = start_upstream(work, args.load_cpu, up_port)
    ws_server = Server("upstream-ws-echo", [str(args.loadgen), "ws-echo-server", "--listen", f"127.0.0.1:{ws_port}"], args.load_cpu, ws_port, work)
    upstreams = [upstream, ws_server]
    targets: dict[str, Server | None] = {"direct": None}
    servers = {}
    results: dict = {"run": run_index, "scenarios": {}}
    try:
        kinds = list(args.proxies)
        if args.baseline_bin:
            kinds.append("fluxlit-before")
        # Rotate the order each run so that no proxy always goes first or last.
        kinds = kinds[run_index % len(kinds):] + kinds[: run_index % len(kinds)]
        for kind in kinds:
            servers[kind] = start_proxy(kind, work / f"run{run_index}", args.proxy_cpu, up_port, ws_port, args, label=kind, admin=kind == "fluxlit")
            targets[kind] = servers[kind]
        time.sleep(1)
        order = ["direct", *kinds]

        def url_of(name):
            return f"http://127.0.0.1:{up_port}" if name == "direct" else f"http://127.0.0.1:{servers[name].port}"

        for scn in [s for s in args.scenarios if s in HTTP_SCENARIOS]:
            log(f"[run {run_index}] {scn}: throughput (wrk)")
            per = {}
            for name in order:
                per[name] = measure_http(scn, url_of(name), targets[name], upstreams, args, None)
                w = per[name]["wrk"]
                wk = per[name]["wakeups_per_request"] or {}
                log(
                    f"    {name:15} {w['rps']:10.0f} rps  proxy cpu {per[name]['wrk_cpu']['proxy_cpu']:.2f}  other cpu {per[name]['wrk_cpu']['foreign_cpu']:.2f}  "
                    f"non-2xx {w['non2xx']}  socket errors {w['socket_errors']}  switches+ipis/req {wk.get('load_cpu_switches', '-')}+{wk.get('proxy_cpu_ipis', '-')}"
                )
            rate = args.rate.get(scn) or pick_rate([per[n]["wrk"]["rps"] for n in order if n != "direct"], args.rate_fraction)
            log(f"[run {run_index}] {scn}: latency (oha at {rate} req/s)")
            for name in order:
                per[name]["oha"] = measure_latency(scn, url_of(name), targets[name], upstreams, args, rate)
                o = per[name]["oha"]
                log(f"    {name:15} p50 {o['p50_ms'] or 0:.3f} ms  p99 {o['p99_ms'] or 0:.3f} ms  p99.9 {o['p999_ms'] or 0:.3f} ms  ok {o['ok']}  failed {o['failed']} {o['errors'] or ''}")
            results["scenarios"][scn] = per

        if "ws" in args.scenarios:
            log(f"[run {run_index}] ws: echo round trips, 64 connections, closed loop")
            per = {}
            for name in [n for n in order if n not in NO_WEBSOCKETS]:
                url = f"ws://127.0.0.1:{ws_port}/ws" if name == "direct" else f"ws://127.0.0.1:{servers[name].port}/ws"
                with Meter(targets[name], upstreams) as m:
                    r = ws_load(args, url, args.duration, args.load_cpu)
                r["cpu"] = m.result(r["tool_cpu_s"])
                per[name] = r
                log(f"    {name:15} {r['messages_per_s']:10.0f} msg/s  p99 {r['p99_us']} us  errors {r['errors']}")
            results["scenarios"]["ws"] = per

        if "routes10k" in args.scenarios and "fluxlit" in servers:
            log(f"[run {run_index}] routes10k: fluxlit with 1 route vs 10,000 routes, keep-alive GET /svc7777/v1/x")
            per = {}
            extra = {}
            d = work / f"run{run_index}"
            extra["fluxlit-1route"] = start_proxy("fluxlit", d, args.proxy_cpu, up_port, ws_port, args, label="fluxlit-1route")
            extra["fluxlit-10k"] = start_proxy("fluxlit", d, args.proxy_cpu, up_port, ws_port, args, label="fluxlit-10k", extra_routes=9998)
            try:
                time.sleep(1)
                for name, server in extra.items():
                    url = f"http://127.0.0.1:{server.port}"
                    spec = dict(HTTP_SCENARIOS["keepalive"], path="/svc7777/v1/x")
                    HTTP_SCENARIOS["_routes"] = spec
                    per[name] = measure_http("_routes", url, server, upstreams, args, None)
                rate = pick_rate([p["wrk"]["rps"] for p in per.values()], args.rate_fraction)
                for name, server in extra.items():
                    per[name]["oha"] = measure_latency("_routes", f"http://127.0.0.1:{server.port}", server, upstreams, args, rate)
                    log(f"    {name:15} {per[name]['wrk']['rps']:10.0f} rps  p99 {per[name]['oha']['p99_ms']:.3f} ms")
            finally:
                for server in extra.values():
                    server.stop()
                HTTP_SCENARIOS.pop("_routes", None)
            results["scenarios"]["routes10k"] = per

        if "reload" in args.scenarios and "fluxlit" in servers:
            results["scenarios"]["reload"] = reload_scenario(run_index, servers["fluxlit"], upstreams, args)
    finally:
        for server in servers.values():
            server.stop()
        for server in upstreams:
            server.stop()
        shutil.rmtree(upstream.put_root, ignore_errors=True)
    return results


def fluxlit_generation(server: Server) -> int:
    return json.loads(http_get(f"http://127.0.0.1:{server.admin_port}/snapshot"))["generation"]


class Rewriter:
    """Rewrites a config file once a second, alternating two texts, while active."""

    def __init__(self, path: Path, texts: list[str], active: bool):
        self.path, self.texts, self.active = path, texts, active
        self.count = 0

    def __enter__(self):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        if self.active:
            self.thread.start()
        return self

    def _run(self):
        while not self.stop.wait(1.0):
            tmp = self.path.with_suffix(".toml.tmp")
            tmp.write_text(self.texts[self.count % 2])
            os.replace(tmp, self.path)  # what editors do: write aside, rename over
            self.count += 1

    def __exit__(self, *exc):
        self.stop.set()
        if self.active:
            self.thread.join()
            time.sleep(0.5)  # let the last rewrite apply before the generation is read


def reload_scenario(run_index, server: Server, upstreams, args) -> dict:
    """Keep-alive load while the config is rewritten once a second."""
    up, ws = server.upstreams
    port = server.port
    # Two valid route tables, both routing / to the same upstream (whose pool is kept).
    table_a = fluxlit_conf(port, up, ws, server.admin_port)
    table_b = fluxlit_conf(port, up, ws, server.admin_port, extra_routes=args.reload_routes)
    url = f"http://127.0.0.1:{port}/"
    log(f"[run {run_index}] reload: keep-alive GET, config rewritten every second (2 vs {args.reload_routes + 2} routes)")
    # Rate: the same for both phases, a fraction of what fluxlit sustains, low enough
    # that the load side (oha and the upstream on one core) is not saturated: its own
    # queueing would be what the p99 measures.
    w = wrk(url, 64, args.warmup + 2, [], args.load_cpu)
    rate = args.rate.get("reload") or pick_rate([w["rps"]], args.reload_rate_fraction)
    out = {"rate": rate}
    for phase in ("steady", "reloading"):
        texts = [table_b, table_a]
        g0 = fluxlit_generation(server)
        with Rewriter(server.config_path, texts, phase == "reloading") as latency_rewrites:
            with Meter(server, upstreams) as m:
                o = oha(url, 64, args.duration, rate, [], args.load_cpu)
        with Rewriter(server.config_path, texts, phase == "reloading") as throughput_rewrites:
            ww = wrk(url, 64, args.duration, [], args.load_cpu)
        g1 = fluxlit_generation(server)
        o["cpu"] = m.result(o["tool_cpu_s"])
        rewrites = latency_rewrites.count + throughput_rewrites.count
        out[phase] = {
            "oha": o,
            "wrk": {k: v for k, v in ww.items() if k != "raw"},
            "file_rewrites": rewrites,
            "generations_applied": g1 - g0,
        }
        log(
            f"    {phase:10} p99 {o['p99_ms']:.3f} ms  failed {o['failed']} (oha) "
            f"{ww['non2xx'] + ww['socket_errors']} (wrk, {ww['rps']:.0f} rps)  rewrites {rewrites}  applied {g1 - g0}"
        )
    return out


def memory_scenario(args, work: Path) -> dict:
    """RSS idle, with 1,000 idle keep-alive connections, and with 1,000 open WebSockets."""
    up_port, ws_port = free_port(), free_port()
    upstream = start_upstream(work, args.load_cpu, up_port)
    ws_server = Server("upstream-ws-echo", [str(args.loadgen), "ws-echo-server", "--listen", f"127.0.0.1:{ws_port}"], args.load_cpu, ws_port, work)
    out = {}
    n = args.memory_connections
    try:
        for kind in [k for k in ("fluxlit", "nginx", "haproxy", "caddy") if k in args.proxies or k == "fluxlit"]:
            out[kind] = {}
            for mode in ("http", "ws"):
                server = start_proxy(kind, work / "memory", args.proxy_cpu, up_port, ws_port, args, label=f"{kind}-{mode}")
                try:
                    time.sleep(1.0)
                    http_get(f"http://127.0.0.1:{server.port}/")  # first request: lazily built state
                    time.sleep(0.5)
                    idle = rss_kib(server.pids())
                    url = f"http://127.0.0.1:{server.port}/" if mode == "http" else f"ws://127.0.0.1:{server.port}/ws"
                    holder = subprocess.Popen(
                        ["taskset", "-c", str(args.load_cpu), str(args.loadgen), "hold", "--url", url, "--connections", str(n), "--seconds", "120"],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                    )
                    ready = json.loads(holder.stdout.readline())
                    time.sleep(1.0)
                    held = rss_kib(server.pids())
                    holder.stdin.close()
                    holder.wait(30)
                    out[kind][mode] = {
                        "idle_kib": idle,
                        "held_kib": held,
                        "connections": ready["ready"],
                        "failed": ready["failed"],
                        "per_connection_kib": round((held - idle) / max(1, ready["ready"]), 1),
                    }
                    log(f"    {kind:8} {mode:4} idle {idle / 1024:.1f} MiB  with {ready['ready']} open: {held / 1024:.1f} MiB  (+{out[kind][mode]['per_connection_kib']} KiB each, failed {ready['failed']})")
                finally:
                    server.stop()
    finally:
        upstream.stop()
        ws_server.stop()
        shutil.rmtree(upstream.put_root, ignore_errors=True)
    return out


# ---------------------------------------------------------------- report


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values):
    values = [v for v in values if v is not None]
    return (min(values), max(values)) if values else (None, None)


def fmt_range(values, digits=2, scale=1.0):
    lo, hi = spread(values)
    m = med(values)
    if m is None:
        return "–"
    if len(values) == 1:
        return f"{m * scale:.{digits}f}"
    return f"{m * scale:.{digits}f} ({lo * scale:.{digits}f}–{hi * scale:.{digits}f})"


def cpu_per_request(rows) -> str:
    if not rows or not rows[0]["wrk_cpu"]["proxy_cpu"]:
        return "–"
    per = [x["wrk_cpu"]["proxy_cpu"] / x["wrk"]["rps"] * 1e6 for x in rows]
    user = [x["wrk_cpu"]["proxy_user_cpu"] / x["wrk"]["rps"] * 1e6 for x in rows]
    return f"{fmt_range(per, 1)} ({med(user):.1f}+{med(per) - med(user):.1f})"


def wakeups(rows) -> str:
    counted = [x.get("wakeups_per_request") for x in rows]
    if not all(counted):
        return "–"
    switches = med([c["load_cpu_switches"] for c in counted])
    ipis = med([c["proxy_cpu_ipis"] for c in counted])
    return f"{switches:.2f} + {ipis:.2f}"


def report(all_runs: list[dict], memory: dict | None, args, work: Path) -> str:
    lines = []
    n = len(all_runs)
    lines.append(f"Runs: {n}; access logs {args.access_log}; each cell is the median over the runs (min–max). Ratios are to nginx in the same run, then the median of those ratios.")
    lines.append("")
    for scn in ["keepalive", "newconn", "stream1m", "upload10m"]:
        if not all_runs or scn not in all_runs[0]["scenarios"]:
            continue
        names = list(all_runs[0]["scenarios"][scn].keys())
        names = ["direct"] + [k for k in ["nginx", "haproxy", "caddy", "fluxlit", "fluxlit-before", "hyper-floor"] if k in names]
        rate = [r["scenarios"][scn][names[-1]]["oha"]["rate"] for r in all_runs]
        lines.append(f"### {scn} ({HTTP_SCENARIOS[scn]['conns']} connections; latency at a fixed {', '.join(map(str, rate))} req/s)")
        lines.append("")
        lines.append("| target | rps (wrk) | rps / nginx | p50 ms | p99 ms | p99.9 ms | p99 / nginx | proxy CPU | proxy CPU µs/req (user+sys) | load-CPU switches + proxy IPIs /req | failed |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for name in names:
            rows = [r["scenarios"][scn][name] for r in all_runs]
            rps = [x["wrk"]["rps"] for x in rows]
            ratio = [r["scenarios"][scn][name]["wrk"]["rps"] / r["scenarios"][scn]["nginx"]["wrk"]["rps"] for r in all_runs] if "nginx" in names else []
            p99r = [r["scenarios"][scn][name]["oha"]["p99_ms"] / r["scenarios"][scn]["nginx"]["oha"]["p99_ms"] for r in all_runs] if "nginx" in names else []
            failed = sum(x["oha"]["failed"] + x["wrk"]["non2xx"] + x["wrk"]["socket_errors"] for x in rows)
            lines.append(
                f"| {name} | {fmt_range(rps, 0)} | {fmt_range(ratio)} | {fmt_range([x['oha']['p50_ms'] for x in rows], 3)} | "
                f"{fmt_range([x['oha']['p99_ms'] for x in rows], 3)} | {fmt_range([x['oha']['p999_ms'] for x in rows], 3)} | "
                f"{fmt_range(p99r)} | {fmt_range([x['wrk_cpu']['proxy_cpu'] for x in rows])} | {cpu_per_request(rows)} | {wakeups(rows)} | {failed} |"
            )
        lines.append("")
    if all_runs and "ws" in all_runs[0]["scenarios"]:
        names = list(all_runs[0]["scenarios"]["ws"].keys())
        names = ["direct"] + [k for k in ["nginx", "haproxy", "caddy", "fluxlit", "fluxlit-before"] if k in names]
        lines.append("### ws (64 WebSockets, 64-byte messages, closed loop: send, wait for the echo, repeat)")
        lines.append("")
        lines.append("| target | messages/s | / nginx | p50 µs | p99 µs | p99.9 µs | proxy CPU | errors |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for name in names:
            rows = [r["scenarios"]["ws"][name] for r in all_runs]
            ratio = [r["scenarios"]["ws"][name]["messages_per_s"] / r["scenarios"]["ws"]["nginx"]["messages_per_s"] for r in all_runs] if "nginx" in names else []
            lines.append(
                f"| {name} | {fmt_range([x['messages_per_s'] for x in rows], 0)} | {fmt_range(ratio)} | {fmt_range([x['p50_us'] for x in rows], 0)} | "
                f"{fmt_range([x['p99_us'] for x in rows], 0)} | {fmt_range([x['p999_us'] for x in rows], 0)} | {fmt_range([x['cpu']['proxy_cpu'] for x in rows])} | {sum(x['errors'] for x in rows)} |"
            )
        lines.append("")
    if all_runs and "routes10k" in all_runs[0]["scenarios"]:
        lines.append("### routes10k (fluxlit only, keep-alive GET /svc7777/v1/x, 64 connections)")
        lines.append("")
        lines.append("| target | rps (wrk) | p50 ms | p99 ms | proxy CPU |")
        lines.append("|---|---|---|---|---|")
        for name in ["fluxlit-1route", "fluxlit-10k"]:
            rows = [r["scenarios"]["routes10k"][name] for r in all_runs]
            lines.append(
                f"| {name} | {fmt_range([x['wrk']['rps'] for x in rows], 0)} | {fmt_range([x['oha']['p50_ms'] for x in rows], 3)} | "
                f"{fmt_range([x['oha']['p99_ms'] for x in rows], 3)} | {fmt_range([x['wrk_cpu']['proxy_cpu'] for x in rows])} |"
            )
        lines.append("")
    if all_runs and "reload" in all_runs[0]["scenarios"]:
        lines.append("### reload (fluxlit, keep-alive GET, 64 connections, config rewritten every second)")
        lines.append("")
        lines.append("| phase | rate | p50 ms | p99 ms | p99 / steady p99 | failed (oha + wrk) | wrk rps | rewrites → generations applied |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for phase in ("steady", "reloading"):
            rows = [r["scenarios"]["reload"][phase] for r in all_runs]
            ratio = [r["scenarios"]["reload"][phase]["oha"]["p99_ms"] / r["scenarios"]["reload"]["steady"]["oha"]["p99_ms"] for r in all_runs]
            failed = sum(x["oha"]["failed"] + x["wrk"]["non2xx"] + x["wrk"]["socket_errors"] for x in rows)
            gens = ", ".join(f"{x['file_rewrites']}→{x['generations_applied']}" for x in rows)
            rates = ", ".join(str(r["scenarios"]["reload"]["rate"]) for r in all_runs)
            lines.append(
                f"| {phase} | {rates} | {fmt_range([x['oha']['p50_ms'] for x in rows], 3)} | {fmt_range([x['oha']['p99_ms'] for x in rows], 3)} | "
                f"{fmt_range(ratio)} | {failed} | {fmt_range([x['wrk']['rps'] for x in rows], 0)} | {gens} |"
            )
        lines.append("")
    if memory:
        lines.append(f"### memory (RSS; {args.memory_connections} connections held open by one client)")
        lines.append("")
        lines.append("| proxy | idle MiB | + keep-alive conns MiB | KiB per conn | idle MiB (2nd start) | + WebSockets MiB | KiB per WebSocket |")
        lines.append("|---|---|---|---|---|---|---|")
        for kind, m in memory.items():
            h, w = m["http"], m["ws"]
            lines.append(
                f"| {kind} | {h['idle_kib'] / 1024:.1f} | {h['held_kib'] / 1024:.1f} | {h['per_connection_kib']} | "
                f"{w['idle_kib'] / 1024:.1f} | {w['held_kib'] / 1024:.1f} | {w['per_connection_kib']} |"
            )
        lines.append("")
    foreign = []
    for r in all_runs:
        for scn, per in r["scenarios"].items():
            for x in per.values():
                if isinstance(x, dict) and "wrk_cpu" in x:
                    foreign.append(x["wrk_cpu"]["foreign_cpu"])
    if foreign:
        lines.append(f"CPU used by anything else during the throughput runs (other processes, kernel threads), in cores: median {med(foreign):.2f}, max {max(foreign):.2f}.")
    return "\n".join(lines) + "\n"


def profile(args, work: Path):
    """Profiles fluxlit under the keep-alive load with perf (cpu-clock samples, DWARF
    call graphs). Build with debug line tables for readable stacks:
    CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release."""
    up_port, ws_port = free_port(), free_port()
    upstream = start_upstream(work, args.load_cpu, up_port)
    ws_server = Server("upstream-ws-echo", [str(args.loadgen), "ws-echo-server", "--listen", f"127.0.0.1:{ws_port}"], args.load_cpu, ws_port, work)
    server = start_proxy("fluxlit", work / "profile", args.proxy_cpu, up_port, ws_port, args, label="fluxlit-profile")
    spec = HTTP_SCENARIOS[args.profile]
    url = f"http://127.0.0.1:{server.port}{spec['path']}"
    data = work / "perf.data"
    try:
        wrk(url, spec["conns"], args.warmup, spec["wrk"], args.load_cpu)
        load = subprocess.Popen(
            ["taskset", "-c", str(args.load_cpu), "wrk", "-t1", f"-c{spec['conns']}", f"-d{args.duration + 2}s", *spec["wrk"], url],
            stdout=subprocess.PIPE, text=True,
        )
        time.sleep(1)
        subprocess.run(
            ["perf", "record", "-e", "cpu-clock", "-F", "2000", "--call-graph", "dwarf,32768", "-o", str(data),
             "-p", str(server.proc.pid), "--", "sleep", str(args.duration)],
            check=True, capture_output=True,
        )
        out, _ = load.communicate()
        log(out)
    finally:
        server.stop()
        upstream.stop()
        ws_server.stop()
        shutil.rmtree(upstream.put_root, ignore_errors=True)
    for name, extra in (("perf-children.txt", ["--children"]), ("perf-self.txt", ["--no-children"])):
        with open(work / name, "w") as f:
            subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--percent-limit", "0.5", *extra], stdout=f, stderr=subprocess.DEVNULL)
    log(f"perf reports: {work / 'perf-self.txt'}, {work / 'perf-children.txt'}")


def instructions(args, work: Path):
    """Counts fluxlit's user-space instructions per keep-alive GET with callgrind, which
    counts rather than times, so the figure is repeatable on a busy machine: warm up,
    zero the counters, send a fixed number of requests, dump the counters. Build with
    debug line tables to read the profile too:
    CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release."""
    up_port = free_port()
    upstream = start_upstream(work, args.load_cpu, up_port)
    results = {}
    binaries = [("fluxlit", args.fluxlit_bin)]
    if args.baseline_bin:
        binaries.append(("fluxlit-before", args.baseline_bin))
    try:
        for label, binary in binaries:
            d = work / f"callgrind-{label}"
            d.mkdir(parents=True, exist_ok=True)
            port = free_port()
            (d / "fluxlit.toml").write_text(fluxlit_conf(port, up_port, up_port, None))
            out = d / "callgrind.out"
            server = Server(
                f"{label}-callgrind",
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                 str(binary), "serve", "--config", str(d / "fluxlit.toml"), "--workers", "1"],
                args.proxy_cpu, port, work,
                env=fluxlit_log_env(args), ready_timeout=120.0,
            )
            url = f"http://127.0.0.1:{port}/"
            def get(n):
                stdout, _ = run_load([str(args.loadgen), "get", "--url", url, "--connections", "16", "--requests", str(n)], args.load_cpu, 600)
                result = json.loads(stdout.strip().splitlines()[-1])
                if result["failed"]:
                    raise RuntimeError(f"{label}: {result['failed']} requests failed under callgrind")
            try:
                get(2000)
                subprocess.run(["callgrind_control", "--zero", str(server.proc.pid)], check=True, capture_output=True)
                get(args.instruction_requests)
                subprocess.run(["callgrind_control", "--dump", str(server.proc.pid)], check=True, capture_output=True)
            finally:
                server.stop()
            dumps = sorted(d.glob("callgrind.out*"), key=lambda p: p.stat().st_mtime)
            zeroed = [p for p in dumps if p != out] or dumps
            total = None
            for line in zeroed[0].read_text().splitlines():
                if line.startswith(("summary:", "totals:")):
                    total = int(line.split()[1])
            if total is None:
                raise RuntimeError(f"no totals in {zeroed[0]}")
            results[label] = {"instructions_per_request": round(total / args.instruction_requests), "profile": str(zeroed[0])}
            log(f"{label}: {results[label]['instructions_per_request']} instructions per request ({zeroed[0]})")
    finally:
        upstream.stop()
        shutil.rmtree(upstream.put_root, ignore_errors=True)
    (work / "instructions.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


def machine_info() -> dict:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    def version(argv):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        except Exception:  # noqa: BLE001
            return "not installed"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": os.uname().release,
        "nginx": version(["nginx", "-v"]),
        "haproxy": version(["haproxy", "-v"]),
        "caddy": version(["caddy", "version"]),
        "wrk": version(["wrk", "-v"]),
        "oha": version(["oha", "--version"]),
        "fluxlit": version([str(ROOT / "target/release/fluxlit"), "--version"]),
    }


def main():
    # Stop cleanly (the `finally` blocks stop every server started) on SIGTERM, and on
    # SIGINT even when started in the background, where SIGINT is ignored by default.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=8, help="seconds per measurement")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--proxies", default=",".join(PROXIES))
    parser.add_argument("--fluxlit-bin", type=Path, default=ROOT / "target/release/fluxlit")
    parser.add_argument("--baseline-bin", type=Path, help="a second fluxlit build, shown as fluxlit-before")
    parser.add_argument("--loadgen", type=Path, required=True)
    parser.add_argument("--proxy-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument("--rate-fraction", type=float, default=0.5, help="oha's fixed rate as a fraction of the slowest proxy's wrk rps")
    parser.add_argument("--rate", action="append", default=[], help="SCENARIO=RPS: fix oha's rate for a scenario")
    parser.add_argument("--reload-rate-fraction", type=float, default=0.25, help="oha's fixed rate in the reload scenario as a fraction of fluxlit's wrk rps")
    parser.add_argument("--reload-routes", type=int, default=98)
    parser.add_argument("--memory-connections", type=int, default=1000)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--profile", choices=sorted(HTTP_SCENARIOS), help="profile fluxlit under this scenario's load with perf, then exit")
    parser.add_argument("--instructions", action="store_true", help="count fluxlit's instructions per keep-alive GET with callgrind (and --baseline-bin's), then exit")
    parser.add_argument("--instruction-requests", type=int, default=20000)
    parser.add_argument("--access-log", choices=["on", "off"], default="off", help="the proxies' access logs: off, or on (nginx buffer=64k flush=1s to a file, HAProxy to stdout, Caddy to a file, fluxlit its default: stdout); the upstream never logs")
    args = parser.parse_args()
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    args.proxies = [p for p in args.proxies.split(",") if p]
    args.rate = {k: int(v) for k, v in (x.split("=", 1) for x in args.rate)}
    if not shutil.which("caddy") and "caddy" in args.proxies:
        log("caddy is not installed: skipping it")
        args.proxies.remove("caddy")

    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = args.out or (ROOT / "target" / "bench" / stamp)
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    args.work = work
    log(f"writing to {work}")
    HTTP_SCENARIOS["upload10m"]["wrk"], HTTP_SCENARIOS["upload10m"]["oha"] = upload_args(work)
    if args.profile:
        profile(args, work)
        return
    if args.instructions:
        instructions(args, work)
        return
    info = machine_info()
    runs = []
    for i in range(args.runs):
        runs.append(run_once(i, args, work))
        (work / "results.json").write_text(json.dumps({"machine": info, "runs": runs}, indent=1))
    memory = None
    if "memory" in args.scenarios:
        log("memory: RSS idle and with open connections")
        memory = memory_scenario(args, work)
    (work / "results.json").write_text(json.dumps({"machine": info, "runs": runs, "memory": memory}, indent=1))
    table = report(runs, memory, args, work)
    header = "Machine: " + ", ".join(f"{k}: {v}" for k, v in info.items()) + "\n\n"
    (work / "table.md").write_text(header + table)
    print(header + table)
    log(f"raw results: {work / 'results.json'}; table: {work / 'table.md'}")


if __name__ == "__main__":
    main()
