"""The README, the front page: its quickstart runs, its commands and links hold."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from .servers import Database

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
QUICKSTART = ROOT / "docs_src" / "getting_started" / "quickstart.py"
SITE = "https://fastapi-mysqlpool.github.io/fastapi-mysqlpool/"


def quickstart() -> str:
    text = README.read_text()
    section = text[text.index("## Quickstart") :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None
    return match.group(1)


def test_the_quickstart_is_the_documentation_s() -> None:
    """The README shows docs_src's quickstart, which tests/test_docs_src.py runs."""
    assert quickstart() == QUICKSTART.read_text()


def test_the_quickstart_works(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", db.url)
    module = types.ModuleType("app")
    exec(compile(quickstart(), "README.md:quickstart", "exec"), module.__dict__)  # noqa: S102
    try:
        with TestClient(module.app) as client:
            assert client.post("/notes", params={"text": "hello"}).json() == {"id": 1}
            assert client.get("/notes/1").json() == {"text": "hello"}
            assert client.get("/notes/2").status_code == 404
    finally:
        db.query("DROP TABLE IF EXISTS notes")


def test_the_two_commands_come_first() -> None:
    """The first code block runs the example and the tests, as .ci/run does."""
    text = README.read_text()
    first = re.search(r"```sh\n(.*?)```", text, re.DOTALL)
    assert first is not None
    commands = [line.split("#")[0].strip() for line in first.group(1).splitlines()]
    assert commands == ["python -m example_app", "python -m pytest"]
    assert text.index(first.group(0)) < text.index("## Quickstart")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\npython -m pytest\n" in ci


def test_links_into_the_docs_lead_to_pages() -> None:
    """Every link to the site names a page of docs/ (as mkdocs lays it out)."""
    pages = re.findall(re.escape(SITE) + r"([\w/-]*)", README.read_text())
    assert len(pages) >= 5
    for page in pages:
        stem = page.rstrip("/")
        candidates = [ROOT / "docs" / "index.md"] if not stem else []
        candidates += [ROOT / "docs" / f"{stem}.md", ROOT / "docs" / stem / "index.md"]
        assert any(path.exists() for path in candidates), page


def test_relative_links_lead_to_files() -> None:
    for target in re.findall(r"\]\((?!https?://)([^)#]+)\)", README.read_text()):
        assert (ROOT / target).exists(), target
