"""Starting, probing and stopping one uvicorn server (a subprocess) per
measured app, and the server configurations measured."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

from benchmarks.harness import REPO_ROOT

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
READY_PATH = "/item/1"


class ServerFailed(RuntimeError):
    """The server exited or never answered; the message carries its log tail."""


@dataclass(frozen=True)
class ServerSettings:
    # Pinned rather than uvicorn's "auto", so installing or removing uvloop or
    # httptools cannot silently change what a run measures.
    loop: str = "asyncio"
    http: str = "h11"

    @property
    def label(self) -> str:
        return f"{self.loop} + {self.http}"

    def missing(self) -> list[str]:
        """The optional modules this configuration needs that are not installed
        (asyncio and h11 come with Python and uvicorn)."""
        wanted = {self.loop, self.http} & {"uvloop", "httptools"}
        return sorted(m for m in wanted if importlib.util.find_spec(m) is None)


#: The configurations `benchmarks.run` measures, in this order: first what
#: `uvicorn[standard]` and `fastapi[standard]` install, so what users deploy.
SERVERS = {
    "uvloop": ServerSettings("uvloop", "httptools"),
    "asyncio": ServerSettings("asyncio", "h11"),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> bytes:
    """GET *url* and return the body; HTTPError on any status but 2xx."""
    # S310: the URL is our own http://127.0.0.1:port, never user input.
    with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310
        return bytes(resp.read())


def uvicorn_command(factory: str, port: int, loop: str, http: str) -> list[str]:
    """uvicorn serving the app *factory* builds: one worker, no access log."""
    return [
        sys.executable, "-m", "uvicorn", factory, "--factory",
        "--app-dir", str(REPO_ROOT), "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--no-access-log", "--log-level", "warning",
        "--loop", loop, "--http", http,
    ]  # fmt: skip


@dataclass
class UvicornProcess:
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    log: IO[bytes]  # its stdout and stderr
    first_body: bytes = b""  # the READY_PATH answer
    stop_seconds: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def get(self, path: str) -> bytes:
        return get(self.base_url + path)

    def log_text(self, limit: int | None = None) -> str:
        self.log.seek(0)
        text = self.log.read().decode(errors="replace")
        return text if limit is None else text[-limit:]

    def wait_ready(self) -> None:
        """Poll READY_PATH until it answers 200: that proves the pool is up,
        not just the socket. Keeps the body in `first_body`."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerFailed(
                    f"server exited ({self.proc.returncode}):\n{self.log_text(3000)}"
                )
            try:
                self.first_body = self.get(READY_PATH)
                return
            except urllib.error.HTTPError as exc:
                # The app is up but the route is broken: waiting will not fix it.
                body = exc.read().decode(errors="replace")[:500]
                raise ServerFailed(
                    f"GET {READY_PATH} -> {exc.code} {body}\n{self.log_text(3000)}"
                ) from exc
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)  # not listening yet (lifespan still filling the pool)
        raise ServerFailed(
            f"not ready after {READY_TIMEOUT_S:.0f} s:\n{self.log_text(3000)}"
        )

    def stop(self) -> None:
        """SIGINT (uvicorn finishes in-flight requests, the lifespan closes the
        pool), escalating to SIGKILL after STOP_TIMEOUT_S. Once."""
        if self.stop_seconds is not None:
            return
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stop_seconds = time.monotonic() - started


@contextmanager
def uvicorn_app(
    factory: str,
    env: Mapping[str, str],
    settings: ServerSettings,
    *,
    own_session: bool = False,
) -> Iterator[UvicornProcess]:
    """Run the app *factory* builds under uvicorn, ready, for the block.

    *env* is added to our environment. With *own_session*, the server gets a
    session of its own, so a Ctrl-C in the terminal does not reach it."""
    port = free_port()
    cmd = uvicorn_command(factory, port, settings.loop, settings.http)
    # A file, not a pipe: nobody reads the log during the run, and a full pipe
    # would stall the server.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=own_session,
        )
        server = UvicornProcess(proc, "127.0.0.1", port, log)
        try:
            server.wait_ready()
            yield server
        finally:
            server.stop()


@contextmanager
def serve(
    variant: str, db_url: str, settings: ServerSettings
) -> Iterator[UvicornProcess]:
    """Run a variant of `benchmarks.apps` (one worker) for the block."""
    env = {"BENCH_VARIANT": variant, "BENCH_DB_URL": db_url}
    with uvicorn_app("benchmarks.apps:create_app", env, settings) as server:
        yield server
        if server.proc.poll() is not None:
            raise ServerFailed(f"server died mid-run:\n{server.log_text(3000)}")
