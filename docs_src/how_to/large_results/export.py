import os

from fastapi import FastAPI, Request

from fastapi_mysqlpool import get_pool, mysql_pool_lifespan, stream_rows

app = FastAPI(lifespan=mysql_pool_lifespan(os.environ["DATABASE_URL"]))


@app.get("/items.csv")
def export_csv(request: Request, min_price: int = 0):
    # One line, from a def route too: the rows are read while the body is sent.
    return stream_rows(
        request,
        "SELECT id, name, price FROM items WHERE price >= %s ORDER BY id",
        (min_price,),
        format="csv",
    )


@app.get("/items.ndjson")
async def export_ndjson(request: Request):
    return stream_rows(request, "SELECT id, name, price FROM items ORDER BY id")


@app.get("/items/total")
async def total_value(request: Request):
    # Rows in your own code: a batch at a time, never all in memory.
    total = 0
    async with get_pool(request).stream("SELECT price FROM items", batch=500) as rows:
        async for (price,) in rows:
            total += price
    return {"total": total}
