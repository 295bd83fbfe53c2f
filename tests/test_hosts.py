"""Choosing among several hosts (pure: no server), and state_of."""

from __future__ import annotations

from typing import Any

import pytest

from fastapi_mysqlpool._config import ConnectConfig
from fastapi_mysqlpool._hosts import (
    ANY,
    DOWN,
    HOST_BACKOFF_MAX,
    NOT_SYNCED,
    PRIMARY,
    READ_ONLY,
    UNKNOWN,
    UP,
    HostSet,
    state_after,
    state_of,
)


class Conn:
    """Stands for a connection (HostSet only counts and drops them)."""

    expires_at = 1e9


def hosts(target: str, *names: str) -> HostSet:
    return HostSet.of(
        [(f"{n}:3306", ConnectConfig(host=n, password="secret")) for n in names],
        target=target,
    )


def addresses(found: list[Any]) -> list[str]:
    return [host.address.split(":")[0] for host in found]


def test_primary_tries_hosts_in_order_known_writable_first() -> None:
    hs = hosts(PRIMARY, "a", "b", "c")
    assert addresses(hs.candidates(0.0)) == ["a", "b", "c"]
    a, b, _ = hs.hosts
    hs.checked(a, READ_ONLY, None, 0.0)
    hs.checked(b, UP, None, 0.0)
    # a waits out its backoff; b, known writable, before c, unknown.
    assert addresses(hs.candidates(0.0)) == ["b", "c"]
    assert [h.address for h in hs.current()] == ["b:3306"]
    # Once due, a is tried again: after b, in the configured order.
    assert addresses(hs.candidates(HOST_BACKOFF_MAX + 0.01)) == ["b", "a", "c"]


def test_any_spreads_over_fit_hosts_fewest_connections_first() -> None:
    hs = hosts(ANY, "a", "b", "c")
    a, b, _ = hs.hosts
    for host in hs.hosts:
        hs.checked(host, UP, None, 0.0)
    kept = []
    picks = []
    for _ in range(9):
        host = hs.candidates(0.0)[0]
        conn = Conn()
        kept.append(conn)
        hs.opened(host, UP, conn)
        picks.append(host.address[0])
    assert sorted(picks) == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    # A read-only host is fit for "any", a host not Synced is not.
    hs.checked(a, READ_ONLY, None, 0.0)
    hs.checked(b, NOT_SYNCED, None, 0.0)
    assert addresses(hs.candidates(0.0)) in (["a", "c"], ["c", "a"])
    assert {h.address[0] for h in hs.current()} == {"a", "c"}


def test_a_host_that_becomes_unfit_hands_back_its_connections_to_drop() -> None:
    hs = hosts(PRIMARY, "a", "b")
    a, _ = hs.hosts
    conns = [Conn(), Conn()]
    for conn in conns:
        hs.opened(a, UP, conn)
    recovered, dropped = hs.checked(a, READ_ONLY, None, 1.0)
    assert not recovered
    assert set(dropped) == set(conns)
    assert a.backoff.waiting(1.0)
    recovered, dropped = hs.checked(a, UP, None, 1.1)
    assert recovered
    assert dropped == []
    assert not a.backoff.waiting(1.1)  # a fit host is tried at once
    assert hs.checked(a, UP, None, 1.2) == (False, [])


def test_a_failing_host_backs_off_longer_up_to_the_cap() -> None:
    hs = hosts(PRIMARY, "a", "b")
    a, _ = hs.hosts
    dues = []
    for _ in range(10):
        hs.failed(a, DOWN, "(2003) refused", 0.0)
        dues.append(a.backoff.until)
    assert 0 < dues[0] < dues[3]
    assert max(dues) <= HOST_BACKOFF_MAX
    assert hs.all_waiting(0.0) is False  # b is still due
    hs.failed(hs.hosts[1], READ_ONLY, None, 0.0)
    assert hs.all_waiting(0.0)
    assert 0 < hs.next_due() <= HOST_BACKOFF_MAX


def test_stats_and_messages_name_hosts_never_the_password() -> None:
    hs = hosts(PRIMARY, "a", "b")
    a, b = hs.hosts
    hs.failed(a, DOWN, "(2003) Can't connect", 0.0)
    hs.checked(b, UP, None, 0.0)
    conn = Conn()
    hs.opened(b, UP, conn)
    stats = hs.stats()
    assert [(s.address, s.state, s.current, s.connections) for s in stats] == [
        ("a:3306", DOWN, False, 0),
        ("b:3306", UP, True, 1),
    ]
    assert hs.host_of(conn) is b
    assert hs.describe() == "a:3306 down ((2003) Can't connect), b:3306 up"
    assert "secret" not in repr(stats) + hs.describe() + repr(hs.hosts)


@pytest.mark.parametrize(
    ("read_only", "wsrep", "state"),
    [
        ("0", {}, UP),
        ("0", {"wsrep_ready": "OFF"}, UP),  # MariaDB, no Galera
        ("1", {}, READ_ONLY),
        ("0", {"wsrep_ready": "ON", "wsrep_local_state_comment": "Synced"}, UP),
        ("1", {"wsrep_ready": "ON", "wsrep_local_state_comment": "Synced"}, READ_ONLY),
        (
            "0",
            {"wsrep_ready": "ON", "wsrep_local_state_comment": "Donor/Desynced"},
            NOT_SYNCED,
        ),
        (
            "0",
            {"wsrep_ready": "OFF", "wsrep_local_state_comment": "Synced"},
            NOT_SYNCED,
        ),
        (
            "0",
            {"wsrep_ready": "ON", "wsrep_local_state_comment": "Joining"},
            NOT_SYNCED,
        ),
    ],
)
def test_state_of(read_only: str, wsrep: dict[str, str], state: str) -> None:
    assert state_of(read_only, wsrep) == state


def test_state_after_a_failed_check() -> None:
    import MySQLdb

    assert state_after(MySQLdb.OperationalError(2003, "Can't connect")) == DOWN
    not_ready = MySQLdb.OperationalError(
        1047, "WSREP has not yet prepared node for application use"
    )
    assert state_after(not_ready) == NOT_SYNCED
    assert UNKNOWN == "unknown"


def test_target_must_be_known() -> None:
    with pytest.raises(ValueError, match="target"):
        hosts("replica", "a", "b")


def test_any_spreads_from_the_start_before_hosts_are_checked() -> None:
    hs = hosts(ANY, "a", "b")
    kept = []
    for _ in range(4):
        host = hs.candidates(0.0)[0]
        kept.append(Conn())
        hs.opened(host, UP, kept[-1])
    assert [len(h.conns) for h in hs.hosts] == [2, 2]
