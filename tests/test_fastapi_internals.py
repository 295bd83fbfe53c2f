"""What fastapi_mysqlpool relies on in FastAPI and Starlette beyond their docs.

If one of these fails after an upgrade, the upgrade changed something the
library depends on; the docstrings say what and where.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient


def test_the_function_scope_exit_stack_unwinds_before_the_response() -> None:
    """_dependencies: leases end on scope["fastapi_function_astack"], the stack
    behind Depends(scope="function") (FastAPI >= 0.121), so their COMMIT comes
    before the response starts."""
    events: list[str] = []

    async def register(request: Request) -> None:
        stack = request.scope["fastapi_function_astack"]
        assert isinstance(stack, AsyncExitStack)

        async def exit_callback(*exc_info: object) -> None:
            events.append(f"exit {exc_info[0].__name__ if exc_info[0] else None}")

        stack.push_async_exit(exit_callback)

    app = FastAPI()

    @app.get("/ok", dependencies=[Depends(register)])
    def ok() -> None:
        events.append("route")

    @app.get("/fail", dependencies=[Depends(register)])
    def fail() -> None:
        raise ValueError

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        async def send_spy(message: Any) -> None:
            if message["type"] == "http.response.start":
                events.append("response")
            await send(message)

        await app(scope, receive, send_spy)

    with TestClient(spy, raise_server_exceptions=False) as client:
        client.get("/ok")
        client.get("/fail")
    assert events == ["route", "exit None", "response", "exit ValueError", "response"]


def test_the_middleware_stack_is_built_before_lifespan_startup() -> None:
    """_lifespan._install rebuilds app.middleware_stack at startup, because
    Starlette builds it on the first call (the lifespan's): handlers added
    later are otherwise ignored. If Starlette stops doing this, the rebuild is
    harmless; if it renames the attributes, _install breaks loudly."""
    from contextlib import asynccontextmanager

    seen: list[Any] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        seen.append(app.middleware_stack)
        yield

    app = FastAPI(lifespan=lifespan)
    with TestClient(app):
        pass
    assert seen[0] is not None
    assert callable(app.build_middleware_stack)
