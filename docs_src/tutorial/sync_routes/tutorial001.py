import os

from fastapi import FastAPI

from fastapi_mysqlpool import Cursor, mysql_pool_lifespan

app = FastAPI(lifespan=mysql_pool_lifespan(os.environ["DATABASE_URL"]))


@app.post("/items", status_code=201)
def create_item(name: str, price: int, cursor: Cursor):
    cursor.execute("INSERT INTO items (name, price) VALUES (%s, %s)", (name, price))
    return {"id": cursor.lastrowid}


@app.get("/items/{item_id}")
def read_item(item_id: int, cursor: Cursor):
    cursor.execute("SELECT name, price FROM items WHERE id = %s", (item_id,))
    name, price = cursor.fetchone()
    return {"name": name, "price": price}
