"""``stream_rows()``: an export route in one line, its rows streamed (see
_stream) as NDJSON or CSV.

Each batch is encoded in the worker thread that read it, so the event loop
only passes bytes on. The first batch is read before the response starts: a
statement that fails at once (bad SQL, no connection) gets the app's JSON
error answer, not a 200. A failure later can only cut the body short (no final
chunk): the client sees an incomplete response, never a complete-looking one.
"""

from __future__ import annotations

import csv
import datetime
import decimal
import io
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Literal

from MySQLdb.constants import FIELD_TYPE
from starlette.requests import HTTPConnection
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ._context import pool_of
from ._stream import Description, RowStream

logger = logging.getLogger("fastapi_mysqlpool")

#: The formats of :func:`stream_rows`, and their media types.
MEDIA_TYPES = {"ndjson": "application/x-ndjson", "csv": "text/csv"}  # (+ charset)


def _json_value(value: Any) -> Any:
    """What FastAPI's JSON encoding makes of the types MySQLdb returns."""
    if isinstance(value, decimal.Decimal):
        return int(value) if value.as_tuple().exponent >= 0 else float(value)  # type: ignore[operator]
    if isinstance(value, (datetime.date, datetime.time)):  # datetime included
        return value.isoformat()
    if isinstance(value, datetime.timedelta):  # TIME
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (set, frozenset)):  # SET
        return sorted(value)
    raise TypeError(f"cannot encode a {type(value).__name__} as JSON")


def _row_encoder() -> Callable[[Any], str]:
    """JSON for one row: the json module's C encoder, made once (``dumps()``
    makes one per call: a third of the time for a small row)."""
    portable = json.JSONEncoder(
        ensure_ascii=False, separators=(",", ":"), default=_json_value
    ).encode
    try:
        # No circular-reference markers: a row is flat.
        encode = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
            None, _json_value, json.encoder.encode_basestring, None, ":", ",",
            False, False, True,
        )  # fmt: skip
        sample = {"a": [1.5, None, True], "é": decimal.Decimal("2.5")}
        if "".join(encode(sample, 0)) == portable(sample):
            return lambda row: "".join(encode(row, 0))
    except (AttributeError, TypeError):  # pragma: no cover - not CPython's
        pass
    return portable  # pragma: no cover


_dumps = _row_encoder()


def _ndjson(rows: Sequence[Any], description: Description) -> bytes:
    """One JSON object per row (rows as dicts), a line each."""
    if not rows:
        return b""
    return ("\n".join(map(_dumps, rows)) + "\n").encode()


# Columns whose values csv would write badly with str(): bytes (BLOB, BIT,
# GEOMETRY, binary strings) and timedelta (TIME).
_CSV_CONVERTED = frozenset(
    {
        FIELD_TYPE.TIME,
        FIELD_TYPE.BIT,
        FIELD_TYPE.GEOMETRY,
        FIELD_TYPE.BLOB,
        FIELD_TYPE.TINY_BLOB,
        FIELD_TYPE.MEDIUM_BLOB,
        FIELD_TYPE.LONG_BLOB,
        FIELD_TYPE.STRING,
        FIELD_TYPE.VAR_STRING,
        FIELD_TYPE.VARCHAR,
    }
)


def _csv_value(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, datetime.timedelta):  # as MySQL shows a TIME
        seconds = value.total_seconds()
        sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
        minutes, second = divmod(seconds, 60)
        hours, minute = divmod(int(minutes), 60)
        text = f"{sign}{hours:02d}:{minute:02d}:{int(second):02d}"
        fraction = value.microseconds if not sign else (-value).microseconds
        return f"{text}.{fraction:06d}" if fraction else text
    return value


class _Csv:
    """CSV (RFC 4180, ``\\r\\n`` line ends), the column names first."""

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer)
        self._header = True
        self._converted: list[int] | None = None

    def __call__(self, rows: Sequence[Any], description: Description) -> bytes:
        buffer, writer = self._buffer, self._writer
        if self._header and description:
            self._header = False
            writer.writerow([column[0] for column in description])
            self._converted = [
                i for i, column in enumerate(description) if column[1] in _CSV_CONVERTED
            ]
        if rows and self._converted:
            rows = [self._convert(row) for row in rows]
        writer.writerows(rows)
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text.encode()

    def _convert(self, row: Sequence[Any]) -> list[Any]:
        values = list(row)
        for i in self._converted or ():
            values[i] = _csv_value(values[i])
        return values


_ENCODERS: dict[str, tuple[Callable[[], Callable[..., bytes]], bool]] = {
    # format: (a new encoder, rows as dicts)
    "ndjson": (lambda: _ndjson, True),
    "csv": (_Csv, False),
}


class RowsResponse(StreamingResponse):
    """A :class:`StreamingResponse` whose body is the rows of a statement,
    read from a :class:`RowStream` while the body is sent."""

    def __init__(
        self, stream: RowStream[Any], media_type: str, where: Callable[[], str]
    ) -> None:
        self._stream = stream
        self._head: bytes | None = None
        self._where = where
        super().__init__(self._body(), media_type=media_type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Ends the stream whatever happens: a client gone mid-body leaves rows
        # unread, so the connection is closed and the query KILLed.
        async with self._stream as stream:
            self._head = await stream.next_batch()  # fails: the app answers
            try:
                await super().__call__(scope, receive, send)
            finally:
                await self.body_iterator.aclose()  # type: ignore[attr-defined]

    async def _body(self) -> AsyncIterator[bytes]:
        if self._head:
            yield self._head
        self._head = None
        try:
            while (chunk := await self._stream.next_batch()) is not None:
                if chunk:
                    yield chunk
        except Exception as exc:
            # The status went out already: the body is cut short (no last
            # chunk), which is all a client can be told. The details are
            # logged here, never sent.
            logger.error(
                "database error in %s after the response started: the body "
                "was cut short",
                self._where(),
                exc_info=exc,
            )
            raise


def stream_rows(
    request: HTTPConnection,
    sql: str | bytes,
    args: Any = None,
    *,
    format: Literal["ndjson", "csv"] = "ndjson",
) -> StreamingResponse:
    """A response whose body is the rows of *sql*, streamed as they are read.

    ``format="ndjson"``: one JSON object per row (``application/x-ndjson``);
    ``"csv"``: a header row of column names, then the rows (``text/csv``).
    The rows are read unbuffered, on a connection of the response's own,
    while the body is sent (see :meth:`Pool.stream`): memory holds a batch,
    whatever the result's size. The transaction commits when the body ends;
    a client that disconnects mid-body has the connection closed and its
    query KILLed. A statement that fails before its first rows gets the
    app's JSON error answer.

    Works from ``async def`` and ``def`` routes alike: the body is read on
    the event loop after the route returns. Do not stream from the request's
    own cursor: it is given back when the route returns, before the body.
    """
    try:
        make, dict_rows = _ENCODERS[format]
    except KeyError:
        raise ValueError(f"format must be 'ndjson' or 'csv', not {format!r}") from None
    stream: RowStream[Any] = RowStream(
        pool_of(request), sql, args, dict_rows=dict_rows, convert=make()
    )

    def where() -> str:
        return f"{request.scope.get('method')} {request.url.path}"

    return RowsResponse(stream, MEDIA_TYPES[format], where)
