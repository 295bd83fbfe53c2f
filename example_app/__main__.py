"""``python -m example_app [--host HOST] [--port PORT]``: run the example app.

The database is $DATABASE_URL. Without it, a throwaway MariaDB is started
first (``fastapi_mysqlpool.testing.TemporaryServer``: a private data directory,
socket and free port), and removed when the app stops: Ctrl-C or ``kill``.
``EXAMPLE_HOST`` and ``EXAMPLE_PORT`` are the defaults of the options.
"""

import argparse
import logging
import os
import signal
from contextlib import ExitStack
from types import FrameType

import uvicorn

from fastapi_mysqlpool.testing import TemporaryServer

from .main import create_app, pool_options_from_env


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m example_app",
        description="Run the fastapi-mysqlpool example on $DATABASE_URL, "
        "or on a throwaway MariaDB if it is not set.",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("EXAMPLE_HOST", "127.0.0.1"),
        help="default: $EXAMPLE_HOST or %(default)s",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("EXAMPLE_PORT", "8000")),
        help="default: $EXAMPLE_PORT or %(default)s",
    )
    args = parser.parse_args(argv)
    # The pool logs when it opens and closes, and every database error in full.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:  %(message)s")
    # Stop by unwinding, so the throwaway server is removed: uvicorn re-raises
    # the signal that stopped it, and SIGTERM's default action would kill the
    # process on the spot. SIGINT too: a shell script's `&` ignores it.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    try:
        with ExitStack() as cleanup:
            url = os.environ.get("DATABASE_URL") or _start_database(cleanup)
            app = create_app(url, **pool_options_from_env())
            print(f"Docs: http://{args.host}:{args.port}/docs", flush=True)
            uvicorn.run(app, host=args.host, port=args.port)
    except KeyboardInterrupt:
        pass  # uvicorn shut the app down; leaving the block removed the server


def _start_database(cleanup: ExitStack) -> str:
    print("DATABASE_URL is not set: starting a throwaway MariaDB...", flush=True)
    server = cleanup.enter_context(TemporaryServer())
    print(f"Database: {server.url}", flush=True)
    print(f"Data dir: {server.base_dir} (removed on exit)", flush=True)
    return server.url


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
