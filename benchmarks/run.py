"""Benchmark runner: interleaved A/B rounds, paired ratios, Markdown + JSON.

    python -m benchmarks.run --variants seed,naive_dep,asyncmy --rounds 5
    python -m benchmarks.run --endpoint list
    python -m benchmarks.run --mixed --servers asyncio

The machine is shared and noisy, so absolute req/s drift from run to run. What
holds is the ratio between variants measured back to back, so every round runs
each variant once (rotating the order so no variant always goes first or right
after a particular other one), ratios are taken within a round, and only then
summarised across rounds. Each round does so under each uvicorn configuration
(uvloop + httptools, then asyncio + h11), and each configuration gets a table
of its own: ratios pair variants within one configuration. See README.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from benchmarks import markdown
from benchmarks.apps import ENDPOINTS, VARIANTS, build_app
from benchmarks.db import database_url, ensure_table, parse_url
from benchmarks.harness import git_commit, log, machine, stop_on_sigterm, write_json
from benchmarks.server import SERVERS, ServerSettings, serve
from benchmarks.stats import Rounds, paired_ratios, rounds_spread
from benchmarks.wrk import (
    WrkMissing,
    WrkResult,
    finish_wrk,
    run_wrk,
    start_wrk,
    wrk_path,
)

THROUGHPUT_VARIANTS = ["seed", "naive_dep", "asyncmy", "lib_sync", "lib_async"]
MIXED_VARIANTS = ["seed_async_blocking", "lib_async", "asyncmy"]
ASYNC_REFERENCE = "asyncmy"
PROBE_CONNECTIONS = 2
# --mixed: probe alone; beside a background of the endpoint only; beside one
# with /slow.
MIXED_PHASES = ("idle", "quiet", "slow")
ROUTES = {"item": "GET /item/{id}", "list": "GET /items?limit=100&after={id}"}

T = TypeVar("T")


# --------------------------------------------------------------------------- CLI


def parse_servers(text: str) -> dict[str, ServerSettings]:
    """`uvloop,asyncio` (names in SERVERS) or `LOOP+HTTP` pairs, in order."""
    servers: dict[str, ServerSettings] = {}
    for name in text.split(","):
        loop, plus, http = name.partition("+")
        if name in SERVERS:
            servers[name] = SERVERS[name]
        elif plus and loop and http:
            servers[name] = ServerSettings(loop, http)
        else:
            raise ValueError(
                f"unknown server {name!r}; known: {', '.join(SERVERS)}, or LOOP+HTTP"
            )
    return servers


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Interleaved A/B benchmark of the fastapi-mysqlpool variants.",
    )
    p.add_argument(
        "--variants",
        help="comma-separated; default: "
        f"{','.join(THROUGHPUT_VARIANTS)} (with --mixed: {','.join(MIXED_VARIANTS)})",
    )
    p.add_argument("--baseline", default="seed", help="ratio reference (default seed)")
    p.add_argument(
        "--endpoint",
        choices=tuple(ENDPOINTS),
        default="item",
        help="item: GET /item/{id}, a row by primary key (default); "
        "list: GET /items?limit=100, a page of 100 rows as dicts",
    )
    p.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="uvicorn configurations, each measured with a table of its own: "
        "uvloop (uvloop + httptools, what uvicorn[standard] runs), asyncio "
        "(asyncio + h11), or LOOP+HTTP (default: uvloop,asyncio)",
    )
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    p.add_argument("--warmup", type=int, default=2, help="seconds of wrk before each")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--url", help="mysql://user:pass@host:port/db (default: see README)")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--mixed", action="store_true", help="mixed-load latency mode")
    p.add_argument(
        "--slow-fraction",
        type=float,
        default=0.1,
        help="--mixed: share of background requests hitting /slow (default 0.1)",
    )
    p.add_argument("--loop", help="with --http: --servers LOOP+HTTP")
    p.add_argument("--http", help="with --loop: --servers LOOP+HTTP")
    args = p.parse_args(argv)

    default = MIXED_VARIANTS if args.mixed else THROUGHPUT_VARIANTS
    args.variants = args.variants.split(",") if args.variants else list(default)
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    if args.loop or args.http:
        args.servers = f"{args.loop or 'asyncio'}+{args.http or 'h11'}"
    try:
        args.servers = parse_servers(args.servers)
    except ValueError as exc:
        p.error(f"--servers: {exc}")
    if min(args.rounds, args.duration, args.connections, args.threads) < 1:
        p.error("--rounds, --duration, --connections and --threads must be >= 1")
    if args.warmup < 0 or not 0 <= args.slow_fraction <= 1:
        p.error("--warmup must be >= 0 and --slow-fraction within 0..1")
    return args


# ------------------------------------------------------------------ measuring


def unavailable_variants(variants: Sequence[str], url: str) -> dict[str, str]:
    """Build each app without starting it: catches missing or broken imports
    (e.g. lib_async before the library grows it) before any time is spent."""
    reasons: dict[str, str] = {}
    for variant in variants:
        try:
            build_app(variant, url)
        except Exception as exc:  # any failure means: skip, report, go on
            reasons[variant] = f"{type(exc).__name__}: {exc}"
    return reasons


def rotated(items: Sequence[T], by: int) -> list[T]:
    by %= len(items)
    return list(items[by:]) + list(items[:by])


@dataclass(frozen=True)
class Cell:
    """One measurement: a variant, and in --mixed mode the load phase.

    Each cell gets its own fresh server. In mixed mode that matters: a blocked
    event loop is still chewing through queued /slow requests after wrk stops,
    which would leak into whatever phase ran next on the same server.
    """

    variant: str
    phase: str = ""  # --mixed: "idle", "quiet" or "slow"

    @property
    def label(self) -> str:
        return f"{self.variant}/{self.phase}" if self.phase else self.variant


@dataclass
class Session:
    args: argparse.Namespace
    url: str
    bodies: dict[str, str] = field(default_factory=dict)
    failures: dict[str, list[str]] = field(default_factory=dict)

    def load(self, base_url: str, seconds: int, slow: float = 0.0) -> WrkResult:
        return run_wrk(
            base_url,
            duration=seconds,
            connections=self.args.connections,
            threads=self.args.threads,
            slow_fraction=slow,
            endpoint=self.args.endpoint,
        )

    def run_rounds(
        self,
        servers: Sequence[str],
        variants: Sequence[str],
        phases: Sequence[str],
        measure: Callable[[str, Cell], Any],
    ) -> dict[str, Rounds]:
        """Run `measure(base_url, cell)` for every server configuration, variant
        and phase, interleaved; the rounds of each configuration apart.

        The order of the variants, and of the phases within each, rotates every
        round so none always runs first or right after the same neighbour."""
        rounds: dict[str, Rounds] = {name: [] for name in servers}
        for r in range(self.args.rounds):
            for name in servers:
                rounds[name].append(self.run_round(r, name, variants, phases, measure))
        return rounds

    def run_round(
        self,
        r: int,
        server: str,
        variants: Sequence[str],
        phases: Sequence[str],
        measure: Callable[[str, Cell], Any],
    ) -> dict[str, Any]:
        results: dict[str, Any] = {}
        order = [
            Cell(v, phase) for v in rotated(variants, r) for phase in rotated(phases, r)
        ]
        path = ENDPOINTS[self.args.endpoint]
        for cell in order:
            where = f"{server}/{cell.label}"
            log(f"round {r + 1}/{self.args.rounds}: {where} ...")
            started = time.monotonic()
            try:
                settings = self.args.servers[server]
                with serve(cell.variant, self.url, settings) as running:
                    self.bodies.setdefault(cell.variant, running.get(path).decode())
                    results[cell.label] = measure(running.base_url, cell)
            except (RuntimeError, OSError) as exc:  # ServerFailed, wrk, the GET
                log(f"  FAILED: {exc}")
                failures = self.failures.setdefault(f"{server}/{cell.variant}", [])
                failures.append(str(exc)[:2000])
                results[cell.label] = None
                continue
            elapsed = time.monotonic() - started
            log(f"  {describe(results[cell.label])} ({elapsed:.0f} s)")
        return results

    def warm_up(self, base_url: str) -> None:
        if self.args.warmup > 0:
            self.load(base_url, self.args.warmup)  # pool, buffer pool, caches

    def measure_throughput(self, base_url: str, _cell: Cell) -> WrkResult:
        self.warm_up(base_url)
        return self.load(base_url, self.args.duration)

    def measure_mixed(self, base_url: str, cell: Cell) -> dict[str, Any]:
        """A 2-connection latency probe on the endpoint, alone (idle) or beside
        a background load with no (quiet) or some (slow) /slow requests."""
        self.warm_up(base_url)
        background = None
        if cell.phase != "idle":
            slow = self.args.slow_fraction if cell.phase == "slow" else 0.0
            # 1 s longer than the probe, so the probe runs entirely under load.
            background = start_wrk(
                base_url,
                duration=self.args.duration + 1,
                connections=self.args.connections,
                threads=self.args.threads,
                slow_fraction=slow,
                endpoint=self.args.endpoint,
            )
        try:
            probe = run_wrk(
                base_url,
                duration=self.args.duration,
                connections=PROBE_CONNECTIONS,
                threads=1,
                endpoint=self.args.endpoint,
            )
        finally:
            bg = finish_wrk(background) if background else None
        return {"probe": probe, "background": bg}


def describe(result: Any) -> str:
    if isinstance(result, WrkResult):
        return (
            f"{result.rps:.0f} req/s, p50 {result.p50_ms:.1f} ms, "
            f"p99 {result.p99_ms:.1f} ms, errors {result.error_count}"
        )
    text = f"probe: {describe(result['probe'])}"
    if result["background"] is not None:
        text += f"; background: {describe(result['background'])}"
    return text


# ------------------------------------------------------------------ statistics


def summarise_throughput(
    rounds: Rounds, variants: Sequence[str], references: Sequence[str]
) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for v in variants:
        ok: list[WrkResult] = [r[v] for r in rounds if r.get(v) is not None]
        summary[v] = {
            "rounds_ok": len(ok),
            "rps": rounds_spread([x.rps for x in ok]),
            "p50_ms": rounds_spread([x.p50_ms for x in ok]),
            "p99_ms": rounds_spread([x.p99_ms for x in ok]),
            "errors": sum(x.error_count for x in ok),
            "ratio": {
                ref: paired_ratios(rounds, v, ref, lambda x: x.rps)
                for ref in references
            },
        }
    return summary


def _probe(metric: str) -> Callable[[Any], float]:
    return lambda m: float(getattr(m["probe"], metric))


def summarise_mixed(rounds: Rounds, variants: Sequence[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for v in variants:
        entry: dict[str, Any] = {}
        for phase in MIXED_PHASES:
            ok = [r[f"{v}/{phase}"] for r in rounds if r.get(f"{v}/{phase}")]
            entry[phase] = {
                "rounds_ok": len(ok),
                "probe_p50_ms": rounds_spread([m["probe"].p50_ms for m in ok]),
                "probe_p99_ms": rounds_spread([m["probe"].p99_ms for m in ok]),
                "background_rps": rounds_spread(
                    [m["background"].rps for m in ok if m["background"]]
                ),
                "errors": sum(
                    w.error_count for m in ok for w in m.values() if w is not None
                ),
            }
        # Paired within a round, like the throughput ratios.
        for pct in ("p50", "p99"):
            entry[f"probe_{pct}_slow_vs_quiet"] = paired_ratios(
                rounds, f"{v}/slow", f"{v}/quiet", _probe(f"{pct}_ms")
            )
        summary[v] = entry
    return summary


# ------------------------------------------------------------------- reporting


def unavailable_rows(unavailable: dict[str, str], columns: int) -> list[list[str]]:
    return [[f"`{v}`", "unavailable", *["—"] * (columns - 2)] for v in unavailable]


def throughput_table(
    summary: dict[str, Any], references: Sequence[str], unavailable: dict[str, str]
) -> list[str]:
    fmt = markdown.spread_cell
    head = ["variant", "req/s", "p50 ms", "p99 ms"]
    head += [f"req/s vs {ref}" for ref in references] + ["errors"]
    rows = []
    for v, s in summary.items():
        rps = fmt(s["rps"]) if s["rounds_ok"] else "failed (see notes)"
        row = [f"`{v}`", rps, fmt(s["p50_ms"], 1), fmt(s["p99_ms"], 1)]
        row += [fmt(s["ratio"][ref], 2, span=True) for ref in references]
        rows.append([*row, s["errors"]])
    return markdown.table(head, rows + unavailable_rows(unavailable, len(head)))


def mixed_table(summary: dict[str, Any], unavailable: dict[str, str]) -> list[str]:
    fmt = markdown.spread_cell
    head = ["variant"]
    head += [f"probe p50 / p99 ms, {phase}" for phase in MIXED_PHASES]
    head += ["p50 slow/quiet", "p99 slow/quiet", "bg req/s quiet / slow"]
    head += ["errors"]
    rows = []
    for v, s in summary.items():
        row = [f"`{v}`"]
        row += [
            f"{fmt(s[ph]['probe_p50_ms'], 1)} / {fmt(s[ph]['probe_p99_ms'], 1)}"
            for ph in MIXED_PHASES
        ]
        row += [
            fmt(s["probe_p50_slow_vs_quiet"], 2, span=True),
            fmt(s["probe_p99_slow_vs_quiet"], 2, span=True),
            f"{fmt(s['quiet']['background_rps'])} / {fmt(s['slow']['background_rps'])}",
            str(sum(s[ph]["errors"] for ph in MIXED_PHASES)),
        ]
        rows.append(row)
    return markdown.table(head, rows + unavailable_rows(unavailable, len(head)))


def body_mismatches(bodies: dict[str, str], path: str) -> list[str]:
    """Variants must answer byte-for-byte alike, or we'd compare different work."""
    if not bodies:
        return []
    ref_name, ref_body = next(iter(bodies.items()))
    return [
        f"`{v}` answers GET {path} with {b!r}, `{ref_name}` with {ref_body!r}"
        for v, b in bodies.items()
        if b != ref_body
    ]


def notes(session: Session, unavailable: dict[str, str]) -> list[str]:
    out = [f"unavailable `{v}`: {why}" for v, why in unavailable.items()]
    out += [
        f"`{v}` failed {len(errs)} round(s); first: {errs[0].splitlines()[0]}"
        for v, errs in session.failures.items()
    ]
    path = ENDPOINTS[session.args.endpoint]
    out += [f"WARNING: {m}" for m in body_mismatches(session.bodies, path)]
    return out


def to_jsonable(obj: Any) -> Any:
    if isinstance(obj, WrkResult):
        return obj.to_json()
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_jsonable(v) for v in obj]
    return obj


def environment(args: argparse.Namespace, url: str) -> dict[str, Any]:
    wrk_version = subprocess.run(
        [wrk_path(), "--version"], capture_output=True, text=True
    ).stdout.splitlines()
    return {
        "mode": "mixed" if args.mixed else "throughput",
        "endpoint": args.endpoint,
        "db_url": parse_url(url).redacted(),
        "commit": git_commit(),
        "rounds": args.rounds,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "connections": args.connections,
        "wrk_threads": args.threads,
        "servers": {
            name: {"uvicorn_loop": s.loop, "uvicorn_http": s.http}
            for name, s in args.servers.items()
        },
        "slow_fraction": args.slow_fraction if args.mixed else None,
        "wrk": wrk_version[0] if wrk_version else None,
        **machine(),
    }


# ------------------------------------------------------------------------ main


def available_servers(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The configurations whose modules are installed, and why the others not."""
    skipped = {
        name: f"{', '.join(missing)} not installed (pip install -e '.[bench]')"
        for name, s in args.servers.items()
        if (missing := s.missing())
    }
    return [name for name in args.servers if name not in skipped], skipped


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    try:
        wrk_path()
    except WrkMissing as exc:
        log(str(exc))
        return 2
    servers, skipped = available_servers(args)
    for name, why in skipped.items():
        log(f"# skipping server {name}: {why}")
    if not servers:
        log("no server configuration available to run")
        return 1

    with database_url(args.url) as url:
        meta = environment(args, url)
        log(f"# database: {meta['db_url']}")
        ensure_table(parse_url(url))
        unavailable = unavailable_variants(args.variants, url)
        for v, why in unavailable.items():
            log(f"# skipping {v}: unavailable ({why})")
        variants = [v for v in args.variants if v not in unavailable]
        if not variants:
            log("no variant available to run")
            return 1

        session = Session(args, url)
        references = [r for r in (args.baseline, ASYNC_REFERENCE) if r in variants]
        references = list(dict.fromkeys(references))  # baseline may be asyncmy
        if args.mixed:
            rounds = session.run_rounds(
                servers, variants, MIXED_PHASES, session.measure_mixed
            )
        else:
            rounds = session.run_rounds(
                servers, variants, [""], session.measure_throughput
            )

    summary: dict[str, Any] = {}
    sections = []
    for name in servers:
        if args.mixed:
            summary[name] = summarise_mixed(rounds[name], variants)
            table = mixed_table(summary[name], unavailable)
        else:
            summary[name] = summarise_throughput(rounds[name], variants, references)
            table = throughput_table(summary[name], references, unavailable)
        heading = f"### {args.servers[name].label}, {ROUTES[args.endpoint]}"
        sections.append("\n".join([heading, "", *table]))
    report = "\n\n".join(sections)
    meta["loadavg_end"] = os.getloadavg()
    note_lines = [f"server `{n}` skipped: {why}" for n, why in skipped.items()]
    note_lines += notes(session, unavailable)
    print(report)
    if note_lines:
        print()
        print("\n".join(f"- {line}" for line in note_lines))

    if args.json:
        payload = {
            "meta": meta,
            "unavailable": unavailable,
            "failures": session.failures,
            "responses": session.bodies,
            "summary": summary,
            "rounds": to_jsonable(rounds),
            "notes": note_lines,
            "markdown": report,
        }
        write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
