#!/usr/bin/env python3
"""The gateway's memory with many idle keep-alive connections. By hand, not in CI:

    tests/external/idle_connections.py [--connections 10000] [--fluxlit PATH]

Starts `fluxlit serve` (builtin echo upstream, max_connections and idle_timeout raised so
the connections are allowed and stay), reads its VmRSS, opens the connections, sends one
request on each and reads the answer (so each is a served keep-alive connection, then
idle), reads VmRSS again, checks a fresh client is still served, and prints the figures.
Raises its own soft file-descriptor limit to the hard one; the gateway inherits it.
"""
import argparse
import asyncio
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def open_idle(port, count):
    request = b"GET /idle HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    held = []
    failed = 0
    for start in range(0, count, 500):
        batch = await asyncio.gather(
            *(one(port, request) for _ in range(start, min(count, start + 500))),
            return_exceptions=True,
        )
        for result in batch:
            if isinstance(result, Exception):
                failed += 1
            else:
                held.append(result)
    return held, failed


async def one(port, request):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.split(b"\r\n")[0])
    return writer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--fluxlit", default=None, help="the binary [default: target/debug/fluxlit]")
    args = parser.parse_args()
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    binary = args.fluxlit or os.path.join(repo, "target", "debug", "fluxlit")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Each process holds one end of every connection, plus a few of its own.
    wanted = args.connections + 200
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < wanted:
        sys.exit("need a file-descriptor limit of %d (ulimit -n); the hard limit is %d" % (wanted, hard))

    port = free_port()
    with tempfile.TemporaryDirectory() as work:
        config = os.path.join(work, "fluxlit.toml")
        with open(config, "w") as out:
            out.write(
                '[server]\nlisten = "127.0.0.1:%d"\nmax_connections = %d\nidle_timeout = "10m"\n\n'
                '[upstreams.echo]\nbuiltin = "echo"\n\n'
                '[[routes]]\nname = "echo"\npath_prefix = "/"\nupstream = "echo"\n'
                % (port, args.connections + 100)
            )
        gateway = subprocess.Popen(
            [binary, "serve", "--config", config],
            env=dict(os.environ, RUST_LOG="warn"),
        )
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            time.sleep(0.5)
            before = rss_kib(gateway.pid)

            async def run():
                held, failed = await open_idle(port, args.connections)
                await asyncio.sleep(2)
                after = rss_kib(gateway.pid)
                writer = await one(port, b"GET /fresh HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                writer.close()
                for writer in held:
                    writer.close()
                return len(held), failed, after

            opened, failed, after = asyncio.run(run())
            print("idle connections: %d open, %d failed" % (opened, failed))
            print("gateway VmRSS: %.1f MiB before, %.1f MiB with them open" % (before / 1024, after / 1024))
            if opened:
                print("per connection: %.1f KiB" % ((after - before) / opened))
            print("a fresh client was served: yes")
            if gateway.poll() is not None:
                sys.exit("the gateway exited")
        finally:
            gateway.terminate()
            gateway.wait()


if __name__ == "__main__":
    main()
