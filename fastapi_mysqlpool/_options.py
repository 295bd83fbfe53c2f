"""The pool's options: their defaults, their one description, their checks.

:class:`Pool` and :func:`mysql_pool_lifespan` take them as keywords typed
by :class:`PoolOptions` (``Unpack``), so editors show the names; both check
them through :meth:`Settings.of`, which applies the defaults.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, TypedDict

import anyio.to_thread

DEFAULT_SIZE: Final = 10
DEFAULT_TIMEOUT: Final = 5.0
DEFAULT_ACQUIRE_TIMEOUT: Final = 3.0
DEFAULT_MAX_LIFETIME: Final = 30 * 60.0
DEFAULT_MAX_IDLE: Final = 10 * 60.0
DEFAULT_SHUTDOWN_TIMEOUT: Final = 10.0
DEFAULT_NAME: Final = "default"
#: anyio's default number of worker threads, the ceiling on concurrent sync routes.
DEFAULT_THREAD_TOKENS: Final = 40


class PoolLimits(TypedDict, total=False):
    """:class:`Pool`'s keyword-only options (this library's additions to
    mysqlclient-pool's)."""

    #: The most connections open at once; callers beyond it queue (FIFO).
    #: Default: as many as the worker threads of sync routes (anyio's limit,
    #: 40 unless the app changes it), and at least ``size``.
    max_size: int | None
    #: Seconds a caller may wait for a connection before :class:`PoolTimeout`
    #: (default 3).
    acquire_timeout: float
    #: Seconds after which a connection is replaced (jittered by up to 2.5%),
    #: default 30 minutes; None: never.
    max_lifetime: float | None
    #: Seconds an idle connection beyond ``size`` is kept (default 10 minutes).
    max_idle: float
    #: Seconds a connection may be held before one WARNING names the route
    #: (or the code) that borrowed it; counted in ``stats().leaks``. Default
    #: None: not watched, at no cost.
    leak_timeout: float | None
    #: ``configure(connection)``, run on each new connection before it is
    #: lent (and again after the pool resets a changed session, which sets
    #: session variables back to the server's defaults): ``SET time_zone``...
    #: If it raises, the connection is closed and counted as an error.
    configure: Callable[[Any], object] | None
    #: The pool's name in metrics (``pool`` label, ``db.client.connection.pool.name``);
    #: default ``"default"``.
    name: str
    #: OpenTelemetry spans and metrics, on when opentelemetry-api is installed
    #: (default True; the global providers decide where they go).
    telemetry: bool
    #: Seconds: a statement slower than this is logged as a WARNING with its
    #: duration and text (placeholders, never values); None (default): off.
    slow_query: float | None
    #: With several hosts: ``"primary"`` (default), connect only to a host
    #: that takes writes, the first in the configured order; ``"any"``,
    #: spread over every healthy host (Galera, read-only clusters).
    target: Literal["primary", "any"]


class PoolOptions(PoolLimits, total=False):
    """Every option of a pool (:func:`mysql_pool_lifespan` takes them all)."""

    #: Connections kept open: 10, or ``max_size`` if lower.
    size: int | None
    #: Seconds to retry opening ``size`` connections at startup before
    #: :class:`PoolStartupError` (default 5).
    timeout: float
    #: Open ``size`` connections at startup (default), else in the background.
    fillup: bool


_NAMES: Final = PoolOptions.__optional_keys__


@dataclass(frozen=True)
class Settings:
    """Checked options, the defaults applied (but ``max_size``'s: None says
    it follows the worker-thread limit, see :func:`default_max_size`)."""

    size: int
    timeout: float
    fillup: bool
    max_size: int | None
    acquire_timeout: float
    max_lifetime: float | None
    max_idle: float
    leak_timeout: float | None = None
    configure: Callable[[Any], object] | None = None
    name: str = DEFAULT_NAME
    telemetry: bool = True
    slow_query: float | None = None
    target: str = "primary"

    @classmethod
    def of(cls, options: PoolOptions) -> Settings:
        """Raise ``TypeError`` for an unknown option, ``ValueError`` for one
        out of range or of the wrong type.

        Counts are ints (a bool is not one); times are real numbers, never
        NaN, which compares false with everything and would disable a limit.
        """
        unknown = options.keys() - _NAMES
        if unknown:
            raise TypeError(f"unexpected keyword argument {min(unknown)!r}")
        size = options.get("size")
        max_size = options.get("max_size")
        timeout = options.get("timeout", DEFAULT_TIMEOUT)
        acquire_timeout = options.get("acquire_timeout", DEFAULT_ACQUIRE_TIMEOUT)
        max_lifetime = options.get("max_lifetime", DEFAULT_MAX_LIFETIME)
        max_idle = options.get("max_idle", DEFAULT_MAX_IDLE)
        _check_count("size", size, 0)
        _check_count("max_size", max_size, 1)
        if max_size is not None and size is not None and max_size < size:
            raise ValueError(f"max_size ({max_size}) must be >= size ({size})")
        _check_time("timeout", timeout)
        if not 0 <= timeout < math.inf:
            raise ValueError(f"timeout must be >= 0 and finite, got {timeout}")
        _check_time("acquire_timeout", acquire_timeout)
        if not 0 < acquire_timeout < math.inf:
            raise ValueError(
                f"acquire_timeout must be > 0 and finite, got {acquire_timeout}"
            )
        # Infinite lifetimes and idle times make sense: never retire.
        if max_lifetime is not None:
            _check_time("max_lifetime", max_lifetime)
            if max_lifetime <= 0:
                raise ValueError(
                    f"max_lifetime must be > 0 or None, got {max_lifetime}"
                )
        _check_time("max_idle", max_idle)
        if max_idle <= 0:
            raise ValueError(f"max_idle must be > 0, got {max_idle}")
        leak_timeout = options.get("leak_timeout")
        if leak_timeout is not None:
            _check_time("leak_timeout", leak_timeout)
            if not 0 < leak_timeout < math.inf:
                raise ValueError(
                    f"leak_timeout must be > 0 and finite, or None, got {leak_timeout}"
                )
        configure = options.get("configure")
        if configure is not None and not callable(configure):
            raise ValueError(f"configure must be callable, got {configure!r}")
        name = options.get("name", DEFAULT_NAME)
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        telemetry = options.get("telemetry", True)
        if not isinstance(telemetry, bool):
            raise ValueError(f"telemetry must be a bool, got {telemetry!r}")
        slow_query = options.get("slow_query")
        if slow_query is not None:
            _check_time("slow_query", slow_query)
            if not 0 <= slow_query < math.inf:
                raise ValueError(
                    f"slow_query must be >= 0 and finite, or None, got {slow_query}"
                )
        target = options.get("target", "primary")
        if target not in ("primary", "any"):
            raise ValueError(f"target must be 'primary' or 'any', got {target!r}")
        if size is None:
            size = DEFAULT_SIZE if max_size is None else min(DEFAULT_SIZE, max_size)
        return cls(
            size=size,
            timeout=timeout,
            fillup=options.get("fillup", True),
            max_size=max_size,
            acquire_timeout=acquire_timeout,
            max_lifetime=max_lifetime,
            max_idle=max_idle,
            leak_timeout=leak_timeout,
            configure=configure,
            name=name,
            telemetry=telemetry,
            slow_query=slow_query,
            target=target,
        )


def check_shutdown_timeout(shutdown_timeout: float) -> None:
    if shutdown_timeout < 0:
        raise ValueError(f"shutdown_timeout must be >= 0, got {shutdown_timeout}")


def default_max_size(size: int) -> int:
    """At least *size*; by default as many as the worker threads of sync routes."""
    try:
        tokens = int(anyio.to_thread.current_default_thread_limiter().total_tokens)
    except Exception:  # no event loop running: anyio's default
        tokens = DEFAULT_THREAD_TOKENS
    return max(size, tokens)


def _check_count(name: str, value: object, minimum: int) -> None:
    """None (the default) or an int, not a bool, not a float."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_time(name: str, value: object) -> None:
    """Seconds: an int or a float, not a bool, not NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    if math.isnan(value):
        raise ValueError(f"{name} must be a number of seconds, got nan")
