"""The app tests/test_responses.py runs in a uvicorn process of its own, so
that the server's memory is measured alone (``STREAM_APP_URL``: the database;
``STREAM_APP_TABLE``: a table of the numbers 0-999)."""

from __future__ import annotations

import os

from fastapi import FastAPI, Request
from fastapi.responses import Response

from fastapi_mysqlpool import AsyncCursor, mysql_pool_lifespan, stream_rows

app = FastAPI(lifespan=mysql_pool_lifespan(os.environ["STREAM_APP_URL"], size=2))
TABLE = os.environ["STREAM_APP_TABLE"]


@app.get("/export")
async def export(request: Request, rows: int, pause: float = 0) -> Response:
    """*rows* rows in id order; with *pause*, the server sleeps that long
    before each thousand (a slow query, a row at a time)."""
    slept = ", SLEEP(IF(b.n = 0, %(pause)s, 0)) AS slept" if pause else ""
    return stream_rows(
        request,
        f"SELECT a.n * 1000 + b.n AS id, CONCAT('row-', a.n, '-', b.n) AS name"
        f"{slept} FROM {TABLE} a STRAIGHT_JOIN {TABLE} b ON b.n <= a.n + 1000 "
        f"LIMIT %(rows)s",
        {"pause": pause, "rows": rows},
    )


@app.get("/probe")
async def probe(cursor: AsyncCursor) -> int:
    await cursor.execute(f"SELECT COUNT(*) FROM {TABLE} WHERE n < %s", (10,))
    ((count,),) = await cursor.fetchall()
    return int(count)
