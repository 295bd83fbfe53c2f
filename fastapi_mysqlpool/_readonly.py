"""Which statements a read cursor may send: a conservative, client-side check.

A read cursor runs in autocommit, without a transaction to roll back, so a
write through it would be committed at once. Each statement of a template
(never its parameters) must start with ``SELECT``, ``SHOW``, ``DESCRIBE`` /
``DESC``, ``EXPLAIN``, ``VALUES``, ``TABLE``, ``WITH`` or ``(`` and hold no
word that makes it write: ``INTO`` (``SELECT ... INTO OUTFILE``, ``@v``),
``NEXTVAL`` / ``SETVAL`` / ``NEXT VALUE FOR`` (sequences), ``ANALYZE`` (it
runs the statement explained), and after ``WITH``: ``INSERT``, ``REPLACE``,
``DELETE``, ``UPDATE`` (but ``FOR UPDATE``). Anything else is refused:
``SET``, ``CALL``, ``BEGIN``, DDL... A stored function called in a
``SELECT`` can still write: replicas refuse that by their ``read_only``.
"""

from __future__ import annotations

from ._session import _TOKENS, _TOKENS_NO_ESCAPES

_READ_FIRST = frozenset(
    {"SELECT", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "VALUES", "TABLE", "WITH", "("}
)
_WRITING = frozenset({"INTO", "NEXTVAL", "SETVAL", "ANALYZE"})
_WRITING_AFTER_WITH = frozenset({"INSERT", "REPLACE", "DELETE", "UPDATE"})


def _statement_reads(tokens: list[str]) -> bool:
    if not tokens:
        return True  # an empty statement (";;", a comment)
    if tokens[0] not in _READ_FIRST or not _WRITING.isdisjoint(tokens):
        return False
    for i, word in enumerate(tokens):
        if word == "NEXT" and tokens[i + 1 : i + 2] == ["VALUE"]:
            return False
        if (
            tokens[0] == "WITH"
            and word in _WRITING_AFTER_WITH
            and not (word == "UPDATE" and i and tokens[i - 1] == "FOR")
        ):
            return False
    return True


def _reads(text: str, pattern: object) -> bool:
    statement: list[str] = []
    for match in pattern.finditer(text):  # type: ignore[attr-defined]
        kind = match.lastgroup
        if kind == "word":
            statement.append(match.group(kind).upper())
        elif kind == "quoted":
            statement.append(match.group(kind)[0])
        elif kind == "assign":
            statement.append(":=")
        elif kind in ("other", "end"):
            char = match.group(kind)
            if char == ";":
                if not _statement_reads(statement):
                    return False
                statement = []
            elif not char.isspace():
                statement.append(char)
        # comments are skipped; executable comments' code is read as code
    return _statement_reads(statement)


def scan_read_only(template: str | bytes) -> bool:
    """True if every statement of *template* only reads (see the module)."""
    text = template.decode("latin-1") if isinstance(template, bytes) else template
    if not _reads(text, _TOKENS):
        return False
    # Under NO_BACKSLASH_ESCAPES a backslash ends no string early: both ways.
    return "\\" not in text or _reads(text, _TOKENS_NO_ESCAPES)


_CACHE_MAX = 2048
_CACHED_TEMPLATE_MAX = 4096
_cache: dict[str | bytes, bool] = {}


def read_only(template: str | bytes) -> bool:
    """:func:`scan_read_only`, remembered (templates are few and repeated)."""
    reads = _cache.get(template)
    if reads is None:
        reads = scan_read_only(template)
        if len(template) <= _CACHED_TEMPLATE_MAX:
            if len(_cache) >= _CACHE_MAX:
                _cache.clear()
            _cache[template] = reads
    return reads
