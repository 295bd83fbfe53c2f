import os

import MySQLdb
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from fastapi_mysqlpool import Cursor, mysql_pool_lifespan

app = FastAPI(lifespan=mysql_pool_lifespan(os.environ["DATABASE_URL"]))


@app.exception_handler(MySQLdb.IntegrityError)
async def conflict(request: Request, exc: MySQLdb.IntegrityError) -> JSONResponse:
    # Wins over the library's handler for this type (code 0, 500).
    return JSONResponse({"detail": "already exists"}, status_code=409)


@app.post("/items", status_code=201)
def create_item(name: str, price: int, cursor: Cursor):
    cursor.execute("INSERT INTO items (name, price) VALUES (%s, %s)", (name, price))
    return {"id": cursor.lastrowid}
