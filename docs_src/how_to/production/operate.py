from fastapi import FastAPI

from fastapi_mysqlpool import AsyncCursor, health_router, mysql_pool_lifespan


def utc(connection):
    """Run on each new connection, before it is lent."""
    connection.cursor().execute("SET time_zone = '+00:00'")


# No cfg: the URL comes from DATABASE_URL, read at startup.
app = FastAPI(lifespan=mysql_pool_lifespan(configure=utc, leak_timeout=30))
app.include_router(health_router())  # GET /healthz, GET /readyz


@app.get("/time-zone")
async def time_zone(cursor: AsyncCursor):
    await cursor.execute("SELECT @@time_zone")
    (zone,) = await cursor.fetchone()
    return {"time_zone": zone}
