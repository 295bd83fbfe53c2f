"""What giving back a connection whose session changed costs: a reset
(COM_RESET_CONNECTION, then what connecting set up) or closing it and opening
another (what the pool did before), measured back to back.

    python -m benchmarks.reset_vs_reconnect [--url mysql://root@127.0.0.1:3306/test]

Both happen off the request's path (the pool's housekeeper resets; a
reconnection was paid by the next borrower), so this is work and latency for
the next borrower when the pool is full, not request time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

from fastapi_mysqlpool import Pool
from fastapi_mysqlpool._config import make_config
from fastapi_mysqlpool._connection import PooledConnection

ROUNDS = 15
PER_ROUND = 40


def measure(url: str, init_command: str | None) -> dict[str, float]:
    config = dict(make_config(url))
    if init_command:
        config["init_command"] = init_command
    pool = Pool(config, size=0)
    conn = pool.connect()

    def reset() -> None:
        conn.query(b"SET @x = 1")
        conn.store_result()
        started = time.perf_counter_ns()
        if not conn.reset_session():
            raise RuntimeError("reset failed")
        times.append(time.perf_counter_ns() - started)

    def reconnect() -> None:
        nonlocal other
        started = time.perf_counter_ns()
        other.close()
        other = pool.connect()
        times.append(time.perf_counter_ns() - started)

    other: PooledConnection = pool.connect()
    results: dict[str, list[float]] = {"reset": [], "reconnect": []}
    runs: dict[str, Callable[[], None]] = {"reset": reset, "reconnect": reconnect}
    for _ in range(ROUNDS):  # interleaved: the machine's load drifts
        for name, run in runs.items():
            times: list[int] = []
            for _ in range(PER_ROUND):
                run()
            results[name].append(statistics.median(times) / 1000)
    conn.close()
    other.close()
    pool.close()
    return {name: statistics.median(values) for name, values in results.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="mysql://root@127.0.0.1:3306/test")
    args = parser.parse_args(argv)
    print("| cfg | reset (µs) | close + connect (µs) | ratio |\n|---|---|---|---|")
    for label, init in (("default", None), ("with init_command", "SET @app = 1")):
        result = measure(args.url, init)
        ratio = result["reconnect"] / result["reset"]
        print(
            f"| {label} | {result['reset']:.0f} | {result['reconnect']:.0f} "
            f"| {ratio:.1f}x |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
