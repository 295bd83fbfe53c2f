"""Instructions per request, counted by callgrind: a measure the noise of a
shared machine does not move.

    python -m benchmarks.instructions                       # lib_async, asyncmy
    python -m benchmarks.instructions --variants lib_async,nodep,asyncmy,asyncmy_dep
    python -m benchmarks.instructions --variants seed,lib_sync --endpoint list

Each variant's app is driven in-process (ASGI calls, no HTTP server, so the
count is the app's own work: FastAPI, the library or driver, the C client),
32 requests at a time, under `valgrind --tool=callgrind`, twice: with a small
and a larger number of requests. The difference of the two totals divided by
the difference of the request counts leaves out start-up, the pool's opening
and shutdown. `--endpoint item` (default) counts `GET /item/{id}`, `list`
counts `GET /items?limit=100&after={id}` (100 rows as dicts). Sync variants
(`seed`, `lib_sync`...) count too: their routes run in the thread pool as
under uvicorn. Kernel time (syscalls) is not counted: wrk runs (`run.py`) stay
the measure of speed; this one tells where instructions go, exactly. Needs
valgrind (`apt-get install valgrind`); a variant takes about a minute.

Two diagnostic variants help split the difference between `lib_async` and
`asyncmy`: `nodep` (the library's async cursor taken in the route with
`async with get_pool(request).cursor()`, no dependency) and `asyncmy_dep`
(`asyncmy` with a trivial `Depends()` added: what FastAPI's dependency
injection costs by itself).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import MutableMapping, Sequence
from typing import Any

from benchmarks.apps import ENDPOINTS, VARIANTS, build_app
from benchmarks.db import database_url, ensure_table, parse_url

Message = MutableMapping[str, Any]  # an ASGI message, as Starlette types it
CONCURRENCY = 32
WARMUP = 20 * CONCURRENCY
SMALL, LARGE = 640, 3840


def target(endpoint: str, i: int) -> tuple[str, bytes]:
    """The path and query string of request *i* to *endpoint*."""
    if endpoint == "list":
        return "/items", f"limit=100&after={i % 9901}".encode()
    return f"/item/{i % 10000 + 1}", b""


async def drive(variant: str, url: str, requests: int, endpoint: str) -> None:
    """Start the app's lifespan, serve WARMUP then *requests* requests."""
    app = build_app(variant, url)
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[Message] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    lifespan = asyncio.create_task(app(scope, to_app.get, from_app.put))
    await to_app.put({"type": "lifespan.startup"})
    message = await from_app.get()
    if message["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"{variant}: startup failed: {message}")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def one(i: int) -> None:
        path, query = target(endpoint, i)
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": b"",
            "query_string": query,
            "root_path": "",
            "headers": [(b"host", b"bench")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        await app(scope, receive, send)
        if sent[0]["status"] != 200:
            raise RuntimeError(f"{variant}: {sent}")

    async def batch(count: int) -> None:
        async def worker(k: int) -> None:
            for j in range(count // CONCURRENCY):
                await one(k * count + j)

        await asyncio.gather(*(worker(k) for k in range(CONCURRENCY)))

    await batch(WARMUP)
    await batch(requests)
    await to_app.put({"type": "lifespan.shutdown"})
    await from_app.get()
    await lifespan


def count(variant: str, url: str, requests: int, endpoint: str) -> int:
    """callgrind's total of instructions for one drive() in a subprocess."""
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "benchmarks.instructions",
            "--drive",
            variant,
            "--url",
            url,
            "--requests",
            str(requests),
            "--endpoint",
            endpoint,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode != 0 or match is None:
        raise RuntimeError(f"{variant}: callgrind failed:\n{out.stderr[-2000:]}")
    return int(match.group(1))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="lib_async,asyncmy")
    parser.add_argument("--url", default=None, help="mysql://user:pass@host:port/db")
    parser.add_argument(
        "--endpoint",
        choices=tuple(ENDPOINTS),
        default="item",
        help="item: GET /item/{id} (default); list: GET /items?limit=100",
    )
    parser.add_argument("--drive", help=argparse.SUPPRESS)  # the counted child
    parser.add_argument("--requests", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.drive:
        asyncio.run(drive(args.drive, args.url, args.requests, args.endpoint))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind not found: apt-get install valgrind", file=sys.stderr)
        return 2
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants: {unknown} (known: {sorted(VARIANTS)})")
    with database_url(args.url) as url:
        ensure_table(parse_url(url))
        route = "GET /items?limit=100" if args.endpoint == "list" else "GET /item/{id}"
        print(f"| variant | instructions per request, {route} |\n|---|---|")
        for variant in variants:
            print(f"# {variant} ...", file=sys.stderr, flush=True)
            small = count(variant, url, SMALL, args.endpoint)
            large = count(variant, url, LARGE, args.endpoint)
            per_request = (large - small) / (LARGE - SMALL)
            print(f"| `{variant}` | {per_request:,.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")  # same dict layouts each run
    sys.exit(main())
