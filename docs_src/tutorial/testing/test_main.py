from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from .main import create_app


@pytest.fixture(scope="session")
def app(mysql_url: str) -> FastAPI:
    # mysql_url: one throwaway server for the whole run, removed at the end.
    return create_app(mysql_url)


@pytest.fixture
def client(app: FastAPI, mysql_rollback) -> Iterator[TestClient]:
    # TestClient as a context manager runs the lifespan: the pool opens.
    # mysql_rollback: whatever the test writes is rolled back at its end.
    with TestClient(app) as client:
        yield client


def test_a_note_is_committed(client: TestClient) -> None:
    assert client.post("/notes", params={"text": "hello"}).status_code == 201
    assert client.get("/notes/count").json() == {"count": 1}


def test_a_bad_request_writes_nothing(client: TestClient) -> None:
    assert client.post("/notes").status_code == 422  # no text
    assert client.get("/notes/count").json() == {"count": 0}
