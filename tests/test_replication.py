"""Judging a replica by its SHOW REPLICA STATUS row."""

from __future__ import annotations

from typing import Any

import pytest

from fastapi_mysqlpool._replication import judge

RUNNING = {
    "Slave_IO_Running": "Yes",
    "Slave_SQL_Running": "Yes",
    "Seconds_Behind_Master": 0,
    "Last_IO_Errno": 0,
    "Last_SQL_Errno": 0,
}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, ("healthy", 0.0)),
        ({"Seconds_Behind_Master": 5}, ("healthy", 5.0)),
        ({"Seconds_Behind_Master": 6}, ("lagging", 6.0)),
        ({"Seconds_Behind_Master": None}, ("lagging", None)),
        ({"Slave_SQL_Running": "No", "Seconds_Behind_Master": None}, ("stopped", None)),
        ({"Slave_IO_Running": "No"}, ("stopped", 0.0)),
        ({"Slave_SQL_Running": "No", "Last_SQL_Errno": 1062}, ("broken", 0.0)),
        ({"Slave_IO_Running": "Connecting", "Last_IO_Errno": 2003}, ("broken", 0.0)),
    ],
)
def test_judge(changes: dict[str, Any], expected: tuple[str, float | None]) -> None:
    assert judge({**RUNNING, **changes}, max_lag=5) == expected


def test_mysql_names_and_no_replication() -> None:
    mysql = {
        "Replica_IO_Running": "Yes",
        "Replica_SQL_Running": "Yes",
        "Seconds_Behind_Source": 9,
    }
    assert judge(mysql, max_lag=5) == ("lagging", 9.0)
    assert judge(None, max_lag=5) == ("stopped", None)
