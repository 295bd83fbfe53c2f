import os

import anyio
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastapi_mysqlpool import AsyncCursor, mysql_pool_lifespan


class RequestTimeout:
    """Cancels the route after *seconds* and answers 504 if nothing was sent."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_started(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        with anyio.move_on_after(self.seconds) as deadline:
            await self.app(scope, receive, send_started)
        if deadline.cancelled_caught and not started:
            response = JSONResponse({"detail": "Request Timed Out"}, status_code=504)
            await response(scope, receive, send)


app = FastAPI(lifespan=mysql_pool_lifespan(os.environ["DATABASE_URL"]))
app.add_middleware(RequestTimeout, seconds=1.0)


@app.post("/items/slow", status_code=201)
async def slow_insert(name: str, cursor: AsyncCursor):
    await cursor.execute("INSERT INTO items (name, price) VALUES (%s, 0)", (name,))
    await cursor.execute("SELECT SLEEP(5)")  # cancelled at 1 s: the INSERT rolls back
    return {"id": cursor.lastrowid}
