import os

from fastapi import BackgroundTasks, FastAPI
from MySQLdb.cursors import Cursor

from fastapi_mysqlpool import (
    AsyncCursor,
    AsyncPoolCursor,
    add_pool_task,
    mysql_pool_lifespan,
)

app = FastAPI(lifespan=mysql_pool_lifespan(os.environ["DATABASE_URL"]))


@app.get("/items/{item_id}")
async def read_item(item_id: int, cursor: AsyncCursor, tasks: BackgroundTasks):
    await cursor.execute("SELECT name, views FROM items WHERE id = %s", (item_id,))
    name, views = await cursor.fetchone()
    add_pool_task(tasks, count_view, item_id)  # runs after the response
    return {"name": name, "views": views}


def count_view(cursor: Cursor, item_id: int) -> None:
    # A def task: a worker thread, a MySQLdb cursor on a connection of its own.
    cursor.execute("UPDATE items SET views = views + 1 WHERE id = %s", (item_id,))


@app.delete("/items/{item_id}", status_code=202)
def delete_item(item_id: int, tasks: BackgroundTasks):
    add_pool_task(tasks, delete_later, item_id)
    return {"deleting": item_id}


async def delete_later(cursor: AsyncPoolCursor, item_id: int) -> None:
    # An async def task: the event loop, an async cursor.
    await cursor.execute("DELETE FROM items WHERE id = %s", (item_id,))
