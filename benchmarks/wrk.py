"""Running wrk with `bench.lua` and reading its JSON summary line."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

LUA_SCRIPT = Path(__file__).with_name("bench.lua")
# wrk's default 2 s timeout would count the blocking variant's queued requests
# as errors in mixed mode; we want to see their (terrible) latency instead.
TIMEOUT = "30s"


class WrkMissing(RuntimeError):
    pass


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkMissing(
            "wrk is not installed (it generates the HTTP load).\n"
            "Install it with:  apt-get install wrk"
        )
    return path


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: dict[str, int]

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def start_wrk(
    base_url: str,
    *,
    duration: float,
    connections: int,
    threads: int,
    slow_fraction: float = 0.0,
    endpoint: str = "item",
) -> subprocess.Popen[str]:
    """Start wrk in the background; pair with `finish_wrk`.

    *endpoint* is what `bench.lua` requests: `item` (`/item/{id}`) or `list`
    (`/items?limit=100&after={id}`); *slow_fraction* of them go to `/slow`."""
    cmd = [
        wrk_path(),
        f"-t{min(threads, connections)}",  # wrk refuses more threads than conns
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={TIMEOUT}",
        "--latency",
        "-s",
        str(LUA_SCRIPT),
        base_url,
        "--",
        repr(slow_fraction),
        endpoint,
    ]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish_wrk(proc: subprocess.Popen[str]) -> WrkResult:
    """Wait for a wrk started by `start_wrk` and parse its summary."""
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.strip() or out}")
    return parse_output(out)


def run_wrk(base_url: str, **kwargs: Any) -> WrkResult:
    return finish_wrk(start_wrk(base_url, **kwargs))


def parse_output(out: str) -> WrkResult:
    for line in out.splitlines():
        if line.startswith("BENCH_JSON "):
            data = json.loads(line.removeprefix("BENCH_JSON "))
            break
    else:
        raise RuntimeError(f"no BENCH_JSON line in wrk output:\n{out}")
    duration_s = data["duration_us"] / 1e6
    return WrkResult(
        requests=data["requests"],
        duration_s=duration_s,
        rps=data["requests"] / duration_s if duration_s else 0.0,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        mean_ms=data["mean_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        errors=data["errors"],
    )
