"""The test's pinned connection (see _pinning): statements that would end its
transaction become savepoint operations, and statements that would commit it
implicitly are refused before they are sent.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable
from typing import Any, Final

import MySQLdb
from MySQLdb.connections import Connection

from ._connection import PooledConnection
from ._errors import ImplicitCommitError, errno_of

_raw_query: Callable[[Any, bytes], None] = Connection.query
_send_query: Callable[[Any, bytes], None] = Connection.send_query
_read_query_result: Callable[[Any], None] = Connection.read_query_result

_SAVEPOINT: Final = b"fastapi_mysqlpool_%d"
#: ER_LOCK_DEADLOCK: InnoDB rolled the whole transaction back.
_ER_LOCK_DEADLOCK: Final = 1213
#: ER_SP_DOES_NOT_EXIST: our savepoint is gone, so is the test's transaction.
_ER_SP_DOES_NOT_EXIST: Final = 1305

# What commits implicitly (MySQL 8.4 and MariaDB 11 manuals, "Statements That
# Cause an Implicit Commit"), by the template's first words. Temporary tables
# do not (CREATE/DROP TEMPORARY TABLE); BEGIN and START TRANSACTION do, and
# are translated below instead: the current work is committed, as it would be.
_LEADING_COMMENTS = re.compile(
    r"(?:\s+|/\*(?!M?!)[\s\S]*?\*/|(?:--(?=\s)|#)[^\n]*(?:\n|\Z))*"
)
_IMPLICIT_COMMIT = re.compile(
    r"(?:ALTER|CREATE|DROP|RENAME|TRUNCATE|GRANT|REVOKE|LOCK\s+TABLES?|ANALYZE"
    r"|CACHE\s+INDEX|CHECK\s+TABLE|FLUSH|LOAD\s+INDEX|OPTIMIZE|REPAIR|RESET"
    r"|INSTALL|UNINSTALL|CHANGE\s+(?:MASTER|REPLICATION)|(?:START|STOP)\s+"
    r"(?:SLAVE|REPLICA|ALL\s+SLAVES)|SET\s+PASSWORD|XA"
    r"|SET\s+(?:SESSION\s+|LOCAL\s+|@@(?:SESSION\.|LOCAL\.)?)?AUTOCOMMIT)\b",
    re.IGNORECASE,
)
_TEMPORARY = re.compile(
    r"(?:CREATE|DROP)\s+(?:OR\s+REPLACE\s+)?TEMPORARY\b", re.IGNORECASE
)
# Statements that end the transaction, as the library or a route sends them.
_COMMITS = frozenset({b"COMMIT", b"COMMIT WORK", b"BEGIN", b"BEGIN WORK"})
_ROLLBACKS = frozenset({b"ROLLBACK", b"ROLLBACK WORK"})
_START = re.compile(rb"START\s+TRANSACTION\b", re.IGNORECASE)
# As the library sends them (a user's go through note_template: refused).
_AUTOCOMMIT_SWITCHES = frozenset({b"SET AUTOCOMMIT = 1", b"SET AUTOCOMMIT = 0"})


def implicit_commit(template: str | bytes) -> str | None:
    """The statement's first words if *template* commits implicitly, else None."""
    if len(template) > 4096:  # built without parameters: not remembered
        return _implicit_commit(template)
    return _remembered(template)


def _implicit_commit(template: str | bytes) -> str | None:
    text = template.decode("latin-1") if isinstance(template, bytes) else template
    start = _LEADING_COMMENTS.match(text)
    text = text[start.end() if start else 0 :]
    match = _IMPLICIT_COMMIT.match(text)
    if match is None or _TEMPORARY.match(text):
        return None
    return " ".join(text[: match.end() + 40].split()[:4])


_remembered = functools.lru_cache(maxsize=1024)(_implicit_commit)


def _transaction_word(sql: bytes) -> bytes | None:
    """``COMMIT`` or ``ROLLBACK`` if *sql* ends (or restarts) the transaction,
    ``KEEP`` if it would switch autocommit (as a read lease does: on the
    test's connection, reads stay in the test's transaction)."""
    if len(sql) > 64:
        return None
    word = b" ".join(bytes(sql).rstrip(b"; \t\r\n").split()).upper()
    if word in _ROLLBACKS:
        return b"ROLLBACK"
    if word in _COMMITS or _START.match(word):
        return b"COMMIT"
    if word in _AUTOCOMMIT_SWITCHES:
        return b"KEEP"
    return None


class PinnedConnection(PooledConnection):
    """The test's connection: transaction ends become savepoint operations.

    ``levels`` holds one entry per borrow under way (nested borrows: more
    than one), whether that borrow's savepoint is set: a COMMIT releases it,
    and it is set again before the borrower's next statement.
    """

    levels: list[bool]
    _translated = False
    #: A deadlock rolled the whole transaction back, savepoints included.
    deadlocked = False

    def _failed(self, exc: MySQLdb.OperationalError, *, translated: bool) -> None:
        errno = errno_of(exc)
        if errno == _ER_LOCK_DEADLOCK:
            self.deadlocked = True
        elif translated and errno == _ER_SP_DOES_NOT_EXIST:
            raise lost_savepoint(deadlocked=self.deadlocked) from exc

    def translate(self, sql: bytes) -> bytes:
        """*sql*, or what stands in for it if it would end the transaction."""
        word = _transaction_word(sql)
        if word is None:
            self.restore_savepoint()
            return sql
        levels = self.levels
        if word == b"KEEP" or not levels or not levels[-1]:
            return b"DO 0"  # nothing since the last commit
        self._translated = True
        name = _SAVEPOINT % len(levels)
        if word == b"COMMIT":
            levels[-1] = False
            return b"RELEASE SAVEPOINT " + name
        return b"ROLLBACK TO SAVEPOINT " + name

    def restore_savepoint(self) -> None:
        """After a commit mid-borrow, set the borrower's savepoint again (one
        blocking round trip, as the commit was)."""
        levels = self.levels
        if levels and not levels[-1]:
            _raw_query(self, b"SAVEPOINT " + _SAVEPOINT % len(levels))
            levels[-1] = True

    def note_template(self, template: str | bytes) -> None:
        words = implicit_commit(template)
        if words is not None:
            raise ImplicitCommitError(
                f"{words} commits implicitly in MySQL: inside a test run with "
                "mysql_rollback (one transaction, rolled back when the test "
                "ends) it would commit the test's data for good. Create the "
                "schema before the test (a session-scoped fixture, or the "
                "app's startup, which runs outside the test's transaction), "
                "or run this test without mysql_rollback."
            )
        super().note_template(template)

    def query(self, query: str | bytes | bytearray) -> None:
        sql = query.encode(self.encoding) if isinstance(query, str) else bytes(query)
        sql = self.translate(sql)
        translated, self._translated = self._translated, False
        try:
            super().query(sql)
        except MySQLdb.OperationalError as exc:
            self._failed(exc, translated=translated)
            raise

    def send_query(self, query: bytes, /) -> None:
        _send_query(self, self.translate(query))

    def read_query_result(self) -> None:
        translated, self._translated = self._translated, False
        try:
            _read_query_result(self)
        except MySQLdb.OperationalError as exc:
            self._failed(exc, translated=translated)
            raise

    def commit(self) -> None:
        self.query(b"COMMIT")

    def rollback(self) -> None:
        self.query(b"ROLLBACK")

    def savepoint(self) -> bytes:
        """The statement that sets the current borrow's savepoint."""
        return b"SAVEPOINT " + _SAVEPOINT % len(self.levels)

    def end(self) -> None:
        """Roll the test's transaction back (blocking), if it can be."""
        if self.open and not self.pending:
            with contextlib.suppress(MySQLdb.Error):
                _raw_query(self, b"ROLLBACK")


def adopt(conn: PooledConnection, checkin: Callable[..., None]) -> PinnedConnection:
    """Make *conn*, a new connection of the pool's, the test's: its check-in
    goes to *checkin*, and its transaction starts (blocking)."""
    conn.__class__ = PinnedConnection
    assert isinstance(conn, PinnedConnection)
    conn.levels = []
    conn.checkin_to = checkin
    _raw_query(conn, b"BEGIN")
    return conn


def lost_savepoint(*, deadlocked: bool) -> ImplicitCommitError:
    if deadlocked:
        return ImplicitCommitError(
            "a deadlock (1213) rolled back the test's whole transaction, its "
            "savepoints included, as InnoDB does: the test's data so far is "
            "gone and the test cannot go on. A transaction run again after a "
            "deadlock cannot be tested under mysql_rollback."
        )
    return ImplicitCommitError(
        "the test's transaction was ended by a statement that commits "
        "implicitly where its text could not be checked (in a stored "
        "procedure, a trigger, a prepared statement?): part of the test's "
        "data may have been committed for good"
    )


def recover(conn: PinnedConnection) -> bool:
    """Roll a failed borrow back to its savepoint; False if that cannot be
    done (the connection is lost, or an answer is still unread)."""
    if conn.pending or conn.broken or not conn.open:
        return False
    try:
        while conn.next_result() == 0:
            conn.discard_result()
        # A round trip either way: it proves the connection alive.
        if conn.levels and conn.levels[-1]:
            _raw_query(conn, b"ROLLBACK TO SAVEPOINT " + _SAVEPOINT % len(conn.levels))
        else:
            _raw_query(conn, b"DO 0")
    except Exception:
        return False
    return True
