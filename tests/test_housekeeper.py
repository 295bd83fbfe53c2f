"""The housekeeper's scheduling (_housekeeper): pure, no server (as
psycopg_pool's test_sched.py)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from fastapi_mysqlpool._connection import PooledConnection
from fastapi_mysqlpool._housekeeper import (
    KEEPALIVE_INTERVAL,
    MAX_SLEEP,
    keepalive_after,
    next_deadline,
    sort_idle,
)


class _Idle:
    """What the scheduling reads of an idle connection (stale() is
    PooledConnection's own)."""

    def __init__(
        self,
        name: str,
        *,
        returned_at: float = 0.0,
        alive_at: float | None = None,
        expires_at: float = math.inf,
        wait_timeout: float = 28800.0,
        dead: bool = False,
    ) -> None:
        self.name = name
        self.returned_at = returned_at
        self.alive_at = returned_at if alive_at is None else alive_at
        self.expires_at = expires_at
        self.wait_timeout = wait_timeout
        self.dead = dead

    def looks_dead(self) -> bool:
        return self.dead

    def stale(self, now: float) -> bool:
        return PooledConnection.stale(self, now)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return self.name


def _names(conns: list[Any]) -> list[str]:
    return [conn.name for conn in conns]


def test_keepalive_before_the_server_would_drop_the_session() -> None:
    assert keepalive_after(_Idle("a")) == KEEPALIVE_INTERVAL  # type: ignore[arg-type]
    assert keepalive_after(_Idle("b", wait_timeout=60)) == 30  # type: ignore[arg-type]


def test_sort_idle_retires_dead_and_stale_pings_the_silent_keeps_the_rest() -> None:
    idle = [
        _Idle("dead", dead=True),
        _Idle("expired", expires_at=99.0),
        _Idle("dropped", wait_timeout=50.0),  # silent for 100 s
        _Idle("silent", alive_at=100.0 - KEEPALIVE_INTERVAL),
        _Idle("fresh", alive_at=99.0),
    ]
    sorted_ = sort_idle(idle, 100.0, surplus=0, max_idle=600.0)  # type: ignore[arg-type]
    assert _names(sorted_.retire) == ["dead", "expired", "dropped"]
    assert sorted_.dead == 1
    assert _names(sorted_.check) == ["silent"]
    assert _names(sorted_.keep) == ["fresh"]


def test_max_idle_retires_only_connections_beyond_size() -> None:
    # Pinged recently, but unused since 0: max_idle counts from the last caller.
    idle = [_Idle(name, returned_at=0.0, alive_at=990.0) for name in "abc"]
    sorted_ = sort_idle(idle, 1000.0, surplus=2, max_idle=600.0)  # type: ignore[arg-type]
    assert _names(sorted_.retire) == ["a", "b"]  # longest unused first
    assert _names(sorted_.keep) == ["c"]
    none_beyond = sort_idle(idle, 1000.0, surplus=0, max_idle=600.0)  # type: ignore[arg-type]
    assert _names(none_beyond.keep) == ["a", "b", "c"]


def test_a_dead_connection_counts_against_the_surplus() -> None:
    idle = [_Idle("dead", dead=True), _Idle("old", returned_at=0.0, alive_at=990.0)]
    sorted_ = sort_idle(idle, 1000.0, surplus=1, max_idle=600.0)  # type: ignore[arg-type]
    assert _names(sorted_.retire) == ["dead"]
    assert _names(sorted_.keep) == ["old"]


def test_next_deadline_is_the_first_thing_due() -> None:
    now = 1000.0
    assert next_deadline([], now, refill_at=None, surplus=False, max_idle=600) == (
        now + MAX_SLEEP
    )
    assert next_deadline([], now, refill_at=now + 0.3, surplus=False, max_idle=600) == (
        now + 0.3
    )
    expiring = _Idle("e", returned_at=now, expires_at=now + 0.5)
    assert next_deadline(
        [expiring],  # type: ignore[list-item]
        now,
        refill_at=None,
        surplus=False,
        max_idle=600,
    ) == (now + 0.5)
    silent = _Idle("s", returned_at=now - KEEPALIVE_INTERVAL + 0.2)
    assert next_deadline(
        [silent],  # type: ignore[list-item]
        now,
        refill_at=None,
        surplus=False,
        max_idle=600,
    ) == pytest.approx(now + 0.2)


def test_max_idle_counts_for_the_deadline_only_with_a_surplus() -> None:
    now = 1000.0
    unused = _Idle("u", returned_at=now - 599.5, alive_at=now)
    with_surplus = next_deadline(
        [unused], now, refill_at=None, surplus=True, max_idle=600
    )  # type: ignore[list-item]
    without = next_deadline([unused], now, refill_at=None, surplus=False, max_idle=600)  # type: ignore[list-item]
    assert with_surplus == now + 0.5
    assert without == now + MAX_SLEEP


def test_next_deadline_never_spins() -> None:
    overdue = _Idle("o", returned_at=0.0, expires_at=1.0)
    now = 1000.0
    deadline = next_deadline([overdue], now, refill_at=0.0, surplus=True, max_idle=1)  # type: ignore[list-item]
    assert deadline == now + 0.01
