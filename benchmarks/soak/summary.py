"""From what a run recorded to the checks and figures the report shows."""

from __future__ import annotations

import argparse
import dataclasses
import re
import statistics
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.soak.app import LOG_LINE
from benchmarks.soak.load import Second
from benchmarks.soak.monitor import Kill, Run, Sample
from benchmarks.stats import percentile, spread

#: "memory flat" means both of these hold (see README.md, "Soak").
FLAT_SLOPE_MB_PER_MIN = 0.5
FLAT_END_RATIO = 1.2
#: With less than this after warm-up the verdict is only indicative (the check
#: counts as not run): the first minutes have steps that later level off.
MIN_VERDICT_S = 120


def near_kill(kills: Sequence[Kill], start: float, end: float, window: float) -> str:
    """Where a failure (or log event) lies relative to the KILLs.

    `in_flight`: a KILL happened while it ran; `after`: it ended within
    *window* s after one; else `outside`."""
    if any(start <= k.t_end and end >= k.t for k in kills):
        return "in_flight"
    if any(k.t <= end <= k.t_end + window for k in kills):
        return "after"
    return "outside"


@dataclass
class LogEvent:
    t: float | None  # seconds since the load started; None if not timestamped
    level: str
    message: str  # ids and counts replaced, so alike events group together


def normalise(message: str) -> str:
    message = re.sub(r"/\d+", "/{id}", message)
    # Numbers, but not the MySQL error number in "(2013, 'Lost connection...')".
    return re.sub(r"(?<![(\d])\d+(?:\.\d+)?", "N", message)[:160]


def parse_app_log(text: str, wall0: float) -> list[LogEvent]:
    """The library's WARNING-and-up events, and uvicorn's own errors."""
    events = []
    for line in text.splitlines():
        match = LOG_LINE.match(line)
        if match:
            created, level, _name, message = match.groups()
            if level not in ("DEBUG", "INFO"):
                events.append(
                    LogEvent(float(created) - wall0, level, normalise(message))
                )
        elif line.startswith(("ERROR:", "CRITICAL:")):
            level, _, message = line.partition(":")
            events.append(LogEvent(None, level, normalise(message.strip())))
    return events


def rss_slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB) points, in MB per minute."""
    if len(points) < 2:
        return None
    fit = statistics.linear_regression([t for t, _ in points], [r for _, r in points])
    return fit.slope * 60


def memory_summary(samples: Sequence[Sample], warmup: int) -> dict[str, Any]:
    points = [(s.t, s.rss_mb) for s in samples if s.rss_mb is not None]
    after = [(t, rss) for t, rss in points if t >= warmup]
    if len(after) < 2:
        return {"flat": None, "verdict": None, "reason": "too few samples"}
    warm_rss, end_rss = after[0][1], after[-1][1]
    slope = rss_slope(after)
    assert slope is not None
    verdict = slope < FLAT_SLOPE_MB_PER_MIN and end_rss < FLAT_END_RATIO * warm_rss
    span_s = after[-1][0] - after[0][0]
    return {
        "warmup_end_t": after[0][0],
        "warmup_end_mb": warm_rss,
        "end_mb": end_rss,
        "max_mb": max(r for _, r in points),
        "slope_mb_per_min": slope,
        # Growth that levels off shows here as a much smaller slope.
        "slope_last_half_mb_per_min": rss_slope(after[len(after) // 2 :]),
        "end_over_warmup": end_rss / warm_rss,
        "seconds_after_warmup": span_s,
        "verdict": verdict,
        "indicative": span_s < MIN_VERDICT_S,
        "flat": None if span_s < MIN_VERDICT_S else verdict,
    }


POOL_FIELDS = (
    "size", "idle", "in_use", "waiting", "opened", "closed", "errors", "timeouts",
    "requests",
)  # fmt: skip


def timeline(run: Run) -> list[dict[str, Any]]:
    """One row per sample: the sample, and the requests and KILLs of the second
    before it."""
    rows = []
    for s in run.samples:
        index = int(s.t) - 1
        second = run.load.seconds[index] if index < len(run.load.seconds) else Second()
        kills = [k for k in run.kills if s.t - 1 <= k.t < s.t]
        pool = s.pool or {}
        rows.append(
            {
                "t": s.t,
                "requests": second.ok + second.failed,
                "ok": second.ok,
                "failed": second.failed,
                "latency_max_ms": round(second.latency_max * 1000, 1),
                "kills": len(kills),
                "killed": sum(k.busy + k.idle for k in kills),
                "conns": s.conns,
                "conns_busy": s.conns_busy,
                "conns_killed": s.conns_killed,
                "rss_mb": None if s.rss_mb is None else round(s.rss_mb, 2),
                "cpu_pct": s.cpu_pct,
                "threads": s.threads,
                "fds": s.fds,
                **{f"pool_{key}": pool.get(key) for key in POOL_FIELDS},
            }
        )
    return rows


def by_position(
    kills: Sequence[Kill],
    spans: Iterator[tuple[str, float | None, float | None]],
    window: float,
) -> dict[str, Counter[str]]:
    """Count (key, start, end) spans by key and by where they lie (near_kill);
    spans without a time are `untimed`."""
    out: dict[str, Counter[str]] = {}
    for key, start, end in spans:
        where = (
            "untimed"
            if start is None or end is None
            else near_kill(kills, start, end, window)
        )
        out.setdefault(key, Counter())[where] += 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1].total()))


def _values(samples: Sequence[Sample], attr: str) -> list[Any]:
    return [getattr(s, attr) for s in samples if getattr(s, attr) is not None]


def summarise(args: argparse.Namespace, run: Run) -> dict[str, Any]:
    load, samples = run.load, run.samples
    total = sum(load.requests.values())
    failures = by_position(
        run.kills, ((f.key, f.start, f.end) for f in load.failures), args.kill_window
    )
    outside = sum(c["outside"] for c in failures.values())
    app_log = by_position(
        run.kills,
        (
            (f"{e.level} {e.message}", e.t, e.t)
            for e in parse_app_log(run.app_log, run.wall0)
        ),
        args.kill_window,
    )
    # Untimed lines are uvicorn's own errors: always worth a look.
    log_outside = sum(c["outside"] + c["untimed"] for c in app_log.values())

    live = [s.conns - (s.conns_killed or 0) for s in samples if s.conns is not None]
    pools = [s.pool for s in samples if s.pool]
    memory = memory_summary(samples, args.warmup)
    latencies = sorted(load.latencies)
    writes, settled, shutdown = run.writes, run.settled, run.shutdown
    bumps = writes.get("bumps", {})

    checks = {
        "no failed request away from a KILL": outside == 0,
        "no library warning or error away from a KILL": log_outside == 0,
        f"connections <= max_size ({args.max_size})": (
            max(live, default=0) <= args.max_size
            and max((p["size"] for p in pools), default=0) <= args.max_size
        ),
        "memory flat (see Memory)": memory.get("flat"),
        "every acknowledged write is in the database": (
            bool(writes)
            and writes["inserts"]["acknowledged_missing"] == 0
            and bumps["acknowledged"] <= bumps["counted"] <= bumps["attempted"]
        ),
        "no connection untracked by the pool after the load": (
            settled.get("untracked_connections") == 0
        ),
        "no open transaction after the load": settled.get("open_transactions") == 0,
        "app shut down cleanly (SIGINT, exit 0)": shutdown.get("exit_code") == 0,
        "no connection left after shutdown": shutdown.get("connections_after") == 0,
    }
    return {
        "checks": checks,
        "passed": all(v is not False for v in checks.values()),
        "interrupted": run.interrupted,
        "elapsed_s": run.elapsed,
        "requests": {
            "total": total,
            "failed": len(load.failures),
            "failed_fraction": len(load.failures) / total if total else None,
            "rps": total / run.elapsed if run.elapsed else None,
            "client_cpu_cores": run.client_cpu,
            "by_kind": {
                kind: {"requests": n, "failed": load.failed[kind]}
                for kind, n in sorted(load.requests.items())
            },
            "latency_ms": {
                "p50": _ms(percentile(latencies, 0.5)),
                "p99": _ms(percentile(latencies, 0.99)),
                "max": _ms(latencies[-1] if latencies else None),
            },
        },
        "failures": {
            key: {
                "count": where.total(),
                "fraction": where.total() / total if total else None,
                **{w: where[w] for w in ("in_flight", "after", "outside")},
            }
            for key, where in failures.items()
        },
        "failures_outside": outside,
        "kills": {
            "count": len(run.kills),
            "busy": sum(k.busy for k in run.kills),
            "idle": sum(k.idle for k in run.kills),
            "events": [dataclasses.asdict(k) for k in run.kills],
        },
        "connections": {
            "server": spread(_values(samples, "conns")),
            "server_live_max": max(live, default=None),
            "server_busy_max": max(_values(samples, "conns_busy"), default=None),
            "pool_size": spread([p["size"] for p in pools]),
            "pool_waiting_max": max((p["waiting"] for p in pools), default=None),
            "pool_final": pools[-1] if pools else None,
        },
        "memory": memory,
        "threads": spread(_values(samples, "threads")),
        "fds": spread(_values(samples, "fds")),
        "writes": writes,
        "settled": settled,
        "shutdown": shutdown,
        "app_log": [{"event": key, **where} for key, where in app_log.items()],
        "app_log_outside": log_outside,
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
