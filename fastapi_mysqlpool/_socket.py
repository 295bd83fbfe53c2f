"""Is there something to read on a connection's socket? Asked without a syscall
that releases the GIL.

``select.poll().poll(0)`` releases the GIL like every blocking call. On a busy
event loop each release lets one of the worker threads (sync routes) in, and
the loop then waits for it to hand the GIL back: a stall per call. libc's
``poll()`` with a zero timeout never blocks, so it is called through
``ctypes.PyDLL``, which keeps the GIL. Where that is not available (no libc
``poll``), the stdlib is used.
"""

from __future__ import annotations

import ctypes
import select
import socket
from collections.abc import Callable

_POLLIN = select.POLLIN
_POLLPRI = select.POLLPRI


class _PollFd(ctypes.Structure):
    _fields_ = [
        ("fd", ctypes.c_int),
        ("events", ctypes.c_short),
        ("revents", ctypes.c_short),
    ]


def _libc_poll() -> Callable[..., int] | None:
    try:
        poll = ctypes.PyDLL(None).poll
    except (OSError, AttributeError, TypeError):  # pragma: no cover - not libc
        return None
    poll.argtypes = [ctypes.POINTER(_PollFd), ctypes.c_ulong, ctypes.c_int]
    poll.restype = ctypes.c_int
    return poll


_poll = _libc_poll()


def readable_now(fd: int) -> bool:
    """True if a read on *fd* would not block: data, EOF or an error is there."""
    if _poll is not None:
        pollfd = _PollFd(fd, _POLLIN | _POLLPRI, 0)
        return _poll(ctypes.byref(pollfd), 1, 0) > 0
    poller = select.poll()  # pragma: no cover - platforms without libc poll
    poller.register(fd, _POLLIN | _POLLPRI)
    return bool(poller.poll(0))


def readable_check(fd: int) -> Callable[[], bool]:
    """:func:`readable_now` for one *fd*, its ``pollfd`` built once: asked
    several times per query, building it is most of the cost."""
    if _poll is None:  # pragma: no cover - platforms without libc poll
        return lambda: readable_now(fd)
    poll = _poll
    pollfd = ctypes.byref(_PollFd(fd, _POLLIN | _POLLPRI, 0))  # keeps it alive

    def readable() -> bool:
        return poll(pollfd, 1, 0) > 0

    return readable


def _libc_recv() -> Callable[..., int] | None:
    try:
        recv = ctypes.PyDLL(None).recv
    except (OSError, AttributeError, TypeError):  # pragma: no cover - not libc
        return None
    recv.argtypes = [
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_char),
        ctypes.c_size_t,
        ctypes.c_int,
    ]
    recv.restype = ctypes.c_ssize_t
    return recv


_recv = _libc_recv()
_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT


def peek(fd: int, buffer: ctypes.Array[ctypes.c_char]) -> int:
    """Copy what waits on *fd* (up to the buffer's size) into *buffer* without
    consuming it; the number of bytes: 0 at the end of the stream, -1 if
    nothing is there yet (or on an error, which a read will then report)."""
    if _recv is not None:
        return _recv(fd, buffer, len(buffer), _PEEK)
    sock = socket.socket(fileno=fd)  # pragma: no cover - without libc recv
    try:
        return sock.recv_into(memoryview(buffer).cast("B"), len(buffer), _PEEK)
    except OSError:
        return -1
    finally:
        sock.detach()
