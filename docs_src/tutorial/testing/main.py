from contextlib import asynccontextmanager

from fastapi import FastAPI

from fastapi_mysqlpool import AsyncCursor, get_pool, mysql_pool_lifespan


@asynccontextmanager
async def create_tables(app: FastAPI):
    async with get_pool(app).cursor() as cursor:
        await cursor.execute(
            "CREATE TABLE IF NOT EXISTS notes"
            " (id INT AUTO_INCREMENT PRIMARY KEY, text VARCHAR(200) NOT NULL)"
        )
    yield


def create_app(database_url: str) -> FastAPI:
    app = FastAPI(lifespan=mysql_pool_lifespan(database_url, lifespan=create_tables))

    @app.post("/notes", status_code=201)
    async def add_note(text: str, cursor: AsyncCursor):
        await cursor.execute("INSERT INTO notes (text) VALUES (%s)", (text,))
        return {"id": cursor.lastrowid}

    @app.get("/notes/count")
    async def count_notes(cursor: AsyncCursor):
        await cursor.execute("SELECT COUNT(*) FROM notes")
        (count,) = await cursor.fetchone()
        return {"count": count}

    return app
