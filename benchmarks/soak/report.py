"""The soak's Markdown report, from `summary.summarise` and the timeline."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import Any

from benchmarks.markdown import cell, table
from benchmarks.soak.summary import (
    FLAT_END_RATIO,
    FLAT_SLOPE_MB_PER_MIN,
    MIN_VERDICT_S,
)

#: What the library's `{"code": ...}` error answers mean (see ErrorKind).
MEANINGS = {
    "503/1": "UNAVAILABLE: server unreachable or connection lost",
    "503/2": "BUSY: no connection within acquire_timeout, or too many connections",
    "500/0": "ERROR: any other database error",
}
TIMELINE_ROWS = 20  # rows of the condensed timeline


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.3f}%" if whole else "n/a"


def span(values: dict[str, Any] | None) -> str:
    values = values or {}
    return f"{cell(values.get('min'))} to {cell(values.get('max'))}"


TIMELINE_HEAD = (
    "t (s)", "req/s", "failed", "KILLs", "server conns", "pool in_use max",
    "pool waiting max", "RSS MB", "threads",
)  # fmt: skip


def condensed_timeline(rows: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """At most TIMELINE_ROWS rows, each summing a stretch of seconds."""
    step = max(1, math.ceil(len(rows) / TIMELINE_ROWS))
    out: list[list[Any]] = []
    for i in range(0, len(rows), step):
        chunk = rows[i : i + step]

        def col(key: str, chunk: Sequence[dict[str, Any]] = chunk) -> list[Any]:
            return [r[key] for r in chunk if r[key] is not None]

        conns, rss, threads = col("conns"), col("rss_mb"), col("threads")
        out.append(
            [
                f"{chunk[0]['t'] - 1:.0f}-{chunk[-1]['t']:.0f}",
                round(sum(col("requests")) / len(chunk)),
                sum(col("failed")),
                sum(col("kills")),
                f"{min(conns)}-{max(conns)}" if conns else None,
                max(col("pool_in_use"), default=None),
                max(col("pool_waiting"), default=None),
                rss[-1] if rss else None,
                threads[-1] if threads else None,
            ]
        )
    return out


def md_header(
    args: argparse.Namespace, meta: dict[str, Any], s: dict[str, Any]
) -> list[str]:
    kills = (
        f"KILL every {args.kill_every:g} s ({args.kill_mode})"
        if args.kill_every
        else "no KILLs"
    )
    mix = ", ".join(f"{k} {v:g}" for k, v in args.mix.items())
    out = [
        f"## Soak: {s['elapsed_s']:.0f} s, {args.concurrency} clients, {kills}",
        "",
        f"{meta['started']}, commit {meta['commit']}, {meta['server_version']}, "
        f"{meta['cpus']} CPUs, load average {meta['loadavg_start'][0]:.2f} at the "
        f"start, {meta['loadavg_end'][0]:.2f} at the end. Pool size "
        f"{args.pool_size}, max_size {args.max_size}; mix {mix}; warm-up "
        f"{args.warmup} s; KILL window {args.kill_window:g} s.",
    ]
    if s["interrupted"]:
        out += ["", f"**Interrupted** after {s['elapsed_s']:.0f} s."]
    return [*out, "", *table(["check", "result"], list(s["checks"].items()))]


def md_requests(args: argparse.Namespace, s: dict[str, Any]) -> list[str]:
    req, k = s["requests"], s["kills"]
    total, lat = req["total"], req["latency_ms"]
    rows = [
        [f"`{kind}`", v["requests"], v["failed"], pct(v["failed"], v["requests"])]
        for kind, v in req["by_kind"].items()
    ]
    rows.append(["**total**", total, req["failed"], pct(req["failed"], total)])
    out = ["### Requests", ""]
    out += table(["kind", "requests", "failed", "failed %"], rows)
    out += [
        "",
        f"{cell(req['rps'], 0)} req/s on average; latency p50 {cell(lat['p50'])} ms, "
        f"p99 {cell(lat['p99'])} ms, max {cell(lat['max'])} ms. The load generator "
        f"(this process, sampling included) used {cell(req['client_cpu_cores'], 2)} "
        "of a core.",
        "",
        "### Failed requests",
        "",
    ]
    head = [
        "status/code", "meaning", "count", "% of requests", "in flight at a KILL",
        f"<= {args.kill_window:g} s after a KILL", "away from KILLs",
    ]  # fmt: skip
    rows = [
        [f"`{key}`", MEANINGS.get(key, ""), v["count"], pct(v["count"], total)]
        + [v[w] for w in ("in_flight", "after", "outside")]
        for key, v in s["failures"].items()
    ]
    out += table(head, rows) if rows else ["None."]
    return [
        *out,
        "",
        f"{k['count']} KILL rounds ended {k['busy'] + k['idle']} connections "
        f"({k['busy']} busy, {k['idle']} idle).",
    ]


def md_resources(args: argparse.Namespace, s: dict[str, Any]) -> list[str]:
    conns, mem = s["connections"], s["memory"]
    server, pool = conns["server"] or {}, conns["pool_size"] or {}
    mmm = ("min", "median", "max")
    final = conns["pool_final"] or {}
    counters = ", ".join(
        f"{key} {cell(final.get(key))}"
        for key in ("opened", "closed", "errors", "requests", "timeouts")
    )
    out = ["### Connections", ""]
    out += table(
        ["", "min", "median", "max"],
        [
            ["server (processlist, the app's user)", *(server.get(x) for x in mmm)],
            ["pool `size` (`GET /stats`)", *(pool.get(x) for x in mmm)],
        ],
    )
    out += [
        "",
        f"max_size {args.max_size}. Not counting connections killed but not yet "
        f"gone, the server's max is {cell(conns['server_live_max'])}; at most "
        f"{cell(conns['server_busy_max'])} ran a statement at once; at most "
        f"{cell(conns['pool_waiting_max'])} callers waited for a connection. Pool "
        f"counters at the end: {counters}.",
        "",
        "### Memory (RSS of the uvicorn process)",
        "",
    ]
    if "warmup_end_mb" in mem:
        head = [
            f"at warm-up end (t={mem['warmup_end_t']:.0f} s)", "at the end", "max",
            "slope after warm-up", "slope, last half", "end / warm-up",
        ]  # fmt: skip
        row = [
            f"{mem['warmup_end_mb']:.1f} MB", f"{mem['end_mb']:.1f} MB",
            f"{mem['max_mb']:.1f} MB", f"{cell(mem['slope_mb_per_min'], 2)} MB/min",
            f"{cell(mem['slope_last_half_mb_per_min'], 2)} MB/min",
            f"{mem['end_over_warmup']:.3f}",
        ]  # fmt: skip
        out += [*table(head, [row]), ""]
    verdict = cell(mem.get("verdict"))
    if mem.get("indicative"):
        verdict += (
            f" (indicative only: {mem['seconds_after_warmup']:.0f} s after warm-up,"
            f" a verdict needs {MIN_VERDICT_S})"
        )
    return [
        *out,
        f"**memory flat: {verdict}** (flat means: slope < {FLAT_SLOPE_MB_PER_MIN} "
        f"MB/min and end < {FLAT_END_RATIO}x warm-up). Threads {span(s['threads'])}, "
        f"open files {span(s['fds'])}.",
    ]


def md_writes_and_shutdown(s: dict[str, Any]) -> list[str]:
    out = []
    if s["writes"]:
        ins, bumps, tasks = (s["writes"][k] for k in ("inserts", "bumps", "tasks"))
        out += [
            "### Writes",
            "",
            f"- INSERTs: {ins['attempted']} sent, {ins['acknowledged']} answered 200, "
            f"{ins['present']} rows; **{ins['acknowledged_missing']} answered 200 "
            f"but missing**; {ins['present_not_acknowledged']} present but not "
            "answered 200 (the connection died after the COMMIT reached the server).",
            f"- UPDATEs: {bumps['attempted']} sent, {bumps['acknowledged']} answered "
            f"200; the counters sum to {bumps['counted']} (must lie between the two).",
            f"- Background tasks: {tasks['scheduled']} scheduled by requests answered "
            f"200, {tasks['present']} rows, {tasks['missing']} missing (the task's "
            "connection was killed; the app logs it).",
            "",
        ]
    st, sd = s["settled"], s["shutdown"]
    pool = st.get("pool") or {}
    return [
        *out,
        "### After the load, and after shutdown",
        "",
        f"- Settled in {cell(st.get('seconds'), 2)} s: pool size "
        f"{cell(pool.get('size'))}, in use {cell(pool.get('in_use'))}; the server "
        f"lists {cell(st.get('connections'))} connections of the app's user "
        f"({cell(st.get('untracked_connections'))} more than the pool holds); "
        f"open transactions: {cell(st.get('open_transactions'))}.",
        f"- App stopped (SIGINT) in {cell(sd.get('stop_seconds'), 2)} s, exit code "
        f"{cell(sd.get('exit_code'))}; **the app user's connections afterwards: "
        f"{cell(sd.get('connections_after'))}** "
        f"(after {cell(sd.get('waited_s'), 2)} s).",
    ]


def md_log(s: dict[str, Any]) -> list[str]:
    head = ["event (level, message)", "during a KILL", "after one", "away", "untimed"]
    rows = [
        [f"`{e['event'].replace('|', '/')}`"]
        + [e.get(w, 0) for w in ("in_flight", "after", "outside", "untimed")]
        for e in s["app_log"]
    ]
    return [
        "### App log (the library's warnings and errors, uvicorn's errors)",
        "",
        *(table(head, rows) if rows else ["Nothing."]),
    ]


def report(
    args: argparse.Namespace,
    meta: dict[str, Any],
    summary: dict[str, Any],
    rows: Sequence[dict[str, Any]],
) -> str:
    sections = [
        md_header(args, meta, summary),
        md_requests(args, summary),
        md_resources(args, summary),
        md_writes_and_shutdown(summary),
        md_log(summary),
        ["### Timeline", "", *table(TIMELINE_HEAD, condensed_timeline(rows))],
    ]
    return "\n\n".join("\n".join(section) for section in sections)
