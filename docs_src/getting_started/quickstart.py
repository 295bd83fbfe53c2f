# app.py: DATABASE_URL=mysql://user:password@127.0.0.1:3306/db uvicorn app:app
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException

from fastapi_mysqlpool import AsyncCursor, Cursor, get_pool, mysql_pool_lifespan


@asynccontextmanager
async def create_tables(app: FastAPI):  # runs with the pool already open
    async with get_pool(app).cursor() as cursor:
        await cursor.execute(
            "CREATE TABLE IF NOT EXISTS notes"
            " (id INT AUTO_INCREMENT PRIMARY KEY, text VARCHAR(200) NOT NULL)"
        )
    yield


app = FastAPI(
    lifespan=mysql_pool_lifespan(os.environ["DATABASE_URL"], lifespan=create_tables)
)


@app.post("/notes", status_code=201)
def add_note(text: str, cursor: Cursor):  # a def route: a blocking cursor
    cursor.execute("INSERT INTO notes (text) VALUES (%s)", (text,))
    return {"id": cursor.lastrowid}  # committed before this answer is sent


@app.get("/notes/{note_id}")
async def read_note(note_id: int, cursor: AsyncCursor):  # never blocks the loop
    await cursor.execute("SELECT text FROM notes WHERE id = %s", (note_id,))
    row = await cursor.fetchone()
    if row is None:
        raise HTTPException(404)  # rolls back
    return {"text": row[0]}
