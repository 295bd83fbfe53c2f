"""stream_rows(): exports streamed through a real uvicorn server, in bounded
memory, the loop free for other requests; a client gone or an error mid-body
leaves no query running and no connection behind."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import MySQLdb
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from fastapi_mysqlpool import (
    AsyncCursor,
    Cursor,
    CursorReleasedError,
    get_pool,
    mysql_pool_lifespan,
    stream_rows,
)

from .servers import Database, serve

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


def running_queries(db: Database) -> list[Any]:
    return list(
        db.query(
            "SELECT id, info FROM information_schema.processlist "
            "WHERE user = %s AND command = 'Query'",
            (db.user,),
        )
    )


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never met"
        time.sleep(0.01)


def export_app(db: Database, numbers: str) -> FastAPI:
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))
    million = (
        f"SELECT a.n * 1000 + b.n AS id, 'some text' AS name, "
        f"IF(a.n * 1000 + b.n = %s, (SELECT 1 UNION SELECT 2), 0) AS fails "
        f"FROM {numbers} a STRAIGHT_JOIN {numbers} b ON b.n <= a.n + 1000"
    )

    @app.get("/million")
    async def export(request: Request, fail_at: int = -1) -> Response:
        return stream_rows(request, million, (fail_at,))

    @app.get("/sync")
    def sync_export(request: Request, format: str = "ndjson") -> Response:
        return stream_rows(
            request,
            f"SELECT n, n / 4 AS quarter, IF(n = 1, NULL, 'x') AS maybe, "
            f"SEC_TO_TIME(n * 3661) AS t, CAST('2024-05-06 07:08:09' AS DATETIME) "
            f"AS at, X'C3A90A' AS raw FROM {numbers} WHERE n < 3 ORDER BY n",
            format=format,  # type: ignore[arg-type]
        )

    @app.get("/broken")
    async def broken(request: Request) -> Response:
        return stream_rows(request, "SELECT secret_column FROM no_such_table")

    return app


def test_ndjson_and_csv_from_a_def_route(db: Database, numbers: str) -> None:
    app = export_app(db, numbers)
    with serve(app) as url, httpx.Client(base_url=url) as client:
        ndjson = client.get("/sync")
        csv = client.get("/sync", params={"format": "csv"})
        assert get_pool(app).stats().in_use == 0
    assert ndjson.status_code == 200
    assert ndjson.headers["content-type"] == "application/x-ndjson"
    assert [json.loads(line) for line in ndjson.text.splitlines()] == [
        {"n": 0, "quarter": 0.0, "maybe": "x", "t": 0.0,
         "at": "2024-05-06T07:08:09", "raw": "é\n"},
        {"n": 1, "quarter": 0.25, "maybe": None, "t": 3661.0,
         "at": "2024-05-06T07:08:09", "raw": "é\n"},
        {"n": 2, "quarter": 0.5, "maybe": "x", "t": 7322.0,
         "at": "2024-05-06T07:08:09", "raw": "é\n"},
    ]  # fmt: skip
    assert csv.status_code == 200
    assert csv.headers["content-type"] == "text/csv; charset=utf-8"
    assert csv.text.split("\r\n") == [
        "n,quarter,maybe,t,at,raw",
        '0,0.0000,x,00:00:00,2024-05-06 07:08:09,"é\n"',
        '1,0.2500,,01:01:01,2024-05-06 07:08:09,"é\n"',
        '2,0.5000,x,02:02:02,2024-05-06 07:08:09,"é\n"',
        "",
    ]


def test_an_empty_result_is_a_csv_header_or_an_empty_body(
    db: Database, numbers: str
) -> None:
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))

    @app.get("/empty")
    async def empty(request: Request, format: str) -> Response:
        sql = f"SELECT n AS number FROM {numbers} WHERE n < 0"
        return stream_rows(request, sql, format=format)  # type: ignore[arg-type]

    with serve(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/empty", params={"format": "csv"}).text == "number\r\n"
        assert client.get("/empty", params={"format": "ndjson"}).content == b""


def test_a_statement_that_fails_at_once_gets_the_json_error(
    db: Database, numbers: str
) -> None:
    app = export_app(db, numbers)
    with serve(app) as url, httpx.Client(base_url=url) as client:
        response = client.get("/broken")
        assert get_pool(app).stats().in_use == 0
    assert response.status_code == 500
    assert response.json() == {"code": 0, "message": "Something Went Wrong"}
    assert "secret_column" not in response.text


def test_unknown_format_is_refused(db: Database, numbers: str) -> None:
    app = export_app(db, numbers)
    with serve(app) as url, httpx.Client(base_url=url) as client:
        response = client.get("/sync", params={"format": "xml"})
    assert response.status_code == 500  # the route's ValueError


def test_a_client_gone_mid_stream_leaves_no_query_and_no_connection(
    db: Database, numbers: str
) -> None:
    app = export_app(db, numbers)
    with serve(app) as url, httpx.Client(base_url=url) as client:
        with client.stream("GET", "/million") as response:
            assert response.status_code == 200
            received = 0
            # (Kept: closing the iterator would hang up at once.)
            chunks = response.iter_raw()
            for chunk in chunks:
                received += len(chunk)
                if received > 100_000:
                    break
            assert running_queries(db)  # the server waits for the client
            chunks.close()
        # The client hung up: the query is KILLed, the connection closed.
        pool = get_pool(app)
        wait_for(lambda: not running_queries(db))
        wait_for(lambda: pool.stats().in_use == 0)
        wait_for(lambda: db.connection_count() == pool.stats().size)
        assert client.get("/sync").status_code == 200  # the pool goes on


def test_an_error_mid_stream_cuts_the_body_and_closes_the_connection(
    db: Database, numbers: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = export_app(db, numbers)
    with serve(app) as url, httpx.Client(base_url=url) as client:
        with client.stream("GET", "/million", params={"fail_at": 5000}) as response:
            assert response.status_code == 200  # sent with the first batch
            lines: list[int] = []

            def read() -> None:
                for chunk in response.iter_raw():
                    lines.append(chunk.count(b"\n"))

            with pytest.raises(httpx.RemoteProtocolError):  # no last chunk
                read()
            assert 0 < sum(lines) <= 5000
        pool = get_pool(app)
        wait_for(lambda: pool.stats().in_use == 0)
        assert pool.stats().closed == 1
        wait_for(lambda: db.connection_count() == pool.stats().size)
        assert client.get("/sync").status_code == 200
    logged = [r for r in caplog.records if r.name == "fastapi_mysqlpool"]
    assert any("cut short" in r.getMessage() for r in logged)


def test_request_cursors_refuse_a_streaming_body_naming_the_fix(
    db: Database, numbers: str
) -> None:
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))
    errors: list[BaseException] = []

    async def body_of(cursor: Any, awaited: bool) -> Any:
        try:
            if awaited:
                await cursor.execute("SELECT 1")
            else:
                cursor.execute("SELECT 1")
            yield b"never"
        except CursorReleasedError as exc:
            errors.append(exc)
            raise

    @app.get("/async")
    async def trap(cursor: AsyncCursor) -> StreamingResponse:
        return StreamingResponse(body_of(cursor, awaited=True))

    @app.get("/sync")
    def sync_trap(cursor: Cursor) -> StreamingResponse:
        return StreamingResponse(body_of(cursor, awaited=False))

    with serve(app) as url, httpx.Client(base_url=url) as client:
        for path in ("/async", "/sync"):
            with contextlib.suppress(httpx.HTTPError):
                client.get(path)
    assert len(errors) == 2
    for error in errors:
        assert "stream_rows(" in str(error)
        assert ".stream(" in str(error)


# -- a million rows, through a uvicorn process of its own ------------------------


@pytest.fixture
def app_process(db: Database, numbers: str) -> Iterator[tuple[str, int]]:
    """tests/stream_app.py served by uvicorn in its own process: (url, pid)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "STREAM_APP_URL": db.url, "STREAM_APP_TABLE": numbers}
    command = [sys.executable, "-m", "uvicorn", "tests.stream_app:app"]
    options = ["--port", str(port), "--log-level", "warning", "--loop", "asyncio"]
    process = subprocess.Popen([*command, *options], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "uvicorn exited"
            try:
                if httpx.get(f"{url}/probe").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(30)


def memory(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (the peak) of *pid*, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def read_export(client: httpx.Client, **params: Any) -> tuple[int, bytes, bytes]:
    """(lines, first line, last line) of an export."""
    lines = 0
    head = tail = b""
    with client.stream("GET", "/export", params=params) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        for chunk in response.iter_bytes():
            lines += chunk.count(b"\n")
            head = head or chunk
            tail = (tail + chunk)[-200:]
    return lines, head.split(b"\n", 1)[0], tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_a_million_rows_stream_in_bounded_memory(
    app_process: tuple[str, int],
) -> None:
    url, pid = app_process
    with httpx.Client(base_url=url, timeout=60) as client:
        assert read_export(client, rows=20_000)[0] == 20_000  # warmed up
        before = memory(pid)["VmRSS"]
        # The peak (VmHWM) from now on, not since startup (Linux >= 4.0).
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        assert memory(pid)["VmHWM"] <= before + MB
        started = time.monotonic()
        lines, first, last = read_export(client, rows=1_000_000)
        elapsed = time.monotonic() - started
    peak = memory(pid)["VmHWM"]
    assert lines == 1_000_000
    assert json.loads(first) == {"id": 0, "name": "row-0-0"}
    assert json.loads(last) == {"id": 999_999, "name": "row-999-999"}
    # Buffered, a million rows would take hundreds of MB.
    assert peak - before < 50 * MB, (before / MB, peak / MB)
    print(f"1,000,000 rows in {elapsed:.1f} s; RSS +{(peak - before) / MB:.1f} MB")


@pytest.mark.slow
def test_a_probe_keeps_its_latency_while_a_slow_stream_runs(
    app_process: tuple[str, int],
) -> None:
    """The server sleeps 0.1 s before each thousand rows: read on the event
    loop, each batch would hold every other request that long."""
    url, _ = app_process
    with httpx.Client(base_url=url, timeout=60) as client:

        def probe() -> float:
            started = time.perf_counter()
            assert client.get("/probe").json() == 10
            return time.perf_counter() - started

        baseline = [probe() for _ in range(20)]
        done = threading.Event()
        result: list[int] = []

        def stream() -> None:
            with httpx.Client(base_url=url, timeout=60) as streamer:
                result.append(read_export(streamer, rows=30_000, pause=0.1)[0])
            done.set()

        thread = threading.Thread(target=stream)
        thread.start()
        during = []
        while not done.is_set():
            during.append(probe())
            time.sleep(0.01)
        thread.join()
    assert result == [30_000]
    assert len(during) >= 50
    assert statistics.median(during) < statistics.median(baseline) + 0.010, (
        baseline,
        during,
    )
    assert sorted(during)[int(len(during) * 0.9)] < 0.050, during


def test_mysqldb_error_from_the_first_batch_is_the_drivers(
    db: Database, numbers: str
) -> None:
    """The first batch's error is raised by the response, before the status:
    the app's handler for MySQLdb errors answers it."""
    app = export_app(db, numbers)
    seen: list[type[BaseException]] = []

    @app.exception_handler(MySQLdb.Error)
    async def handler(request: Request, exc: MySQLdb.Error) -> Response:
        seen.append(type(exc))
        return Response(status_code=418)

    with serve(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/broken").status_code == 418
    assert seen == [MySQLdb.ProgrammingError]
