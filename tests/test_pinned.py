"""The test's pinned connection: which statements commit implicitly (no server)."""

from __future__ import annotations

from typing import Any

import pytest

from fastapi_mysqlpool._pinned import implicit_commit


@pytest.mark.parametrize(
    ("template", "commits"),
    [
        ("CREATE TABLE t (id INT)", True),
        ("  /* a comment */ drop table t", True),
        ("-- why\nALTER TABLE t ADD x INT", True),
        ("TRUNCATE t", True),
        ("LOCK TABLES t WRITE", True),
        ("SET autocommit = 1", True),
        ("SET @@session.autocommit=1", True),
        ("GRANT SELECT ON t TO u", True),
        (b"RENAME TABLE a TO b", True),
        ("CREATE TEMPORARY TABLE t (id INT)", False),
        ("DROP TEMPORARY TABLE t", False),
        ("INSERT INTO alter_log (created) VALUES (1)", False),
        ("SELECT * FROM t FOR UPDATE", False),
        ("SAVEPOINT mine", False),
        ("SET @x = 1", False),
    ],
)
def test_statements_that_commit_implicitly(template: Any, commits: bool) -> None:
    words = implicit_commit(template)
    assert (words is not None) == commits
    if words is not None:  # the message names the statement by its start
        text = template.decode() if isinstance(template, bytes) else template
        assert words.split()[0] in text
