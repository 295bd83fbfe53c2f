"""A TCP proxy whose links can die silently, as in a network partition."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any


class _Link:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.severed = threading.Event()
        self.blackhole = False

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            _shut(sock)


class Proxy:
    """Forwards 127.0.0.1:<port> to the server.

    :meth:`sever` drops every current link upstream while the client side stays
    open and silent: the client sees nothing until it writes, then the
    connection is closed, which is what a client learns, sooner or later, from
    a peer that vanished.
    """

    def __init__(
        self, host: str, port: int, trickle: int | None = None, pause: float = 0.0
    ) -> None:
        """*trickle*: forward the server's bytes in pieces of that size, *pause*
        seconds apart, as a slow network delivers them."""
        self.target = (host, port)
        self.trickle = trickle
        self.pause = pause
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._flowing = threading.Event()
        self._flowing.set()
        #: Set when the client sends something while the server's bytes are held.
        self.spoke_while_held = threading.Event()
        self._spawn(self._accept)

    def config(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """*cfg* pointed at the proxy."""
        return {**cfg, "host": "127.0.0.1", "port": self.port}

    def sever(self, blackhole: bool = False) -> int:
        """Silently kill every current link; returns how many. With *blackhole*
        the client's later bytes vanish too, and nothing ever comes back: a
        network partition."""
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.blackhole = blackhole
            link.severed.set()
            _shut(link.upstream)
        return len(links)

    def hold(self) -> None:
        """Hold back whatever the server sends from now on, until :meth:`release`."""
        self.spoke_while_held.clear()
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self._flowing.set()
        _shut(self._listener)
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close()
        for thread in self._threads:
            thread.join(timeout=10)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(self.target)
            link = _Link(client, upstream)
            with self._lock:
                self._links.append(link)
            self._spawn(self._pump, link, client, upstream, True, None, 0.0)
            self._spawn(
                self._pump, link, upstream, client, False, self.trickle, self.pause
            )

    def _pump(
        self,
        link: _Link,
        src: socket.socket,
        dst: socket.socket,
        up: bool,
        trickle: int | None,
        pause: float,
    ) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if link.severed.is_set():
                if up and link.blackhole and data:
                    continue  # swallowed: the client waits for an answer
                if up:
                    link.close()  # the client spoke into the void: drop it
                return  # downstream stays open and silent
            if not data:
                link.close()
                return
            if up and not self._flowing.is_set():
                self.spoke_while_held.set()
            if not up:
                self._flowing.wait()
            try:
                if trickle is None:
                    dst.sendall(data)
                for i in range(0, len(data), trickle or len(data)):
                    if trickle is not None:
                        dst.sendall(data[i : i + trickle])
                        time.sleep(pause)  # the pace of the simulated network
            except OSError:
                link.close()
                return


def _shut(sock: socket.socket) -> None:
    # close() alone does not wake a thread blocked in accept() or recv().
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
