"""Soak benchmark (not a test): minutes of mixed load with periodic KILLs.

    python -m benchmarks.soak --duration 300
    python -m benchmarks.soak --duration 30 --kill-every 5 --json s.json --csv s.csv

An app on the library's sync path (`mysql_pool_lifespan` and `Cursor`) runs
under uvicorn in a subprocess, as a MySQL user of its own. `--concurrency`
asyncio clients send it a mix of reads, writes and requests that schedule an
`add_pool_task` write; every `--kill-every` seconds an admin connection KILLs
every connection of that user. Every second we sample the user's connections on
the server, the app's RSS and its pool's stats. The report (Markdown on stdout,
everything in `--json`, the per-second timeline in `--csv`) says whether
requests failed away from the KILLs, whether the connections ever exceeded
`max_size`, whether memory stayed flat, whether every acknowledged write is in
the database and whether the app left no connection behind when it shut down.
See README.md, "Soak".

The modules, in the order a run uses them:

- `cli`: the options, and the run from set-up to tear-down;
- `admin`: the admin connection, the app's user and tables, the writes check;
- `app`: the app under test (uvicorn imports `benchmarks.soak.app:create_app`);
- `load`: the HTTP clients and the request mix;
- `monitor`: the per-second samples, the KILLs, the settling after the load;
- `summary`: the checks and figures from what was recorded;
- `report`: the Markdown.

This file imports nothing, so the app's process loads only what the app needs.
"""
