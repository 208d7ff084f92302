"""Real servers for the tests: the fluxlit binary, and apps under uvicorn, on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(what: str, check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"{what} within {timeout} s")


@pytest.fixture(scope="session")
def fluxlit_bin() -> Path:
    """The gateway binary: $FLUXLIT_BIN, else the debug build of this repository."""
    path = Path(os.environ.get("FLUXLIT_BIN") or REPO / "target" / "debug" / "fluxlit")
    if not path.is_file():
        pytest.fail(f"no gateway binary at {path}: run `cargo build`, or set FLUXLIT_BIN")
    return path


def es256_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


class Uvicorn:
    """An ASGI app served by uvicorn on a free loopback port, in a thread."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> Uvicorn:
        self._thread.start()
        wait_until("uvicorn started", lambda: self._server.started)
        return self

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


class Gateway:
    """`fluxlit serve` on a config written into `directory`."""

    def __init__(self, binary: Path, directory: Path, config: str) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.admin_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = directory / "fluxlit.toml"
        self.write_config(config)
        self._log = open(directory / "gateway.log", "wb")  # noqa: SIM115
        self._process: subprocess.Popen[bytes] | None = None

    def write_config(self, body: str) -> None:
        head = (
            f'[server]\nlisten = "127.0.0.1:{self.port}"\n'
            f'public_base_url = "{self.url}"\n'
            f'[admin]\nlisten = "127.0.0.1:{self.admin_port}"\n'
        )
        self.config_path.write_text(head + body)

    def __enter__(self) -> Gateway:
        self._process = subprocess.Popen(
            [str(self.binary), "serve", "--config", str(self.config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
        )
        admin = f"http://127.0.0.1:{self.admin_port}/readyz"
        wait_until("the gateway is ready", lambda: self._ready(admin))
        return self

    def _ready(self, url: str) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise AssertionError(f"the gateway exited: {self.log()}")
        return httpx.get(url, timeout=1).status_code == 200

    def reload(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGHUP)

    def log(self) -> str:
        return (self.directory / "gateway.log").read_text(errors="replace")

    def __exit__(self, *_: object) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()

    def token(self, provider: str, sub: str, *claims: str) -> str:
        """A bearer token from `fluxlit token issue`."""
        command = [str(self.binary), "token", "issue", "--config", str(self.config_path)]
        command += ["--provider", provider, "--sub", sub]
        for claim in claims:
            command += ["--claim", claim]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        return done.stdout.strip()


@pytest.fixture
def gateway_factory(fluxlit_bin: Path, tmp_path: Path) -> Iterator[Any]:
    started: list[Gateway] = []

    def start(config: str) -> Gateway:
        gateway = Gateway(fluxlit_bin, tmp_path, config)
        started.append(gateway.__enter__())
        return gateway

    yield start
    for gateway in started:
        gateway.__exit__()
