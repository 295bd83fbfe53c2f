import os

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from fastapi_mysqlpool import AsyncCursor, mysql_pool_lifespan, stream_rows

app = FastAPI(lifespan=mysql_pool_lifespan(os.environ["DATABASE_URL"]))


@app.get("/trap")
async def trap(cursor: AsyncCursor):
    async def lines():
        # Runs after the route returned: the cursor's connection is back in
        # the pool, so this raises CursorReleasedError once the 200 went out.
        await cursor.execute("SELECT name FROM items ORDER BY id")
        async for (name,) in cursor:
            yield name + "\n"

    return StreamingResponse(lines(), media_type="text/plain")


@app.get("/pattern")
async def pattern(request: Request):
    # A connection of the response's own, held while the body is sent.
    return stream_rows(request, "SELECT name FROM items ORDER BY id", format="csv")
