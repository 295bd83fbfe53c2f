import os

from fastapi import FastAPI

from fastapi_mysqlpool import DictCursor, mysql_pool_lifespan

app = FastAPI(lifespan=mysql_pool_lifespan(os.environ["DATABASE_URL"]))


@app.get("/items")
def list_items(cursor: DictCursor, limit: int = 10):
    cursor.execute("SELECT id, name, price FROM items ORDER BY id LIMIT %s", (limit,))
    return cursor.fetchall()  # [{"id": 1, "name": "pen", "price": 2}, ...]
