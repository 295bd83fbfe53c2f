"""JSON answers for database errors: ``{"code": int, "message": str}``."""

from __future__ import annotations

import logging
from typing import Any

import MySQLdb
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket, WebSocketState

from ._errors import BusyError, DrainedError, ErrorKind, classify

logger = logging.getLogger("fastapi_mysqlpool")

#: Seconds a client is asked to wait before retrying a 503.
RETRY_AFTER = 1
#: The types the automatic handlers cover (and their subclasses).
HANDLED_TYPES: tuple[type[Exception], ...] = (MySQLdb.Error, DrainedError, BusyError)


async def database_error_handler(
    conn: HTTPConnection, exc: Exception
) -> Response | None:
    """Turn a database error into its stable JSON answer.

    The SQL and the server's message go to the log, never to the client.
    """
    kind = classify(exc) or ErrorKind.ERROR
    where = f"{conn.scope.get('method', 'WEBSOCKET')} {conn.url.path}"
    if kind is ErrorKind.ERROR:
        logger.error("database error in %s", where, exc_info=exc)
    else:
        logger.warning("%s in %s: %s", kind.message, where, exc)
    if isinstance(conn, WebSocket):
        # The endpoint may have closed it (then raised, or its COMMIT failed).
        if conn.application_state is not WebSocketState.DISCONNECTED:
            # 1011: internal error; 1013: try again later (the 503s).
            await conn.close(code=1013 if kind.status_code == 503 else 1011)
        return None
    headers = {"Retry-After": str(RETRY_AFTER)} if kind.status_code == 503 else None
    return JSONResponse(
        {"code": int(kind), "message": kind.message},
        status_code=kind.status_code,
        headers=headers,
    )


def add_handlers(app: Any) -> dict[type[Exception], Any]:
    """Register the handler for each type the app does not handle itself;
    returns those added."""
    added = {}
    for exc_type in HANDLED_TYPES:
        if exc_type not in app.exception_handlers:
            app.add_exception_handler(exc_type, database_error_handler)
            added[exc_type] = database_error_handler
    return added
