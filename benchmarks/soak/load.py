"""The load: HTTP clients on keep-alive connections, each sending one request
at a time, the kind of each drawn from the mix; what they were told, recorded."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from benchmarks.db import ROWS
from benchmarks.soak.app import COUNTER_ROWS

#: Request kinds: method and path (the id is filled in per request).
KINDS: dict[str, tuple[str, str]] = {
    "read": ("GET", "/item/{}"),
    "insert": ("POST", "/insert/{}"),
    "bump": ("POST", "/bump/{}"),
    "task": ("POST", "/task/{}"),
}
DEFAULT_MIX = "read=70,insert=15,bump=10,task=5"
REQUEST_TIMEOUT_S = 30.0


def parse_mix(text: str) -> dict[str, float]:
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight = part.strip().partition("=")
        if name not in KINDS:
            raise ValueError(
                f"unknown request kind {name!r}; known: {', '.join(KINDS)}"
            )
        weights[name] = float(weight)
        if weights[name] < 0:
            raise ValueError(f"negative weight for {name!r}")
    if not sum(weights.values()) > 0:
        raise ValueError("the weights must not all be zero")
    return weights


@dataclass
class Failure:
    start: float  # seconds since the load started
    end: float
    kind: str
    key: str  # "503/1", "500/0", "transport/ReadTimeout"...


@dataclass
class Second:
    """The requests that completed within one second of the run."""

    ok: int = 0
    failed: int = 0
    latency_max: float = 0.0


@dataclass
class Load:
    t0: float
    requests: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)
    seconds: list[Second] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    acked_inserts: list[int] = field(default_factory=list)
    acked_tasks: list[int] = field(default_factory=list)
    acked_bumps: int = 0
    _serial: dict[str, Iterator[int]] = field(
        default_factory=lambda: {
            "insert": itertools.count(1),
            "task": itertools.count(1),
        }
    )

    def next_id(self, kind: str) -> int:
        if kind == "read":
            return random.randint(1, ROWS)
        if kind == "bump":
            return random.randint(1, COUNTER_ROWS)
        return next(self._serial[kind])  # unique: a duplicate would be a 500

    def second(self, at: float) -> Second:
        index = max(0, int(at - self.t0))
        while len(self.seconds) <= index:
            self.seconds.append(Second())
        return self.seconds[index]

    def record(
        self, kind: str, ident: int, start: float, end: float, key: str | None
    ) -> None:
        self.requests[kind] += 1
        latency = end - start
        self.latencies.append(latency)
        second = self.second(end)
        second.latency_max = max(second.latency_max, latency)
        if key is not None:
            second.failed += 1
            self.failed[kind] += 1
            self.failures.append(Failure(start - self.t0, end - self.t0, kind, key))
            return
        second.ok += 1
        if kind == "insert":
            self.acked_inserts.append(ident)
        elif kind == "task":
            self.acked_tasks.append(ident)
        elif kind == "bump":
            self.acked_bumps += 1


class Mix:
    def __init__(self, weights: dict[str, float]) -> None:
        self.kinds = list(weights)
        self.cumulative = list(itertools.accumulate(weights.values()))

    def pick(self) -> str:
        point = random.random() * self.cumulative[-1]
        return self.kinds[bisect.bisect_right(self.cumulative, point)]


#: What a request that got no HTTP answer fails with.
TRANSPORT_ERRORS = (
    OSError,  # refused, reset (and, on 3.11+, TimeoutError)
    asyncio.TimeoutError,
    asyncio.IncompleteReadError,  # closed mid-answer
    asyncio.LimitOverrunError,
    ValueError,  # an answer we cannot parse
)


class HttpConnection:
    """One keep-alive HTTP/1.1 connection to the app, a request at a time.

    Just enough HTTP for this app's answers. Not httpx: with 64 requests in
    flight, `httpx.AsyncClient` spends milliseconds of CPU per request in its
    connection pool, so on a small machine the client, not the app, would set
    the pace (measured against a trivial ASGI app: about 100 req/s for 84% of a
    core, where this does about 2,500 for 21%).
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(
        self, method: str, path: str, timeout: float
    ) -> tuple[int, bytes]:
        """Send a request without a body; return the status and the body."""
        try:
            return await asyncio.wait_for(self._exchange(method, path), timeout)
        except BaseException:
            self.close()  # whatever state the connection is in: start afresh
            raise

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None

    async def _exchange(self, method: str, path: str) -> tuple[int, bytes]:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._streams
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
            "Content-Length: 0\r\n\r\n".encode()
        )
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status_line, *lines = head.split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        if headers.get("transfer-encoding") == "chunked":
            body = await self._read_chunked(reader)
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:  # delimited by the end of the connection
            body = await reader.read()
            headers["connection"] = "close"
        if headers.get("connection") == "close":
            self.close()
        return status, body

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readuntil(b"\r\n")  # the end of the (empty) trailer
        return body


def failure_key(status: int, body: bytes) -> str:
    """`status/code`, the code from the library's `{"code": ..., "message": ...}`."""
    try:
        code = json.loads(body).get("code", "-")
    except (ValueError, AttributeError):  # not JSON, or not an object
        code = "-"
    return f"{status}/{code}"


async def client_loop(
    conn: HttpConnection, mix: Mix, load: Load, stop: asyncio.Event
) -> None:
    """One client: a request at a time, until the load stops."""
    try:
        while not stop.is_set():
            kind = mix.pick()
            ident = load.next_id(kind)
            method, path = KINDS[kind]
            start = time.monotonic()
            key: str | None = None
            try:
                status, body = await conn.request(
                    method, path.format(ident), REQUEST_TIMEOUT_S
                )
                if status != 200:
                    key = failure_key(status, body)
            except TRANSPORT_ERRORS as exc:
                key = f"transport/{type(exc).__name__}"
            load.record(kind, ident, start, time.monotonic(), key)
    finally:
        conn.close()
