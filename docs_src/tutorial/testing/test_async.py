from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from .main import create_app


@pytest.fixture(scope="session")
def app(mysql_url: str) -> FastAPI:
    return create_app(mysql_url)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the pool needs asyncio's event loop


@pytest.fixture
async def client(app: FastAPI, mysql_rollback) -> AsyncIterator[httpx.AsyncClient]:
    # ASGITransport sends no lifespan events: LifespanManager runs the app's
    # startup and shutdown, and its app carries the lifespan's state.
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test"
        ) as client:
            yield client


@pytest.mark.anyio
async def test_a_note_is_committed(client: httpx.AsyncClient) -> None:
    response = await client.post("/notes", params={"text": "hello"})
    assert response.status_code == 201
    assert (await client.get("/notes/count")).json() == {"count": 1}


@pytest.mark.anyio
async def test_each_test_starts_empty(client: httpx.AsyncClient) -> None:
    assert (await client.get("/notes/count")).json() == {"count": 0}
