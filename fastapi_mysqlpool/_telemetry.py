"""What the pool tells the outside world: an OpenTelemetry span and a duration
for each statement, slow statements in the log, and the pool's instruments.

One seam serves all three. A connection's ``telemetry`` is its pool's
:class:`Telemetry`, or None (``telemetry=False`` and no ``slow_query``): then
a statement pays one attribute test. Otherwise :meth:`Telemetry.start`, before
the statement is sent, returns a :class:`Timing` (or None when nothing
records), and :meth:`Timing.end` closes it once the answer is read.

Without an OpenTelemetry SDK, :meth:`Telemetry.start` reads two module
globals of opentelemetry-api, the providers ``set_tracer_provider()`` and
``set_meter_provider()`` set (None until then: ``get_tracer_provider()``
would answer with a proxy, at the price of an ``os.environ`` look-up per
call), and returns None: no span, no clock, no attribute is made. A provider
set later is picked up at the next statement. (tests/test_telemetry.py pins
those globals.)

What is recorded follows the stable database semantic conventions. The text
is the statement's template, with its ``%s`` placeholders: parameter values
never reach a span, a metric or the log. Error messages are left out too
(MySQL quotes values in them: "Duplicate entry 'x'"): the error's class and
number say what failed.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ._errors import errno_of
from ._options import Settings
from ._stats import PoolStats

if TYPE_CHECKING:  # no import cycle: a connection is only described here
    from MySQLdb.connections import Connection

try:
    from opentelemetry import trace as _trace_globals
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.metrics import _internal as _metrics_globals
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # pragma: no cover - the [otel] extra is not installed
    OTEL_INSTALLED = False
else:
    OTEL_INSTALLED = True

logger = logging.getLogger("fastapi_mysqlpool")
_T = TypeVar("_T")

#: The instrumentation scope of the spans and metrics.
SCOPE: Final = "fastapi_mysqlpool"
#: db.client.operation.duration's buckets, as the conventions advise.
DURATION_BUCKETS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
#: The longest text a slow-statement warning shows.
LOGGED_TEXT_MAX: Final = 1000

#: db.query.text shows at most this much of a template (a statement built
#: without parameters can be megabytes); longer ones are not remembered.
TEXT_MAX: Final = 4096
_CACHE_MAX = 2048

# The operation is the statement's first word, after comments and "(".
_LEADING = re.compile(
    r"(?:\s+|\(|/\*.*?\*/|(?:--\s|#)[^\n]*(?:\n|$))*([A-Za-z]+)", re.DOTALL
)
_NAME = r"(?:`[^`]+`|[A-Za-z0-9_$]+)(?:\s*\.\s*(?:`[^`]+`|[A-Za-z0-9_$]+))?"
# Where the one table of a plain statement is named.
_TABLE = {
    "SELECT": re.compile(rf"\bFROM\s+({_NAME})", re.IGNORECASE),
    "DELETE": re.compile(rf"\bFROM\s+({_NAME})", re.IGNORECASE),
    "INSERT": re.compile(rf"\bINTO\s+({_NAME})", re.IGNORECASE),
    "REPLACE": re.compile(rf"\bINTO\s+({_NAME})", re.IGNORECASE),
    "UPDATE": re.compile(
        rf"^\s*UPDATE\s+(?:LOW_PRIORITY\s+)?(?:IGNORE\s+)?({_NAME})\s+SET\b",
        re.IGNORECASE,
    ),
}
# Any of these and the statement is not plain: several tables, or a subquery.
_NOT_PLAIN = re.compile(r"\bJOIN\b|\bSELECT\b.*\bSELECT\b|\bUNION\b", re.I | re.S)
_AFTER_TABLE = re.compile(r"\s*(?:$|;|\(|\)|[A-Za-z])")


class Described:
    """A template's name and attributes (the same each time it runs)."""

    __slots__ = ("attributes", "name", "text")

    def __init__(self, text: str, operation: str, collection: str | None) -> None:
        self.text = text
        self.name = operation if collection is None else f"{operation} {collection}"
        self.attributes: dict[str, Any] = {}
        if operation:
            self.attributes["db.operation.name"] = operation
        if collection is not None:
            self.attributes["db.collection.name"] = collection


_described: dict[str | bytes, Described] = {}


def describe(template: str | bytes) -> Described:
    """*template*'s text, operation and table, remembered (templates are few:
    the literals in the application's code)."""
    found = _described.get(template)
    if found is None:
        found = _describe(template)
        if len(template) <= TEXT_MAX:
            if len(_described) >= _CACHE_MAX:
                _described.clear()
            _described[template] = found
    return found


def _describe(template: str | bytes) -> Described:
    if isinstance(template, (bytes, bytearray)):
        text = bytes(template[: TEXT_MAX * 4]).decode("utf-8", "replace")
    else:
        text = template
    text = text[:TEXT_MAX]
    match = _LEADING.match(text)
    operation = match.group(1).upper() if match else ""
    collection = None
    pattern = _TABLE.get(operation)
    if pattern is not None and not _NOT_PLAIN.search(text):
        table = pattern.search(text)
        if table is not None:
            rest = text[table.end() :]
            # "FROM a, b" names two tables.
            if _AFTER_TABLE.match(rest) and not rest.lstrip().startswith(","):
                collection = re.sub(r"\s*\.\s*", ".", table.group(1)).replace("`", "")
    return Described(text, operation, collection)


def batch_of(described: Described, size: int) -> Described:
    """*described* as a batch of *size* statements (``executemany``): named
    ``BATCH {operation}``, ``db.operation.batch.size`` set, as the conventions
    say, when it holds two or more."""
    if size == 1:
        return described
    batch = Described(described.text, "", None)
    operation = described.attributes.get("db.operation.name")
    batch.name = f"BATCH {described.name}" if operation else "BATCH"
    batch.attributes = {**described.attributes, "db.operation.batch.size": size}
    batch.attributes["db.operation.name"] = (
        f"BATCH {operation}" if operation else "BATCH"
    )
    return batch


def connection_attributes(
    conn: Connection, config: Mapping[str, Any]
) -> dict[str, Any]:
    """What every statement on *conn* reports: the system (from the server's
    version), the database, the server's address and port."""
    info = str(conn.get_server_info())
    attributes: dict[str, Any] = {
        "db.system.name": "mariadb" if "mariadb" in info.lower() else "mysql"
    }
    database = config.get("database", config.get("db"))
    if database:
        attributes["db.namespace"] = str(database)
    socket = config.get("unix_socket")
    if socket:
        attributes["server.address"] = str(socket)
    else:
        attributes["server.address"] = str(config.get("host", "localhost"))
        attributes["server.port"] = int(config.get("port", 3306))
    return attributes


def error_attributes(exc: BaseException) -> dict[str, str]:
    """``error.type`` (the exception's class) and ``db.response.status_code``
    (the MySQL error number), never the message."""
    kind = type(exc)
    attributes = {"error.type": f"{kind.__module__}.{kind.__qualname__}"}
    errno = errno_of(exc)
    if errno:
        attributes["db.response.status_code"] = str(errno)
    return attributes


class _Providers:
    """What the global providers give, made again when one is set (tests may
    set them anew): the tracer and the instruments recorded on statements."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tracer_provider: Any = None
        self.tracer: Any = None
        self.meter_provider: Any = None
        self.duration: Any = None
        self.wait_time: Any = None

    def tracer_of(self, provider: Any) -> Any:
        if provider is not self.tracer_provider:
            with self.lock:
                self.tracer = provider.get_tracer(SCOPE)
                self.tracer_provider = provider
        return self.tracer

    def meters_of(self, provider: Any) -> tuple[Any, Any]:
        """(db.client.operation.duration, db.client.connection.wait_time)."""
        if provider is not self.meter_provider:
            with self.lock:
                if provider is not self.meter_provider:
                    self._make_instruments(provider.get_meter(SCOPE))
                    self.meter_provider = provider
        return self.duration, self.wait_time

    def _make_instruments(self, meter: Any) -> None:
        self.duration = meter.create_histogram(
            "db.client.operation.duration",
            unit="s",
            description="Duration of database client operations.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.wait_time = meter.create_histogram(
            "db.client.connection.wait_time",
            unit="s",
            description="The time it took to obtain an open connection from the pool.",
        )
        for make, name, unit, description, observe in _POOL_INSTRUMENTS:
            getattr(meter, make)(
                name, callbacks=[observe], unit=unit, description=description
            )


_providers = _Providers()
#: The pools whose instruments are observed (see :meth:`Telemetry.watch`).
_watched: weakref.WeakSet[Telemetry] = weakref.WeakSet()


class Telemetry:
    """A pool's telemetry: the spans, durations and slow-statement warnings
    of its statements, and its instruments (see the module's docstring)."""

    __slots__ = (
        "__weakref__",
        "_attributes",
        "_stats",
        "min_idle",
        "otel",
        "slow_query",
    )

    def __init__(self, settings: Settings) -> None:
        self.otel = settings.telemetry and OTEL_INSTALLED
        self.slow_query = settings.slow_query
        self.min_idle = settings.size
        self._attributes = {"db.client.connection.pool.name": settings.name}
        self._stats: Callable[[], Callable[[], PoolStats] | None] | None = None
        if self.otel:
            # Loads a provider named by OTEL_PYTHON_{TRACER,METER}_PROVIDER,
            # if any, so that the globals read in start() are set.
            _trace_globals.get_tracer_provider()
            _metrics_globals.get_meter_provider()

    @classmethod
    def of(cls, settings: Settings) -> Telemetry | None:
        """The pool's telemetry; None if there is nothing to record."""
        if not (settings.telemetry and OTEL_INSTALLED) and settings.slow_query is None:
            return None
        return cls(settings)

    def bind(self, conn: Any, config: Mapping[str, Any]) -> None:
        """Make a new connection's statements report here."""
        conn.telemetry_attributes = connection_attributes(conn, config)
        conn.telemetry = self

    # -- statements ------------------------------------------------------------

    def start(self, conn: Any, template: str | bytes, batch: int = 1) -> Timing | None:
        """A statement of *template* is about to be sent on *conn*; None if
        nothing records it."""
        tracer = duration = None
        if self.otel:
            tracer_provider = _trace_globals._TRACER_PROVIDER
            meter_provider = _metrics_globals._METER_PROVIDER
            if tracer_provider is not None:
                tracer = _providers.tracer_of(tracer_provider)
            if meter_provider is not None:
                duration = _providers.meters_of(meter_provider)[0]
        if tracer is None and duration is None and self.slow_query is None:
            return None
        described = describe(template)
        if batch != 1:
            described = batch_of(described, batch)
        return Timing(self, conn.telemetry_attributes, described, tracer, duration)

    def timed(
        self,
        conn: Any,
        template: str | bytes,
        call: Callable[..., Any],
        *args: Any,
        batch: int = 1,
    ) -> Any:
        """``call(*args)``, a blocking statement of *template*, timed."""
        timing = self.start(conn, template, batch)
        if timing is None:
            return call(*args)
        try:
            result = call(*args)
        except BaseException as exc:
            timing.end(exc)
            raise
        timing.end(None)
        return result

    async def atimed(
        self,
        conn: Any,
        template: str | bytes,
        work: Coroutine[Any, Any, _T],
        batch: int = 1,
    ) -> _T:
        """``await work``, statements of *template*, timed as one."""
        timing = self.start(conn, template, batch)
        if timing is None:
            return await work
        try:
            result = await work
        except BaseException as exc:
            timing.end(exc)
            raise
        timing.end(None)
        return result

    # -- the pool's instruments ----------------------------------------------------

    def waited(self, started: float) -> None:
        """A caller got the connection it asked for at *started* (monotonic
        seconds): ``db.client.connection.wait_time``."""
        if self.otel:
            provider = _metrics_globals._METER_PROVIDER
            if provider is not None:
                seconds = time.monotonic() - started
                _providers.meters_of(provider)[1].record(seconds, self._attributes)

    def watch(self, stats: Callable[[], PoolStats]) -> None:
        """Observe *stats* (a bound ``Pool.stats``) when metrics are collected,
        until :meth:`unwatch` or until the pool is gone."""
        if not self.otel:
            return
        self._stats = weakref.WeakMethod(stats)
        _watched.add(self)
        provider = _metrics_globals._METER_PROVIDER
        if provider is not None:  # the observable instruments, made now
            _providers.meters_of(provider)

    def unwatch(self) -> None:
        _watched.discard(self)

    def snapshot(self) -> tuple[PoolStats, dict[str, str]] | None:
        stats = None if self._stats is None else self._stats()
        return None if stats is None else (stats(), self._attributes)


def timed(conn: Any, template: str, call: Callable[[Any], None]) -> None:
    """``call(conn)`` (a COMMIT, a ROLLBACK), timed by *conn*'s telemetry
    if it has one."""
    telemetry = conn.telemetry
    if telemetry is None:
        call(conn)
    else:
        telemetry.timed(conn, template, call, conn)


class Timing:
    """One statement under way (see :meth:`Telemetry.start`)."""

    __slots__ = (
        "_attributes",
        "_described",
        "_duration",
        "_span",
        "_started",
        "_telemetry",
    )

    def __init__(
        self,
        telemetry: Telemetry,
        attributes: dict[str, Any],
        described: Described,
        tracer: Any,
        duration: Any,
    ) -> None:
        self._telemetry = telemetry
        self._attributes = attributes
        self._described = described
        self._duration = duration
        self._span = None
        if tracer is not None:
            self._span = tracer.start_span(
                described.name or attributes["db.system.name"],
                kind=SpanKind.CLIENT,
                attributes={
                    **attributes,
                    **described.attributes,
                    "db.query.text": described.text,
                },
            )
        self._started = time.perf_counter()

    def end(self, exc: BaseException | None) -> None:
        """The answer was read (*exc*: or this error raised instead)."""
        seconds = time.perf_counter() - self._started
        described = self._described
        errors = None if exc is None else error_attributes(exc)
        span = self._span
        if span is not None:
            if errors is not None:
                span.set_attributes(errors)
                # No description: MySQL's messages may quote values.
                span.set_status(Status(StatusCode.ERROR))
            span.end()
        if self._duration is not None:
            attributes = {**self._attributes, **described.attributes}
            if errors is not None:
                attributes.update(errors)
            self._duration.record(seconds, attributes)
        slow_query = self._telemetry.slow_query
        if slow_query is not None and seconds > slow_query:
            text = described.text
            if len(text) > LOGGED_TEXT_MAX:
                text = text[:LOGGED_TEXT_MAX] + "..."
            logger.warning(
                "slow statement: %.3f s (slow_query=%g s)%s: %s",
                seconds,
                slow_query,
                "" if errors is None else f", failed with {errors['error.type']}",
                text,
            )


# -- the pool's observable instruments, read from stats() when collected -------

_Reading = Iterable[tuple[float, dict[str, str]]]


def _observe(read: Callable[[Telemetry, PoolStats], _Reading]) -> Callable[[Any], Any]:
    """An instrument's callback: *read* of each watched pool's stats()."""

    def callback(options: CallbackOptions) -> list[Observation]:
        observations = []
        for telemetry in list(_watched):
            got = telemetry.snapshot()
            if got is not None:
                stats, attributes = got
                for value, extra in read(telemetry, stats):
                    observations.append(Observation(value, {**attributes, **extra}))
        return observations

    return callback


_IDLE: Final = {"db.client.connection.state": "idle"}
_USED: Final = {"db.client.connection.state": "used"}
_NONE: Final[dict[str, str]] = {}

# (the meter's method, name, unit, description, callback)
_POOL_INSTRUMENTS: Final = (
    (
        "create_observable_up_down_counter",
        "db.client.connection.count",
        "{connection}",
        "The number of connections that are currently in state described by "
        "the state attribute.",
        _observe(lambda _, s: ((s.idle, _IDLE), (s.in_use, _USED))),
    ),
    (
        "create_observable_up_down_counter",
        "db.client.connection.max",
        "{connection}",
        "The maximum number of open connections allowed.",
        _observe(lambda _, s: ((s.max_size, _NONE),)),
    ),
    (
        "create_observable_up_down_counter",
        "db.client.connection.idle.min",
        "{connection}",
        "The minimum number of idle open connections allowed.",
        _observe(lambda t, _: ((t.min_idle, _NONE),)),
    ),
    (
        "create_observable_up_down_counter",
        "db.client.connection.pending_requests",
        "{request}",
        "The number of current pending requests for an open connection.",
        _observe(lambda _, s: ((s.waiting, _NONE),)),
    ),
    (
        "create_observable_counter",
        "db.client.connection.timeouts",
        "{timeout}",
        "The number of connection timeouts that have occurred trying to obtain "
        "a connection from the pool.",
        _observe(lambda _, s: ((s.timeouts, _NONE),)),
    ),
)
