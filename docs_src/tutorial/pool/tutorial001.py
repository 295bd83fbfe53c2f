import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from fastapi_mysqlpool import get_pool, mysql_pool_lifespan


@asynccontextmanager
async def lifespan(app: FastAPI):
    # The app's own lifespan runs inside the pool's: the pool is open here.
    async with get_pool(app).cursor() as cursor:
        await cursor.execute("SELECT COUNT(*) FROM items")
        (count,) = await cursor.fetchone()
    yield {"items_at_startup": count}  # state, passed on to request.state


app = FastAPI(
    lifespan=mysql_pool_lifespan(os.environ["DATABASE_URL"], lifespan=lifespan)
)


@app.get("/startup")
async def startup(request: Request):
    return {"items": request.state.items_at_startup}
