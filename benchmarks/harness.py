"""What every runner does around its measurements: progress on stderr, SIGTERM
taken as Ctrl-C, the facts of the run (commit, machine), the JSON file."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    """Progress goes to stderr, so stdout carries the report alone."""
    print(msg, file=sys.stderr, flush=True)


def stop_on_sigterm() -> None:
    """SIGTERM's default action skips every cleanup: the uvicorn subprocess and
    the throwaway server would outlive the run. Unwind as Ctrl-C does instead."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def git_commit() -> str | None:
    """`git describe --always --dirty` of the checkout, None outside one."""
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return commit or None


def machine() -> dict[str, Any]:
    """The interpreter, the CPUs and how busy they were when the run started."""
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    log(f"# wrote {path}")
