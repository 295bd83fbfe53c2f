"""Did a borrower leave state in its server session? The server says; the SQL
text fills in what it does not report.

With ``session_track_state_change = ON`` in the session, MariaDB (and MySQL
5.7+) set ``SERVER_SESSION_STATE_CHANGED`` in the status of every answer to a
statement that changed the session: ``SET`` of any variable (in a procedure, a
function, ``EXECUTE IMMEDIATE`` or ``BEGIN NOT ATOMIC`` too), ``USE``,
temporary tables, ``PREPARE``. MariaDB Connector/C reads that status with
``mariadb_get_infov``, called here through ctypes on mysqlclient's ``MYSQL*``:
a C call, no round trip. A later answer overwrites it, so it is looked at after
every answer that a later one could hide (see PooledConnection).

What that flag misses (measured on MariaDB 10.11: tests/test_session_state.py)
is found in the statement's template, the text before parameters are bound
(never the parameters: a value is data, whatever it says): table and named
locks (``LOCK TABLES``, ``FLUSH ... WITH READ LOCK``, ``GET_LOCK()``,
``BACKUP``), ``HANDLER``, ``XA``, user variables assigned by ``SELECT ... INTO
@v`` or ``@v := ...``, ``CALL`` and ``EXECUTE`` (procedures and dynamic SQL can
do those out of sight), ``SET TRANSACTION`` (for the next transaction, which
may be the next borrower's), and a ``SET`` of ``session_track_state_change``
(turning tracking off would blind it). Where the flag cannot be read (MySQL's
libmysqlclient, a server without the variable), the template scan also counts
the statements that set it (``SET``, ``USE``, ``PREPARE``, temporary tables,
``BEGIN NOT ATOMIC``): a best effort, as before, never on parameter values.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import MySQLdb._mysql

#: ``SERVER_SESSION_STATE_CHANGED`` and ``SERVER_STATUS_AUTOCOMMIT`` (mariadb_com.h).
SESSION_STATE_CHANGED = 0x4000
STATUS_AUTOCOMMIT = 0x0002

# enum mariadb_value (mysql.h): MARIADB_CONNECTION_SERVER_STATUS.
_SERVER_STATUS = 30
# What mysqlclient's connection._get_native_connection() returns: a capsule
# holding the connection's MYSQL* (tests/test_mysqlclient_internals.py).
_CAPSULE_NAME = b"_mysql.connection.native_connection"

#: Template flags: state the server's flag does not report (always counted)...
UNREPORTED = 1
#: ...and state it reports (counted only where the flag cannot be read).
REPORTED = 2


def _client_function(
    name: str, restype: type[ctypes._SimpleCData[Any]] | None, *, keep_gil: bool
) -> Callable[..., Any] | None:
    """The client library's *name* (found through mysqlclient's own module,
    which links it), or None. A function object of our own: setting restype
    on a shared one would change it for every other user."""
    loader = ctypes.PyDLL if keep_gil else ctypes.CDLL
    try:
        function = loader(MySQLdb._mysql.__file__)[name]
    except (OSError, AttributeError, TypeError):  # pragma: no cover - not libmariadb
        return None
    function.restype = restype
    return function


# Declared without argtypes, as in _socket: arguments are passed ready-made in
# their C types (a c_void_p, a byref) or as ints where C takes an int. PyDLL:
# it only reads a field, so keeping the GIL is cheaper than releasing it.
_infov = _client_function("mariadb_get_infov", None, keep_gil=True)
_infov_checked = _client_function("mariadb_get_infov", ctypes.c_char, keep_gil=True)
# A round trip: CDLL releases the GIL while it waits (worker threads only).
_reset_connection = _client_function(
    "mysql_reset_connection", ctypes.c_int, keep_gil=False
)

_capsule_pointer = ctypes.pythonapi["PyCapsule_GetPointer"]
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = (ctypes.py_object, ctypes.c_char_p)


def native_handle(conn: Any) -> ctypes.c_void_p | None:
    """*conn*'s ``MYSQL*`` (valid while the connection object lives), or None."""
    try:
        pointer = _capsule_pointer(conn._get_native_connection(), _CAPSULE_NAME)
    except (AttributeError, ValueError, MySQLdb.Error):  # pragma: no cover
        return None
    return ctypes.c_void_p(pointer) if pointer else None


def no_status() -> int:
    """The status reader where the flag cannot (or may no longer) be read."""
    return 0


def status_reader(mysql: ctypes.c_void_p) -> Callable[[], int] | None:
    """A function returning the status flags of the last answer read on the
    connection *mysql* (no I/O), or None where the client library cannot."""
    infov, checked = _infov, _infov_checked
    if infov is None or checked is None:
        return None
    status = ctypes.c_uint(0)
    out = ctypes.byref(status)  # built once: most of the cost otherwise
    if checked(mysql, _SERVER_STATUS, out) != b"\x00":  # pragma: no cover
        return None  # a library without this value

    def read() -> int:
        infov(mysql, _SERVER_STATUS, out)
        return status.value

    return read


def reset_connection(mysql: ctypes.c_void_p) -> bool:
    """COM_RESET_CONNECTION (blocking: a round trip). False if it failed or
    the client library has no ``mysql_reset_connection``."""
    reset = _reset_connection
    return reset is not None and reset(mysql) == 0


# -- the template scan --------------------------------------------------------


def _quoted(quote: str, *, escapes: bool) -> str:
    # Up to the closing quote (doubled quotes and, with *escapes*, backslash
    # escapes inside) or the end: one character per step, no nested
    # repetition, so an unterminated string cannot make it backtrack.
    if escapes:
        return rf"{quote}(?:[^{quote}\\]|\\[\s\S]?|{quote}{quote})*(?:{quote}|\Z)"
    return rf"{quote}(?:[^{quote}]|{quote}{quote})*(?:{quote}|\Z)"


def _token_pattern(*, escapes: bool) -> re.Pattern[str]:
    strings = "|".join(
        [
            _quoted("'", escapes=escapes),
            _quoted('"', escapes=escapes),  # a string, or an ANSI_QUOTES name
            _quoted("`", escapes=False),
        ]
    )
    return re.compile(
        r"\s*(?:"
        # -- (with a space or control character after it), #, /* */ comments
        r"(?P<comment>(?:--(?=[\s\x00-\x1f]|\Z)|\#)[^\n]*|/\*(?!M?!)[\s\S]*?(?:\*/|\Z))"
        # executable comments (/*!40101 ... */, /*M!100100 ... */) are code
        r"|(?P<code>/\*M?!\d*)"
        rf"|(?P<quoted>{strings})"
        r"|(?P<word>[\w$]+)"
        r"|(?P<end>\*/)"
        r"|(?P<assign>:=)"
        r"|(?P<other>[\s\S])"
        r")"
    )


_TOKENS = _token_pattern(escapes=True)
# Under NO_BACKSLASH_ESCAPES a backslash ends no string early: a text with a
# backslash is scanned both ways (its mode is the server's to choose).
_TOKENS_NO_ESCAPES = _token_pattern(escapes=False)

#: Lower-case fragments without which a template needs no lexing (a cache miss
#: costs a lower() and these searches; most templates contain none).
_HINTS = (
    *("lock", "flush", "backup", "handler", "xa", "call", "execute", "@", ":="),
    *("set", "use", "prepare", "deallocate", "temporary", "atomic"),
)

_UNREPORTED_FIRST = frozenset({"LOCK", "BACKUP", "HANDLER", "XA", "CALL", "EXECUTE"})
_REPORTED_FIRST = frozenset({"SET", "USE", "PREPARE", "DEALLOCATE"})
# Anywhere in a statement: SELECT ... INTO @v, GET_LOCK(...), LOCK TABLE(S)
# (not LOCK IN SHARE MODE: row locks end with the transaction).
_UNREPORTED_PAIRS = frozenset(
    {
        ("INTO", "@"),
        ("GET_LOCK", "("),
        ("LOCK", "TABLE"),
        ("LOCK", "TABLES"),
        ("EXECUTE", "IMMEDIATE"),
    }
)


def _judge(tokens: list[str]) -> int:
    """The flags of one statement's tokens (words upper-cased, a quoted
    string or name as its opening quote, punctuation as itself)."""
    if not tokens:
        return 0
    first = tokens[0]
    flags = 0
    if (
        first in _UNREPORTED_FIRST
        or ":=" in tokens
        or "CALL" in tokens  # (reserved: never a bare name)
        or (first == "FLUSH" and ("LOCK" in tokens or "EXPORT" in tokens))
        # Turning tracking off (for one statement, too) would blind it.
        or (first == "SET" and "SESSION_TRACK_STATE_CHANGE" in tokens)
        # For the next transaction, which a COMMIT without one open leaves
        # pending: the next borrower's, then.
        or tokens[:2] == ["SET", "TRANSACTION"]
        or any(pair in _UNREPORTED_PAIRS for pair in pairwise(tokens))
    ):
        flags = UNREPORTED
    if first in _REPORTED_FIRST or (
        first in ("CREATE", "DROP")
        and ("TEMPORARY" in tokens[1:4] or tokens[1:2] == ["PREPARE"])
    ):
        flags |= REPORTED
    for i in range(2, len(tokens)):
        # BEGIN NOT ATOMIC (after a label, too): its first inner statement
        # starts after ATOMIC, the others after a ";" as usual.
        if tokens[i] == "ATOMIC" and tokens[i - 2 : i] == ["BEGIN", "NOT"]:
            return flags | REPORTED | _judge(tokens[i + 1 :])
    return flags


def _lex(text: str, pattern: re.Pattern[str]) -> int:
    flags = 0
    statement: list[str] = []
    in_code_comment = False
    for match in pattern.finditer(text):
        kind = match.lastgroup
        if kind == "word":
            statement.append(match.group(kind).upper())
        elif kind == "quoted":
            statement.append(match.group(kind)[0])
        elif kind == "code":
            in_code_comment = True
        elif kind == "end":
            if in_code_comment:
                in_code_comment = False
            else:
                statement += ("*", "/")
        elif kind == "assign":
            statement.append(":=")
        elif kind == "other":
            char = match.group(kind)
            if char == ";":  # multi-statements are on: each part is a statement
                flags |= _judge(statement)
                statement = []
            elif not char.isspace():
                statement.append(char)
    return flags | _judge(statement)


def scan(template: str | bytes) -> int:
    """What *template* may change that the server does or does not report
    (``UNREPORTED`` | ``REPORTED``). Comments and quoted text are skipped, at
    every statement start, executable comments included."""
    text = template.decode("latin-1") if isinstance(template, bytes) else template
    lowered = text.lower()
    flags = 0
    if any(hint in lowered for hint in _HINTS):
        flags = _lex(text, _TOKENS)
        if "\\" in text:
            flags |= _lex(text, _TOKENS_NO_ESCAPES)
    return flags


# Templates are few and repeated (the literals in the application's code), so
# their flags are remembered: the common case is one dict lookup. Bounded, and
# long texts (statements built without parameters) are not kept.
_CACHE_MAX = 2048
#: Longer templates are not remembered, so scanning them is never just a
#: look-up: the async cursor scans them in a worker thread.
CACHED_TEMPLATE_MAX = 4096
_cache: dict[str | bytes, int] = {}


def template_flags(template: str | bytes) -> int:
    """:func:`scan`, remembered."""
    flags = _cache.get(template)
    if flags is None:
        flags = scan(template)
        if len(template) <= CACHED_TEMPLATE_MAX:
            if len(_cache) >= _CACHE_MAX:
                _cache.clear()
            _cache[template] = flags
    return flags
