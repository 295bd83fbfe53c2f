"""Reads over a primary and two replicas against the primary alone.

    python -m benchmarks.replicas --rounds 3 --duration 5

Starts a throwaway primary and two GTID replicas (tests/replication.py), fills
`bench_items` on the primary, waits for the replicas to have it, then runs
`benchmarks.run` with `lib_async_read` (read cursors on the primary alone) as
the baseline and `lib_async_replicas` (the same app with `replicas=`). Other
arguments go to `benchmarks.run`. On one machine the servers share its cores:
the point is what routing costs, not that reads scale.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from benchmarks import run
from benchmarks.db import ensure_table, parse_url
from tests.replication import Replication


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    with Replication() as servers:
        url = servers.primary.url
        ensure_table(parse_url(url))
        servers.wait_synced(timeout=60)
        os.environ["BENCH_REPLICA_URLS"] = ",".join(r.url for r in servers.replicas)
        return run.main(
            [
                "--variants",
                "lib_async_read,lib_async_replicas",
                "--baseline",
                "lib_async_read",
                "--url",
                url,
                *args,
            ]
        )


if __name__ == "__main__":
    sys.exit(main())
