import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from mysqlclient_pool import ConnectionPool

CONFIG = {
    "host": os.environ["DB_HOST"],
    "port": int(os.environ["DB_PORT"]),
    "user": os.environ["DB_USER"],
    "password": os.environ["DB_PASSWORD"],
    "database": os.environ["DB_NAME"],
}


@asynccontextmanager
async def lifespan(app: FastAPI):
    app.state.pool = ConnectionPool(CONFIG, size=10)
    yield
    app.state.pool.close()


app = FastAPI(lifespan=lifespan)


@app.post("/items", status_code=201)
def create_item(name: str, price: int, request: Request):
    with request.app.state.pool.fetch() as cursor:  # commits on exit
        cursor.execute("INSERT INTO items (name, price) VALUES (%s, %s)", (name, price))
        return {"id": cursor.lastrowid}


@app.get("/items/{item_id}")
def read_item(item_id: int, request: Request):
    with request.app.state.pool.fetch() as cursor:
        cursor.execute("SELECT name, price FROM items WHERE id = %s", (item_id,))
        name, price = cursor.fetchone()
        return {"name": name, "price": price}
