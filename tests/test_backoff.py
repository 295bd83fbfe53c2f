"""The backoff every retry waits by (_backoff): pure, no server."""

from __future__ import annotations

from fastapi_mysqlpool._backoff import Backoff


def test_delays_double_from_first_up_to_longest() -> None:
    backoff = Backoff(0.05, 0.5)
    delays = [backoff.next_delay() for _ in range(6)]
    assert delays == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]


def test_a_success_starts_again_from_first() -> None:
    backoff = Backoff(0.1, 2.0)
    assert backoff.failed(10.0) == 10.1
    assert backoff.failed(20.0) == 20.2
    assert backoff.waiting(20.1)
    assert not backoff.waiting(20.2)
    backoff.succeeded()
    assert (backoff.delay, backoff.until) == (0.0, 0.0)
    assert not backoff.waiting(0.0)
    assert backoff.failed(30.0) == 30.1


def test_jitter_only_shortens_a_delay() -> None:
    backoff = Backoff(1.0, 1.0, jitter=0.2)
    delays = [backoff.next_delay() for _ in range(200)]
    assert all(0.8 <= delay <= 1.0 for delay in delays)
    assert len(set(delays)) > 1
    assert backoff.delay == 1.0  # the doubling ignores the jitter
