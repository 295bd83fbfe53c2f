from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from fastapi_mysqlpool.testing import TemporaryServer

from .main import create_app


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    # One throwaway server for the whole run, removed at the end.
    with TemporaryServer() as server:
        yield server.url


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    # TestClient as a context manager runs the lifespan: the pool opens.
    with TestClient(create_app(database_url)) as client:
        yield client


def test_a_note_is_committed(client: TestClient) -> None:
    before = client.get("/notes/count").json()["count"]
    assert client.post("/notes", params={"text": "hello"}).status_code == 201
    assert client.get("/notes/count").json() == {"count": before + 1}


def test_a_bad_request_writes_nothing(client: TestClient) -> None:
    before = client.get("/notes/count").json()["count"]
    assert client.post("/notes").status_code == 422  # no text
    assert client.get("/notes/count").json() == {"count": before}
