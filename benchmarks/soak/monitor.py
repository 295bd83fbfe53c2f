"""Watching the run: every second the app user's connections, the app's
process and its pool's stats; the KILL rounds; the settling after the load."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from benchmarks.harness import log
from benchmarks.soak.admin import Admin
from benchmarks.soak.load import TRANSPORT_ERRORS, HttpConnection, Load

STATS_TIMEOUT_S = 2.0
SETTLE_TIMEOUT_S = 10.0  # after the load, for in-flight background tasks
PROGRESS_EVERY_S = 10


@dataclass
class Kill:
    t: float  # seconds since the load started, when the KILLs began
    t_end: float
    busy: int
    idle: int


@dataclass
class Sample:
    t: float
    conns: int | None = None  # the app user's connections on the server
    conns_busy: int | None = None  # of which running a statement
    conns_killed: int | None = None  # of which killed, not yet gone
    rss_mb: float | None = None  # the uvicorn process and its children
    cpu_pct: float | None = None
    threads: int | None = None
    fds: int | None = None
    pool: dict[str, Any] | None = None  # GET /stats


@dataclass
class Run:
    load: Load
    wall0: float  # time.time() at load.t0, to place the app's log lines
    samples: list[Sample] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    interrupted: bool = False
    elapsed: float = 0.0
    client_cpu: float | None = None  # cores used by this process during the load
    settled: dict[str, Any] = field(default_factory=dict)
    shutdown: dict[str, Any] = field(default_factory=dict)
    writes: dict[str, Any] = field(default_factory=dict)
    app_log: str = ""


async def sleep_until(deadline: float, stop: asyncio.Event) -> bool:
    """Sleep until *deadline* (monotonic); False if *stop* is set first."""
    delay = deadline - time.monotonic()
    if delay > 0:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
    return not stop.is_set()


async def fetch_stats(probe: HttpConnection) -> dict[str, Any] | None:
    try:
        status, body = await probe.request("GET", "/stats", STATS_TIMEOUT_S)
    except TRANSPORT_ERRORS:
        return None
    if status != 200:
        return None
    stats: dict[str, Any] = json.loads(body)
    return stats


def process_usage(process: psutil.Process) -> tuple[float, float, int, int]:
    """RSS in MB (children included), CPU %, threads and open file descriptors."""
    with process.oneshot():
        rss = process.memory_info().rss
        cpu = process.cpu_percent()
        threads = process.num_threads()
        fds = process.num_fds()
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            rss += child.memory_info().rss
    return rss / 2**20, cpu, threads, fds


async def take_sample(
    t: float,
    probe: HttpConnection,
    watcher: Admin,
    process: psutil.Process,
    user: str,
) -> Sample:
    conns, pool = await asyncio.gather(
        asyncio.to_thread(watcher.connections, user),
        fetch_stats(probe),
        return_exceptions=True,
    )
    sample = Sample(t)
    if isinstance(conns, tuple):
        sample.conns, sample.conns_busy, sample.conns_killed = conns
    if isinstance(pool, dict):
        sample.pool = pool
    with contextlib.suppress(psutil.Error):
        sample.rss_mb, sample.cpu_pct, sample.threads, sample.fds = process_usage(
            process
        )
    return sample


def progress_line(run: Run, sample: Sample) -> str:
    recent = run.load.seconds[-PROGRESS_EVERY_S - 1 : -1]
    rps = sum(s.ok + s.failed for s in recent) / max(1, len(recent))
    pool = sample.pool or {}
    return (
        f"  t={sample.t:4.0f}s  {rps:6.0f} req/s  failed {len(run.load.failures)}"
        f"  KILLs {len(run.kills)}  conns {sample.conns}"
        f"  pool size {pool.get('size')} in_use {pool.get('in_use')}"
        f" waiting {pool.get('waiting')}  rss {sample.rss_mb or 0:.1f} MB"
    )


async def sampler(
    run: Run,
    probe: HttpConnection,
    watcher: Admin,
    process: psutil.Process,
    user: str,
    stop: asyncio.Event,
) -> None:
    """Every second: connections on the server, the app's RSS, its pool stats."""
    t0 = run.load.t0
    tick = 1
    while await sleep_until(t0 + tick, stop):
        sample = await take_sample(tick, probe, watcher, process, user)
        run.samples.append(sample)
        if tick % PROGRESS_EVERY_S == 0:
            log(progress_line(run, sample))
        # A slow sample skips ticks rather than bunching up samples.
        tick = max(tick + 1, math.floor(time.monotonic() - t0) + 1)


async def killer(
    run: Run,
    admin: Admin,
    user: str,
    args: argparse.Namespace,
    stop: asyncio.Event,
) -> None:
    """Every --kill-every seconds, KILL the app user's connections."""
    t0 = run.load.t0
    n = 1
    while n * args.kill_every < args.duration and await sleep_until(
        t0 + n * args.kill_every, stop
    ):
        started = time.monotonic() - t0
        busy, idle = await asyncio.to_thread(admin.kill, user, args.kill_mode == "idle")
        run.kills.append(Kill(started, time.monotonic() - t0, busy, idle))
        n += 1


async def settle(probe: HttpConnection, watcher: Admin, user: str) -> dict[str, Any]:
    """After the load: wait for the pool to be idle (background tasks done),
    then compare the server's view with the pool's."""
    started = time.monotonic()
    while True:
        pool = await fetch_stats(probe)
        idle = pool is not None and pool["in_use"] == 0 and pool["waiting"] == 0
        if idle or time.monotonic() - started > SETTLE_TIMEOUT_S:
            break
        await asyncio.sleep(0.1)
    # A connection the pool has just closed may linger on the server for a few
    # milliseconds: only more connections than the pool holds *for a while*
    # would be a leak.
    deadline = time.monotonic() + 3
    while True:
        conns = (await asyncio.to_thread(watcher.connections, user))[0]
        pool = await fetch_stats(probe)
        size = pool["size"] if pool else None
        if size is None or conns <= size or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    return {
        "seconds": round(time.monotonic() - started, 2),
        "pool": pool,
        "connections": conns,
        "untracked_connections": max(0, conns - size) if size is not None else None,
        "open_transactions": await asyncio.to_thread(watcher.open_transactions, user),
    }
