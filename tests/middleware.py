"""ASGI middleware for tests."""

from __future__ import annotations

from typing import Any

import anyio
from starlette.responses import PlainTextResponse


class Deadline:
    """A request-timeout middleware: cancels the route after *seconds*, then
    answers 504 if nothing was sent yet."""

    def __init__(self, app: Any, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with anyio.move_on_after(self.seconds) as deadline:
            await self.app(scope, receive, send)
        if deadline.cancelled_caught:
            await PlainTextResponse("timeout", 504)(scope, receive, send)
