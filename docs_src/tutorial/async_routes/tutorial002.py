import os

from fastapi import FastAPI

from fastapi_mysqlpool import AsyncDictCursor, mysql_pool_lifespan

app = FastAPI(lifespan=mysql_pool_lifespan(os.environ["DATABASE_URL"]))


@app.get("/items")
async def list_items(cursor: AsyncDictCursor, limit: int = 10):
    await cursor.execute(
        "SELECT id, name, price FROM items ORDER BY id LIMIT %s", (limit,)
    )
    return await cursor.fetchall()


@app.get("/names")
async def list_names(cursor: AsyncDictCursor):
    await cursor.execute("SELECT name FROM items ORDER BY name")
    return [row["name"] async for row in cursor]
