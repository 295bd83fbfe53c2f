import os
from typing import Annotated

from fastapi import Depends, FastAPI

from fastapi_mysqlpool import Cursor, mysql_pool_lifespan

app = FastAPI(lifespan=mysql_pool_lifespan(os.environ["DATABASE_URL"]))


def audited(cursor: Cursor):
    yield
    # scope="function": this runs before the request's COMMIT, in its transaction.
    cursor.execute("UPDATE items SET views = views + 1 WHERE name = 'audit'")


@app.post("/items", status_code=201)
def create_item(
    name: str,
    cursor: Cursor,
    _: Annotated[None, Depends(audited, scope="function")],
):
    cursor.execute("INSERT INTO items (name, price) VALUES (%s, 0)", (name,))
    return {"id": cursor.lastrowid}
