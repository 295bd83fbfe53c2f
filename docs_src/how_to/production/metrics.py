import os
from typing import Any

from fastapi import FastAPI, HTTPException
from prometheus_client import REGISTRY, make_asgi_app

from fastapi_mysqlpool import AsyncCursor, mysql_pool_lifespan
from fastapi_mysqlpool.prometheus import PoolCollector

# slow_query: statements slower than 0.5 s are logged as warnings.
app = FastAPI(lifespan=mysql_pool_lifespan(os.environ["DATABASE_URL"], slow_query=0.5))
collector = PoolCollector(app)  # reads the pool's stats() at each scrape
REGISTRY.register(collector)
app.mount("/metrics", make_asgi_app())


@app.get("/items/{item_id}")
async def read_item(item_id: int, cursor: AsyncCursor) -> dict[str, Any]:
    await cursor.execute("SELECT name FROM items WHERE id = %s", (item_id,))
    row = await cursor.fetchone()
    if row is None:
        raise HTTPException(status_code=404)
    return {"name": row[0]}
