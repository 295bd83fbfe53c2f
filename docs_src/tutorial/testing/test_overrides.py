from fastapi.testclient import TestClient

from fastapi_mysqlpool import get_async_cursor

from .main import create_app


class FakeCursor:
    lastrowid = 42

    async def execute(self, sql, args=None):
        self.executed = (sql, args)


def test_add_note_without_a_database() -> None:
    app = create_app("mysql://nobody@nowhere/none")
    app.dependency_overrides[get_async_cursor] = FakeCursor  # one per request
    client = TestClient(app)  # no `with`: no startup, no pool, no server
    assert client.post("/notes", params={"text": "hi"}).json() == {"id": 42}
