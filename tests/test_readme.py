"""The README's quickstart runs as written."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from .servers import Database

README = Path(__file__).resolve().parent.parent / "README.md"


def quickstart() -> str:
    text = README.read_text()
    section = text[text.index("## Quickstart") :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None
    return match.group(1)


def test_the_quickstart_works(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", db.url)
    module = types.ModuleType("app")
    exec(compile(quickstart(), "README.md:quickstart", "exec"), module.__dict__)  # noqa: S102
    try:
        with TestClient(module.app) as client:
            assert client.post("/notes", params={"text": "hello"}).json() == {"id": 1}
            assert client.get("/notes/1").json() == {"text": "hello", "views": 0}
            assert client.get("/notes/1").json() == {"text": "hello", "views": 1}
            assert client.get("/notes/2").status_code == 404
    finally:
        db.query("DROP TABLE IF EXISTS notes")
