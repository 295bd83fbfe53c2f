import dataclasses
import os

from anyio import to_thread
from fastapi import FastAPI, Request

from fastapi_mysqlpool import get_pool, mysql_pool_lifespan

app = FastAPI(lifespan=mysql_pool_lifespan(os.environ["DATABASE_URL"]))


@app.get("/pool")
async def pool_stats(request: Request):
    return dataclasses.asdict(get_pool(request).stats())


@app.post("/items/reprice")
async def reprice(request: Request, percent: int):
    # Borrow without blocking the loop, then hand the MySQLdb cursor to a thread.
    async with get_pool(request).lease() as cursor:
        return await to_thread.run_sync(apply_increase, cursor, percent)


def apply_increase(cursor, percent: int) -> dict[str, int]:
    cursor.execute("UPDATE items SET price = price * (100 + %s) DIV 100", (percent,))
    return {"updated": cursor.rowcount}
