import os

from fastapi import FastAPI

from fastapi_mysqlpool import AsyncCursor, AsyncDictCursor, mysql_pool_lifespan

# DATABASE_URL=mysql://user:password@127.0.0.1:3306/db
app = FastAPI(lifespan=mysql_pool_lifespan(os.environ["DATABASE_URL"], size=10))


@app.post("/items", status_code=201)
async def create_item(name: str, price: int, cursor: AsyncCursor):
    await cursor.execute(
        "INSERT INTO items (name, price) VALUES (%(name)s, %(price)s)",
        {"name": name, "price": price},
    )
    return {"id": cursor.lastrowid}


@app.get("/items")
async def list_items(cursor: AsyncDictCursor):
    await cursor.execute("SELECT id, name, price FROM items")
    return await cursor.fetchall()
