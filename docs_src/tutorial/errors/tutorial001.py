import os

from fastapi import FastAPI, HTTPException

from fastapi_mysqlpool import Cursor, mysql_pool_lifespan

app = FastAPI(lifespan=mysql_pool_lifespan(os.environ["DATABASE_URL"]))


@app.post("/items", status_code=201)
def create_item(name: str, price: int, cursor: Cursor):
    cursor.execute("INSERT INTO items (name, price) VALUES (%s, %s)", (name, price))
    if price < 0:
        raise HTTPException(422, "price must not be negative")  # the INSERT rolls back
    return {"id": cursor.lastrowid}
