"""Soak benchmark (not a test): minutes of mixed load with periodic KILLs.

    python -m benchmarks.soak --duration 300
    python -m benchmarks.soak --duration 30 --kill-every 5 --json s.json --csv s.csv

An app on the library's sync path (`mysql_pool_lifespan` and `Cursor`) runs
under uvicorn in a subprocess, as a MySQL user of its own. `--concurrency`
asyncio clients send it a mix of reads, writes and requests that schedule an
`add_pool_task` write; every `--kill-every` seconds an admin connection KILLs
every connection of that user. Every second we sample the user's connections on
the server, the app's RSS and its pool's stats. The report (Markdown on stdout,
everything in `--json`, the per-second timeline in `--csv`) says whether
requests failed away from the KILLs, whether the connections ever exceeded
`max_size`, whether memory stayed flat, whether every acknowledged write is in
the database and whether the app left no connection behind when it shut down.
See README.md, "Soak".

This module is also the app: uvicorn imports `create_app` from it, so at module
level it imports only what the app needs (the driver imports psutil itself).
"""

# No `from __future__ import annotations`: FastAPI resolves the routes'
# annotations at runtime.
import argparse
import asyncio
import bisect
import contextlib
import csv
import dataclasses
import itertools
import json
import logging
import math
import os
import platform
import random
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

import MySQLdb
from fastapi import BackgroundTasks, FastAPI, Request

from benchmarks.db import ROWS, DbUrl, database_url, ensure_table, parse_url
from benchmarks.server import (
    REPO_ROOT,
    ServerFailed,
    ServerSettings,
    _stop,
    _wait_ready,
    free_port,
    uvicorn_command,
)
from fastapi_mysqlpool import Cursor, add_pool_task, get_pool, mysql_pool_lifespan

if TYPE_CHECKING:
    import psutil

ITEM_SQL = "SELECT id, name, value FROM bench_items WHERE id=%s"
WRITES_TABLE = "soak_writes"  # INSERTs, one row per request, client-chosen id
COUNTERS_TABLE = "soak_counters"  # UPDATE n = n + 1
TASKS_TABLE = "soak_tasks"  # INSERTs from add_pool_task, after the response
COUNTER_ROWS = 1000

#: Request kinds: method and path (the id is filled in per request).
KINDS: dict[str, tuple[str, str]] = {
    "read": ("GET", "/item/{}"),
    "insert": ("POST", "/insert/{}"),
    "bump": ("POST", "/bump/{}"),
    "task": ("POST", "/task/{}"),
}
DEFAULT_MIX = "read=70,insert=15,bump=10,task=5"
#: What the library's `{"code": ...}` error answers mean (see ErrorKind).
MEANINGS = {
    "503/1": "UNAVAILABLE: server unreachable or connection lost",
    "503/2": "BUSY: no connection within acquire_timeout, or too many connections",
    "500/0": "ERROR: any other database error",
}

#: "memory flat" means both of these hold (see README.md, "Soak").
FLAT_SLOPE_MB_PER_MIN = 0.5
FLAT_END_RATIO = 1.2
#: With less than this after warm-up the verdict is only indicative (the check
#: counts as not run): the first minutes have steps that later level off.
MIN_VERDICT_S = 120

REQUEST_TIMEOUT_S = 30.0
STATS_TIMEOUT_S = 2.0
SETTLE_TIMEOUT_S = 10.0  # after the load, for in-flight background tasks
GONE_TIMEOUT_S = 5.0  # the server drops a session shortly after the client's QUIT
PROGRESS_EVERY_S = 10
TIMELINE_ROWS = 20  # rows of the condensed timeline in the Markdown report

ENV_URL = "SOAK_DB_URL"
ENV_SIZE = "SOAK_POOL_SIZE"
ENV_MAX_SIZE = "SOAK_MAX_SIZE"
# The app's pool events, timestamped so the driver can line them up with KILLs.
LOG_FORMAT = "@%(created).3f %(levelname)s %(name)s: %(message)s"
LOG_LINE = re.compile(r"^@(\d+\.\d+) ([A-Z]+) ([\w.]+): (.*)$")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------- the app


def record_task(cursor: Any, id: int) -> None:
    """The background write scheduled by `POST /task/{id}`."""
    cursor.execute(f"INSERT INTO {TASKS_TABLE} (id) VALUES (%s)", (id,))


def build_app(cfg: dict[str, Any], size: int, max_size: int) -> FastAPI:
    app = FastAPI(lifespan=mysql_pool_lifespan(cfg, size=size, max_size=max_size))

    @app.get("/item/{id}")
    def read(id: int, cursor: Cursor) -> Any:
        cursor.execute(ITEM_SQL, (id,))
        return cursor.fetchone()

    @app.post("/insert/{id}")
    def insert(id: int, cursor: Cursor) -> dict[str, int]:
        cursor.execute(
            f"INSERT INTO {WRITES_TABLE} (id, payload) VALUES (%s, %s)",
            (id, f"row-{id}"),
        )
        return {"inserted": id}

    @app.post("/bump/{id}")
    def bump(id: int, cursor: Cursor) -> dict[str, int]:
        cursor.execute(f"UPDATE {COUNTERS_TABLE} SET n = n + 1 WHERE id = %s", (id,))
        return {"updated": cursor.rowcount}

    @app.post("/task/{id}")
    def with_task(id: int, cursor: Cursor, tasks: BackgroundTasks) -> Any:
        cursor.execute(ITEM_SQL, (id % ROWS + 1,))
        add_pool_task(tasks, record_task, id)
        return cursor.fetchone()

    @app.get("/stats")
    async def stats(request: Request) -> dict[str, Any]:
        return dataclasses.asdict(get_pool(request).stats())

    return app


def create_app() -> FastAPI:
    """uvicorn factory: the database and pool sizes come from the environment."""
    handler = logging.StreamHandler()  # stderr: the driver's log file
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger = logging.getLogger("fastapi_mysqlpool")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    cfg = parse_url(os.environ[ENV_URL]).mysqldb_kwargs()
    return build_app(cfg, int(os.environ[ENV_SIZE]), int(os.environ[ENV_MAX_SIZE]))


# ------------------------------------------------------------------------ CLI


def parse_mix(text: str) -> dict[str, float]:
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight = part.strip().partition("=")
        if name not in KINDS:
            raise ValueError(
                f"unknown request kind {name!r}; known: {', '.join(KINDS)}"
            )
        weights[name] = float(weight)
        if weights[name] < 0:
            raise ValueError(f"negative weight for {name!r}")
    if not sum(weights.values()) > 0:
        raise ValueError("the weights must not all be zero")
    return weights


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


# ------------------------------------------------------------------- database


def url_of(db: DbUrl) -> str:
    auth = quote(db.user, safe="")
    if db.password:
        auth += ":" + quote(db.password, safe="")
    return f"mysql://{auth}@{db.host}:{db.port}/{quote(db.database, safe='')}"


class Admin:
    """An autocommit connection as the admin user, to watch and KILL the app's.

    Each instance is used from one worker thread at a time; the lock also keeps
    `close()` from pulling the connection out from under a running query.
    """

    def __init__(self, db: DbUrl) -> None:
        self._conn = MySQLdb.connect(**db.mysqldb_kwargs(), autocommit=True)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock, contextlib.suppress(MySQLdb.Error):
            self._conn.close()

    def rows(self, sql: str, args: Sequence[Any] | None = None) -> list[Any]:
        with self._lock:
            cursor = self._conn.cursor()
            cursor.execute(sql, args)
            return list(cursor.fetchall())

    def connections(self, user: str) -> tuple[int, int, int]:
        """The user's connections on the server: all, busy (running a
        statement) and killed but not yet gone."""
        commands = [
            row[0]
            for row in self.rows(
                "SELECT command FROM information_schema.processlist WHERE user = %s",
                (user,),
            )
        ]
        killed = commands.count("Killed")
        return len(commands), len(commands) - killed - commands.count("Sleep"), killed

    def kill(self, user: str, idle_only: bool) -> tuple[int, int]:
        """KILL the user's connections (only `Sleep` ones with *idle_only*).

        Returns how many busy and idle connections were killed."""
        busy = idle = 0
        for thread_id, command in self.rows(
            "SELECT id, command FROM information_schema.processlist WHERE user = %s",
            (user,),
        ):
            if command == "Killed" or (idle_only and command != "Sleep"):
                continue
            try:
                self.rows(f"KILL CONNECTION {int(thread_id)}")
            except MySQLdb.OperationalError:  # 1094: it ended in the meantime
                continue
            if command == "Sleep":
                idle += 1
            else:
                busy += 1
        return busy, idle

    def open_transactions(self, user: str) -> int:
        return int(
            self.rows(
                "SELECT COUNT(*) FROM information_schema.innodb_trx t "
                "JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id "
                "WHERE p.user = %s",
                (user,),
            )[0][0]
        )

    def wait_gone(self, user: str, timeout: float) -> tuple[int, float]:
        """Wait up to *timeout* s for the user to have no connection left.

        Returns the count at the end and the seconds waited."""
        started = time.monotonic()
        while True:
            count = self.connections(user)[0]
            waited = time.monotonic() - started
            if count == 0 or waited > timeout:
                return count, waited
            time.sleep(0.05)


@contextlib.contextmanager
def app_database(admin_db: DbUrl) -> Iterator[DbUrl]:
    """Create the app's user and tables; drop them all on the way out."""
    ensure_table(admin_db)  # bench_items, shared with benchmarks.run
    user = f"soak_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(16)
    db = admin_db.database
    admin = Admin(admin_db)
    try:
        admin.rows(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (password,))
        try:
            admin.rows(f"GRANT SELECT, INSERT, UPDATE ON `{db}`.* TO '{user}'@'%'")
            for table, columns in (
                (WRITES_TABLE, "id BIGINT PRIMARY KEY, payload VARCHAR(64) NOT NULL"),
                (COUNTERS_TABLE, "id INT PRIMARY KEY, n BIGINT NOT NULL"),
                (TASKS_TABLE, "id BIGINT PRIMARY KEY"),
            ):
                admin.rows(f"DROP TABLE IF EXISTS {table}")
                admin.rows(f"CREATE TABLE {table} ({columns}) ENGINE=InnoDB")
            values = ", ".join(f"({i}, 0)" for i in range(1, COUNTER_ROWS + 1))
            admin.rows(f"INSERT INTO {COUNTERS_TABLE} (id, n) VALUES {values}")
            yield DbUrl(admin_db.host, admin_db.port, user, password, db)
        finally:
            # Sessions outlive DROP USER: end any the app left (the report has
            # already counted them).
            with contextlib.suppress(MySQLdb.Error):
                admin.kill(user, idle_only=False)
            with contextlib.suppress(MySQLdb.Error):
                admin.rows(f"DROP USER IF EXISTS '{user}'@'%'")
            for table in (WRITES_TABLE, COUNTERS_TABLE, TASKS_TABLE):
                with contextlib.suppress(MySQLdb.Error):
                    admin.rows(f"DROP TABLE IF EXISTS {table}")
    finally:
        admin.close()


# ------------------------------------------------------------ the app process


@dataclass
class AppProcess:
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    log: IO[bytes]
    stop_seconds: float | None = None

    def stop(self) -> None:
        """SIGINT (uvicorn finishes in-flight requests, the lifespan closes the
        pool), escalating to SIGKILL after benchmarks.server's timeout."""
        if self.stop_seconds is None:
            started = time.monotonic()
            _stop(self.proc)
            self.stop_seconds = time.monotonic() - started

    def log_text(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")


@contextlib.contextmanager
def run_app(app_db: DbUrl, args: argparse.Namespace) -> Iterator[AppProcess]:
    """The soak app under uvicorn (one worker), stopped on the way out."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    cmd = uvicorn_command("benchmarks.soak:create_app", port, args.loop, args.http)
    env = {
        **os.environ,
        ENV_URL: url_of(app_db),
        ENV_SIZE: str(args.pool_size),
        ENV_MAX_SIZE: str(args.max_size),
    }
    with tempfile.TemporaryFile() as log_file:
        # A session of its own: a Ctrl-C in the terminal reaches only us, so the
        # load stops first and the app is then shut down in order.
        proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        app = AppProcess(proc, "127.0.0.1", port, log_file)
        try:
            _wait_ready(proc, base_url, log_file)  # GET /item/1 answers 200
            yield app
        finally:
            app.stop()


# ---------------------------------------------------------------- the load


@dataclass
class Failure:
    start: float  # seconds since the load started
    end: float
    kind: str
    key: str  # "503/1", "500/0", "transport/ReadTimeout"...


@dataclass
class Second:
    """The requests that completed within one second of the run."""

    ok: int = 0
    failed: int = 0
    latency_max: float = 0.0


@dataclass
class Load:
    t0: float
    requests: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)
    seconds: list[Second] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    acked_inserts: list[int] = field(default_factory=list)
    acked_tasks: list[int] = field(default_factory=list)
    acked_bumps: int = 0
    _serial: dict[str, Iterator[int]] = field(
        default_factory=lambda: {
            "insert": itertools.count(1),
            "task": itertools.count(1),
        }
    )

    def next_id(self, kind: str) -> int:
        if kind == "read":
            return random.randint(1, ROWS)
        if kind == "bump":
            return random.randint(1, COUNTER_ROWS)
        return next(self._serial[kind])  # unique: a duplicate would be a 500

    def second(self, at: float) -> Second:
        index = max(0, int(at - self.t0))
        while len(self.seconds) <= index:
            self.seconds.append(Second())
        return self.seconds[index]

    def record(
        self, kind: str, ident: int, start: float, end: float, key: str | None
    ) -> None:
        self.requests[kind] += 1
        latency = end - start
        self.latencies.append(latency)
        second = self.second(end)
        second.latency_max = max(second.latency_max, latency)
        if key is not None:
            second.failed += 1
            self.failed[kind] += 1
            self.failures.append(Failure(start - self.t0, end - self.t0, kind, key))
            return
        second.ok += 1
        if kind == "insert":
            self.acked_inserts.append(ident)
        elif kind == "task":
            self.acked_tasks.append(ident)
        elif kind == "bump":
            self.acked_bumps += 1


class Mix:
    def __init__(self, weights: dict[str, float]) -> None:
        self.kinds = list(weights)
        self.cumulative = list(itertools.accumulate(weights.values()))

    def pick(self) -> str:
        point = random.random() * self.cumulative[-1]
        return self.kinds[bisect.bisect_right(self.cumulative, point)]


#: What a request that got no HTTP answer fails with.
TRANSPORT_ERRORS = (
    OSError,  # refused, reset (and, on 3.11+, TimeoutError)
    asyncio.TimeoutError,
    asyncio.IncompleteReadError,  # closed mid-answer
    asyncio.LimitOverrunError,
    ValueError,  # an answer we cannot parse
)


class HttpConnection:
    """One keep-alive HTTP/1.1 connection to the app, a request at a time.

    Just enough HTTP for this app's answers. Not httpx: with 64 requests in
    flight, `httpx.AsyncClient` spends milliseconds of CPU per request in its
    connection pool, so on a small machine the client, not the app, would set
    the pace (measured against a trivial ASGI app: about 100 req/s for 84% of a
    core, where this does about 2,500 for 21%).
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(
        self, method: str, path: str, timeout: float
    ) -> tuple[int, bytes]:
        """Send a request without a body; return the status and the body."""
        try:
            return await asyncio.wait_for(self._exchange(method, path), timeout)
        except BaseException:
            self.close()  # whatever state the connection is in: start afresh
            raise

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None

    async def _exchange(self, method: str, path: str) -> tuple[int, bytes]:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._streams
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
            "Content-Length: 0\r\n\r\n".encode()
        )
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status_line, *lines = head.split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        if headers.get("transfer-encoding") == "chunked":
            body = await self._read_chunked(reader)
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:  # delimited by the end of the connection
            body = await reader.read()
            headers["connection"] = "close"
        if headers.get("connection") == "close":
            self.close()
        return status, body

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readuntil(b"\r\n")  # the end of the (empty) trailer
        return body


def failure_key(status: int, body: bytes) -> str:
    """`status/code`, the code from the library's `{"code": ..., "message": ...}`."""
    try:
        code = json.loads(body).get("code", "-")
    except (ValueError, AttributeError):  # not JSON, or not an object
        code = "-"
    return f"{status}/{code}"


async def client_loop(
    conn: HttpConnection, mix: Mix, load: Load, stop: asyncio.Event
) -> None:
    """One client: a request at a time, until the load stops."""
    try:
        while not stop.is_set():
            kind = mix.pick()
            ident = load.next_id(kind)
            method, path = KINDS[kind]
            start = time.monotonic()
            key: str | None = None
            try:
                status, body = await conn.request(
                    method, path.format(ident), REQUEST_TIMEOUT_S
                )
                if status != 200:
                    key = failure_key(status, body)
            except TRANSPORT_ERRORS as exc:
                key = f"transport/{type(exc).__name__}"
            load.record(kind, ident, start, time.monotonic(), key)
    finally:
        conn.close()


# ------------------------------------------------------------- sampling, KILLs


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


def process_usage(process: "psutil.Process") -> tuple[float, float, int, int]:
    """RSS in MB (children included), CPU %, threads and open file descriptors."""
    import psutil

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
    process: "psutil.Process",
    user: str,
) -> Sample:
    import psutil

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
    process: "psutil.Process",
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


async def drive(
    args: argparse.Namespace, app: AppProcess, admin_db: DbUrl, user: str
) -> Run:
    """Run the load, the sampler and the KILLs for --duration seconds.

    A first Ctrl-C (or SIGTERM) ends the load early and the report covers what
    ran; a second one aborts (the callers' cleanup still runs)."""
    import psutil

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


def check_writes(admin: Admin, load: Load) -> dict[str, Any]:
    """Compare what the clients were told with what the database holds."""
    present = {row[0] for row in admin.rows(f"SELECT id FROM {WRITES_TABLE}")}
    acked = set(load.acked_inserts)
    tasks_present = {row[0] for row in admin.rows(f"SELECT id FROM {TASKS_TABLE}")}
    tasks_acked = set(load.acked_tasks)
    counted = int(admin.rows(f"SELECT COALESCE(SUM(n), 0) FROM {COUNTERS_TABLE}")[0][0])
    return {
        "inserts": {
            "attempted": load.requests["insert"],
            "acknowledged": len(acked),
            "present": len(present),
            "acknowledged_missing": len(acked - present),
            "present_not_acknowledged": len(present - acked),
        },
        "bumps": {
            "attempted": load.requests["bump"],
            "acknowledged": load.acked_bumps,
            "counted": counted,
        },
        "tasks": {
            "scheduled": len(tasks_acked),
            "present": len(tasks_present),
            "missing": len(tasks_acked - tasks_present),
            "unexpected": len(tasks_present - tasks_acked),
        },
    }


# ----------------------------------------------------------------- analysis


def near_kill(kills: Sequence[Kill], start: float, end: float, window: float) -> str:
    """Where a failure (or log event) lies relative to the KILLs.

    `in_flight`: a KILL happened while it ran; `after`: it ended within
    *window* s after one; else `outside`."""
    if any(start <= k.t_end and end >= k.t for k in kills):
        return "in_flight"
    if any(k.t <= end <= k.t_end + window for k in kills):
        return "after"
    return "outside"


@dataclass
class LogEvent:
    t: float | None  # seconds since the load started; None if not timestamped
    level: str
    message: str  # ids and counts replaced, so alike events group together


def normalise(message: str) -> str:
    message = re.sub(r"/\d+", "/{id}", message)
    # Numbers, but not the MySQL error number in "(2013, 'Lost connection...')".
    return re.sub(r"(?<![(\d])\d+(?:\.\d+)?", "N", message)[:160]


def parse_app_log(text: str, wall0: float) -> list[LogEvent]:
    """The library's WARNING-and-up events, and uvicorn's own errors."""
    events = []
    for line in text.splitlines():
        match = LOG_LINE.match(line)
        if match:
            created, level, _name, message = match.groups()
            if level not in ("DEBUG", "INFO"):
                events.append(
                    LogEvent(float(created) - wall0, level, normalise(message))
                )
        elif line.startswith(("ERROR:", "CRITICAL:")):
            level, _, message = line.partition(":")
            events.append(LogEvent(None, level, normalise(message.strip())))
    return events


def spread(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
    }


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def rss_slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB) points, in MB per minute."""
    if len(points) < 2:
        return None
    fit = statistics.linear_regression([t for t, _ in points], [r for _, r in points])
    return fit.slope * 60


def memory_summary(samples: Sequence[Sample], warmup: int) -> dict[str, Any]:
    points = [(s.t, s.rss_mb) for s in samples if s.rss_mb is not None]
    after = [(t, rss) for t, rss in points if t >= warmup]
    if len(after) < 2:
        return {"flat": None, "verdict": None, "reason": "too few samples"}
    warm_rss, end_rss = after[0][1], after[-1][1]
    slope = rss_slope(after)
    assert slope is not None
    verdict = slope < FLAT_SLOPE_MB_PER_MIN and end_rss < FLAT_END_RATIO * warm_rss
    span_s = after[-1][0] - after[0][0]
    return {
        "warmup_end_t": after[0][0],
        "warmup_end_mb": warm_rss,
        "end_mb": end_rss,
        "max_mb": max(r for _, r in points),
        "slope_mb_per_min": slope,
        # Growth that levels off shows here as a much smaller slope.
        "slope_last_half_mb_per_min": rss_slope(after[len(after) // 2 :]),
        "end_over_warmup": end_rss / warm_rss,
        "seconds_after_warmup": span_s,
        "verdict": verdict,
        "indicative": span_s < MIN_VERDICT_S,
        "flat": None if span_s < MIN_VERDICT_S else verdict,
    }


POOL_FIELDS = (
    "size", "idle", "in_use", "waiting", "opened", "closed", "errors", "timeouts",
    "requests",
)  # fmt: skip


def timeline(run: Run) -> list[dict[str, Any]]:
    """One row per sample: the sample, and the requests and KILLs of the second
    before it."""
    rows = []
    for s in run.samples:
        index = int(s.t) - 1
        second = run.load.seconds[index] if index < len(run.load.seconds) else Second()
        kills = [k for k in run.kills if s.t - 1 <= k.t < s.t]
        pool = s.pool or {}
        rows.append(
            {
                "t": s.t,
                "requests": second.ok + second.failed,
                "ok": second.ok,
                "failed": second.failed,
                "latency_max_ms": round(second.latency_max * 1000, 1),
                "kills": len(kills),
                "killed": sum(k.busy + k.idle for k in kills),
                "conns": s.conns,
                "conns_busy": s.conns_busy,
                "conns_killed": s.conns_killed,
                "rss_mb": None if s.rss_mb is None else round(s.rss_mb, 2),
                "cpu_pct": s.cpu_pct,
                "threads": s.threads,
                "fds": s.fds,
                **{f"pool_{key}": pool.get(key) for key in POOL_FIELDS},
            }
        )
    return rows


def by_position(
    kills: Sequence[Kill],
    spans: Iterator[tuple[str, float | None, float | None]],
    window: float,
) -> dict[str, Counter[str]]:
    """Count (key, start, end) spans by key and by where they lie (near_kill);
    spans without a time are `untimed`."""
    out: dict[str, Counter[str]] = {}
    for key, start, end in spans:
        where = (
            "untimed"
            if start is None or end is None
            else near_kill(kills, start, end, window)
        )
        out.setdefault(key, Counter())[where] += 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1].total()))


def _values(samples: Sequence[Sample], attr: str) -> list[Any]:
    return [getattr(s, attr) for s in samples if getattr(s, attr) is not None]


def summarise(args: argparse.Namespace, run: Run) -> dict[str, Any]:
    load, samples = run.load, run.samples
    total = sum(load.requests.values())
    failures = by_position(
        run.kills, ((f.key, f.start, f.end) for f in load.failures), args.kill_window
    )
    outside = sum(c["outside"] for c in failures.values())
    app_log = by_position(
        run.kills,
        (
            (f"{e.level} {e.message}", e.t, e.t)
            for e in parse_app_log(run.app_log, run.wall0)
        ),
        args.kill_window,
    )
    # Untimed lines are uvicorn's own errors: always worth a look.
    log_outside = sum(c["outside"] + c["untimed"] for c in app_log.values())

    live = [s.conns - (s.conns_killed or 0) for s in samples if s.conns is not None]
    pools = [s.pool for s in samples if s.pool]
    memory = memory_summary(samples, args.warmup)
    latencies = sorted(load.latencies)
    writes, settled, shutdown = run.writes, run.settled, run.shutdown
    bumps = writes.get("bumps", {})

    checks = {
        "no failed request away from a KILL": outside == 0,
        "no library warning or error away from a KILL": log_outside == 0,
        f"connections <= max_size ({args.max_size})": (
            max(live, default=0) <= args.max_size
            and max((p["size"] for p in pools), default=0) <= args.max_size
        ),
        "memory flat (see Memory)": memory.get("flat"),
        "every acknowledged write is in the database": (
            bool(writes)
            and writes["inserts"]["acknowledged_missing"] == 0
            and bumps["acknowledged"] <= bumps["counted"] <= bumps["attempted"]
        ),
        "no connection untracked by the pool after the load": (
            settled.get("untracked_connections") == 0
        ),
        "no open transaction after the load": settled.get("open_transactions") == 0,
        "app shut down cleanly (SIGINT, exit 0)": shutdown.get("exit_code") == 0,
        "no connection left after shutdown": shutdown.get("connections_after") == 0,
    }
    return {
        "checks": checks,
        "passed": all(v is not False for v in checks.values()),
        "interrupted": run.interrupted,
        "elapsed_s": run.elapsed,
        "requests": {
            "total": total,
            "failed": len(load.failures),
            "failed_fraction": len(load.failures) / total if total else None,
            "rps": total / run.elapsed if run.elapsed else None,
            "client_cpu_cores": run.client_cpu,
            "by_kind": {
                kind: {"requests": n, "failed": load.failed[kind]}
                for kind, n in sorted(load.requests.items())
            },
            "latency_ms": {
                "p50": _ms(percentile(latencies, 0.5)),
                "p99": _ms(percentile(latencies, 0.99)),
                "max": _ms(latencies[-1] if latencies else None),
            },
        },
        "failures": {
            key: {
                "count": where.total(),
                "fraction": where.total() / total if total else None,
                **{w: where[w] for w in ("in_flight", "after", "outside")},
            }
            for key, where in failures.items()
        },
        "failures_outside": outside,
        "kills": {
            "count": len(run.kills),
            "busy": sum(k.busy for k in run.kills),
            "idle": sum(k.idle for k in run.kills),
            "events": [dataclasses.asdict(k) for k in run.kills],
        },
        "connections": {
            "server": spread(_values(samples, "conns")),
            "server_live_max": max(live, default=None),
            "server_busy_max": max(_values(samples, "conns_busy"), default=None),
            "pool_size": spread([p["size"] for p in pools]),
            "pool_waiting_max": max((p["waiting"] for p in pools), default=None),
            "pool_final": pools[-1] if pools else None,
        },
        "memory": memory,
        "threads": spread(_values(samples, "threads")),
        "fds": spread(_values(samples, "fds")),
        "writes": writes,
        "settled": settled,
        "shutdown": shutdown,
        "app_log": [{"event": key, **where} for key, where in app_log.items()],
        "app_log_outside": log_outside,
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


# ------------------------------------------------------------------ report


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def md_table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return lines


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.3f}%" if whole else "n/a"


def span(values: dict[str, Any] | None) -> str:
    values = values or {}
    return f"{fmt(values.get('min'))} to {fmt(values.get('max'))}"


TIMELINE_HEAD = (
    "t (s)", "req/s", "failed", "KILLs", "server conns", "pool in_use max",
    "pool waiting max", "RSS MB", "threads",
)  # fmt: skip


def condensed_timeline(rows: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """At most TIMELINE_ROWS rows, each summing a stretch of seconds."""
    step = max(1, math.ceil(len(rows) / TIMELINE_ROWS))
    out: list[list[Any]] = []
    for i in range(0, len(rows), step):
        chunk = rows[i : i + step]

        def col(key: str, chunk: Sequence[dict[str, Any]] = chunk) -> list[Any]:
            return [r[key] for r in chunk if r[key] is not None]

        conns, rss, threads = col("conns"), col("rss_mb"), col("threads")
        out.append(
            [
                f"{chunk[0]['t'] - 1:.0f}-{chunk[-1]['t']:.0f}",
                round(sum(col("requests")) / len(chunk)),
                sum(col("failed")),
                sum(col("kills")),
                f"{min(conns)}-{max(conns)}" if conns else None,
                max(col("pool_in_use"), default=None),
                max(col("pool_waiting"), default=None),
                rss[-1] if rss else None,
                threads[-1] if threads else None,
            ]
        )
    return out


def md_header(
    args: argparse.Namespace, meta: dict[str, Any], s: dict[str, Any]
) -> list[str]:
    kills = (
        f"KILL every {args.kill_every:g} s ({args.kill_mode})"
        if args.kill_every
        else "no KILLs"
    )
    mix = ", ".join(f"{k} {v:g}" for k, v in args.mix.items())
    out = [
        f"## Soak: {s['elapsed_s']:.0f} s, {args.concurrency} clients, {kills}",
        "",
        f"{meta['started']}, commit {meta['commit']}, {meta['server_version']}, "
        f"{meta['cpus']} CPUs, load average {meta['loadavg_start'][0]:.2f} at the "
        f"start, {meta['loadavg_end'][0]:.2f} at the end. Pool size "
        f"{args.pool_size}, max_size {args.max_size}; mix {mix}; warm-up "
        f"{args.warmup} s; KILL window {args.kill_window:g} s.",
    ]
    if s["interrupted"]:
        out += ["", f"**Interrupted** after {s['elapsed_s']:.0f} s."]
    return [*out, "", *md_table(["check", "result"], list(s["checks"].items()))]


def md_requests(args: argparse.Namespace, s: dict[str, Any]) -> list[str]:
    req, k = s["requests"], s["kills"]
    total, lat = req["total"], req["latency_ms"]
    rows = [
        [f"`{kind}`", v["requests"], v["failed"], pct(v["failed"], v["requests"])]
        for kind, v in req["by_kind"].items()
    ]
    rows.append(["**total**", total, req["failed"], pct(req["failed"], total)])
    out = ["### Requests", ""]
    out += md_table(["kind", "requests", "failed", "failed %"], rows)
    out += [
        "",
        f"{fmt(req['rps'], 0)} req/s on average; latency p50 {fmt(lat['p50'])} ms, "
        f"p99 {fmt(lat['p99'])} ms, max {fmt(lat['max'])} ms. The load generator "
        f"(this process, sampling included) used {fmt(req['client_cpu_cores'], 2)} "
        "of a core.",
        "",
        "### Failed requests",
        "",
    ]
    head = [
        "status/code", "meaning", "count", "% of requests", "in flight at a KILL",
        f"<= {args.kill_window:g} s after a KILL", "away from KILLs",
    ]  # fmt: skip
    rows = [
        [f"`{key}`", MEANINGS.get(key, ""), v["count"], pct(v["count"], total)]
        + [v[w] for w in ("in_flight", "after", "outside")]
        for key, v in s["failures"].items()
    ]
    out += md_table(head, rows) if rows else ["None."]
    return [
        *out,
        "",
        f"{k['count']} KILL rounds ended {k['busy'] + k['idle']} connections "
        f"({k['busy']} busy, {k['idle']} idle).",
    ]


def md_resources(args: argparse.Namespace, s: dict[str, Any]) -> list[str]:
    conns, mem = s["connections"], s["memory"]
    server, pool = conns["server"] or {}, conns["pool_size"] or {}
    mmm = ("min", "median", "max")
    final = conns["pool_final"] or {}
    counters = ", ".join(
        f"{key} {fmt(final.get(key))}"
        for key in ("opened", "closed", "errors", "requests", "timeouts")
    )
    out = ["### Connections", ""]
    out += md_table(
        ["", "min", "median", "max"],
        [
            ["server (processlist, the app's user)", *(server.get(x) for x in mmm)],
            ["pool `size` (`GET /stats`)", *(pool.get(x) for x in mmm)],
        ],
    )
    out += [
        "",
        f"max_size {args.max_size}. Not counting connections killed but not yet "
        f"gone, the server's max is {fmt(conns['server_live_max'])}; at most "
        f"{fmt(conns['server_busy_max'])} ran a statement at once; at most "
        f"{fmt(conns['pool_waiting_max'])} callers waited for a connection. Pool "
        f"counters at the end: {counters}.",
        "",
        "### Memory (RSS of the uvicorn process)",
        "",
    ]
    if "warmup_end_mb" in mem:
        head = [
            f"at warm-up end (t={mem['warmup_end_t']:.0f} s)", "at the end", "max",
            "slope after warm-up", "slope, last half", "end / warm-up",
        ]  # fmt: skip
        row = [
            f"{mem['warmup_end_mb']:.1f} MB", f"{mem['end_mb']:.1f} MB",
            f"{mem['max_mb']:.1f} MB", f"{fmt(mem['slope_mb_per_min'], 2)} MB/min",
            f"{fmt(mem['slope_last_half_mb_per_min'], 2)} MB/min",
            f"{mem['end_over_warmup']:.3f}",
        ]  # fmt: skip
        out += [*md_table(head, [row]), ""]
    verdict = fmt(mem.get("verdict"))
    if mem.get("indicative"):
        verdict += (
            f" (indicative only: {mem['seconds_after_warmup']:.0f} s after warm-up,"
            f" a verdict needs {MIN_VERDICT_S})"
        )
    return [
        *out,
        f"**memory flat: {verdict}** (flat means: slope < {FLAT_SLOPE_MB_PER_MIN} "
        f"MB/min and end < {FLAT_END_RATIO}x warm-up). Threads {span(s['threads'])}, "
        f"open files {span(s['fds'])}.",
    ]


def md_writes_and_shutdown(s: dict[str, Any]) -> list[str]:
    out = []
    if s["writes"]:
        ins, bumps, tasks = (s["writes"][k] for k in ("inserts", "bumps", "tasks"))
        out += [
            "### Writes",
            "",
            f"- INSERTs: {ins['attempted']} sent, {ins['acknowledged']} answered 200, "
            f"{ins['present']} rows; **{ins['acknowledged_missing']} answered 200 "
            f"but missing**; {ins['present_not_acknowledged']} present but not "
            "answered 200 (the connection died after the COMMIT reached the server).",
            f"- UPDATEs: {bumps['attempted']} sent, {bumps['acknowledged']} answered "
            f"200; the counters sum to {bumps['counted']} (must lie between the two).",
            f"- Background tasks: {tasks['scheduled']} scheduled by requests answered "
            f"200, {tasks['present']} rows, {tasks['missing']} missing (the task's "
            "connection was killed; the app logs it).",
            "",
        ]
    st, sd = s["settled"], s["shutdown"]
    pool = st.get("pool") or {}
    return [
        *out,
        "### After the load, and after shutdown",
        "",
        f"- Settled in {fmt(st.get('seconds'), 2)} s: pool size "
        f"{fmt(pool.get('size'))}, in use {fmt(pool.get('in_use'))}; the server "
        f"lists {fmt(st.get('connections'))} connections of the app's user "
        f"({fmt(st.get('untracked_connections'))} more than the pool holds); "
        f"open transactions: {fmt(st.get('open_transactions'))}.",
        f"- App stopped (SIGINT) in {fmt(sd.get('stop_seconds'), 2)} s, exit code "
        f"{fmt(sd.get('exit_code'))}; **the app user's connections afterwards: "
        f"{fmt(sd.get('connections_after'))}** (after {fmt(sd.get('waited_s'), 2)} s).",
    ]


def md_log(s: dict[str, Any]) -> list[str]:
    head = ["event (level, message)", "during a KILL", "after one", "away", "untimed"]
    rows = [
        [f"`{e['event'].replace('|', '/')}`"]
        + [e.get(w, 0) for w in ("in_flight", "after", "outside", "untimed")]
        for e in s["app_log"]
    ]
    return [
        "### App log (the library's warnings and errors, uvicorn's errors)",
        "",
        *(md_table(head, rows) if rows else ["Nothing."]),
    ]


def markdown(
    args: argparse.Namespace,
    meta: dict[str, Any],
    summary: dict[str, Any],
    rows: Sequence[dict[str, Any]],
) -> str:
    sections = [
        md_header(args, meta, summary),
        md_requests(args, summary),
        md_resources(args, summary),
        md_writes_and_shutdown(summary),
        md_log(summary),
        ["### Timeline", "", *md_table(TIMELINE_HEAD, condensed_timeline(rows))],
    ]
    return "\n\n".join("\n".join(section) for section in sections)


# --------------------------------------------------------------------- main


def environment(admin_db: DbUrl) -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    admin = Admin(admin_db)
    try:
        version = admin.rows("SELECT VERSION()")[0][0]
    finally:
        admin.close()
    return {
        "db_url": admin_db.redacted(),
        "server_version": version,
        "commit": commit or None,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
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
                _handle_sigterm()  # asyncio.run reset it to the default
                app.stop()
                run.app_log = app.log_text()
                run.shutdown = {
                    "stop_seconds": app.stop_seconds,
                    "exit_code": app.proc.returncode,
                }
            admin = Admin(admin_db)
            try:
                left, waited = admin.wait_gone(app_db.user, GONE_TIMEOUT_S)
                run.shutdown |= {"connections_after": left, "waited_s": waited}
                run.writes = check_writes(admin, run.load)
            finally:
                admin.close()
    meta["loadavg_end"] = os.getloadavg()
    return meta, run


def _handle_sigterm() -> None:
    """SIGTERM outside the load: unwind like Ctrl-C, so cleanup runs."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        if rows:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _handle_sigterm()
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
    report = markdown(args, meta, summary, rows)
    print(report)
    if args.csv:
        write_csv(args.csv, rows)
        log(f"# wrote {args.csv}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        options = {k: v for k, v in vars(args).items() if k not in ("json", "csv")}
        payload = {
            "meta": meta,
            "options": {**options, "url": meta["db_url"]},
            "summary": summary,
            "timeline": rows,
            "app_log_tail": run.app_log[-20_000:],
            "markdown": report,
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        log(f"# wrote {args.json}")
    if run.interrupted:
        return 130
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
