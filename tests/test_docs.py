"""The documentation's wiring: every example on a page and run by a test, the
site's addresses agreeing with the package's. (`mkdocs build --strict`, in
.ci/run, checks the pages themselves: links, anchors, references.)"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DOCS_SRC = ROOT / "docs_src"
INCLUDE = re.compile(r'^\s*--8<-- "([^":]+)(?::[^"]*)?"\s*$', re.MULTILINE)
# Imported by an example rather than run on its own.
LIBRARIES = {"docs_src/tutorial/testing/main.py"}


def examples() -> set[str]:
    return {
        path.relative_to(ROOT).as_posix()
        for path in DOCS_SRC.rglob("*")
        if path.suffix in {".py", ".sql"} and path.name != "__init__.py"
    }


def included() -> set[str]:
    return {
        target
        for page in DOCS.rglob("*.md")
        for target in INCLUDE.findall(page.read_text())
    }


def test_every_example_is_on_a_page() -> None:
    assert examples() - included() == set()


def test_every_include_exists() -> None:
    missing = [target for target in included() if not (ROOT / target).is_file()]
    assert missing == []


def test_every_example_is_run_by_a_test() -> None:
    """Each docs_src module is named in tests/test_docs_src.py (the schema is
    read there too)."""
    tests = (ROOT / "tests" / "test_docs_src.py").read_text()
    unnamed = []
    for example in sorted(examples() - LIBRARIES):
        stem = example.removeprefix("docs_src/").removesuffix(".py")
        if example.endswith(".sql"):
            stem = Path(example).name
        # A parametrised test names the directory and its variants apart.
        directory, _, name = stem.rpartition("/")
        if stem not in tests and not (f'"{directory}/{{' in tests and name in tests):
            unnamed.append(example)
    assert unnamed == []


def test_every_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = {page.relative_to(DOCS).as_posix() for page in DOCS.rglob("*.md")}
    assert {page for page in pages if page not in nav} == set()


def pyproject_table(name: str) -> dict[str, str]:
    """The ``key = "value"`` lines of one table of pyproject.toml (tomllib
    is 3.11+ only)."""
    text = (ROOT / "pyproject.toml").read_text()
    table = text.split(f"\n[{name}]\n", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^([\w-]+) = "([^"]*)"$', table, re.MULTILINE))


def test_the_site_and_the_package_name_the_same_addresses() -> None:
    urls = pyproject_table("project.urls")
    config = (ROOT / "mkdocs.yml").read_text()
    site = re.search(r"^site_url: (\S+)$", config, re.MULTILINE)
    repo = re.search(r"^repo_url: (\S+)$", config, re.MULTILINE)
    assert site is not None
    assert repo is not None
    assert urls["Documentation"] == site.group(1)
    assert urls["Changelog"] == site.group(1) + "changelog/"
    assert urls["Repository"] == urls["Homepage"] == repo.group(1)
    assert urls["Issues"] == repo.group(1) + "/issues"
    assert site.group(1) in (ROOT / "README.md").read_text()


def test_the_license_is_the_declared_one() -> None:
    project = (ROOT / "pyproject.toml").read_text()
    assert '\nlicense = "MIT"\nlicense-files = ["LICENSE"]\n' in project
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
