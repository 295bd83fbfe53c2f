import os
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException

from fastapi_mysqlpool import Cursor, mysql_pool_lifespan

app = FastAPI(lifespan=mysql_pool_lifespan(os.environ["DATABASE_URL"]))


def existing_item(item_id: int, cursor: Cursor) -> int:
    # The same cursor as the route's: one connection, one transaction.
    cursor.execute("SELECT id FROM items WHERE id = %s FOR UPDATE", (item_id,))
    if cursor.fetchone() is None:
        raise HTTPException(404)
    return item_id


@app.post("/items/{item_id}/price")
def set_price(
    item_id: Annotated[int, Depends(existing_item)], price: int, cursor: Cursor
):
    cursor.execute("UPDATE items SET price = %s WHERE id = %s", (price, item_id))
    return {"id": item_id, "price": price}
