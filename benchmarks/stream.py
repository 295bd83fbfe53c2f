"""Reading a large result on the event loop: rows/s, peak RSS and the longest
stall of the loop, for pool.stream() against asyncmy's SSCursor and the
buffered async cursor (and MySQLdb's use_result in a plain thread: the
ceiling). Each measurement runs in a process of its own, so its RSS is its
own; variants alternate, round after round.

    python -m benchmarks.stream [--url mysql://root@127.0.0.1:3306/test]
        [--rows 1000000] [--rounds 3] [--variants a,b] [--json out.json]

The rows: ``id INT, name VARCHAR, value INT`` from a 1000-row table crossed
with itself (created as ``bench_numbers`` if missing). Reported: the median
over the rounds of rows/s, and the largest peak RSS growth and loop stall.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.db import FALLBACK_URL, parse_url

TABLE = "bench_numbers"
SQL = (
    f"SELECT a.n * 1000 + b.n AS id, CONCAT('row-', a.n, '-', b.n) AS name, "
    f"a.n AS value FROM {TABLE} a STRAIGHT_JOIN {TABLE} b ON b.n <= a.n + 1000 "
    f"LIMIT %s"
)
VARIANTS = ("lib_stream", "lib_stream_rows", "asyncmy_sscursor", "lib_buffered")
EXTRA = ("mysqldb_thread",)


def rss_now() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class LoopWatch:
    """Ticks every millisecond; the longest the loop kept it waiting."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.done = False

    async def run(self) -> None:
        last = time.perf_counter()
        while not self.done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last)
            last = now


async def lib_stream(url: str, rows: int) -> int:
    from fastapi_mysqlpool import Pool

    pool = Pool(url, size=1, open=False)
    await pool.aopen()
    count = 0
    async for batch in pool.stream(SQL, (rows,)).batches():
        count += len(batch)
    await pool.aclose()
    return count


async def lib_stream_rows(url: str, rows: int) -> int:
    """pool.stream() a row at a time (``async for row in ...``)."""
    from fastapi_mysqlpool import Pool

    pool = Pool(url, size=1, open=False)
    await pool.aopen()
    count = 0
    async for _ in pool.stream(SQL, (rows,)):
        count += 1
    await pool.aclose()
    return count


async def lib_buffered(url: str, rows: int) -> int:
    from fastapi_mysqlpool import Pool

    pool = Pool(url, size=1, open=False)
    await pool.aopen()
    async with pool.cursor() as cursor:
        await cursor.execute(SQL, (rows,))
        count = len(await cursor.fetchall())
    await pool.aclose()
    return count


async def asyncmy_sscursor(url: str, rows: int) -> int:
    import asyncmy
    from asyncmy.cursors import SSCursor

    params = parse_url(url)
    conn = await asyncmy.connect(
        host=params.host,
        port=params.port,
        user=params.user,
        password=params.password,
        database=params.database,
    )
    count = 0
    async with conn.cursor(SSCursor) as cursor:
        await cursor.execute(SQL, (rows,))
        while batch := await cursor.fetchmany(1000):
            count += len(batch)
    conn.close()
    return count


async def mysqldb_thread(url: str, rows: int) -> int:
    """The ceiling: MySQLdb's use_result in one thread, no loop involved."""
    import MySQLdb

    def read() -> int:
        conn = MySQLdb.connect(**parse_url(url).mysqldb_kwargs())
        conn.query(SQL.replace("%s", str(int(rows))))
        result = conn.use_result()
        count = 0
        while batch := result.fetch_row(1000):
            count += len(batch)
        del result
        conn.close()
        return count

    return await asyncio.to_thread(read)


def measure(variant: str, url: str, rows: int) -> dict[str, Any]:
    """In the child process: one read of the rows."""
    run: Callable[[str, int], Awaitable[int]] = globals()[variant]
    # Imported first: importing FastAPI would stall the loop for seconds.
    import asyncmy  # noqa: F401
    import MySQLdb  # noqa: F401

    import fastapi_mysqlpool  # noqa: F401

    async def main() -> dict[str, Any]:
        watch = LoopWatch()
        ticker = asyncio.create_task(watch.run())
        await asyncio.sleep(0.01)
        before = rss_now()
        started = time.perf_counter()
        count = await run(url, rows)
        elapsed = time.perf_counter() - started
        watch.done = True
        await ticker
        return {
            "rows": count,
            "seconds": elapsed,
            "rss_growth": peak_rss() - before,
            "longest_stall": watch.longest,
        }

    return asyncio.run(main())


def ensure_table(url: str) -> None:
    import MySQLdb

    conn = MySQLdb.connect(**parse_url(url).mysqldb_kwargs())
    try:
        cursor = conn.cursor()
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (n INT PRIMARY KEY)")
        cursor.execute(f"SELECT COUNT(*) FROM {TABLE}")
        if cursor.fetchone()[0] != 1000:
            cursor.execute(f"DELETE FROM {TABLE}")
            values = ",".join(f"({n})" for n in range(1000))
            cursor.execute(f"INSERT INTO {TABLE} VALUES {values}")
        conn.commit()
    finally:
        conn.close()


def run_child(variant: str, url: str, rows: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.stream", "--child", variant]
    done = subprocess.run(
        [*command, "--url", url, "--rows", str(rows)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=FALLBACK_URL)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS + EXTRA))
    parser.add_argument("--json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        print(json.dumps(measure(options.child, options.url, options.rows)))
        return
    ensure_table(options.url)
    variants = options.variants.split(",")
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for round_ in range(options.rounds):
        for variant in variants:
            result = run_child(variant, options.url, options.rows)
            assert result["rows"] == options.rows, result
            results[variant].append(result)
            print(f"round {round_ + 1} {variant}: {result}", file=sys.stderr)
    print(f"{options.rows:,} rows, {options.rounds} rounds (median rows/s; max)\n")
    print("| variant | rows/s | peak RSS growth | longest loop stall |")
    print("|---|---:|---:|---:|")
    for variant, runs in results.items():
        rate = statistics.median(r["rows"] / r["seconds"] for r in runs)
        growth = max(r["rss_growth"] for r in runs) / 2**20
        stall = max(r["longest_stall"] for r in runs) * 1000
        print(f"| {variant} | {rate:,.0f} | {growth:.1f} MB | {stall:.1f} ms |")
    if options.json:
        with open(options.json, "w") as out:
            json.dump({"rows": options.rows, "results": results}, out, indent=2)


if __name__ == "__main__":
    threading.current_thread().name = "benchmark"
    main()
