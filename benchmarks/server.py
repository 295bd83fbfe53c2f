"""Starting, probing and stopping one uvicorn server per measured variant."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


class ServerFailed(RuntimeError):
    """The server exited or never answered; the message carries its log tail."""


@dataclass(frozen=True)
class ServerSettings:
    # Pinned rather than uvicorn's "auto", so installing uvloop/httptools later
    # cannot silently change what a run measures. Same for every variant.
    loop: str = "asyncio"
    http: str = "h11"


@dataclass(frozen=True)
class RunningServer:
    base_url: str
    first_body: bytes  # the /item/1 response, to check variants answer alike


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _log_tail(log: IO[bytes], limit: int = 3000) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")[-limit:]


def _wait_ready(proc: subprocess.Popen[bytes], base_url: str, log: IO[bytes]) -> bytes:
    """Poll /item/1 until it answers 200: that proves the pool is up, not just
    the socket. Returns the body."""
    probe_url = f"{base_url}/item/1"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerFailed(f"server exited ({proc.returncode}):\n{_log_tail(log)}")
        try:
            # S310: the URL is our own http://127.0.0.1:port, never user input.
            with urllib.request.urlopen(probe_url, timeout=2) as resp:  # noqa: S310
                return bytes(resp.read())
        except urllib.error.HTTPError as exc:
            # The app is up but the route is broken: waiting will not fix it.
            body = exc.read().decode(errors="replace")[:500]
            raise ServerFailed(
                f"GET /item/1 -> {exc.code} {body}\n{_log_tail(log)}"
            ) from exc
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)  # not listening yet (lifespan still filling the pool)
    raise ServerFailed(f"not ready after {READY_TIMEOUT_S:.0f} s:\n{_log_tail(log)}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)  # graceful: runs the lifespan shutdown
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def uvicorn_command(factory: str, port: int, loop: str, http: str) -> list[str]:
    """uvicorn serving the app *factory* builds: one worker, no access log."""
    return [
        sys.executable, "-m", "uvicorn", factory, "--factory",
        "--app-dir", str(REPO_ROOT), "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--no-access-log", "--log-level", "warning",
        "--loop", loop, "--http", http,
    ]  # fmt: skip


@contextmanager
def serve(
    variant: str, db_url: str, settings: ServerSettings
) -> Iterator[RunningServer]:
    """Run `variant` under uvicorn (one worker) for the duration of the block."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    cmd = uvicorn_command(
        "benchmarks.apps:create_app", port, settings.loop, settings.http
    )
    env = {**os.environ, "BENCH_VARIANT": variant, "BENCH_DB_URL": db_url}
    # A file, not a pipe: nobody reads the log during the run, and a full pipe
    # would stall the server.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            body = _wait_ready(proc, base_url, log)
            yield RunningServer(base_url, body)
            if proc.poll() is not None:
                raise ServerFailed(f"server died mid-run:\n{_log_tail(log)}")
        finally:
            _stop(proc)
