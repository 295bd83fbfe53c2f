"""`python -m benchmarks.soak`: the options, and the run from set-up to
tear-down (database, app, load, checks, report)."""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from benchmarks.db import DbUrl, database_url, parse_url
from benchmarks.harness import git_commit, log, machine, stop_on_sigterm, write_json
from benchmarks.server import ServerFailed, ServerSettings, UvicornProcess, uvicorn_app
from benchmarks.soak import app as soak_app
from benchmarks.soak.admin import (
    Admin,
    admin_connection,
    app_database,
    check_writes,
    server_version,
    url_of,
)
from benchmarks.soak.load import (
    DEFAULT_MIX,
    REQUEST_TIMEOUT_S,
    HttpConnection,
    Load,
    Mix,
    client_loop,
    parse_mix,
)
from benchmarks.soak.monitor import Run, killer, sampler, settle, sleep_until
from benchmarks.soak.report import report
from benchmarks.soak.summary import summarise, timeline

GONE_TIMEOUT_S = 5.0  # the server drops a session shortly after the client's QUIT


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description="Soak the library's sync path: mixed load, periodic KILLs.",
    )
    p.add_argument(
        "--duration", type=int, default=300, help="seconds of load (default 300)"
    )
    p.add_argument(
        "--warmup",
        type=int,
        help="seconds left out of the memory regression "
        "(default: 10%% of --duration, within 5..60)",
    )
    p.add_argument(
        "--concurrency", type=int, default=64, help="concurrent clients (default 64)"
    )
    p.add_argument(
        "--mix", default=DEFAULT_MIX, help=f"kind=weight,... (default {DEFAULT_MIX})"
    )
    p.add_argument(
        "--kill-every", type=float, default=15.0, help="seconds (default 15); 0: never"
    )
    p.add_argument(
        "--kill-mode",
        choices=("all", "idle"),
        default="all",
        help="KILL every connection of the app's user (default), or only those "
        "not running a statement (processlist command Sleep)",
    )
    p.add_argument(
        "--kill-window",
        type=float,
        default=2.0,
        help="a failure ending up to this many seconds after a KILL counts as "
        "near it (default 2)",
    )
    p.add_argument(
        "--pool-size", type=int, default=16, help="the pool's size (default 16)"
    )
    p.add_argument(
        "--max-size", type=int, default=32, help="the pool's max_size (default 32)"
    )
    p.add_argument(
        "--url", help="mysql://admin:pass@host:port/db (default: see README)"
    )
    p.add_argument("--json", type=Path, help="write the full results here")
    p.add_argument("--csv", type=Path, help="write the per-second timeline here")
    p.add_argument("--loop", default=ServerSettings.loop, help="uvicorn --loop")
    p.add_argument("--http", default=ServerSettings.http, help="uvicorn --http")
    args = p.parse_args(argv)

    try:
        args.mix = parse_mix(args.mix)
    except ValueError as exc:
        p.error(f"--mix: {exc}")
    if min(args.duration, args.concurrency, args.max_size) < 1:
        p.error("--duration, --concurrency and --max-size must be >= 1")
    if not 0 <= args.pool_size <= args.max_size:
        p.error("--pool-size must be within 0..--max-size")
    if args.kill_every < 0 or args.kill_window < 0:
        p.error("--kill-every and --kill-window must be >= 0")
    if args.warmup is None:
        args.warmup = max(5, min(60, round(args.duration * 0.1)))
    if not 0 <= args.warmup < args.duration:
        p.error("--warmup must be within 0..--duration")
    return args


async def drive(
    args: argparse.Namespace, app: UvicornProcess, admin_db: DbUrl, user: str
) -> Run:
    """Run the load, the sampler and the KILLs for --duration seconds.

    A first Ctrl-C (or SIGTERM) ends the load early and the report covers what
    ran; a second one aborts (the callers' cleanup still runs)."""
    process = psutil.Process(app.proc.pid)
    process.cpu_percent()  # the first call only starts the measurement
    mix = Mix(args.mix)
    stop = asyncio.Event()
    watcher, admin = Admin(admin_db), Admin(admin_db)
    probe = HttpConnection(app.host, app.port)
    run = Run(Load(time.monotonic()), time.time())
    cpu_before = os.times()

    def on_signal() -> None:
        if run.interrupted:
            raise KeyboardInterrupt
        run.interrupted = True
        stop.set()
        log("# interrupted: stopping the load, then reporting (again to abort)")

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    try:
        helpers = [
            asyncio.create_task(sampler(run, probe, watcher, process, user, stop))
        ]
        if args.kill_every > 0:
            helpers.append(asyncio.create_task(killer(run, admin, user, args, stop)))
        clients = [
            asyncio.create_task(
                client_loop(HttpConnection(app.host, app.port), mix, run.load, stop)
            )
            for _ in range(args.concurrency)
        ]
        try:
            await sleep_until(run.load.t0 + args.duration, stop)
        finally:
            stop.set()
            run.elapsed = time.monotonic() - run.load.t0
            cpu = os.times()
            run.client_cpu = (
                cpu.user - cpu_before.user + cpu.system - cpu_before.system
            ) / max(run.elapsed, 1e-9)
            # In-flight requests finish (bounded by their timeout).
            await asyncio.wait(clients + helpers, timeout=REQUEST_TIMEOUT_S + 5)
            for task in clients + helpers:
                task.cancel()
            results = await asyncio.gather(*clients, *helpers, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                log(f"# a load task failed: {type(result).__name__}: {result}")
        log("# load stopped; waiting for the pool to settle")
        run.settled = await settle(probe, watcher, user)
    finally:
        probe.close()
        watcher.close()
        admin.close()
    return run


@contextmanager
def run_app(app_db: DbUrl, args: argparse.Namespace) -> Iterator[UvicornProcess]:
    """The soak app under uvicorn (one worker), stopped on the way out.

    In a session of its own: a Ctrl-C in the terminal reaches only us, so the
    load stops first and the app is then shut down in order."""
    env = {
        soak_app.ENV_URL: url_of(app_db),
        soak_app.ENV_SIZE: str(args.pool_size),
        soak_app.ENV_MAX_SIZE: str(args.max_size),
    }
    settings = ServerSettings(args.loop, args.http)
    with uvicorn_app(soak_app.FACTORY, env, settings, own_session=True) as app:
        yield app


def environment(admin_db: DbUrl) -> dict[str, Any]:
    return {
        "db_url": admin_db.redacted(),
        "server_version": server_version(admin_db),
        "commit": git_commit(),
        **machine(),
    }


def soak(args: argparse.Namespace) -> tuple[dict[str, Any], Run]:
    """Set up, run, check and tear down; everything set up is always removed."""
    with database_url(args.url) as url:
        admin_db = parse_url(url)
        meta = environment(admin_db)
        log(f"# database: {meta['db_url']} ({meta['server_version']})")
        with app_database(admin_db) as app_db:
            log(f"# app user {app_db.user}; starting the app")
            with run_app(app_db, args) as app:
                log(
                    f"# load: {args.duration} s, {args.concurrency} clients, "
                    f"KILL every {args.kill_every:g} s ({args.kill_mode})"
                )
                run = asyncio.run(drive(args, app, admin_db, app_db.user))
                stop_on_sigterm()  # asyncio.run reset it to the default
                app.stop()
                run.app_log = app.log_text()
                run.shutdown = {
                    "stop_seconds": app.stop_seconds,
                    "exit_code": app.proc.returncode,
                }
            with admin_connection(admin_db) as admin:
                left, waited = admin.wait_gone(app_db.user, GONE_TIMEOUT_S)
                run.shutdown |= {"connections_after": left, "waited_s": waited}
                run.writes = check_writes(admin, run.load)
    meta["loadavg_end"] = os.getloadavg()
    return meta, run


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        if rows:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    try:
        meta, run = soak(args)
    except KeyboardInterrupt:
        log("# aborted; everything started was stopped and removed")
        return 130
    except ServerFailed as exc:
        log(f"# the app did not start: {exc}")
        return 2

    summary = summarise(args, run)
    rows = timeline(run)
    text = report(args, meta, summary, rows)
    print(text)
    if args.csv:
        write_csv(args.csv, rows)
        log(f"# wrote {args.csv}")
    if args.json:
        options = {k: v for k, v in vars(args).items() if k not in ("json", "csv")}
        payload = {
            "meta": meta,
            "options": {**options, "url": meta["db_url"]},
            "summary": summary,
            "timeline": rows,
            "app_log_tail": run.app_log[-20_000:],
            "markdown": text,
        }
        write_json(args.json, payload)
    if run.interrupted:
        return 130
    return 0 if summary["passed"] else 1
